"""Actions through the queue and a real worker (RQ SimpleWorker in this process) running the
probe control scripts: states, logs, failures, timeouts, supersede, checks, reaper, retention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from rq.job import Job, JobStatus
from sqlalchemy import select, update

from bot.core.models import Action, ActionStep, Deployment
from bot.core.states import ActionState, DeploymentState, FailureReason
from bot.services import deployments
from tests.pipeline.conftest import read_record
from tests.support.procs import alive
from workers.scheduler import Scheduler, TickReport

S = DeploymentState


def request(db_session, worker_ctx, services_ctx, tag="v1", **kwargs):
    req = deployments.DeploymentRequest(service="probe", environment=kwargs.pop("environment", "stage"),
                                     tag=tag, requested_by="test", origin="cli", **kwargs)
    return deployments.request_deployment(db_session, worker_ctx.manifests.current(), req, services_ctx)


def deployment(db_session, name="probe-stage") -> Deployment:
    db_session.expire_all()
    return db_session.scalars(select(Deployment).where(Deployment.name == name)).one()


def sweep(scheduler: Scheduler, now: datetime) -> TickReport:
    report = TickReport()
    scheduler.steps["sweep"](report, now)
    return report


def action(db_session, action_id) -> Action:
    db_session.expire_all()
    return db_session.get(Action, action_id)


def test_create_update_archive_restore_cleanup(db_session, worker_ctx, services_ctx, work, record):
    accepted = request(db_session, worker_ctx, services_ctx, tag="v1")
    assert deployment(db_session).state is S.CREATE_PENDING
    work()
    d = deployment(db_session)
    assert d.state is S.RUNNING, d.status_message
    # The links are those `info` printed (the manifest's URL template alone gives only the first).
    assert d.links == [{"name": "app", "url": "https://probe-stage.example.test"},
                       {"name": "logs", "url": "https://logs.example.test/probe-stage"}]
    assert (record.parent / "record.notified").read_text().splitlines() == ["probe-stage CreatePending Running"]
    assert d.checked_at is not None
    created = action(db_session, accepted.action_id)
    assert created.state is ActionState.SUCCEEDED and created.exit_code == 0
    assert "probe create of probe-stage at v1" in created.log
    assert created.duration_ms is not None and created.script_started_at is not None
    assert read_record(record)[:3] == ["config_check probe-stage v1", "create probe-stage v1", "check probe-stage v1"]

    request(db_session, worker_ctx, services_ctx, tag="v2")
    assert deployment(db_session).state is S.UPDATE_PENDING
    work()
    assert deployment(db_session).state is S.RUNNING
    assert deployment(db_session).tag == "v2"
    assert "update probe-stage v2" in read_record(record)

    ctx = dict(requested_by="test", origin="cli")
    deployments.archive_deployment(db_session, worker_ctx.manifests.current(), "probe-stage", services_ctx, **ctx)
    assert deployment(db_session).state is S.ARCHIVE_PENDING
    work()
    d = deployment(db_session)
    assert d.state is S.ARCHIVED and d.archived_at is not None

    deployments.restore_deployment(db_session, worker_ctx.manifests.current(), "probe-stage", services_ctx, **ctx)
    work()
    assert deployment(db_session).state is S.RUNNING
    assert "unarchive probe-stage v2" in read_record(record)

    deployments.archive_deployment(db_session, worker_ctx.manifests.current(), "probe-stage", services_ctx, **ctx)
    work()
    assert deployment(db_session).state is S.ARCHIVED, [
        (a.id, a.kind, a.state, a.error, a.log) for a in deployment(db_session).actions]
    deployments.cleanup_deployment(db_session, worker_ctx.manifests.current(), "probe-stage", services_ctx, **ctx)
    work()
    assert deployment(db_session).state is S.REMOVED
    assert "cleanup probe-stage v2" in read_record(record)
    assert not any(line.startswith("OVERLAP") for line in read_record(record))
    # The name can be used again, and its history stays.
    again = request(db_session, worker_ctx, services_ctx, tag="v3")
    assert again.kind == "create"
    assert len(deployment(db_session).actions) == 7


def test_failing_script_leaves_failure_with_its_stderr(db_session, worker_ctx, services_ctx, work):
    accepted = request(db_session, worker_ctx, services_ctx, deployment_overrides={"fail": "create"})
    work()
    d = deployment(db_session)
    assert d.state is S.FAILURE
    assert d.failure_reason is FailureReason.GENERIC
    assert d.status_message == "create failed (exit 1): probe: create failed on purpose"
    a = action(db_session, accepted.action_id)
    assert a.state is ActionState.FAILED and a.exit_code == 1
    assert "! probe: create failed on purpose" in a.log


def test_config_check_failure_is_shown(db_session, worker_ctx, services_ctx, work, record):
    request(db_session, worker_ctx, services_ctx, deployment_overrides={"fail": "config_check"})
    work()
    d = deployment(db_session)
    assert d.state is S.FAILURE
    assert d.status_message.startswith("config_check failed (exit 1)")
    assert "create probe-stage v1" not in read_record(record)


def test_hanging_script_times_out_and_its_process_group_is_gone(db_session, worker_ctx, services_ctx, work,
                                                                 record, probe_repo):
    manifest = probe_repo / "services/probe/swarm/stage/sami.yaml"
    manifest.write_text(manifest.read_text().replace("timeout: 60s", "timeout: 2s"))
    worker_ctx.manifests.current(refresh=True)
    accepted = request(db_session, worker_ctx, services_ctx, deployment_overrides={"hang": "create"})
    work()
    a = action(db_session, accepted.action_id)
    assert a.state is ActionState.TIMED_OUT
    d = deployment(db_session)
    assert d.state is S.FAILURE and d.failure_reason is FailureReason.TIMED_OUT
    for pid_file in ("record.pid", "record.child"):
        pid = int((record.parent / pid_file).read_text())
        assert not alive(pid), f"process {pid} of the timed-out script is still running"


@pytest.mark.parametrize(("code", "reason"), [("2", FailureReason.PARTIAL_AVAILABILITY),
                                              ("3", FailureReason.TAG_MISMATCH),
                                              ("1", FailureReason.TIMED_OUT)])
def test_check_that_never_passes_ends_in_failure_with_its_reason(db_session, worker_ctx, services_ctx, work,
                                                                  probe_repo, code, reason):
    manifest = probe_repo / "services/probe/swarm/stage/sami.yaml"
    manifest.write_text(manifest.read_text().replace("status_timeout: 5s", "status_timeout: 1s"))
    worker_ctx.manifests.current(refresh=True)
    accepted = request(db_session, worker_ctx, services_ctx, deployment_overrides={"check": code})
    work()
    d = deployment(db_session)
    assert d.state is S.FAILURE
    assert d.failure_reason is reason
    assert "check did not pass within 1 s" in d.status_message
    assert action(db_session, accepted.action_id).state is ActionState.FAILED


def test_newer_updates_supersede_queued_ones(db_session, worker_ctx, services_ctx, work, record):
    request(db_session, worker_ctx, services_ctx, tag="v1")
    work()
    ids = [request(db_session, worker_ctx, services_ctx, tag=f"v{n}").action_id for n in (2, 3, 4)]
    assert [action(db_session, i).state for i in ids] == [ActionState.SUPERSEDED, ActionState.SUPERSEDED,
                                                          ActionState.QUEUED]
    assert action(db_session, ids[0]).error == f"superseded by action {ids[1]}"
    work()
    assert [action(db_session, i).state for i in ids] == [ActionState.SUPERSEDED, ActionState.SUPERSEDED,
                                                          ActionState.SUCCEEDED]
    assert deployment(db_session).tag == "v4"
    updates = [line for line in read_record(record) if line.startswith("update")]
    assert updates == ["update probe-stage v4"]


@pytest.mark.parametrize("canary", ["canary-7f3a9c1e-secret", "c4n4ry-8"])
def test_secret_values_never_reach_logs_or_the_api(db_session, worker_ctx, services_ctx, work, probe_repo,
                                                    record, monkeypatch, client, app, canary):
    manifest = probe_repo / "services/probe/swarm/stage/sami.yaml"
    manifest.write_text(manifest.read_text() + "secrets: [PROBE_TOKEN]\n")
    worker_ctx.manifests.current(refresh=True)
    monkeypatch.setenv("SAMI_SCRIPT_SECRET_PROBE_TOKEN", canary)
    accepted = request(db_session, worker_ctx, services_ctx)
    work()
    a = action(db_session, accepted.action_id)
    assert a.state is ActionState.SUCCEEDED
    assert "using token ********" in a.log
    assert "\n********\n" in a.log  # printed alone on its line
    rows = db_session.execute(select(Action.log, Action.config, Action.error)).all()
    assert canary not in repr(rows)
    assert canary not in repr(db_session.execute(select(Deployment.__table__)).all())
    from bot.services.tokens import Scopes, create_token

    admin = create_token(db_session, "admin", Scopes(admin=True))
    db_session.commit()
    headers = {"Authorization": f"Bearer {admin}"}
    for path in (f"/api/v1/actions/{a.id}", f"/api/v1/actions/{a.id}/log", "/api/v1/deployments/probe-stage",
                 "/api/v1/deployments"):
        response = client.get(path, headers=headers)
        assert response.status_code == 200
        assert canary not in response.get_data(as_text=True)


def test_missing_secret_fails_with_a_clear_message(db_session, worker_ctx, services_ctx, work, probe_repo,
                                                   monkeypatch):
    manifest = probe_repo / "services/probe/swarm/stage/sami.yaml"
    manifest.write_text(manifest.read_text() + "secrets: [PROBE_TOKEN]\n")
    worker_ctx.manifests.current(refresh=True)
    monkeypatch.delenv("SAMI_SCRIPT_SECRET_PROBE_TOKEN", raising=False)
    request(db_session, worker_ctx, services_ctx)
    work()
    d = deployment(db_session)
    assert d.state is S.FAILURE
    assert d.status_message == "secret PROBE_TOKEN is not set: give Sami's processes SAMI_SCRIPT_SECRET_PROBE_TOKEN"


def test_a_manifest_cannot_read_samis_own_settings_as_a_secret(db_session, worker_ctx, services_ctx, work,
                                                               probe_repo, monkeypatch):
    manifest = probe_repo / "services/probe/swarm/stage/sami.yaml"
    manifest.write_text(manifest.read_text() + "secrets: [KEY]\n")
    worker_ctx.manifests.current(refresh=True)
    monkeypatch.setenv("SAMI_SECRET_KEY", "the-page-session-signing-key")
    monkeypatch.delenv("SAMI_SCRIPT_SECRET_KEY", raising=False)
    accepted = request(db_session, worker_ctx, services_ctx)
    work()
    assert deployment(db_session).status_message.startswith("secret KEY is not set")
    assert "the-page-session-signing-key" not in action(db_session, accepted.action_id).log


def test_secrets_too_short_to_mask_are_refused(db_session, worker_ctx, services_ctx, work, probe_repo,
                                               monkeypatch):
    manifest = probe_repo / "services/probe/swarm/stage/sami.yaml"
    manifest.write_text(manifest.read_text() + "secrets: [PROBE_TOKEN]\n")
    worker_ctx.manifests.current(refresh=True)
    monkeypatch.setenv("SAMI_SCRIPT_SECRET_PROBE_TOKEN", "abc")
    request(db_session, worker_ctx, services_ctx)
    work()
    assert deployment(db_session).status_message == (
        "secret PROBE_TOKEN is shorter than 6 characters, too short to be masked in logs")


def test_periodic_checks_move_live_deployments_between_running_and_failure(
        db_session, worker_ctx, services_ctx, work, record):
    request(db_session, worker_ctx, services_ctx, tag="v1")
    work()
    assert deployment(db_session).state is S.RUNNING
    tag_file = record.parent / "record.d" / "probe-stage" / "tag"
    tag_file.write_text("v0\n")  # what runs drifts away from what was deployed
    scheduler = Scheduler(worker_ctx)
    later = datetime.now(UTC) + timedelta(hours=1)
    report = scheduler.tick(now=later)
    assert report.checks == [deployment(db_session).id]
    work()
    d = deployment(db_session)
    assert d.state is S.FAILURE and d.failure_reason is FailureReason.TAG_MISMATCH
    assert "running v0, want v1" in d.status_message
    tag_file.write_text("v1\n")
    scheduler.tick(now=later + timedelta(hours=1))
    work()
    assert deployment(db_session).state is S.RUNNING
    # Not due again right after a check.
    assert scheduler.tick(now=datetime.now(UTC)).checks == []


def test_sweep_queues_actions_the_queue_lost(db_session, worker_ctx, services_ctx, work, redis_client):
    accepted = request(db_session, worker_ctx, services_ctx)
    redis_client.flushdb()  # Redis restarted without its data
    report = Scheduler(worker_ctx).tick(now=datetime.now(UTC) + timedelta(seconds=5))
    assert report.queued == [accepted.action_id]
    work()
    assert deployment(db_session).state is S.RUNNING


def test_reaper_requeues_an_action_whose_worker_died_before_its_script(db_session, worker_ctx, services_ctx,
                                                                       work):
    accepted = request(db_session, worker_ctx, services_ctx)
    # What a worker killed just after dequeuing leaves in Redis: the job marked started, off the queue.
    job = Job.fetch(str(accepted.action_id), connection=worker_ctx.broker.connection)
    worker_ctx.broker.actions.remove(job)
    job.set_status(JobStatus.STARTED)
    long_ago = datetime.now(UTC) - timedelta(minutes=5)
    db_session.execute(update(Action).where(Action.id == accepted.action_id).values(
        state=ActionState.RUNNING, started_at=long_ago, heartbeat_at=long_ago, worker="dead-worker"))
    db_session.execute(update(Deployment).values(lease_owner="dead-worker", lease_expires_at=long_ago))
    db_session.commit()
    report = Scheduler(worker_ctx).tick()
    assert report.requeued == [accepted.action_id]
    work()
    assert action(db_session, accepted.action_id).state is ActionState.SUCCEEDED
    assert deployment(db_session).state is S.RUNNING


def test_reaper_on_the_workers_host_stops_the_left_script_and_removes_its_working_copy(
        db_session, worker_ctx, services_ctx, tmp_path, monkeypatch):
    """A worker on this host died and its script's group outlived it (its supervisor was killed
    first, say): the reaper kills the group it recorded and removes the working copy."""
    import socket
    import subprocess
    import sys
    import tempfile

    from workers.jobs import action_dir_prefix, script_label
    from workers.runner import SUPERVISOR

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    accepted = request(db_session, worker_ctx, services_ctx)
    copy = tmp_path / f"{action_dir_prefix(accepted.action_id)}x1y2"
    copy.mkdir()
    group = subprocess.Popen([sys.executable, "-I", "-S", SUPERVISOR, script_label(accepted.action_id),
                              "/bin/sleep", "300"], start_new_session=True)
    try:
        long_ago = datetime.now(UTC) - timedelta(minutes=5)
        db_session.execute(update(Action).where(Action.id == accepted.action_id).values(
            state=ActionState.RUNNING, started_at=long_ago, script_started_at=long_ago, heartbeat_at=long_ago,
            worker=f"{socket.gethostname()}:999999:1:dead", script_pgid=group.pid))
        db_session.commit()
        report = Scheduler(worker_ctx).tick()
        assert report.reaped == [accepted.action_id]
        assert group.wait(10) == -9
        assert not copy.exists()
        assert f"stopped its script's process group {group.pid}" in action(db_session, accepted.action_id).log
    finally:
        group.kill()


def test_reaper_fails_an_action_whose_worker_died_in_its_script(db_session, worker_ctx, services_ctx):
    accepted = request(db_session, worker_ctx, services_ctx)
    long_ago = datetime.now(UTC) - timedelta(minutes=5)
    db_session.execute(update(Action).where(Action.id == accepted.action_id).values(
        state=ActionState.RUNNING, started_at=long_ago, script_started_at=long_ago, heartbeat_at=long_ago,
        worker="dead-worker"))
    db_session.execute(update(Deployment).values(lease_owner="dead-worker", lease_expires_at=long_ago))
    # The dead worker had ended config_check and was in create when it died.
    db_session.add_all([
        ActionStep(action_id=accepted.action_id, position=1, operation="config_check", started_at=long_ago,
                   finished_at=long_ago, exit_code=0),
        ActionStep(action_id=accepted.action_id, position=2, operation="create", started_at=long_ago)])
    db_session.commit()
    report = Scheduler(worker_ctx).tick()
    assert report.reaped == [accepted.action_id]
    a = action(db_session, accepted.action_id)
    assert a.state is ActionState.FAILED
    assert a.error == "the worker running this action stopped responding"
    # The step under way ends with its worker: when the reaper found it, with no exit code.
    steps = db_session.scalars(select(ActionStep).where(ActionStep.action_id == accepted.action_id)
                               .order_by(ActionStep.position).execution_options(populate_existing=True)).all()
    assert [(s.operation, s.exit_code, s.finished_at is not None) for s in steps] == [
        ("config_check", 0, True), ("create", None, True)]
    assert steps[0].finished_at == long_ago and steps[1].finished_at > long_ago
    d = deployment(db_session)
    assert d.state is S.FAILURE and d.lease_owner is None


def test_retention_cleans_up_long_archived_deployments(db_session, worker_ctx, services_ctx, work):
    request(db_session, worker_ctx, services_ctx)
    work()
    deployments.archive_deployment(db_session, worker_ctx.manifests.current(), "probe-stage", services_ctx,
                                requested_by="t", origin="cli")
    work()
    assert deployment(db_session).state is S.ARCHIVED
    scheduler = Scheduler(worker_ctx)
    assert scheduler.tick().cleanups == []
    report = scheduler.tick(now=datetime.now(UTC) + timedelta(days=15))
    assert report.cleanups == ["probe-stage"]
    work()
    assert deployment(db_session).state is S.REMOVED
    assert deployment(db_session).actions[-1].requested_by == "schedule:retention"


def test_overrides_are_kept_between_updates_and_removed_with_null(db_session, worker_ctx, services_ctx, work,
                                                                  record):
    request(db_session, worker_ctx, services_ctx, tag="v1", deployment_overrides={"sleep": "0"},
            app_overrides={"LOG_LEVEL": "debug"})
    work()
    request(db_session, worker_ctx, services_ctx, tag="v2")
    d = deployment(db_session)
    assert d.deployment_overrides == {"sleep": "0"} and d.app_overrides == {"LOG_LEVEL": "debug"}
    accepted = request(db_session, worker_ctx, services_ctx, tag="v3", app_overrides={"LOG_LEVEL": None})
    d = deployment(db_session)
    assert d.app_overrides == {}
    # The action runs with the manifest's default again.
    assert action(db_session, accepted.action_id).config["app_overrides"] == {"LOG_LEVEL": "info"}
    work()
    assert deployment(db_session).state is S.RUNNING


def test_an_update_does_not_supersede_a_queued_create(db_session, worker_ctx, services_ctx, work, record):
    created = request(db_session, worker_ctx, services_ctx, tag="v1").action_id
    updated = request(db_session, worker_ctx, services_ctx, tag="v2").action_id
    assert action(db_session, created).state is ActionState.QUEUED
    work()
    assert action(db_session, created).state is ActionState.SUCCEEDED
    assert action(db_session, updated).state is ActionState.SUCCEEDED
    assert [line for line in read_record(record) if line.split()[0] in ("create", "update")] == [
        "create probe-stage v1", "update probe-stage v2"]
    assert deployment(db_session).tag == "v2"


def test_notifications_and_info_that_outlast_a_heartbeat_still_run(db_session, worker_ctx, services_ctx, work,
                                                                   record, monkeypatch):
    # Heartbeats every 0.2 s: a notifications script of 6 s sees many of them (and at least one
    # runner tick of any length up to 5 s) after its action has settled, when the heartbeat may
    # only renew the lease.
    monkeypatch.setattr("workers.jobs.HEARTBEAT_SECONDS", 0.2)
    request(db_session, worker_ctx, services_ctx, tag="v1", deployment_overrides={"notify": "6"})
    work()
    assert deployment(db_session).state is S.RUNNING
    assert (record.parent / "record.notified").read_text().splitlines() == ["probe-stage CreatePending Running"]
    assert {"name": "logs", "url": "https://logs.example.test/probe-stage"} in deployment(db_session).links
