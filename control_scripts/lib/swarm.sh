# Docker Swarm operations, shared by the swarm and cron sets. Sourced after common.sh.
#
# The stack is named after the deployment. Services are found through the label
# com.docker.stack.namespace=<name> that `docker stack deploy` puts on everything it makes.
# Archive state lives in service labels (in the swarm's own store), so it survives restarts
# of the bot:
#   sami.archived-replicas=N   replicas a replicated service had before archive
#   sami.archived-global=1     a global service was parked by an impossible constraint

SWARM_NS_LABEL=com.docker.stack.namespace
SWARM_PARK_CONSTRAINT=node.labels.sami-archived==true

# Stack files: deployment-config stack-file (comma separated, relative to the manifest
# folder), else stack.yml or stack.yaml.
swarm_stack_files() {
    local list item items
    swarm_files=()
    list=$(sami_config stack-file)
    if [ -n "$list" ]; then
        IFS=, read -r -a items <<<"$list"
        for item in "${items[@]}"; do
            item=${item# }
            item=${item% }
            [ -n "$item" ] && swarm_files+=("$item")
        done
    elif [ -f "$sami_manifest_dir/stack.yaml" ] && [ ! -f "$sami_manifest_dir/stack.yml" ]; then
        swarm_files=(stack.yaml)
    else
        swarm_files=(stack.yml)
    fi
}

swarm_validate() {
    sami_require_manifest_dir
    local file resolve
    swarm_stack_files
    for file in "${swarm_files[@]}"; do
        if ! sami_safe_relative_path "$file"; then
            sami_problem "Stack file \"${file}\" must be a path inside the manifest folder."
        elif [ -d "$sami_manifest_dir" ] && [ ! -f "$sami_manifest_dir/$file" ]; then
            sami_problem "Stack file \"${file}\" was not found in the manifest folder; add it or set --deployment-config stack-file=<file>."
        fi
    done
    resolve=$(sami_config resolve-image)
    case $resolve in
        "" | always | changed | never) ;;
        *) sami_problem "Override resolve-image=\"${resolve}\" must be always, changed or never." ;;
    esac
    if ! command -v "$DOCKER" >/dev/null 2>&1; then
        sami_problem "The docker client \"${DOCKER}\" was not found on this host."
    fi
}

swarm_config_check() {
    swarm_validate
    sami_fail_on_problems
}

swarm_deploy() {
    swarm_validate
    sami_require_tag
    sami_fail_on_problems
    local args=(stack deploy --prune --with-registry-auth) file resolve
    resolve=$(sami_config resolve-image)
    [ -n "$resolve" ] && args+=(--resolve-image "$resolve")
    for file in "${swarm_files[@]}"; do
        args+=(-c "$file")
    done
    cd -- "$sami_manifest_dir" || sami_die "$SAMI_EXIT_FAIL" "cannot enter the manifest folder"
    sami_run_env "$DOCKER" "${args[@]}" "$sami_name"
}

swarm_create() { swarm_deploy; }
swarm_update() { swarm_deploy; }

swarm_services() {
    "$DOCKER" service ls --filter "label=${SWARM_NS_LABEL}=${sami_name}" --format '{{.Name}}'
}

# One line "mode|replicas|image|archived-replicas|archived-global|update-state".
swarm_service_state() {
    "$DOCKER" service inspect --format \
        '{{if .Spec.Mode.Replicated}}replicated|{{.Spec.Mode.Replicated.Replicas}}{{else}}global|{{end}}|{{.Spec.TaskTemplate.ContainerSpec.Image}}|{{index .Spec.Labels "sami.archived-replicas"}}|{{index .Spec.Labels "sami.archived-global"}}|{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}' \
        "$1"
}

# Tasks of a service, one "desired|current|image|error" line each, newest first per slot.
swarm_tasks() {
    "$DOCKER" service ps --no-trunc --format '{{.DesiredState}}|{{.CurrentState}}|{{.Image}}|{{.Error}}' "$1"
}

swarm_load_services() {
    local out
    if ! out=$(swarm_services); then
        sami_die "$SAMI_EXIT_FAIL" "cannot list the services of stack ${sami_name} (is DOCKER_HOST a swarm manager?)"
    fi
    swarm_service_names=()
    [ -n "$out" ] && mapfile -t swarm_service_names <<<"$out"
    return 0
}

# The container env entries of a service whose names are those of the overrides Sami passed.
swarm_passed_env() {
    local line
    [ -n "$swarm_override_names" ] || return 0
    "$DOCKER" service inspect --format '{{range .Spec.TaskTemplate.ContainerSpec.Env}}{{println .}}{{end}}' "$1" \
        | while IFS= read -r line; do
            [[ $line == *=* ]] || continue
            grep -qxF -- "${line%%=*}" <<<"$swarm_override_names" && printf '%s\n' "$line"
        done
}

