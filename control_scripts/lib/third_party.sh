# Internal third-party services on Docker Swarm (Redis, PostgreSQL). Sourced after common.sh
# and swarm.sh, then the engine's own file (redis.sh, postgres.sh) sets:
#   tp_engine        redis | postgres
#   tp_port_default  the port the engine listens on
#   tp_data_dir      where the image keeps its data
#   tp_max_size      the most members the set runs (postgres: 1)
#   tp_member        a function printing member i's service (YAML lines, 4 spaces in)
#   tp_ping          a function checking member i answers (in its container), 0 when it does
#   tp_seed_file     the seed file a manifest folder may hold (seed.redis, seed.sql)
#   tp_seed_run      a function feeding that file to member 0's container (stdin), 0 when it took it;
#                    otherwise it sets tp_seed_error to why
#
# The stack is named after the deployment; member i is service m<i> with its own volume data-<i>.
# Members are recorded in the swarm's own store (service labels sami.member, sami.size), so a
# resize knows the current size without Sami's database. Resizing up is allowed; down is
# refused unless --force (the data of the members removed is not handed over). Archive scales
# the members to 0 and keeps their volumes; cleanup removes the stack and keeps the volumes
# unless --delete-data, and says which. info prints the endpoint: "endpoint,HOST:PORT". seed (run
# by Sami once, after a clone's or a preview's fresh service first passes its check) feeds the
# engine's seed file of the manifest folder (tp_seed_file) to member 0 through its own client in its
# container (tp_seed_run); without the file there is nothing to seed.
#
# Deployment config:
#   network=overlay (default)  an attachable overlay network <name>_net, members reached as
#                              <name>_m<i>:<port> (endpoint_mode dnsrr)
#   network=host               members on the host's network, member i on port+i of advertise
#   port=<n>                   the port (default: the engine's)
#   advertise=<host>           host networking: the address others use (default 127.0.0.1)

tp_size() {
    local size=${SAMI_SIZE:-1}
    [[ $size =~ ^[1-9][0-9]?$ ]] || sami_die "$SAMI_EXIT_USAGE" "SAMI_SIZE=\"${size}\" is not a size (1-99)"
    printf '%s' "$size"
}

tp_port() { sami_config port "$tp_port_default"; }
tp_network() { sami_config network overlay; }

tp_member_port() {
    if [ "$(tp_network)" = host ]; then
        printf '%s' "$(($(tp_port) + $1))"
    else
        tp_port
    fi
}

tp_member_host() {
    if [ "$(tp_network)" = host ]; then
        sami_config advertise 127.0.0.1
    else
        printf '%s' "${sami_name}_m$1"
    fi
}

tp_endpoint() {
    printf '%s:%s' "$(tp_member_host 0)" "$(tp_member_port 0)"
}

tp_validate() {
    local size=${SAMI_SIZE:-1} network advertise
    if ! [[ $size =~ ^[1-9][0-9]?$ ]]; then
        sami_problem "size ${size} is not a number of members (1-99)."
    elif [ "$size" -gt "$tp_max_size" ]; then
        sami_problem "size ${size}: the built-in ${tp_engine} set runs at most ${tp_max_size} member(s)."
    fi
    network=$(tp_network)
    case $network in
        overlay | host) ;;
        *) sami_problem "network=\"${network}\" must be overlay or host." ;;
    esac
    advertise=$(sami_config advertise 127.0.0.1)
    [[ $advertise =~ ^[A-Za-z0-9.:-]{1,253}$ ]] || sami_problem "advertise=\"${advertise}\" is not a host name or address."
    [ -n "${SAMI_IMAGE:-}" ] || sami_problem "no image: the manifest needs image (e.g. local/${tp_engine})."
    if ! command -v "$DOCKER" >/dev/null 2>&1; then
        sami_problem "The docker client \"${DOCKER}\" was not found on this host."
    fi
}

tp_config_check() {
    tp_validate
    sami_fail_on_problems
}

