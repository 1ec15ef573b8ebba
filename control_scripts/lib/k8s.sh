# Kubernetes operations with Helm and kubectl. Sourced after common.sh.
#
# The Helm release is named after the deployment, in --namespace. Workloads of a release are
# found by the label app.kubernetes.io/instance=<name>, which the chart must set on its
# Deployments, StatefulSets, pods and PVCs (the example chart does).
#
# Values given to the chart (see ../README.md for the full table):
#   image.tag=<tag>                      always (--set-string)
#   image.repository=<repo>              from SAMI_IMAGE, when set
#   ingress.host=<host>                  from SAMI_URL, when set
#   env.<KEY>=<value>                    each --application-config KEY=value (KEY as env name)
#   <key>=<value>                        each --deployment-config key=value (a values path)
#   secretEnv.<NAME>=<value>             each SAMI_SECRET_<NAME>, in a private values file
# Options (not passed as values): chart=<folder>, values-file=<f1,f2>, rollout-timeout=<dur>.
# Deployment-config keys image and image.* are refused: the image comes from Sami.
#
# A target with a Kubernetes context (SAMI_KUBE_CONTEXT, from Sami's targets file) makes every
# helm call (HELM_KUBECONTEXT) and every kubectl call (--context) use that context of KUBECONFIG.

K8S_INSTANCE_LABEL=app.kubernetes.io/instance
K8S_ANNOTATION=sami.io/archived-replicas
# Option keys as environment names (see sami_env_name), so "Chart" or "values_file" match too.
K8S_OPTION_KEYS=" CHART VALUES_FILE ROLLOUT_TIMEOUT "

# The deployment-config key would set the image Sami deploys (image.tag, image.repository...).
k8s_image_key() {
    local key=${1,,}
    [ "$key" = image ] || [[ $key == image.* ]]
}

k8s_chart() {
    sami_config chart chart
}

# The chart folder: the manifest's, or for an internal third-party service (SAMI_ENGINE redis or
# postgres) the built-in chart in ../charts, with size members (SAMI_SIZE).
k8s_chart_dir() {
    if [ -n "${SAMI_ENGINE:-}" ]; then
        printf '%s' "$sami_lib/../charts/${SAMI_ENGINE}"
    else
        printf '%s' "$sami_manifest_dir/$(k8s_chart)"
    fi
}

k8s_engine_port() {
    case ${SAMI_ENGINE:-} in
        postgres) sami_config port 5432 ;;
        *) sami_config port 6379 ;;
    esac
}

k8s_validate() {
    local chart file list items timeout item
    if ! [[ $sami_namespace =~ ^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$ ]]; then
        sami_problem "Namespace \"${sami_namespace}\" is not a valid Kubernetes namespace name."
    fi
    if [ "${#sami_name}" -gt 53 ]; then
        sami_problem "Deployment name \"${sami_name}\" is longer than the 53 characters Helm allows for a release."
    fi
    sami_require_manifest_dir
    chart=$(k8s_chart)
    if [ -n "${SAMI_ENGINE:-}" ]; then
        [[ ${SAMI_ENGINE} =~ ^(redis|postgres)$ ]] && [ -f "$(k8s_chart_dir)/Chart.yaml" ] \
            || sami_problem "SAMI_ENGINE=\"${SAMI_ENGINE}\" has no built-in chart (redis or postgres)."
        [[ ${SAMI_SIZE:-1} =~ ^[1-9][0-9]?$ ]] || sami_problem "size ${SAMI_SIZE} is not a number of members (1-99)."
    elif ! sami_safe_relative_path "$chart"; then
        sami_problem "chart=\"${chart}\" must be a path inside the manifest folder."
    elif [ -d "$sami_manifest_dir" ] && [ ! -f "$sami_manifest_dir/$chart/Chart.yaml" ]; then
        sami_problem "Helm chart \"${chart}\" was not found (no ${chart}/Chart.yaml in the manifest folder); add it or set --deployment-config chart=<folder>."
    fi
    list=$(sami_config values-file)
    if [ -n "$list" ]; then
        IFS=, read -r -a items <<<"$list"
        for file in "${items[@]}"; do
            if ! sami_safe_relative_path "$file"; then
                sami_problem "values-file \"${file}\" must be a path inside the manifest folder."
            elif [ -d "$sami_manifest_dir" ] && [ ! -f "$sami_manifest_dir/$file" ]; then
                sami_problem "values-file \"${file}\" was not found in the manifest folder."
            fi
        done
    fi
    timeout=$(sami_config rollout-timeout 60s)
    [[ $timeout =~ ^[0-9]+[smh]?$ ]] \
        || sami_problem "rollout-timeout=\"${timeout}\" must be a duration like 90s or 5m."
    for item in "${sami_deploy_config[@]}"; do
        if [[ $item == *=* ]] && k8s_image_key "${item%%=*}"; then
            sami_problem "Deployment-config key \"${item%%=*}\" is reserved: the image and its tag come from Sami."
        fi
    done
    command -v "$HELM" >/dev/null 2>&1 || sami_problem "The helm client \"${HELM}\" was not found on this host."
}

