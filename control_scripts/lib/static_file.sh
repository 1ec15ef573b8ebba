# Static files served from a folder. Sourced after common.sh.
#
# Layout under $SAMI_STATIC_ROOT/<name>/:
#   releases/<tag>/   one folder per deployed tag (the last keep-releases, default 3, are kept)
#   current           symlink to releases/<tag>: what the web server serves
#   archived          the former "current" while the deployment is archived (not served)
# The bundle comes from <manifest-dir>/site, or the path named by --deployment-config
# source=<path>: a folder (copied) or a .tar, .tar.gz, .tgz or .zip archive (unpacked).

static_source_path() {
    local source
    source=$(sami_config source site)
    printf '%s' "$source"
}

static_validate() {
    local root=${SAMI_STATIC_ROOT:-} source keep
    if [ -z "$root" ]; then
        sami_problem "SAMI_STATIC_ROOT is not set: the bot must say where static deployments are served from."
    elif [[ $root != /* ]]; then
        sami_problem "SAMI_STATIC_ROOT must be an absolute path."
    elif [ ! -d "$root" ] && [ ! -d "$(dirname -- "$root")" ]; then
        sami_problem "SAMI_STATIC_ROOT \"${root}\" does not exist."
    fi
    sami_require_manifest_dir
    source=$(static_source_path)
    if ! sami_safe_relative_path "$source"; then
        sami_problem "source=\"${source}\" must be a path inside the manifest folder."
    elif [ -d "$sami_manifest_dir" ]; then
        if [ -d "$sami_manifest_dir/$source" ]; then
            [ -n "$(ls -A -- "$sami_manifest_dir/$source")" ] \
                || sami_problem "Static bundle \"${source}\" is an empty folder."
        elif [ -f "$sami_manifest_dir/$source" ]; then
            case $source in
                *.tar | *.tar.gz | *.tgz | *.zip) ;;
                *) sami_problem "Static bundle \"${source}\" must be a folder or a .tar, .tar.gz, .tgz or .zip file." ;;
            esac
        else
            sami_problem "Static bundle \"${source}\" was not found in the manifest folder; add it or set --deployment-config source=<path>."
        fi
    fi
    keep=$(sami_config keep-releases 3)
    if ! [[ $keep =~ ^[0-9]{1,3}$ ]] || [ "$keep" -lt 1 ]; then
        sami_problem "keep-releases=\"${keep}\" must be a whole number of at least 1."
    fi
}

static_config_check() {
    static_validate
    sami_fail_on_problems
}

static_base() {
    printf '%s/%s' "${SAMI_STATIC_ROOT%/}" "$sami_name"
}

# Atomically make $2 (a path) be $1 (a path in the same folder), replacing what was there.
static_rename() {
    mv -T -f -- "$1" "$2"
}

static_deploy() {
    static_validate
    sami_require_tag
    sami_fail_on_problems
    local base source src incoming old keep link release
    base=$(static_base)
    source=$(static_source_path)
    src="$sami_manifest_dir/$source"
    mkdir -p -- "$base/releases" || sami_die "$SAMI_EXIT_FAIL" "cannot create ${base}/releases"
    incoming=$(mktemp -d "$base/releases/.incoming.XXXXXX") \
        || sami_die "$SAMI_EXIT_FAIL" "cannot create a folder in ${base}/releases"
    if [ -d "$src" ]; then
        cp -R -- "$src/." "$incoming/" || sami_die "$SAMI_EXIT_FAIL" "cannot copy ${source}"
    else
        case $source in
            *.zip) unzip -q -- "$src" -d "$incoming" ;;
            *) tar -xf "$src" -C "$incoming" --no-same-owner ;;
        esac || sami_die "$SAMI_EXIT_FAIL" "cannot unpack ${source}"
    fi
    chmod 755 -- "$incoming"
    release="$base/releases/$sami_tag"
    if [ -e "$release" ]; then
        old="$base/releases/.old.$sami_tag.$$"
        mv -T -- "$release" "$old" || sami_die "$SAMI_EXIT_FAIL" "cannot replace release ${sami_tag}"
    fi
    mv -T -- "$incoming" "$release" || sami_die "$SAMI_EXIT_FAIL" "cannot store release ${sami_tag}"
    touch -- "$release"
    [ -n "${old:-}" ] && rm -rf -- "$old"
    link="$base/.current.$$"
    rm -f -- "$link"
    ln -s -- "releases/$sami_tag" "$link" || sami_die "$SAMI_EXIT_FAIL" "cannot create a symlink in ${base}"
    static_rename "$link" "$base/current" || sami_die "$SAMI_EXIT_FAIL" "cannot switch ${base}/current"
    rm -f -- "$base/archived"
    sami_log "serving ${base}/current -> releases/${sami_tag}"
    keep=$(sami_config keep-releases 3)
    static_prune "$base" "$keep"
}

# Remove all but the newest $2 releases; the served one is always kept.
static_prune() {
    local base=$1 keep=$2 count=0 entry current
    current=$(readlink -- "$base/current" 2>/dev/null || readlink -- "$base/archived" 2>/dev/null || :)
    while IFS= read -r entry; do
        [ -n "$entry" ] || continue
        if [ "releases/$entry" = "$current" ]; then
            count=$((count + 1))
            continue
        fi
        count=$((count + 1))
        if [ "$count" -gt "$keep" ]; then
            sami_log "removing old release ${entry}"
            rm -rf -- "$base/releases/$entry"
        fi
    done < <(ls -1t -- "$base/releases")
    return 0
}

static_file_config_check() { static_config_check; }
static_file_create() { static_deploy; }
static_file_update() { static_deploy; }

static_file_check() {
    local base target
    base=$(static_base)
    if [ ! -L "$base/current" ]; then
        if [ -L "$base/archived" ]; then
            sami_die "$SAMI_EXIT_FAIL" "${sami_name} is archived"
        fi
        sami_die "$SAMI_EXIT_FAIL" "${sami_name} is not deployed (${base}/current is missing)"
    fi
    target=$(readlink -- "$base/current")
    if [ -n "$sami_tag" ] && [ "$target" != "releases/$sami_tag" ]; then
        sami_log "current points at ${target}, expected releases/${sami_tag}"
        exit "$SAMI_EXIT_TAG_MISMATCH"
    fi
    [ -d "$base/current" ] || sami_die "$SAMI_EXIT_FAIL" "release ${target} is missing"
    sami_health_check || exit "$SAMI_EXIT_FAIL"
}

static_file_archive() {
    local base
    base=$(static_base)
    if [ -L "$base/current" ]; then
        static_rename "$base/current" "$base/archived" \
            || sami_die "$SAMI_EXIT_FAIL" "cannot move ${base}/current aside"
    else
        sami_log "nothing is served for ${sami_name}"
    fi
}

static_file_unarchive() {
    local base
    base=$(static_base)
    if [ -L "$base/archived" ]; then
        static_rename "$base/archived" "$base/current" \
            || sami_die "$SAMI_EXIT_FAIL" "cannot restore ${base}/current"
    elif [ ! -L "$base/current" ]; then
        sami_log "no archived release of ${sami_name}: deploying again"
        static_deploy
    fi
}

static_file_archive_check() {
    local base
    base=$(static_base)
    if [ -e "$base/current" ] || [ -L "$base/current" ]; then
        sami_log "${base}/current is still served"
        exit "$SAMI_EXIT_FAIL"
    fi
}

static_file_cleanup() {
    local root=${SAMI_STATIC_ROOT:-}
    [ -n "$root" ] && [ "$root" != / ] || sami_die "$SAMI_EXIT_FAIL" "SAMI_STATIC_ROOT is not set"
    rm -rf -- "$(static_base)" || sami_die "$SAMI_EXIT_FAIL" "cannot remove $(static_base)"
}

static_file_info() { sami_info_links; }
static_file_notifications() { sami_notifications; }
