# docker compose operations. Sourced after common.sh.
#
# The compose project is named after the deployment (-p NAME). The client is, in order:
# $COMPOSE (one executable, e.g. docker-compose), `$DOCKER compose` when the compose v2
# plugin answers, else docker-compose (v1) from PATH.

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
    compose_prepare
    compose_run stop
}

compose_unarchive() {
    compose_prepare
    compose_run up -d --remove-orphans
}

compose_cleanup() {
    compose_prepare
    compose_run down -v --remove-orphans
}

# "image|state" of every container of the project.
compose_containers() {
    "$DOCKER" ps -a --filter "label=com.docker.compose.project=${sami_name}" \
        --format '{{.Image}}|{{.State}}|{{.Names}}'
}

# check: tag (3), every container running (2), health (1).
compose_check() {
    local out image state cname total=0 running=0 mismatch=0
    out=$(compose_containers) || sami_die "$SAMI_EXIT_FAIL" "cannot list containers"
    [ -n "$out" ] || sami_die "$SAMI_EXIT_FAIL" "project ${sami_name} has no containers (not deployed?)"
    while IFS='|' read -r image state cname; do
        total=$((total + 1))
        if ! sami_image_matches "$image"; then
            sami_log "${cname}: runs ${image}, expected tag ${sami_tag}"
            mismatch=1
        fi
        if [ "$state" = running ]; then
            running=$((running + 1))
        else
            sami_log "${cname}: ${state}"
        fi
    done <<<"$out"
    [ "$mismatch" = 0 ] || exit "$SAMI_EXIT_TAG_MISMATCH"
    [ "$running" -eq "$total" ] || exit "$SAMI_EXIT_PARTIAL"
    sami_health_check || exit "$SAMI_EXIT_FAIL"
}

compose_archive_check() {
    local out image state cname
    out=$(compose_containers) || sami_die "$SAMI_EXIT_FAIL" "cannot list containers"
    while IFS='|' read -r image state cname; do
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