# Escape a value for helm --set/--set-string: backslash and comma are special there.
k8s_escape() {
    local value=${1//\\/\\\\}
    printf '%s' "${value//,/\\,}"
}

# JSON string literal of a value (a values file is YAML, and JSON is YAML).
k8s_json_string() {
    local value=$1 out="" i ch code
    for ((i = 0; i < ${#value}; i++)); do
        ch=${value:i:1}
        case $ch in
            '"') out+='\"' ;;
            '\') out+='\\' ;;
            $'\n') out+='\n' ;;
            $'\r') out+='\r' ;;
            $'\t') out+='\t' ;;
            *)
                printf -v code '%d' "'$ch"
                if [ "$code" -ge 0 ] && [ "$code" -lt 32 ]; then
                    printf -v ch '\\u%04x' "$code"
                fi
                out+=$ch
                ;;
        esac
    done
    printf '"%s"' "$out"
}

# Fill k8s_args with the chart values from tag, image, URL and overrides, and write secret
# values (if any) to a private temporary values file.
k8s_build_values() {
    local item key value host list items file secret_names name first=1
    k8s_args=(--namespace "$sami_namespace")
    list=$(sami_config values-file)
    if [ -n "$list" ]; then
        IFS=, read -r -a items <<<"$list"
        for file in "${items[@]}"; do
            k8s_args+=(-f "$sami_manifest_dir/$file")
        done
    fi
    [ -n "$sami_tag" ] && k8s_args+=(--set-string "image.tag=$(k8s_escape "$sami_tag")")
    [ -n "${SAMI_ENGINE:-}" ] && k8s_args+=(--set "size=${SAMI_SIZE:-1}")
    if [ -n "${SAMI_IMAGE:-}" ]; then
        k8s_args+=(--set-string "image.repository=$(k8s_escape "$(sami_image_repo "$SAMI_IMAGE")")")
    fi
    if [ -n "${SAMI_URL:-}" ]; then
        host=${SAMI_URL#*://}
        host=${host%%/*}
        host=${host%%:*}
        [ -n "$host" ] && k8s_args+=(--set-string "ingress.host=$(k8s_escape "$host")")
    fi
    for item in "${sami_app_config[@]}"; do
        key=$(sami_env_name "${item%%=*}")
        sami_reserved_env_name "$key" && continue
        k8s_args+=(--set-string "env.${key}=$(k8s_escape "${item#*=}")")
    done
    for item in "${sami_deploy_config[@]}"; do
        key=${item%%=*}
        value=${item#*=}
        [[ $K8S_OPTION_KEYS == *" $(sami_env_name "$key") "* ]] && continue
        k8s_image_key "$key" && continue
        if [[ $value =~ ^-?[0-9]{1,15}$ ]] || [ "$value" = true ] || [ "$value" = false ]; then
            k8s_args+=(--set "${key}=${value}")
        else
            k8s_args+=(--set-string "${key}=$(k8s_escape "$value")")
        fi
    done
    secret_names=$(compgen -e | grep '^SAMI_SECRET_' || :)
    if [ -n "$secret_names" ]; then
        k8s_secret_file=$(mktemp "${TMPDIR:-/tmp}/sami-secrets.XXXXXX") \
            || sami_die "$SAMI_EXIT_FAIL" "cannot create a temporary values file"
        trap 'rm -f -- "$k8s_secret_file"' EXIT
        chmod 600 -- "$k8s_secret_file"
        {
            printf '{"secretEnv": {'
            while IFS= read -r name; do
                [ "$first" = 1 ] || printf ', '
                first=0
                printf '%s: %s' "$(k8s_json_string "${name#SAMI_SECRET_}")" "$(k8s_json_string "${!name}")"
            done <<<"$secret_names"
            printf '}}\n'
        } >"$k8s_secret_file"
        k8s_args+=(-f "$k8s_secret_file")
    fi
}

k8s_config_check() {
    k8s_validate
    sami_fail_on_problems
    k8s_build_values
    local out
    # Render the chart with the values a deploy would use: catches template errors early.
    if ! out=$("$HELM" template "$sami_name" "$(k8s_chart_dir)" "${k8s_args[@]}" 2>&1 >/dev/null); then
        printf 'The Helm chart does not render with these values:\n%s\n' "$out"
        exit "$SAMI_EXIT_USAGE"
    fi
}

k8s_deploy() {
    k8s_validate
    sami_require_tag
    sami_fail_on_problems
    k8s_build_values
    local current
    if [ -n "${SAMI_ENGINE:-}" ]; then
        current=$("$KUBECTL" get statefulset "$sami_name" --namespace "$sami_namespace" \
            -o 'jsonpath={.spec.replicas}' 2>/dev/null || :)
        if [[ $current =~ ^[0-9]+$ ]] && [ "$current" -gt "${SAMI_SIZE:-1}" ] && [ "$sami_force" != 1 ]; then
            sami_die "$SAMI_EXIT_FAIL" "resize of ${sami_name} from ${current} to ${SAMI_SIZE:-1} members refused: the data of the members removed is not handed over to the others; run it again forced (--force) to shrink anyway"
        fi
    fi
    sami_run "$HELM" upgrade --install "$sami_name" "$(k8s_chart_dir)" \
        --create-namespace --history-max 10 "${k8s_args[@]}"
}

k8s_create() { k8s_deploy; }
k8s_update() { k8s_deploy; }

# Workloads of the release: "kind/name|spec replicas|ready replicas|annotation|images" lines.
k8s_workloads() {
    "$KUBECTL" get deployment,statefulset --namespace "$sami_namespace" \
        -l "${K8S_INSTANCE_LABEL}=${sami_name}" -o \
        'jsonpath={range .items[*]}{.kind}/{.metadata.name}|{.spec.replicas}|{.status.readyReplicas}|{.metadata.annotations.sami\.io/archived-replicas}|{range .spec.template.spec.containers[*]}{.image} {end}{"\n"}{end}'
}

k8s_load_workloads() {
    local out
    out=$(k8s_workloads) || sami_die "$SAMI_EXIT_FAIL" "cannot list the workloads of ${sami_name} in namespace ${sami_namespace}"
    k8s_lines=()
    [ -n "$out" ] && mapfile -t k8s_lines <<<"$out"
    return 0
}

k8s_check() {
    k8s_load_workloads
    [ "${#k8s_lines[@]}" -gt 0 ] \
        || sami_die "$SAMI_EXIT_FAIL" "release ${sami_name} has no Deployment or StatefulSet (not deployed?)"
    local line ref replicas ready annotation images image mismatch=0 partial=0 timeout
    timeout=$(sami_config rollout-timeout 60s)
    [[ $timeout =~ ^[0-9]+$ ]] && timeout="${timeout}s"
    for line in "${k8s_lines[@]}"; do
        IFS='|' read -r ref replicas ready annotation images <<<"$line"
        for image in $images; do
            if ! sami_image_matches "$image"; then
                sami_log "${ref}: runs ${image}, expected tag ${sami_tag}"
                mismatch=1
            fi
        done
    done
    [ "$mismatch" = 0 ] || exit "$SAMI_EXIT_TAG_MISMATCH"
    for line in "${k8s_lines[@]}"; do
        IFS='|' read -r ref replicas ready annotation images <<<"$line"
        if [ "${replicas:-0}" = 0 ]; then
            sami_log "${ref}: scaled to 0"
            partial=1
            continue
        fi
        kind=${ref%%/*}
        if ! sami_run "$KUBECTL" rollout status "${kind,,}/${ref#*/}" --namespace "$sami_namespace" \
            --timeout "$timeout" >&2; then
            partial=1
        fi
    done
    [ "$partial" = 0 ] || exit "$SAMI_EXIT_PARTIAL"
    sami_health_check || exit "$SAMI_EXIT_FAIL"
}

k8s_archive() {
    k8s_load_workloads
    local line ref replicas ready annotation images kind
    for line in "${k8s_lines[@]}"; do
        IFS='|' read -r ref replicas ready annotation images <<<"$line"
        kind=${ref%%/*}
        if [[ $replicas =~ ^[0-9]+$ ]] && [ "$replicas" -gt 0 ]; then
            sami_run "$KUBECTL" annotate --overwrite --namespace "$sami_namespace" \
                "${kind,,}/${ref#*/}" "${K8S_ANNOTATION}=${replicas}" >&2 \
                || sami_die "$SAMI_EXIT_FAIL" "cannot record the replicas of ${ref}"
        fi
    done
    sami_run "$KUBECTL" scale --replicas=0 --namespace "$sami_namespace" \
        -l "${K8S_INSTANCE_LABEL}=${sami_name}" deployment,statefulset >&2 \
        || sami_die "$SAMI_EXIT_FAIL" "cannot scale the workloads of ${sami_name} to 0"
}

k8s_unarchive() {
    k8s_load_workloads
    if [ "${#k8s_lines[@]}" -eq 0 ]; then
        sami_log "release ${sami_name} has no workloads: deploying it again"
        k8s_deploy
        return
    fi
    local line ref replicas ready annotation images kind
    for line in "${k8s_lines[@]}"; do
        IFS='|' read -r ref replicas ready annotation images <<<"$line"
        [[ $annotation =~ ^[0-9]+$ ]] || continue
        kind=${ref%%/*}
        sami_run "$KUBECTL" scale --replicas="$annotation" --namespace "$sami_namespace" \
            "${kind,,}/${ref#*/}" >&2 || sami_die "$SAMI_EXIT_FAIL" "cannot scale ${ref} back"
        sami_run "$KUBECTL" annotate --namespace "$sami_namespace" "${kind,,}/${ref#*/}" \
            "${K8S_ANNOTATION}-" >&2 || sami_log "cannot remove the annotation of ${ref}"
    done
}

k8s_archive_check() {
    k8s_load_workloads
    local line ref replicas ready annotation images pods
    for line in "${k8s_lines[@]}"; do
        IFS='|' read -r ref replicas ready annotation images <<<"$line"
        if [ "${replicas:-0}" != 0 ] || [ "${ready:-0}" != 0 ]; then
            sami_log "${ref}: ${ready:-0} ready of ${replicas:-0}"
            exit "$SAMI_EXIT_FAIL"
        fi
    done
    pods=$("$KUBECTL" get pods --namespace "$sami_namespace" -l "${K8S_INSTANCE_LABEL}=${sami_name}" \
        --field-selector=status.phase!=Succeeded,status.phase!=Failed -o name) \
        || sami_die "$SAMI_EXIT_FAIL" "cannot list the pods of ${sami_name}"
    if [ -n "$pods" ]; then
        sami_log "pods still present: ${pods//$'\n'/ }"
        exit "$SAMI_EXIT_FAIL"
    fi
}

k8s_cleanup() {
    local out
    if ! out=$(sami_run "$HELM" uninstall "$sami_name" --namespace "$sami_namespace" 2>&1); then
        case $out in
            *"not found"*) sami_log "release ${sami_name} was already uninstalled" ;;
            *) sami_die "$SAMI_EXIT_FAIL" "helm uninstall failed: ${out}" ;;
        esac
    else
        printf '%s\n' "$out" >&2
    fi
    if [ -n "${SAMI_ENGINE:-}" ] && [ "$sami_delete_data" != 1 ]; then
        echo "data volumes kept: the PVCs labelled ${K8S_INSTANCE_LABEL}=${sami_name} (they outlive the release; cleanup --delete-data deletes them with it)"
        return
    fi
    sami_run "$KUBECTL" delete pvc --namespace "$sami_namespace" \
        -l "${K8S_INSTANCE_LABEL}=${sami_name}" --ignore-not-found >&2 \
        || sami_die "$SAMI_EXIT_FAIL" "cannot delete the PVCs of ${sami_name}"
    [ -n "${SAMI_ENGINE:-}" ] && echo "data volumes deleted: the PVCs labelled ${K8S_INSTANCE_LABEL}=${sami_name}"
    return 0
}