# check for long-running services: tag (3), then running replicas (2), then health (1). Its stdout is
# the report of what runs (every service's image, replicas and passed overrides; empty: no stack).
swarm_check() {
    swarm_load_services
    if [ "${#swarm_service_names[@]}" -eq 0 ]; then
        sami_report_print
        sami_die "$SAMI_EXIT_FAIL" "stack ${sami_name} has no services (not deployed?)"
    fi
    local svc state mode replicas image archived_replicas archived_global update_state
    local mismatch=0 partial=0 desired running task_desired current task_image err total=0
    local swarm_override_names env_items
    swarm_override_names=$(sami_override_env_names)
    for svc in "${swarm_service_names[@]}"; do
        state=$(swarm_service_state "$svc") || sami_die "$SAMI_EXIT_FAIL" "cannot inspect ${svc}"
        IFS='|' read -r mode replicas image archived_replicas archived_global update_state <<<"$state"
        if ! sami_image_matches "$image"; then
            sami_log "${svc}: runs ${image%%@*}, expected tag ${sami_tag}"
            mismatch=1
        fi
        desired=0
        running=0
        while IFS='|' read -r task_desired current task_image err; do
            [ "$task_desired" = Running ] || continue
            desired=$((desired + 1))
            if [[ $current == Running* ]] && [ "${task_image%%@*}" = "${image%%@*}" ]; then
                running=$((running + 1))
            fi
        done < <(swarm_tasks "$svc")
        if [ "$mode" = replicated ]; then
            desired=$replicas
        elif [ -n "$archived_global" ]; then
            desired=1
        fi
        total=$((total + desired))
        if [ "$running" -lt "$desired" ]; then
            sami_log "${svc}: ${running}/${desired} replicas running${update_state:+ (update ${update_state})}"
            partial=1
        fi
        env_items=()
        mapfile -t env_items < <(swarm_passed_env "$svc")
        sami_report_more=""
        declare -F swarm_report_more >/dev/null && sami_report_more=$(swarm_report_more "$svc")
        sami_report_add "$svc" "${image%%@*}" "$([ "$mode" = replicated ] && printf '%s' "$replicas")" \
            "$running" "${env_items[@]}"
    done
    sami_report_print
    if [ "$total" -eq 0 ]; then
        sami_log "no service of ${sami_name} wants a running task (archived?)"
        partial=1
    fi
    [ "$mismatch" = 0 ] || exit "$SAMI_EXIT_TAG_MISMATCH"
    [ "$partial" = 0 ] || exit "$SAMI_EXIT_PARTIAL"
    sami_health_check || exit "$SAMI_EXIT_FAIL"
}

swarm_archive() {
    swarm_load_services
    local svc state mode replicas image archived_replicas archived_global update_state
    for svc in "${swarm_service_names[@]}"; do
        state=$(swarm_service_state "$svc") || sami_die "$SAMI_EXIT_FAIL" "cannot inspect ${svc}"
        IFS='|' read -r mode replicas image archived_replicas archived_global update_state <<<"$state"
        if [ "$mode" = replicated ]; then
            if [ "$replicas" -gt 0 ]; then
                sami_run "$DOCKER" service update --detach --no-resolve-image \
                    --label-add "sami.archived-replicas=${replicas}" --replicas 0 "$svc" >/dev/null \
                    || sami_die "$SAMI_EXIT_FAIL" "cannot scale ${svc} to 0"
            fi
        elif [ -z "$archived_global" ]; then
            sami_run "$DOCKER" service update --detach --no-resolve-image \
                --label-add sami.archived-global=1 --constraint-add "$SWARM_PARK_CONSTRAINT" \
                "$svc" >/dev/null || sami_die "$SAMI_EXIT_FAIL" "cannot park ${svc}"
        fi
    done
}

