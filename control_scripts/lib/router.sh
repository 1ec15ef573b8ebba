# The entry router of blue-green releases on Docker Swarm. Sourced after common.sh and swarm.sh.
#
# One service, <name>_router, on the host's network: haproxy (scripts/images/router) listening on
# bind:port and forwarding every request to one server whose address is the live colour's backend.
# `switch` changes that address through haproxy's runtime API: one atomic change in the one running
# process, so the requests in flight finish on the former backend, every connection accepted after
# it goes to the new one, and no listener is closed or reopened (nothing is dropped). The live
# colour and backend are recorded in the router's volume (state), which the router reads when it
# starts again; the deployment config's colour and backend are only the first ones.
#
# Updates of the router itself start the new task first (haproxy binds with SO_REUSEPORT, so both
# listen during the overlap), wait for its health check, then stop the old one with SIGUSR1
# (haproxy's soft stop: it stops listening and finishes what it serves) within stop_grace_period.
#
# Deployment config:
#   port=<n>             the router's port (required)
#   bind=<IPv4>          the address it listens on (default 0.0.0.0)
#   colour=blue|green    the colour live at creation (default blue)
#   backend=HOST:PORT    that colour's backend at creation (required)
#   probe-path=/path     what switch and check ask through the router (default /)
#   switch-timeout=<s>   how long switch waits for the router and the new backend (default 60)

ROUTER_STATE=/var/lib/sami-router/live
ROUTER_ADMIN=/run/sami-router/admin.sock
ROUTER_MONITOR=/sami-router/healthz

router_port() { sami_config port; }
router_bind() { sami_config bind 0.0.0.0; }
router_probe_path() { sami_config probe-path /; }

