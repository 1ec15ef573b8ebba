# Shared code of Sami's built-in control scripts (bash). Sourced, never executed.
#
# Every script is called as
#   <op> --project-name P --base-domain D --namespace NS --name NAME --service SVC
#        --environment ENV --tag TAG --manifest-dir DIR
#        [--application-config K=V]... [--deployment-config K=V]...
#        [--old-status S --new-status S]          (notifications only)
#        [--colour blue|green --backend HOST:PORT] (switch only)
# Flags come in any order, as "--flag value" or "--flag=value"; unknown flags (with their
# value) are ignored so that newer bots can call older scripts. See ../README.md.

# Exit codes shared by all sets.
SAMI_EXIT_FAIL=1
SAMI_EXIT_PARTIAL=2
SAMI_EXIT_TAG_MISMATCH=3
SAMI_EXIT_USAGE=64

sami_type=""
sami_op=""
sami_project_name=""
sami_base_domain=""
sami_namespace=""
sami_name=""
sami_service=""
sami_environment=""
sami_tag=""
sami_manifest_dir=""
# The Sami target the deployment runs on (--target, given with a targets file; else SAMI_TARGET).
sami_target=${SAMI_TARGET:-}
# Third-party sets: update --force shrinks a service; cleanup --delete-data removes its volumes.
sami_force=0
sami_delete_data=0
sami_endpoint=""  # seed: the service's endpoint HOST:PORT, when Sami knows it (the built-in sets find member 0 themselves)
sami_old_status=""
sami_new_status=""
# switch (blue-green): the colour the entry switches to, and its backend (HOST:PORT, or the folder a
# static site serves).
sami_colour=""
sami_backend=""
sami_app_config=()
sami_deploy_config=()
# "KEY=VALUE" strings for the tool's variable substitution, built by sami_build_env.
sami_env=()
# Problems found by the validators; printed by config_check, fatal elsewhere.
sami_problems=()

DOCKER=${DOCKER:-docker}
HELM=${HELM:-helm}
KUBECTL=${KUBECTL:-kubectl}

sami_log() {
    printf '%s\n' "sami[$sami_type/$sami_op]: $*" >&2
}

# Print an error and exit. config_check's stdout is what the user sees, so errors go there
# for config_check and to stderr for every other operation.
sami_die() {
    local code=$1
    shift
    if [ "$sami_op" = config_check ]; then
        printf '%s\n' "$*"
    else
        printf '%s\n' "sami[$sami_type/$sami_op]: error: $*" >&2
    fi
    exit "$code"
}

sami_problem() {
    sami_problems+=("$*")
}

# Log a command line then run it. Arguments are never re-split or evaluated.
sami_run() {
    local quoted
    printf -v quoted ' %q' "$@"
    printf '%s\n' "+${quoted}" >&2
    "$@"
}

sami_parse_args() {
    local flag value
    while [ $# -gt 0 ]; do
        flag=$1
        shift
        case $flag in
            --*=*)
                value=${flag#*=}
                flag=${flag%%=*}
                ;;
            --*)
                if [ $# -gt 0 ] && [[ $1 != --* ]]; then
                    value=$1
                    shift
                else
                    value=""
                fi
                ;;
            *)
                sami_log "ignoring stray argument"
                continue
                ;;
        esac
        case $flag in
            --project-name) sami_project_name=$value ;;
            --base-domain) sami_base_domain=$value ;;
            --namespace) sami_namespace=$value ;;
            --name) sami_name=$value ;;
            --service) sami_service=$value ;;
            --environment) sami_environment=$value ;;
            --tag) sami_tag=$value ;;
            --manifest-dir) sami_manifest_dir=$value ;;
            --target) sami_target=$value ;;
            --force) sami_force=1 ;;
            --delete-data) sami_delete_data=1 ;;
            --endpoint) sami_endpoint=$value ;;
            --old-status) sami_old_status=$value ;;
            --new-status) sami_new_status=$value ;;
            --colour) sami_colour=$value ;;
            --backend) sami_backend=$value ;;
            --application-config) sami_app_config+=("$value") ;;
            --deployment-config) sami_deploy_config+=("$value") ;;
            *) sami_log "ignoring unknown flag ${flag}" ;;
        esac
    done
}