k8s_info() {
    if [ -n "${SAMI_ENGINE:-}" ]; then
        printf 'endpoint,%s.%s.svc:%s\n' "${sami_name}-0.${sami_name}" "$sami_namespace" "$(k8s_engine_port)"
        return
    fi
    sami_info_links
}
k8s_notifications() { sami_notifications; }

# seed of a built-in internal third-party service (SAMI_ENGINE): the manifest folder's seed.redis
# (redis-cli commands, one a line) or seed.sql (run by psql as db-user, stopping at the first error) is
# fed to member 0's own client in its pod (kubectl exec -i <name>-0), as the swarm sets do in their
# container. Without the file there is nothing to seed.
k8s_seed() {
    local file client answers errors pod="${sami_name}-0" port
    case ${SAMI_ENGINE:-} in
        redis) file=seed.redis ;;
        postgres) file=seed.sql ;;
        *) sami_die "$SAMI_EXIT_USAGE" "seed is for the built-in redis and postgres services (SAMI_ENGINE), not ${sami_name}" ;;
    esac
    if [ ! -e "${sami_manifest_dir}/${file}" ]; then
        echo "no ${file} in the manifest folder: ${sami_name} stays empty"
        return 0
    fi
    [ -f "${sami_manifest_dir}/${file}" ] && [ ! -L "${sami_manifest_dir}/${file}" ] \
        || sami_die "$SAMI_EXIT_USAGE" "${file} must be a plain file of the manifest folder"
    port=$(k8s_engine_port)
    if [ "$SAMI_ENGINE" = redis ]; then
        client=(redis-cli --no-raw -p "$port")
    else
        client=(psql -X -q -v ON_ERROR_STOP=1 -p "$port" -U "$(sami_config db-user postgres)"
                -d "$(sami_config database "$(sami_config db-user postgres)")" -f -)
    fi
    answers=$("$KUBECTL" exec -i --namespace "$sami_namespace" "$pod" -- "${client[@]}" \
        <"${sami_manifest_dir}/${file}" 2>&1) \
        || sami_die "$SAMI_EXIT_FAIL" "seeding ${sami_name} from ${file} failed: $(grep -m 1 -E 'ERROR|FATAL|error' <<<"$answers" | cut -c 1-300)"
    # redis-cli exits 0 even when a command fails; in --no-raw form an error reply starts with "(error)".
    errors=$(grep -c '^(error)' <<<"$answers")
    if [ "$errors" -gt 0 ]; then
        sami_die "$SAMI_EXIT_FAIL" "seeding ${sami_name} from ${file} failed: ${errors} command(s) failed, the first: $(grep -m 1 '^(error)' <<<"$answers" | cut -c 9-308)"
    fi
    echo "seeded ${sami_name} from ${file}"
}