# The stack file for size members, in a temporary file of its own (removed on exit).
tp_stack_file() {
    local size=$1 i network
    network=$(tp_network)
    tp_file=$(mktemp --suffix=.yml "${TMPDIR:-/tmp}/sami-${tp_engine}-stack.XXXXXX") \
        || sami_die "$SAMI_EXIT_FAIL" "cannot make a temporary stack file"
    trap 'rm -f -- "$tp_file"' EXIT
    {
        printf 'version: "3.8"\nservices:\n'
        for ((i = 0; i < size; i++)); do
            printf '  m%s:\n' "$i"
            printf '    image: "%s"\n' "$(sami_image_repo "$SAMI_IMAGE"):${sami_tag}"
            tp_member "$i"
            printf '    volumes: ["data-%s:%s"]\n' "$i" "$tp_data_dir"
            if [ "$network" = host ]; then
                printf '    networks: [hostnet]\n'
            else
                printf '    networks: [net]\n'
            fi
            printf '    deploy:\n      replicas: 1\n'
            [ "$network" = host ] || printf '      endpoint_mode: dnsrr\n'
            printf '      labels: {sami.member: "%s", sami.size: "%s", sami.engine: "%s"}\n' "$i" "$size" "$tp_engine"
        done
        printf 'volumes:\n'
        for ((i = 0; i < size; i++)); do
            printf '  data-%s: {labels: {sami.member: "%s"}}\n' "$i" "$i"
        done
        if [ "$network" = host ]; then
            printf 'networks:\n  hostnet: {external: true, name: host}\n'
        else
            printf 'networks:\n  net: {driver: overlay, attachable: true}\n'
        fi
    } >"$tp_file" || sami_die "$SAMI_EXIT_FAIL" "cannot write the stack file"
}

# Members the swarm runs now (0 when the stack is not deployed).
tp_current_size() {
    local names
    names=$("$DOCKER" service ls --filter "label=${SWARM_NS_LABEL}=${sami_name}" --filter "label=sami.member" \
        --format '{{.Name}}') || sami_die "$SAMI_EXIT_FAIL" "cannot list the services of ${sami_name} (is DOCKER_HOST a swarm manager?)"
    if [ -z "$names" ]; then
        printf 0
    else
        wc -l <<<"$names" | tr -d ' '
    fi
}

tp_deploy() {
    tp_validate
    sami_require_tag
    sami_fail_on_problems
    local size current
    size=$(tp_size)
    current=$(tp_current_size)
    if [ "$current" -gt "$size" ]; then
        if [ "$sami_force" != 1 ]; then
            sami_die "$SAMI_EXIT_FAIL" "resize of ${sami_name} from ${current} to ${size} members refused: the data of the members removed is not handed over to the others; run it again forced (--force) to shrink anyway"
        fi
        sami_log "shrinking ${sami_name} from ${current} to ${size} members (forced); the volumes of the members removed are kept until cleanup --delete-data"
    elif [ "$current" -gt 0 ] && [ "$current" -lt "$size" ]; then
        sami_log "growing ${sami_name} from ${current} to ${size} members"
    fi
    tp_stack_file "$size"
    sami_run_env "$DOCKER" stack deploy --prune -c "$tp_file" "$sami_name"
}

tp_create() { tp_deploy; }
tp_update() { tp_deploy; }

# The running container of member i on this node (the single-node swarm case), or nothing.
tp_container() {
    "$DOCKER" ps -q --filter "label=com.docker.swarm.service.name=${sami_name}_m$1" --filter status=running | head -n 1
}

# Why member i has no running container on this node: nothing (status 1) when its task runs on another
# node, which is not asked from here; otherwise its newest task's state and the last error its tasks
# had. (A server that exits at once is "running" to Swarm for a moment: a passing replica count does
# not prove that it runs.)
tp_not_running() {
    local here node current error first="" reason=""
    here=$("$DOCKER" info --format '{{.Name}}' 2>/dev/null)
    while IFS='|' read -r node current error; do
        if [ -z "$first" ]; then
            if [[ $current == Running* ]] && [ -n "$here" ] && [ "$node" != "$here" ]; then
                sami_log "member $1: runs on node ${node}, not asked from this one"
                return 1
            fi
            first=$current
        fi
        if [ -n "$error" ]; then
            reason=$error
            break
        fi
    done < <("$DOCKER" service ps --no-trunc --format '{{.Node}}|{{.CurrentState}}|{{.Error}}' "${sami_name}_m$1" \
        2>/dev/null | head -n 5)
    printf '%s%s' "${first:-no task}" "${reason:+; last error: ${reason}}"
}

