# Scheduled jobs as Docker Swarm services. Sourced after common.sh and swarm.sh.
#
# A cron deployment is a stack whose services run a job and exit; the schedule comes from
# the service's restart policy (deploy.restart_policy: {condition: any, delay: <interval>}),
# so swarm starts the job again <interval> after each run. Deploy, archive (scale to 0),
# unarchive and cleanup are the swarm ones; check differs because a job is not running most
# of the time.

cron_config_check() { swarm_config_check; }
cron_create() { swarm_deploy; }
cron_update() { swarm_deploy; }
cron_archive() { swarm_archive; }
cron_unarchive() { swarm_unarchive; }
cron_archive_check() { swarm_archive_check; }
cron_cleanup() { swarm_cleanup; }
cron_info() { sami_info_links; }
cron_notifications() { sami_notifications; }

# check: image tag of every job (3), then the latest finished run of each job: a failed or
# rejected run is a failure (1). A job that has not finished a run yet is fine.
cron_check() {
    swarm_load_services
    [ "${#swarm_service_names[@]}" -gt 0 ] \
        || sami_die "$SAMI_EXIT_FAIL" "stack ${sami_name} has no services (not deployed?)"
    local svc state mode replicas image archived_replicas archived_global update_state
    local task_desired current task_image err mismatch=0 failed=0
    for svc in "${swarm_service_names[@]}"; do
        state=$(swarm_service_state "$svc") || sami_die "$SAMI_EXIT_FAIL" "cannot inspect ${svc}"
        IFS='|' read -r mode replicas image archived_replicas archived_global update_state <<<"$state"
        if ! sami_image_matches "$image"; then
            sami_log "${svc}: runs ${image%%@*}, expected tag ${sami_tag}"
            mismatch=1
        fi
        while IFS='|' read -r task_desired current task_image err; do
            [ "${task_image%%@*}" = "${image%%@*}" ] || continue
            case $current in
                Complete*) break ;;
                Failed* | Rejected*)
                    sami_log "${svc}: last run ${current%% *}${err:+: ${err}}"
                    failed=1
                    break
                    ;;
            esac
        done < <(swarm_tasks "$svc")
    done
    [ "$mismatch" = 0 ] || exit "$SAMI_EXIT_TAG_MISMATCH"
    [ "$failed" = 0 ] || exit "$SAMI_EXIT_FAIL"
    sami_health_check || exit "$SAMI_EXIT_FAIL"
}