swarm_unarchive() {
    swarm_load_services
    if [ "${#swarm_service_names[@]}" -eq 0 ]; then
        sami_log "stack ${sami_name} is gone: deploying it again"
        swarm_deploy
        return
    fi
    local svc state mode replicas image archived_replicas archived_global update_state
    for svc in "${swarm_service_names[@]}"; do
        state=$(swarm_service_state "$svc") || sami_die "$SAMI_EXIT_FAIL" "cannot inspect ${svc}"
        IFS='|' read -r mode replicas image archived_replicas archived_global update_state <<<"$state"
        if [ "$mode" = replicated ] && [[ $archived_replicas =~ ^[0-9]+$ ]]; then
            sami_run "$DOCKER" service update --detach --no-resolve-image \
                --replicas "$archived_replicas" --label-rm sami.archived-replicas "$svc" >/dev/null \
                || sami_die "$SAMI_EXIT_FAIL" "cannot scale ${svc} back to ${archived_replicas}"
        elif [ "$mode" = global ] && [ -n "$archived_global" ]; then
            sami_run "$DOCKER" service update --detach --no-resolve-image \
                --constraint-rm "$SWARM_PARK_CONSTRAINT" --label-rm sami.archived-global \
                "$svc" >/dev/null || sami_die "$SAMI_EXIT_FAIL" "cannot unpark ${svc}"
        fi
    done
}

# 0 when no service of the stack wants or runs a task.
swarm_archive_check() {
    swarm_load_services
    local svc state mode replicas image archived_replicas archived_global update_state
    local task_desired current task_image err
    for svc in "${swarm_service_names[@]}"; do
        state=$(swarm_service_state "$svc") || sami_die "$SAMI_EXIT_FAIL" "cannot inspect ${svc}"
        IFS='|' read -r mode replicas image archived_replicas archived_global update_state <<<"$state"
        if [ "$mode" = replicated ] && [ "$replicas" != 0 ]; then
            sami_log "${svc}: still scaled to ${replicas}"
            exit "$SAMI_EXIT_FAIL"
        fi
        if [ "$mode" = global ] && [ -z "$archived_global" ]; then
            sami_log "${svc}: global service not parked"
            exit "$SAMI_EXIT_FAIL"
        fi
        while IFS='|' read -r task_desired current task_image err; do
            case $current in
                Running* | Starting* | Preparing* | Ready* | Assigned* | Accepted*)
                    sami_log "${svc}: a task is still ${current%% *}"
                    exit "$SAMI_EXIT_FAIL"
                    ;;
            esac
        done < <(swarm_tasks "$svc")
    done
}

swarm_leftovers() {
    "$DOCKER" service ls -q --filter "label=${SWARM_NS_LABEL}=${sami_name}"
    "$DOCKER" ps -aq --filter "label=${SWARM_NS_LABEL}=${sami_name}"
    "$DOCKER" network ls -q --filter "label=${SWARM_NS_LABEL}=${sami_name}"
}

swarm_cleanup() {
    local timeout=${SAMI_CLEANUP_TIMEOUT:-120} deadline left volumes volume
    [[ $timeout =~ ^[0-9]+$ ]] || timeout=120
    deadline=$((SECONDS + timeout))
    if [ -n "$(swarm_leftovers)" ] \
        || [ -n "$("$DOCKER" config ls -q --filter "label=${SWARM_NS_LABEL}=${sami_name}")" ] \
        || [ -n "$("$DOCKER" secret ls -q --filter "label=${SWARM_NS_LABEL}=${sami_name}")" ]; then
        sami_run "$DOCKER" stack rm "$sami_name" >&2 || sami_log "docker stack rm failed; waiting anyway"
    fi
    local tries=0
    while left=$(swarm_leftovers) && [ -n "$left" ]; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            sami_die "$SAMI_EXIT_FAIL" "stack ${sami_name} still has services, containers or networks after ${timeout}s"
        fi
        sleep 1
        # A network still used by a task that was shutting down is not removed by the first
        # `stack rm`; asking again once the tasks are gone removes it.
        tries=$((tries + 1))
        if [ $((tries % 3)) -eq 0 ]; then
            "$DOCKER" stack rm "$sami_name" >/dev/null 2>&1 || :
        fi
    done
    while :; do
        volumes=$("$DOCKER" volume ls -q --filter "label=${SWARM_NS_LABEL}=${sami_name}") \
            || sami_die "$SAMI_EXIT_FAIL" "cannot list volumes"
        [ -z "$volumes" ] && break
        while IFS= read -r volume; do
            [ -n "$volume" ] && { sami_run "$DOCKER" volume rm "$volume" >/dev/null 2>&1 || :; }
        done <<<"$volumes"
        [ -z "$("$DOCKER" volume ls -q --filter "label=${SWARM_NS_LABEL}=${sami_name}")" ] && break
        if [ "$SECONDS" -ge "$deadline" ]; then
            sami_die "$SAMI_EXIT_FAIL" "volumes of ${sami_name} still in use after ${timeout}s"
        fi
        sleep 1
    done
}

swarm_info() { sami_info_links; }
swarm_notifications() { sami_notifications; }