# switch (blue-green): the entry is a Service named --name whose selector picks the pods of the
# colour's release (app.kubernetes.io/instance=<colour deployment>, the first label of --backend
# HOST:PORT) on the port named http; one kubectl apply changes the selector in one update.
k8s_switch() {
    local instance port
    case $sami_colour in
        blue | green) ;;
        *) sami_die "$SAMI_EXIT_USAGE" "--colour must be blue or green" ;;
    esac
    if ! [[ $sami_backend =~ ^([a-z][a-z0-9-]{0,62})(\.[a-z0-9.-]+)?:([0-9]{1,5})$ ]]; then
        sami_die "$SAMI_EXIT_USAGE" "--backend must be HOST:PORT, the host's first label the colour's release"
    fi
    instance=${BASH_REMATCH[1]}
    port=$((10#${BASH_REMATCH[3]}))
    [ "$port" -ge 1 ] && [ "$port" -le 65535 ] || sami_die "$SAMI_EXIT_USAGE" "--backend port ${port} is not a port"
    # Global: the EXIT trap runs after this function has returned.
    k8s_switch_file=$(mktemp) || sami_die "$SAMI_EXIT_FAIL" "cannot create a temporary file"
    trap 'rm -f -- "$k8s_switch_file"' EXIT
    cat >"$k8s_switch_file" <<SERVICE
apiVersion: v1
kind: Service
metadata:
  name: ${sami_name}
  namespace: ${sami_namespace}
  labels:
    app.kubernetes.io/managed-by: sami
    sami.io/colour: ${sami_colour}
spec:
  selector:
    ${K8S_INSTANCE_LABEL}: ${instance}
  ports:
    - name: http
      port: ${port}
      targetPort: http
      protocol: TCP
SERVICE
    sami_run "$KUBECTL" apply --namespace "$sami_namespace" -f "$k8s_switch_file" >&2 \
        || sami_die "$SAMI_EXIT_FAIL" "cannot switch service ${sami_name} to ${instance}"
    sami_log "service ${sami_name} selects ${instance} (${sami_colour})"
}

if [ -n "${SAMI_KUBE_CONTEXT:-}" ]; then
    export HELM_KUBECONTEXT=$SAMI_KUBE_CONTEXT
    k8s_real_kubectl=$KUBECTL
    KUBECTL=k8s_kubectl
    k8s_kubectl() {
        "$k8s_real_kubectl" --context "$SAMI_KUBE_CONTEXT" "$@"
    }
fi
