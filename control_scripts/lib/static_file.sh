# Static files served from a folder. Sourced after common.sh.
#
# Layout under $SAMI_STATIC_ROOT/<name>/:
#   releases/<tag>@<id>/  one folder per deploy, <id> unique (the last keep-releases, default
#                         3, are kept; deploying a tag again replaces its former folder)
#   current               symlink to releases/<tag>@<id>: what the web server serves
#   archived              the former "current" while the deployment is archived (not served)
# A release is never changed or renamed once "current" may point at it: a deploy fills a new
# folder and then renames a new symlink over "current", so readers always see a whole release.
# Folders named releases/<tag> (without @<id>) are releases of older scripts; still understood.
# The bundle comes from <manifest-dir>/site, or the path named by --deployment-config
# source=<path>: a folder (copied) or a .tar, .tar.gz, .tgz or .zip archive (unpacked). It
# may hold no special files, and symlinks only when relative and pointing inside the bundle.

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
        if [ -e "$sami_manifest_dir/$source" ] && ! static_inside "$sami_manifest_dir/$source" "$sami_manifest_dir"; then
            sami_problem "Static bundle \"${source}\" is a symlink to outside the manifest folder."
        elif [ -d "$sami_manifest_dir/$source" ]; then
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

# True when path $1, with every symlink resolved, is folder $2 or inside it.
static_inside() {
    local path folder
    path=$(realpath -m -- "$1") && folder=$(realpath -m -- "$2") || return 1
    [ "$path" = "$folder" ] || [[ $path == "$folder"/* ]]
}

# Refuse a bundle unpacked in $1 that holds special files or symlinks that are absolute or
# resolve outside it (they would serve files of the host). Prints the problem on stderr.
static_check_bundle() {
    local dir=$1 entry target rel
    while IFS= read -r -d '' entry; do
        rel=${entry#"$dir"/}
        if [ -L "$entry" ]; then
            target=$(readlink -- "$entry")
            if [[ $target == /* ]]; then
                sami_log "error: the bundle holds the absolute symlink ${rel} -> ${target}; only relative symlinks inside the bundle are allowed"
                return 1
            fi
            if ! static_inside "$entry" "$dir"; then
                sami_log "error: the bundle holds the symlink ${rel} -> ${target}, which points outside the bundle"
                return 1
            fi
        else
            sami_log "error: the bundle holds ${rel}, which is neither a file, a folder nor a symlink"
            return 1
        fi
    done < <(find "$dir" -mindepth 1 \( -type l -o \( ! -type f ! -type d \) \) -print0)
    return 0
}

# Removes what a failed deploy left: the folder being filled (or the new release that could
# not be switched to) and the temporary symlink. Runs on exit.
static_abandon() {
    [ -n "${static_pending:-}" ] && rm -rf -- "$static_pending"
    [ -n "${static_link:-}" ] && rm -f -- "$static_link"
    return 0
}

# Tag of a release folder name: "<tag>@<id>" (or "<tag>" from older scripts) -> "<tag>".
static_release_tag() {
    printf '%s' "${1%@*}"
}

static_deploy() {
    static_validate
    sami_require_tag
    sami_fail_on_problems
    local base source src keep release id
    base=$(static_base)
    source=$(static_source_path)
    src="$sami_manifest_dir/$source"
    mkdir -p -- "$base/releases" || sami_die "$SAMI_EXIT_FAIL" "cannot create ${base}/releases"
    static_pending=""
    static_link=""
    trap static_abandon EXIT
    # A signal ends the script through exit, so that the EXIT trap runs too.
    trap 'exit 129' HUP
    trap 'exit 130' INT
    trap 'exit 143' TERM
    static_pending=$(mktemp -d "$base/releases/.incoming.XXXXXXXX") \
        || sami_die "$SAMI_EXIT_FAIL" "cannot create a folder in ${base}/releases"
    if [ -d "$src" ]; then
        cp -R -- "$src/." "$static_pending/" || sami_die "$SAMI_EXIT_FAIL" "cannot copy ${source}"
    else
        case $source in
            *.zip) unzip -q -- "$src" -d "$static_pending" ;;
            *) tar -xf "$src" -C "$static_pending" --no-same-owner ;;
        esac || sami_die "$SAMI_EXIT_FAIL" "cannot unpack ${source}"
    fi
    static_check_bundle "$static_pending" \
        || sami_die "$SAMI_EXIT_FAIL" "refusing to deploy ${source}: nothing was changed"
    chmod 755 -- "$static_pending"
    # A new folder for every deploy, even of the same tag: the served one is never touched.
    id="$(date -u +%Y%m%dT%H%M%SZ)-${static_pending##*.}"
    release="${sami_tag}@${id}"
    [ ! -e "$base/releases/$release" ] || sami_die "$SAMI_EXIT_FAIL" "release folder ${release} exists already"
    mv -T -- "$static_pending" "$base/releases/$release" \
        || sami_die "$SAMI_EXIT_FAIL" "cannot store release ${release}"
    static_pending="$base/releases/$release"
    touch -- "$static_pending"
    static_link="$base/.current.$$"
    rm -f -- "$static_link"
    ln -s -- "releases/$release" "$static_link" || sami_die "$SAMI_EXIT_FAIL" "cannot create a symlink in ${base}"
    static_rename "$static_link" "$base/current" || sami_die "$SAMI_EXIT_FAIL" "cannot switch ${base}/current"
    static_pending=""
    static_link=""
    rm -f -- "$base/archived"
    sami_log "serving ${base}/current -> releases/${release}"
    keep=$(sami_config keep-releases 3)
    static_prune "$base" "$keep"
}

# Remove the releases superseded by a later deploy of the same tag as the served one, then
# all but the newest $2 releases. The served (or archived) one is always kept and counts.
static_prune() {
    local base=$1 keep=$2 count=0 entry current served_tag
    current=$(readlink -- "$base/current" 2>/dev/null || readlink -- "$base/archived" 2>/dev/null || :)
    current=${current#releases/}
    served_tag=$(static_release_tag "$current")
    while IFS= read -r entry; do
        [ -n "$entry" ] || continue
        if [ "$entry" = "$current" ]; then
            count=$((count + 1))
            continue
        fi
        if [ -n "$current" ] && [ "$(static_release_tag "$entry")" = "$served_tag" ]; then
            sami_log "removing release ${entry} (replaced by ${current})"
            rm -rf -- "${base:?}/releases/$entry"
            continue
        fi
        count=$((count + 1))
        if [ "$count" -gt "$keep" ]; then
            sami_log "removing old release ${entry}"
            rm -rf -- "${base:?}/releases/$entry"
        fi
    done < <(ls -1t -- "$base/releases")
    return 0
}

static_file_config_check() { static_config_check; }
static_file_create() { static_deploy; }
static_file_update() { static_deploy; }

# Its stdout is the report of what runs: the tag of the release `current` serves (empty: nothing served).
static_file_check() {
    local base target
    base=$(static_base)
    if [ -L "$base/current" ] && [ -d "$base/current" ]; then
        target=$(readlink -- "$base/current")
        sami_report_add_tag current "$(static_release_tag "${target#releases/}")"
    fi
    sami_report_print
    if [ ! -L "$base/current" ]; then
        if [ -L "$base/archived" ]; then
            sami_die "$SAMI_EXIT_FAIL" "${sami_name} is archived"
        fi
        sami_die "$SAMI_EXIT_FAIL" "${sami_name} is not deployed (${base}/current is missing)"
    fi
    target=$(readlink -- "$base/current")
    if [ -n "$sami_tag" ] && [ "$(static_release_tag "${target#releases/}")" != "$sami_tag" ]; then
        sami_log "current points at ${target}, expected a release of ${sami_tag}"
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

# switch (blue-green): make the entry's "current" point at the live colour's served folder
# (--backend, a path inside SAMI_STATIC_ROOT). A new symlink is renamed over the old one (ln -s, then
# mv -T), so a reader always finds either the old colour or the new one, never a missing entry.
static_file_switch() {
    local root=${SAMI_STATIC_ROOT:-} base backend link
    [ -n "$root" ] && [ "$root" != / ] || sami_die "$SAMI_EXIT_USAGE" "SAMI_STATIC_ROOT is not set"
    case $sami_colour in
        blue | green) ;;
        *) sami_die "$SAMI_EXIT_USAGE" "--colour must be blue or green" ;;
    esac
    [ -n "$sami_backend" ] || sami_die "$SAMI_EXIT_USAGE" "--backend (the live colour's served folder) is required"
    [[ $sami_backend == /* ]] || sami_die "$SAMI_EXIT_USAGE" "--backend must be an absolute path"
    static_inside "$sami_backend" "$root" \
        || sami_die "$SAMI_EXIT_USAGE" "--backend ${sami_backend} is outside SAMI_STATIC_ROOT"
    [ -d "$sami_backend" ] || sami_die "$SAMI_EXIT_FAIL" "the ${sami_colour} colour serves nothing at ${sami_backend}"
    base=$(static_base)
    backend=$(realpath -s -- "$sami_backend") || sami_die "$SAMI_EXIT_FAIL" "cannot resolve ${sami_backend}"
    mkdir -p -- "$base" || sami_die "$SAMI_EXIT_FAIL" "cannot create ${base}"
    link="$base/.current.$$"
    rm -f -- "$link"
    ln -s -- "$backend" "$link" || sami_die "$SAMI_EXIT_FAIL" "cannot create a symlink in ${base}"
    if ! static_rename "$link" "$base/current"; then
        rm -f -- "$link"
        sami_die "$SAMI_EXIT_FAIL" "cannot switch ${base}/current"
    fi
    printf '%s\n' "$sami_colour" >"$base/.colour.$$" && mv -T -f -- "$base/.colour.$$" "$base/colour"
    sami_log "serving ${base}/current -> ${backend} (${sami_colour})"
}

static_file_info() { sami_info_links; }
static_file_notifications() { sami_notifications; }
