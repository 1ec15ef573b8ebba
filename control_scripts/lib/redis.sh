# Redis as an internal third-party service (see third_party.sh). Member 0 is the primary; every
# other member replicates it (--replicaof). The image needs redis-server and redis-cli
# (scripts/images/redis builds one from Debian's packages); data in /data, append-only.
tp_engine=redis
tp_port_default=6379
tp_data_dir=/data
tp_max_size=99

tp_member() {
    local i=$1 port
    port=$(tp_member_port "$i")
    printf '    command: ["redis-server", "--protected-mode", "no", "--port", "%s", "--dir", "/data", "--appendonly", "yes"' "$port"
    if [ "$i" -gt 0 ]; then
        printf ', "--replicaof", "%s", "%s"' "$(tp_member_host 0)" "$(tp_member_port 0)"
    fi
    printf ']\n'
}

tp_ping() {
    local answer
    answer=$("$DOCKER" exec "$1" redis-cli -p "$(tp_member_port "$2")" ping 2>&1)
    [ "$answer" = PONG ] || { sami_log "member $2: redis-cli ping answered: ${answer:0:200}"; return 1; }
}

tp_seed_file=seed.redis

# seed.redis holds redis-cli commands, one a line. redis-cli exits 0 even when a command fails, so its
# answers are read in --no-raw form, where an error reply (and nothing else) starts with "(error)".
tp_seed_run() {
    local answers errors
    answers=$("$DOCKER" exec -i "$1" redis-cli --no-raw -p "$(tp_member_port 0)" <"$2" 2>&1) || {
        tp_seed_error="redis-cli: ${answers:0:300}"
        return 1
    }
    errors=$(grep -c '^(error)' <<<"$answers")
    if [ "$errors" -gt 0 ]; then
        tp_seed_error="${errors} command(s) failed, the first: $(grep -m 1 '^(error)' <<<"$answers" | cut -c 9-308)"
        return 1
    fi
}

redis_config_check() { tp_config_check; }
redis_create() { tp_create; }
redis_update() { tp_update; }
redis_check() { tp_check; }
redis_archive() { tp_archive; }
redis_unarchive() { tp_unarchive; }
redis_archive_check() { tp_archive_check; }
redis_cleanup() { tp_cleanup; }
redis_info() { tp_info; }
redis_seed() { tp_seed; }
redis_notifications() { tp_notifications; }
