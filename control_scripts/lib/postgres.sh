# PostgreSQL as an internal third-party service (see third_party.sh), one member: streaming
# replicas are not part of the built-in set, so size above 1 is refused. The image takes the
# public postgres image's settings (scripts/images/postgres builds one from Debian's packages):
# POSTGRES_PASSWORD from the manifest's secret POSTGRES_PASSWORD (SAMI_SECRET_POSTGRES_PASSWORD),
# POSTGRES_USER and POSTGRES_DB from the deployment config db-user= and database= (default postgres; the
# database defaults to the user), data in /var/lib/postgresql/data. The key is db-user, not user: an
# override named user would set $USER, which every set refuses.
tp_engine=postgres
tp_port_default=5432
tp_data_dir=/var/lib/postgresql/data
tp_max_size=1

# The configured user and database.
postgres_user() { sami_config db-user postgres; }
postgres_database() { sami_config database "$(postgres_user)"; }

tp_member() {
    local user database
    user=$(postgres_user)
    database=$(postgres_database)
    printf '    command: ["postgres", "-p", "%s"]\n' "$(tp_member_port "$1")"
    printf '    environment:\n'
    printf '      POSTGRES_USER: "%s"\n      POSTGRES_DB: "%s"\n' "$user" "$database"
    # Interpolated by docker stack deploy from its own environment: the value is not in the file.
    printf '      POSTGRES_PASSWORD: "${SAMI_POSTGRES_PASSWORD}"\n'
}

postgres_validate() {
    local user database
    user=$(postgres_user)
    database=$(postgres_database)
    [[ $user =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || sami_problem "db-user=\"${user}\" must be lowercase letters, digits and _."
    [[ $database =~ ^[a-z_][a-z0-9_]{0,62}$ ]] \
        || sami_problem "database=\"${database}\" must be lowercase letters, digits and _."
    [ -n "${SAMI_SECRET_POSTGRES_PASSWORD:-}" ] \
        || sami_problem "no password: list POSTGRES_PASSWORD in the manifest's secrets (Sami reads SAMI_SCRIPT_SECRET_POSTGRES_PASSWORD)."
}

tp_ping() {
    local answer
    answer=$("$DOCKER" exec "$1" pg_isready -h 127.0.0.1 -p "$(tp_member_port "$2")" 2>&1)
    [[ $answer == *"accepting connections"* ]] || { sami_log "member $2: pg_isready: ${answer:0:200}"; return 1; }
}

tp_seed_file=seed.sql

# seed.sql runs through psql in member 0's container, over its local socket (trusted in the image), as
# the configured user on the configured database; the first error stops it and fails the seed.
tp_seed_run() {
    local user database output
    user=$(postgres_user)
    database=$(postgres_database)
    output=$("$DOCKER" exec -i "$1" psql -X -q -v ON_ERROR_STOP=1 -p "$(tp_member_port 0)" -U "$user" \
        -d "$database" -f - <"$2" 2>&1) && return 0
    tp_seed_error=$(grep -m 1 -E 'ERROR|FATAL|error' <<<"$output" | cut -c 1-300)
    [ -n "$tp_seed_error" ] || tp_seed_error=${output:0:300}
    return 1
}

export SAMI_POSTGRES_PASSWORD=${SAMI_SECRET_POSTGRES_PASSWORD:-}

postgres_config_check() { postgres_validate; tp_config_check; }
postgres_create() { postgres_validate; tp_create; }
postgres_update() { postgres_validate; tp_update; }
postgres_check() { tp_check; }
postgres_archive() { tp_archive; }
postgres_unarchive() { postgres_validate; tp_unarchive; }
postgres_archive_check() { tp_archive_check; }
postgres_cleanup() { tp_cleanup; }
postgres_info() { tp_info; }
postgres_seed() { tp_seed; }
postgres_notifications() { tp_notifications; }