# 0 when $1 is HOST:PORT with a host name (names may hold "_") or IPv4 address and a port 1-65535.
router_valid_backend() {
    local value=$1 port
    [[ $value =~ ^[A-Za-z0-9]([A-Za-z0-9._-]{0,251}[A-Za-z0-9])?:[0-9]{1,5}$ ]] || return 1
    port=${value##*:}
    [ "$((10#$port))" -ge 1 ] && [ "$((10#$port))" -le 65535 ]
}

router_valid_colour() { [[ $1 =~ ^(blue|green)$ ]]; }

router_validate() {
    local port bind colour backend probe timeout
    port=$(router_port)
    [ -n "$port" ] || sami_problem "port is missing: the router needs --deployment-config port=<n>."
    bind=$(router_bind)
    [[ $bind =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]] || sami_problem "bind=\"${bind}\" is not an IPv4 address."
    colour=$(sami_config colour blue)
    router_valid_colour "$colour" || sami_problem "colour=\"${colour}\" must be blue or green."
    backend=$(sami_config backend)
    if [ -z "$backend" ]; then
        sami_problem "backend is missing: the router needs --deployment-config backend=HOST:PORT (the live colour's)."
    elif ! router_valid_backend "$backend"; then
        sami_problem "backend=\"${backend}\" is not HOST:PORT."
    fi
    probe=$(router_probe_path)
    [[ $probe =~ ^/[A-Za-z0-9._~/%=\&-]{0,200}$ ]] || sami_problem "probe-path=\"${probe}\" is not a path."
    timeout=$(sami_config switch-timeout 60)
    [[ $timeout =~ ^[1-9][0-9]{0,3}$ ]] || sami_problem "switch-timeout=\"${timeout}\" is not a number of seconds (1-9999)."
    [ -n "${SAMI_IMAGE:-}" ] || sami_problem "no image: the manifest needs image (e.g. local/router)."
    if ! command -v "$DOCKER" >/dev/null 2>&1; then
        sami_problem "The docker client \"${DOCKER}\" was not found on this host."
    fi
}

router_config_check() {
    router_validate
    sami_fail_on_problems
}

# The address the router is asked on from its own container.
router_local_host() {
    local bind=$1
    if [ "$bind" = 0.0.0.0 ]; then printf 127.0.0.1; else printf '%s' "$bind"; fi
}

# The stack file, in a temporary file of its own (removed on exit).
router_stack_file() {
    local port bind local_host
    port=$((10#$(router_port)))
    bind=$(router_bind)
    local_host=$(router_local_host "$bind")
    router_file=$(mktemp --suffix=.yml "${TMPDIR:-/tmp}/sami-router-stack.XXXXXX") \
        || sami_die "$SAMI_EXIT_FAIL" "cannot make a temporary stack file"
    trap 'rm -f -- "$router_file"' EXIT
    cat >"$router_file" <<STACK || sami_die "$SAMI_EXIT_FAIL" "cannot write the stack file"
version: "3.8"
services:
  router:
    image: "$(sami_image_repo "$SAMI_IMAGE"):${sami_tag}"
    environment:
      ROUTER_PORT: "${port}"
      ROUTER_BIND: "${bind}"
      ROUTER_COLOUR: "$(sami_config colour blue)"
      ROUTER_BACKEND: "$(sami_config backend)"
    volumes: ["state:/var/lib/sami-router"]
    networks: [hostnet]
    stop_signal: SIGUSR1
    stop_grace_period: 30s
    healthcheck:
      test: ["CMD", "curl", "-fsS", "-o", "/dev/null", "--max-time", "2", "http://${local_host}:${port}${ROUTER_MONITOR}"]
      interval: 2s
      timeout: 3s
      retries: 3
      start_period: 10s
    deploy:
      replicas: 1
      update_config: {order: start-first, failure_action: rollback, monitor: 5s}
      rollback_config: {order: start-first}
      restart_policy: {condition: any, delay: 2s}
      labels: {sami.router: "1"}
volumes:
  state: {}
networks:
  hostnet: {external: true, name: host}
STACK
}

router_deploy() {
    router_validate
    sami_require_tag
    sami_fail_on_problems
    router_stack_file
    sami_run_env "$DOCKER" stack deploy --prune -c "$router_file" "$sami_name"
}

router_create() { router_deploy; }
router_update() { router_deploy; }

# Running containers of the router on this node (the node DOCKER_HOST points at), one id a line.
router_containers() {
    "$DOCKER" ps -q --filter "label=com.docker.swarm.service.name=${sami_name}_router" --filter status=running
}

# A command of haproxy's runtime API in container $1; its answer on stdout.
router_admin() {
    printf '%s\n' "$2" | "$DOCKER" exec -i "$1" socat -t 5 stdio "UNIX-CONNECT:${ROUTER_ADMIN}"
}

# The live server's address as ADDR:PORT (what haproxy forwards to now).
router_live_address() {
    router_admin "$1" "show servers state live" | awk '$2 == "live" && $4 == "live" { print $5 ":" $19; exit }'
}

# "colour backend" as recorded by the last switch, else as the router was created.
router_live_record() {
    local record
    record=$("$DOCKER" exec "$1" cat "$ROUTER_STATE" 2>/dev/null) && [ -n "$record" ] && { printf '%s' "$record"; return; }
    printf '%s %s' "$("$DOCKER" exec "$1" printenv ROUTER_COLOUR)" "$("$DOCKER" exec "$1" printenv ROUTER_BACKEND)"
}

# HTTP status of a GET from inside container $1 (000 when nothing answered).
router_status() {
    local code
    code=$("$DOCKER" exec "$1" curl -sS -o /dev/null -w '%{http_code}' --max-time "$3" -- "$2" 2>/dev/null)
    printf '%s' "${code:-000}"
}

router_answered() { [[ $1 =~ ^[1-4][0-9][0-9]$ ]]; }

# "http://host:port" of the router, asked from inside its container.
router_entry_url() {
    local port bind
    port=$("$DOCKER" exec "$1" printenv ROUTER_PORT) || return 1
    bind=$("$DOCKER" exec "$1" printenv ROUTER_BIND) || bind=0.0.0.0
    printf 'http://%s:%s' "$(router_local_host "$bind")" "$port"
}

# Extra fields of check's report for the router service: the live colour and backend.
swarm_report_more() {
    local container record
    [ "$1" = "${sami_name}_router" ] || return 0
    container=$(router_containers | head -n 1)
    [ -n "$container" ] || return 0
    record=$(router_live_record "$container") || return 0
    printf ',"colour":%s,"backend":%s' "$(sami_json_string "${record%% *}")" "$(sami_json_string "${record#* }")"
}

router_check() {
    swarm_check  # report, tag (3), running replicas (2), SAMI_HEALTH_URL (1)
    local container entry code record
    container=$(router_containers | head -n 1)
    [ -n "$container" ] || { sami_log "no running router container on this node to ask"; return 0; }
    entry=$(router_entry_url "$container") || sami_die "$SAMI_EXIT_FAIL" "cannot read the router's settings"
    code=$(router_status "$container" "${entry}${ROUTER_MONITOR}" 5)
    [ "$code" = 200 ] || sami_die "$SAMI_EXIT_FAIL" "the router of ${sami_name} does not answer (HTTP ${code})"
    record=$(router_live_record "$container")
    code=$(router_status "$container" "${entry}$(router_probe_path)" 10)
    router_answered "$code" \
        || sami_die "$SAMI_EXIT_FAIL" "the live backend (${record}) does not answer through the router (HTTP ${code})"
}

router_switch() {
    router_valid_colour "$sami_colour" || sami_die "$SAMI_EXIT_USAGE" "--colour must be blue or green"
    router_valid_backend "$sami_backend" || sami_die "$SAMI_EXIT_USAGE" "--backend must be HOST:PORT"
    local probe timeout deadline containers container entry host port addr old old_record code answer now
    probe=$(router_probe_path)
    [[ $probe =~ ^/[A-Za-z0-9._~/%=\&-]{0,200}$ ]] || sami_die "$SAMI_EXIT_USAGE" "probe-path=\"${probe}\" is not a path"
    timeout=$(sami_config switch-timeout 60)
    [[ $timeout =~ ^[1-9][0-9]{0,3}$ ]] || sami_die "$SAMI_EXIT_USAGE" "switch-timeout=\"${timeout}\" is not a number of seconds"
    deadline=$((SECONDS + timeout))
    # One router task: during an update of the router two run for a moment; wait for the new one alone.
    while :; do
        containers=$(router_containers) || sami_die "$SAMI_EXIT_FAIL" "cannot list the containers of ${sami_name}_router"
        [ -n "$containers" ] && [ "$(wc -l <<<"$containers")" -eq 1 ] && break
        [ "$SECONDS" -lt "$deadline" ] \
            || sami_die "$SAMI_EXIT_FAIL" "${sami_name}: expected one running router container on this node, found $(grep -c . <<<"$containers")"
        sleep 1
    done
    container=$containers
    entry=$(router_entry_url "$container") || sami_die "$SAMI_EXIT_FAIL" "cannot read the router's settings"
    old=$(router_live_address "$container")
    [ -n "$old" ] || sami_die "$SAMI_EXIT_FAIL" "cannot read the live backend from the router's runtime API"
    old_record=$(router_live_record "$container")
    host=${sami_backend%:*}
    port=$((10#${sami_backend##*:}))
    if [[ $host =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]]; then
        addr=$host
    else
        addr=$("$DOCKER" exec "$container" getent ahostsv4 "$host" | awk 'NR == 1 { print $1 }')
        [ -n "$addr" ] || sami_die "$SAMI_EXIT_FAIL" "${host} does not resolve in the router; ${old_record} stays live"
    fi
    # The new backend must answer from the router's network before any traffic goes to it.
    code=$(router_status "$container" "http://${addr}:${port}${probe}" 10)
    router_answered "$code" \
        || sami_die "$SAMI_EXIT_FAIL" "${sami_colour} (${sami_backend}) does not answer from the router (HTTP ${code}); ${old_record} stays live"
    # The switch: one change of the live server's address in the running haproxy.
    sami_log "switching ${sami_name} from ${old_record} to ${sami_colour} ${sami_backend} (${addr}:${port})"
    answer=$(router_admin "$container" "set server live/live addr ${addr} port ${port}")
    now=$(router_live_address "$container")
    if [ "$now" != "${addr}:${port}" ]; then
        router_admin "$container" "set server live/live addr ${old%:*} port ${old##*:}" >/dev/null
        sami_die "$SAMI_EXIT_FAIL" "the router did not take ${addr}:${port} (${answer:0:200}); ${old_record} stays live"
    fi
    while :; do
        code=$(router_status "$container" "${entry}${probe}" 10)
        router_answered "$code" && break
        if [ "$SECONDS" -ge "$deadline" ]; then
            router_admin "$container" "set server live/live addr ${old%:*} port ${old##*:}" >/dev/null
            sami_die "$SAMI_EXIT_FAIL" "${sami_colour} does not answer through the router (HTTP ${code}); switched back to ${old_record}"
        fi
        sleep 1
    done
    # Recorded for the next start of the router (the runtime change lives in the process only).
    if ! printf '%s %s\n' "$sami_colour" "$sami_backend" | "$DOCKER" exec -i "$container" \
        sh -c 'cat > "$1.new" && mv -f "$1.new" "$1"' sh "$ROUTER_STATE"; then
        router_admin "$container" "set server live/live addr ${old%:*} port ${old##*:}" >/dev/null
        sami_die "$SAMI_EXIT_FAIL" "cannot record the live colour in the router's volume; switched back to ${old_record}"
    fi
    printf 'live: %s %s (was %s)\n' "$sami_colour" "$sami_backend" "$old_record"
}

router_archive() { swarm_archive; }
router_unarchive() {
    swarm_load_services
    if [ "${#swarm_service_names[@]}" -eq 0 ]; then
        sami_log "stack ${sami_name} is gone: deploying it again"
        router_deploy
        return
    fi
    swarm_unarchive
}
router_archive_check() { swarm_archive_check; }
router_cleanup() { swarm_cleanup; }

router_info() {
    local port bind
    port=$(router_port)
    bind=$(router_bind)
    sami_info_links
    [[ $port =~ ^[0-9]+$ ]] && printf 'entry,http://%s:%s/\n' "$(router_local_host "$bind")" "$((10#$port))"
}

router_notifications() { sami_notifications; }

# --- the stable entry of a blue-green environment on swarm (the swarm set's switch) ---------------
#
# A blue-green environment whose entry component is a swarm stack gets a router in front of its two
# colours: a stack named after the stable entry (the entry's deployment name without a colour, the
# --name of switch), the router above. The first switch deploys it with the colour it switches to
# live; every later one is router_switch (haproxy's runtime API, nothing dropped). The entry
# component's deployment config says where it listens and what it runs:
#   entry-port=<n>        the port of the stable entry (required)
#   entry-bind=<IPv4>     the address it listens on (default 0.0.0.0)
#   router-image=IMAGE    the router's image, e.g. local/router:1 (required; scripts/images/router)
# Each colour's entry listens on a port of its own (blue_green.colours in the environment file),
# which Sami passes as --backend.

# Wait until one router task runs and the live colour answers through it (within switch-timeout).
router_wait_live() {
    local timeout deadline containers entry code=000
    timeout=$(sami_config switch-timeout 60)
    [[ $timeout =~ ^[1-9][0-9]{0,3}$ ]] || sami_die "$SAMI_EXIT_USAGE" "switch-timeout=\"${timeout}\" is not a number of seconds"
    deadline=$((SECONDS + timeout))
    while :; do
        containers=$(router_containers) || containers=""
        if [ -n "$containers" ] && [ "$(wc -l <<<"$containers")" -eq 1 ] \
            && entry=$(router_entry_url "$containers"); then
            code=$(router_status "$containers" "${entry}$(router_probe_path)" 5)
            router_answered "$code" && return 0
        fi
        [ "$SECONDS" -lt "$deadline" ] \
            || sami_die "$SAMI_EXIT_FAIL" "the router of ${sami_name} did not answer within ${timeout}s (HTTP ${code})"
        sleep 1
    done
}

swarm_switch() {
    router_valid_colour "$sami_colour" || sami_die "$SAMI_EXIT_USAGE" "--colour must be blue or green"
    router_valid_backend "$sami_backend" || sami_die "$SAMI_EXIT_USAGE" "--backend must be HOST:PORT"
    local port image
    port=$(sami_config entry-port)
    if ! [[ $port =~ ^[0-9]{1,5}$ ]] || [ "$((10#$port))" -lt 1 ] || [ "$((10#$port))" -gt 65535 ]; then
        sami_die "$SAMI_EXIT_USAGE" "entry-port=\"${port}\": the entry's deployment config needs entry-port=<n>, the port the stable entry ${sami_name} listens on"
    fi
    image=$(sami_config router-image)
    [[ $image =~ ^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}$ ]] \
        || sami_die "$SAMI_EXIT_USAGE" "router-image=\"${image}\": the entry's deployment config needs router-image=IMAGE:TAG (haproxy, scripts/images/router)"
    # What the router's functions read: its port, address and image (the colour's own are for the colour).
    sami_deploy_config+=("port=$((10#$port))" "bind=$(sami_config entry-bind 0.0.0.0)")
    SAMI_IMAGE=$(sami_image_repo "$image")
    sami_tag=$(sami_image_tag "$image")
    if ! "$DOCKER" service inspect "${sami_name}_router" >/dev/null 2>&1; then
        sami_deploy_config+=("colour=${sami_colour}" "backend=${sami_backend}")
        sami_log "${sami_name} has no router yet: starting one with ${sami_colour} (${sami_backend}) live"
        router_deploy || sami_die "$SAMI_EXIT_FAIL" "cannot deploy the router of ${sami_name}"
        router_wait_live
        printf 'live: %s %s (a new router on port %s)\n' "$sami_colour" "$sami_backend" "$((10#$port))"
        return 0
    fi
    router_switch
}