tp_check() {
    swarm_check  # tag (3), running replicas (2)
    local size i container why
    size=$(tp_current_size)
    for ((i = 0; i < size; i++)); do
        container=$(tp_container "$i")
        if [ -z "$container" ]; then
            why=$(tp_not_running "$i") || continue
            sami_die "$SAMI_EXIT_FAIL" "member ${i} of ${sami_name} has no running container: ${why:0:300}"
        fi
        if ! tp_ping "$container" "$i"; then
            sami_die "$SAMI_EXIT_FAIL" "member ${i} of ${sami_name} does not answer yet"
        fi
    done
}

tp_archive() { swarm_archive; }
tp_unarchive() {
    if [ "$(tp_current_size)" = 0 ]; then
        sami_log "stack ${sami_name} is gone: deploying it again (its kept volumes are used again)"
        tp_deploy
        return
    fi
    swarm_unarchive
}
tp_archive_check() { swarm_archive_check; }

tp_volumes() {
    "$DOCKER" volume ls -q --filter "label=${SWARM_NS_LABEL}=${sami_name}"
}

tp_cleanup() {
    local names i volumes
    names=$("$DOCKER" service ls -q --filter "label=${SWARM_NS_LABEL}=${sami_name}") \
        || sami_die "$SAMI_EXIT_FAIL" "cannot list the services of ${sami_name}"
    if [ -n "$names" ]; then
        sami_run "$DOCKER" stack rm "$sami_name" >&2 || sami_die "$SAMI_EXIT_FAIL" "docker stack rm ${sami_name} failed"
    fi
    # Containers go a moment after their services; volumes in use cannot be removed before.
    for ((i = 0; i < 60; i++)); do
        [ -z "$("$DOCKER" ps -aq --filter "label=${SWARM_NS_LABEL}=${sami_name}")" ] && break
        sleep 1
    done
    volumes=$(tp_volumes) || sami_die "$SAMI_EXIT_FAIL" "cannot list the volumes of ${sami_name}"
    if [ -z "$volumes" ]; then
        echo "no data volumes of ${sami_name} are left"
    elif [ "$sami_delete_data" = 1 ]; then
        # shellcheck disable=SC2086 # one volume name per word
        sami_run "$DOCKER" volume rm $volumes >&2 || sami_die "$SAMI_EXIT_FAIL" "the data volumes of ${sami_name} could not be removed"
        echo "data volumes deleted: $(tr '\n' ' ' <<<"$volumes")"
    else
        echo "data volumes kept: $(tr '\n' ' ' <<<"$volumes")(they outlive the deployment; cleanup --delete-data deletes them with it)"
    fi
}

tp_seed() {
    local file container
    file="${sami_manifest_dir}/${tp_seed_file}"
    if [ ! -e "$file" ]; then
        echo "no ${tp_seed_file} in the manifest folder: ${sami_name} stays empty"
        return 0
    fi
    [ -f "$file" ] && [ ! -L "$file" ] || sami_die "$SAMI_EXIT_USAGE" "${tp_seed_file} must be a plain file of the manifest folder"
    container=$(tp_container 0)
    [ -n "$container" ] || sami_die "$SAMI_EXIT_FAIL" "member 0 of ${sami_name} has no running container on this node to seed"
    tp_seed_error=""
    tp_seed_run "$container" "$file" \
        || sami_die "$SAMI_EXIT_FAIL" "seeding ${sami_name} from ${tp_seed_file} failed: ${tp_seed_error:-no reason given}"
    echo "seeded ${sami_name} from ${tp_seed_file}"
}

tp_info() {
    printf 'endpoint,%s\n' "$(tp_endpoint)"
}

tp_notifications() { sami_notifications; }
