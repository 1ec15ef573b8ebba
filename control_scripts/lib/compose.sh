# docker compose operations. Sourced after common.sh.
#
# The compose project is named after the deployment (-p NAME). The client is, in order:
# $COMPOSE (one executable, e.g. docker-compose), `$DOCKER compose` when the compose v2
# plugin answers, else docker-compose (v1) from PATH.
#
# archive (stop) and cleanup (down -v) need no compose file: they name the project only, so
# they work after the manifest folder or the compose file is gone. A client that cannot do
# that (compose v1 always wants a file) is replaced by $DOCKER calls on the project label.

COMPOSE_PROJECT_LABEL=com.docker.compose.project

compose_files() {
    local list item items
    compose_file_list=()
    list=$(sami_config compose-file)
    if [ -n "$list" ]; then
        IFS=, read -r -a items <<<"$list"
        for item in "${items[@]}"; do
            item=${item# }
            item=${item% }
            [ -n "$item" ] && compose_file_list+=("$item")
        done
    else
        for item in compose.yml compose.yaml docker-compose.yml docker-compose.yaml; do
            if [ -f "$sami_manifest_dir/$item" ]; then
                compose_file_list=("$item")
                return 0
            fi
        done
        compose_file_list=(compose.yml)
    fi
    return 0
}

compose_client() {
    compose_cmd=()
    if [ -n "${COMPOSE:-}" ]; then
        compose_cmd=("$COMPOSE")
    elif "$DOCKER" compose version >/dev/null 2>&1; then
        compose_cmd=("$DOCKER" compose)
    elif command -v docker-compose >/dev/null 2>&1; then
        compose_cmd=(docker-compose)
    else
        return 1
    fi
    return 0
}

compose_validate() {
    sami_require_manifest_dir
    local file
    compose_files
    for file in "${compose_file_list[@]}"; do
        if ! sami_safe_relative_path "$file"; then
            sami_problem "Compose file \"${file}\" must be a path inside the manifest folder."
        elif [ -d "$sami_manifest_dir" ] && [ ! -f "$sami_manifest_dir/$file" ]; then
            sami_problem "Compose file \"${file}\" was not found in the manifest folder; add it or set --deployment-config compose-file=<file>."
        fi
    done
    if ! compose_client; then
        sami_problem "No docker compose client: install the compose plugin (docker compose) or docker-compose, or set COMPOSE."
    fi
}

compose_config_check() {
    compose_validate
    sami_fail_on_problems
}

# Run the compose client for this project with the overrides in its environment.
compose_run() {
    local args=(-p "$sami_name") file
    for file in "${compose_file_list[@]}"; do
        args+=(-f "$file")
    done
    (cd -- "$sami_manifest_dir" && sami_run_env "${compose_cmd[@]}" "${args[@]}" "$@")
}

compose_prepare() {
    compose_validate
    sami_fail_on_problems
}

compose_create() {
    compose_prepare
    sami_require_tag
    sami_fail_on_problems
    compose_run up -d --remove-orphans
}

compose_update() { compose_create; }

compose_archive() {
    compose_run_project stop || sami_log "stopping the containers of ${sami_name} by their project label"
    # Whatever still runs (or everything, when the client could not run).
    local ids
    ids=$(compose_labelled ps -q) || sami_die "$SAMI_EXIT_FAIL" "cannot list the containers of ${sami_name}"
    [ -n "$ids" ] || return 0
    # shellcheck disable=SC2086 # container ids, one word each
    sami_run "$DOCKER" stop $ids >&2 || sami_die "$SAMI_EXIT_FAIL" "cannot stop the containers of ${sami_name}"
}

compose_unarchive() {
    compose_prepare
    compose_run up -d --remove-orphans
}

compose_cleanup() {
    compose_run_project down -v --remove-orphans \
        || sami_log "removing what is left of ${sami_name} by its project label"
    # Whatever the client left (or all of it, when it could not run): containers, networks,
    # volumes labelled with the project. Nothing left is fine, so cleanup can run twice.
    local kind ids
    ids=$(compose_labelled ps -aq) || sami_die "$SAMI_EXIT_FAIL" "cannot list the containers of ${sami_name}"
    if [ -n "$ids" ]; then
        # shellcheck disable=SC2086
        sami_run "$DOCKER" rm -f -v $ids >&2 || sami_die "$SAMI_EXIT_FAIL" "cannot remove the containers of ${sami_name}"
    fi
    for kind in network volume; do
        ids=$(compose_labelled "$kind" ls -q) || sami_die "$SAMI_EXIT_FAIL" "cannot list the ${kind}s of ${sami_name}"
        [ -n "$ids" ] || continue
        # shellcheck disable=SC2086
        sami_run "$DOCKER" "$kind" rm $ids >&2 || sami_die "$SAMI_EXIT_FAIL" "cannot remove the ${kind}s of ${sami_name}"
    done
}

# $DOCKER <args> --filter label=com.docker.compose.project=NAME
compose_labelled() {
    "$DOCKER" "$@" --filter "label=${COMPOSE_PROJECT_LABEL}=${sami_name}"
}

# Run the compose client with -p NAME only (no compose file), from an empty private folder so
# that no file is picked up from the working directory. Fails when there is no client or
# it cannot work without a file.
compose_run_project() {
    compose_client || return 1
    local dir rc
    dir=$(mktemp -d "${TMPDIR:-/tmp}/sami-compose.XXXXXX") || return 1
    (cd -- "$dir" && unset COMPOSE_FILE COMPOSE_PATH_SEPARATOR \
        && sami_run_env "${compose_cmd[@]}" -p "$sami_name" "$@")
    rc=$?
    rmdir -- "$dir" 2>/dev/null || rm -rf -- "$dir"
    return "$rc"
}

# "image|state|name|status|one-off" of every container of the project.
compose_containers() {
    "$DOCKER" ps -a --filter "label=${COMPOSE_PROJECT_LABEL}=${sami_name}" \
        --format '{{.Image}}|{{.State}}|{{.Names}}|{{.Status}}|{{.Label "com.docker.compose.oneoff"}}'
}

# check: tag (3), every container running (2), health (1). One-off containers (compose run)
# are ignored, and so are containers that exited with code 0 (one-shot jobs such as a
# migration) as long as something of the project runs.
compose_check() {
    local out image state cname status oneoff total=0 running=0 mismatch=0
    out=$(compose_containers) || sami_die "$SAMI_EXIT_FAIL" "cannot list containers"
    [ -n "$out" ] || sami_die "$SAMI_EXIT_FAIL" "project ${sami_name} has no containers (not deployed?)"
    while IFS='|' read -r image state cname status oneoff; do
        [ -n "$image$cname" ] || continue
        if [ "${oneoff,,}" = true ]; then
            continue
        fi
        if ! sami_image_matches "$image"; then
            sami_log "${cname}: runs ${image}, expected tag ${sami_tag}"
            mismatch=1
        fi
        if [ "$state" = running ]; then
            running=$((running + 1))
        elif [ "$state" = exited ] && [[ $status == "Exited (0)"* ]]; then
            continue
        else
            sami_log "${cname}: ${state}${status:+ (${status})}"
        fi
        total=$((total + 1))
    done <<<"$out"
    [ "$mismatch" = 0 ] || exit "$SAMI_EXIT_TAG_MISMATCH"
    if [ "$running" -eq 0 ]; then
        sami_log "no container of ${sami_name} is running"
        exit "$SAMI_EXIT_PARTIAL"
    fi
    [ "$running" -eq "$total" ] || exit "$SAMI_EXIT_PARTIAL"
    sami_health_check || exit "$SAMI_EXIT_FAIL"
}

compose_archive_check() {
    local out image state cname status oneoff
    out=$(compose_containers) || sami_die "$SAMI_EXIT_FAIL" "cannot list containers"
    while IFS='|' read -r image state cname status oneoff; do
        case $state in
            running | restarting | paused)
                sami_log "${cname}: still ${state}"
                exit "$SAMI_EXIT_FAIL"
                ;;
        esac
    done <<<"$out"
    return 0
}

compose_info() { sami_info_links; }
compose_notifications() { sami_notifications; }