# Environment variable name for an override key: upper case, "." and "-" become "_".
sami_env_name() {
    local key=${1^^}
    key=${key//./_}
    key=${key//-/_}
    printf '%s' "$key"
}

# Names an override may not set: they would change how the scripts or the tools behave
# (search paths, loaders, interpreters, proxies, TLS, clients' own settings). Takes an
# environment name as made by sami_env_name; compared case-insensitively.
sami_reserved_env_name() {
    local name=${1^^}
    case $name in
        PATH | HOME | IFS | ENV | BASH_ENV | BASH_* | SHELL | SHELLOPTS | BASHOPTS | PS4 | CDPATH \
            | GLOBIGNORE | PWD | OLDPWD | TMPDIR | USER | LOGNAME | LANG | LANGUAGE | TZ | IMAGE | TAG \
            | LD_* | LC_* | GCONV_PATH | LOCPATH | NLSPATH | GLIBC_TUNABLES | MALLOC_* \
            | HOSTALIASES | RES_OPTIONS | LOCALDOMAIN \
            | PYTHON* | PERL* | RUBY* | NODE_OPTIONS | NODE_PATH | NODE_EXTRA_CA_CERTS | GIT_* \
            | JAVA_TOOL_OPTIONS | _JAVA_OPTIONS \
            | JDK_JAVA_OPTIONS | GODEBUG | GOFLAGS \
            | *_PROXY | SSL_* | OPENSSL_* | CURL_* | REQUESTS_* | SSH_* \
            | DOCKER* | COMPOSE* | HELM* | KUBE* | SAMI_* | XDG_*)
            return 0
            ;;
    esac
    return 1
}

# Value of an override: deployment config wins over application config.
# Usage: sami_config KEY [DEFAULT]. Keys are compared as environment names (upper case, "."
# and "-" as "_"), so the check of "port" also sees "Port" or "PORT": the variable the tool
# will get.
sami_config() {
    local key item found=0 value="" default=${2-}
    key=$(sami_env_name "$1")
    for item in "${sami_app_config[@]}" "${sami_deploy_config[@]}"; do
        [[ $item == *=* ]] || continue
        if [ "$(sami_env_name "${item%%=*}")" = "$key" ]; then
            value=${item#*=}
            found=1
        fi
    done
    if [ "$found" = 1 ]; then
        printf '%s' "$value"
    else
        printf '%s' "$default"
    fi
}

sami_check_override_list() {
    local kind=$1 item key env
    shift
    for item in "$@"; do
        if [[ $item != *=* ]]; then
            sami_problem "--${kind} \"${item}\" is not of the form KEY=VALUE."
            continue
        fi
        key=${item%%=*}
        if ! [[ $key =~ ^[A-Za-z_][A-Za-z0-9_.-]{0,127}$ ]]; then
            sami_problem "Override key \"${key}\" may only contain letters, digits, '.', '-' and '_' and must start with a letter."
            continue
        fi
        env=$(sami_env_name "$key")
        if sami_reserved_env_name "$env"; then
            sami_problem "Override key \"${key}\" is reserved (it would set \$${env}); choose another name."
        fi
    done
}

# Build sami_env from the overrides (application first, deployment second so it wins), plus
# IMAGE and TAG. Secrets stay in the environment as SAMI_SECRET_<NAME>.
sami_build_env() {
    local item key
    sami_env=()
    for item in "${sami_app_config[@]}" "${sami_deploy_config[@]}"; do
        [[ $item == *=* ]] || continue
        key=$(sami_env_name "${item%%=*}")
        [[ $key =~ ^[A-Z_][A-Z0-9_]*$ ]] || continue
        sami_reserved_env_name "$key" && continue
        sami_env+=("${key}=${item#*=}")
    done
    sami_env+=("TAG=${sami_tag}")
    if [ -n "${SAMI_IMAGE:-}" ]; then
        sami_env+=("IMAGE=${SAMI_IMAGE}")
    fi
}

# Run a tool with the override variables in its environment.
sami_run_env() {
    local quoted
    printf -v quoted ' %q' "$@"
    printf '%s\n' "+${quoted}" >&2
    env "${sami_env[@]}" "$@"
}

# Validation shared by every operation. Problems are collected in sami_problems.
sami_validate_common() {
    if ! [[ $sami_name =~ ^[a-z][a-z0-9-]{0,62}$ ]]; then
        sami_problem "Deployment name \"${sami_name}\" is invalid: use 1-63 characters a-z, 0-9 and '-', starting with a letter."
    fi
    if [ -n "$sami_tag" ] && ! [[ $sami_tag =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]]; then
        sami_problem "Tag \"${sami_tag}\" is invalid: use up to 128 characters A-Z, a-z, 0-9, '_', '.' and '-', not starting with '.' or '-'."
    fi
    if [ -n "$sami_service" ] && ! [[ $sami_service =~ ^[a-z][a-z0-9-]{0,62}$ ]]; then
        sami_problem "Service name \"${sami_service}\" is invalid."
    fi
    # An environment is a DNS label, or pull_request (the folder pull request environments come from).
    if [ -n "$sami_environment" ] && [ "$sami_environment" != "pull_request" ] \
        && ! [[ $sami_environment =~ ^[a-z][a-z0-9-]{0,62}$ ]]; then
        sami_problem "Environment name \"${sami_environment}\" is invalid: use stage, production, pull_request or a DNS label."
    fi
    sami_check_override_list application-config "${sami_app_config[@]}"
    sami_check_override_list deployment-config "${sami_deploy_config[@]}"
    local port replicas
    port=$(sami_config port)
    if [ -n "$port" ] && ! { [[ $port =~ ^[0-9]{1,5}$ ]] && [ "$((10#$port))" -ge 1 ] && [ "$((10#$port))" -le 65535 ]; }; then
        sami_problem "Override port=\"${port}\" is not a port number (1-65535)."
    fi
    replicas=$(sami_config replicas)
    if [ -n "$replicas" ] && ! [[ $replicas =~ ^[0-9]{1,4}$ ]]; then
        sami_problem "Override replicas=\"${replicas}\" is not a whole number."
    fi
}

# A path given in an override must stay inside the manifest folder.
sami_safe_relative_path() {
    local path=$1
    [ -n "$path" ] || return 1
    case /$path/ in
        */../* | *//*) return 1 ;;
    esac
    case $path in
        /* | -*) return 1 ;;
    esac
    return 0
}

sami_require_manifest_dir() {
    if [ -z "$sami_manifest_dir" ]; then
        sami_problem "--manifest-dir is missing."
    elif [ ! -d "$sami_manifest_dir" ]; then
        sami_problem "Manifest folder \"${sami_manifest_dir}\" does not exist."
    fi
}

sami_require_tag() {
    [ -n "$sami_tag" ] || sami_problem "--tag is missing: this operation needs the tag to deploy."
}

# Stop with every collected problem (one per line).
sami_fail_on_problems() {
    [ "${#sami_problems[@]}" -eq 0 ] && return 0
    local message
    printf -v message '%s\n' "${sami_problems[@]}"
    sami_die "$SAMI_EXIT_USAGE" "${message%$'\n'}"
}

# Tag of an image reference: "repo/name:tag@sha256:..." -> "tag" ("latest" when none).
sami_image_tag() {
    local ref=${1%%@*} last
    last=${ref##*/}
    if [[ $last == *:* ]]; then
        printf '%s' "${last##*:}"
    else
        printf 'latest'
    fi
}

# Repository of an image reference: "repo/name:tag@sha256:..." -> "repo/name".
sami_image_repo() {
    local ref=${1%%@*} last
    last=${ref##*/}
    if [[ $last == *:* ]]; then
        printf '%s' "${ref%:*}"
    else
        printf '%s' "$ref"
    fi
}

# Repository of an image reference in one spelling for comparisons: Docker Hub's implicit
# parts are dropped, so "docker.io/library/web:1", "library/web" and "web" are one repository.
sami_image_repo_normalized() {
    local repo
    repo=$(sami_image_repo "$1")
    repo=${repo,,}
    case $repo in
        docker.io/* | index.docker.io/* | registry-1.docker.io/* | registry.hub.docker.com/*)
            repo=${repo#*/}
            ;;
    esac
    repo=${repo#library/}
    printf '%s' "$repo"
}

# Compare an image that runs with the requested tag. Images of other repositories than the
# one Sami deploys (SAMI_IMAGE) are not compared, so a stack may hold e.g. a database.
# Returns 0 when it matches or is not compared, 1 on mismatch.
sami_image_matches() {
    local image=$1
    [ -n "$sami_tag" ] || return 0
    if [ -n "${SAMI_IMAGE:-}" ] \
        && [ "$(sami_image_repo_normalized "$image")" != "$(sami_image_repo_normalized "$SAMI_IMAGE")" ]; then
        return 0
    fi
    [ "$(sami_image_tag "$image")" = "$sami_tag" ]
}

# Probe SAMI_HEALTH_URL when set. Returns 0 on a 2xx/3xx answer within the timeout.
# --- the report of what runs (check's stdout, one JSON line) -------------------------------
# {"running":[{"name":"web-stage_web","image":"app:1","replicas":2,"running":2,"env":{"LOG_LEVEL":"debug"}}]}
# Sami compares only what it sets (images, replicas, the overrides it passed); see ../README.md.
sami_report_items=()
sami_report_more=""

# A JSON string: backslashes, quotes, tabs and newlines escaped, other control characters dropped.
sami_json_string() {
    local s=$1
    s=${s//\\/\\\\}
    s=${s//\"/\\\"}
    s=${s//$'\t'/\\t}
    s=${s//$'\n'/\\n}
    s=${s//$'\r'/}
    s=${s//[$'\001'-$'\037']/}
    printf '"%s"' "$s"
}

# Usage: sami_report_add NAME IMAGE REPLICAS RUNNING [KEY=VALUE]... (empty IMAGE/REPLICAS/RUNNING: not known)
sami_report_add() {
    local name=$1 image=$2 replicas=$3 running=$4 item env="" sep=""
    shift 4
    for item in "$@"; do
        env+="${sep}$(sami_json_string "${item%%=*}"):$(sami_json_string "${item#*=}")"
        sep=,
    done
    local json="{\"name\":$(sami_json_string "$name")"
    [ -n "$image" ] && json+=",\"image\":$(sami_json_string "$image")"
    [[ $replicas =~ ^[0-9]+$ ]] && json+=",\"replicas\":${replicas}"
    [[ $running =~ ^[0-9]+$ ]] && json+=",\"running\":${running}"
    [ -n "$env" ] && json+=",\"env\":{${env}}"
    # Fields a set adds of its own (a JSON fragment starting with ","), e.g. a router's live colour.
    json+=${sami_report_more:-}
    sami_report_items+=("${json}}")
}

# Like sami_report_add, for a target known by its tag alone (static files).
sami_report_add_tag() {
    sami_report_items+=("{\"name\":$(sami_json_string "$1"),\"tag\":$(sami_json_string "$2")}")
}

sami_report_print() {
    local IFS=,
    printf '{"running":[%s]}\n' "${sami_report_items[*]}"
}

# Environment names of the overrides Sami passed (each once), for the report's env.
sami_override_env_names() {
    local item
    for item in "${sami_app_config[@]}" "${sami_deploy_config[@]}"; do
        [[ $item == *=* ]] || continue
        sami_env_name "${item%%=*}"
        printf '\n'
    done | sort -u
}

sami_health_check() {
    local url=${SAMI_HEALTH_URL:-} timeout=${SAMI_HEALTH_TIMEOUT:-10}
    [ -n "$url" ] || return 0
    [[ $timeout =~ ^[0-9]+$ ]] && [ "$timeout" -gt 0 ] || timeout=10
    case $url in
        http://* | https://*) ;;
        *)
            sami_log "health URL must start with http:// or https://"
            return 1
            ;;
    esac
    if command -v curl >/dev/null 2>&1; then
        curl -fsS -L --max-time "$timeout" -o /dev/null -- "$url" && return 0
    elif command -v wget >/dev/null 2>&1; then
        wget -q -T "$timeout" -O /dev/null -- "$url" && return 0
    elif command -v busybox >/dev/null 2>&1; then
        busybox wget -q -T "$timeout" -O /dev/null "$url" && return 0
    else
        sami_log "neither curl nor wget is installed: cannot probe the health URL"
        return 1
    fi
    sami_log "health check of ${url} failed"
    return 1
}

# info: one "name,url" CSV line per link.
sami_csv_field() {
    local value=$1
    if [[ $value == *[,\"$'\n']* ]]; then
        value=${value//\"/\"\"}
        value="\"${value}\""
    fi
    printf '%s' "$value"
}

sami_info_links() {
    if [ -n "${SAMI_URL:-}" ]; then
        printf '%s,%s\n' app "$(sami_csv_field "$SAMI_URL")"
    fi
}

sami_notifications() {
    sami_log "${sami_name}: ${sami_old_status:-unknown} -> ${sami_new_status:-unknown}"
}

# Entry point: sami_main TYPE OP "$@". Parses, validates, and calls <type>_<op>.
sami_main() {
    sami_type=$1
    sami_op=$2
    shift 2
    sami_parse_args "$@"
    sami_validate_common
    # A bad name is always fatal. config_check collects its own problems first and then
    # reports them all together.
    [ "$sami_op" = config_check ] || sami_fail_on_problems
    sami_build_env
    local fn="${sami_type}_${sami_op}"
    if ! declare -F "$fn" >/dev/null; then
        sami_die "$SAMI_EXIT_FAIL" "operation ${sami_op} is not supported by the ${sami_type} scripts"
    fi
    "$fn"
}
