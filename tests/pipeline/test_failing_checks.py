"""A periodic check that cannot start (a secret missing, the manifest gone, a bug) is tried once per
interval with a growing backoff, not on every scheduler tick; the deployment says why, and the log
has one line each time (a traceback only for a bug)."""

from __future__ import annotations

import logging
import shutil
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from bot.core.logs import ContextFilter
from bot.core.models import Deployment
from bot.core.states import DeploymentState
from bot.services import deployments
from workers.scheduler import Scheduler

S = DeploymentState
SECRET_MISSING = ("secret DATABASE_PASSWORD is not set: give Sami's processes "
                  "SAMI_SCRIPT_SECRET_DATABASE_PASSWORD")
MANIFEST_GONE = "no manifest for probe stage in the deployments repo"


def deployment(db_session) -> Deployment:
    db_session.expire_all()
    return db_session.scalars(select(Deployment).where(Deployment.name == "probe-stage")).one()


@pytest.fixture
def running(db_session, worker_ctx, services_ctx, work) -> Deployment:
    """probe-stage, Running, last checked an hour ago: its check is due."""
    req = deployments.DeploymentRequest(service="probe", environment="stage", tag="v1", requested_by="test",
                                     origin="cli")
    deployments.request_deployment(db_session, worker_ctx.manifests.current(), req, services_ctx)
    work()
    db_session.execute(update(Deployment).where(Deployment.name == "probe-stage")
                       .values(checked_at=deployment(db_session).checked_at - timedelta(hours=1)))
    db_session.commit()
    d = deployment(db_session)
    assert d.state is S.RUNNING and d.status_message is None
    return d


def lose_the_secret(probe_repo, worker_ctx, monkeypatch) -> str:
    manifest = probe_repo / "services/probe/swarm/stage/sami.yaml"
    manifest.write_text(manifest.read_text() + "secrets: [DATABASE_PASSWORD]\n")
    monkeypatch.delenv("SAMI_SCRIPT_SECRET_DATABASE_PASSWORD", raising=False)
    worker_ctx.manifests.current(refresh=True)
    return SECRET_MISSING


def lose_the_manifest(probe_repo, worker_ctx, monkeypatch) -> str:
    shutil.rmtree(probe_repo / "services/probe/swarm/stage")
    worker_ctx.manifests.current(refresh=True)
    return MANIFEST_GONE


def check_lines(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "workers.checks" and r.levelno >= logging.WARNING]


@pytest.mark.parametrize("break_it", [lose_the_secret, lose_the_manifest], ids=["secret", "manifest"])
def test_a_check_that_cannot_start_is_tried_once_per_interval_and_says_why(
        db_session, worker_ctx, work, running, probe_repo, monkeypatch, caplog, break_it):
    reason = break_it(probe_repo, worker_ctx, monkeypatch)
    scheduler = Scheduler(worker_ctx)
    caplog.set_level(logging.INFO)
    caplog.handler.addFilter(ContextFilter())  # as configure_logging's handler: the ids the work is about
    assert scheduler.tick().checks == [running.id]  # the database's time, as in production
    work()
    d = deployment(db_session)
    assert d.status_message == f"check failing: {reason}"
    assert d.state is S.RUNNING  # nothing is known about what runs
    (line,) = check_lines(caplog)
    assert line.exc_info is None and "Traceback" not in caplog.text
    assert line.getMessage() == f"check of probe-stage cannot run: {reason}; next try in 60 s"
    assert line.deployment == "probe-stage"  # a JSON log line names the deployment

    # The next ticks (every 2 s in the embedded default) do not try it again ...
    assert scheduler.tick().checks == []
    first = d.checked_at
    assert scheduler.tick(now=first + timedelta(seconds=59)).checks == []
    # ... the interval does, and then waits twice as long.
    assert scheduler.tick(now=first + timedelta(seconds=61)).checks == [running.id]
    work()
    second = deployment(db_session).checked_at
    assert scheduler.tick(now=second + timedelta(seconds=61)).checks == []
    assert scheduler.tick(now=second + timedelta(seconds=121)).checks == [running.id]
    assert [r.getMessage().rsplit("; ", 1)[1] for r in check_lines(caplog)] == ["next try in 60 s",
                                                                                 "next try in 120 s"]


def test_a_check_that_runs_again_says_so_and_is_back_on_the_interval(
        db_session, worker_ctx, work, running, probe_repo, monkeypatch):
    lose_the_secret(probe_repo, worker_ctx, monkeypatch)
    scheduler = Scheduler(worker_ctx)
    scheduler.tick()
    work()
    assert deployment(db_session).status_message == f"check failing: {SECRET_MISSING}"
    monkeypatch.setenv("SAMI_SCRIPT_SECRET_DATABASE_PASSWORD", "a-long-enough-password")
    failed_at = deployment(db_session).checked_at
    assert scheduler.tick(now=failed_at + timedelta(seconds=61)).checks == [running.id]
    work()
    d = deployment(db_session)
    assert d.state is S.RUNNING and d.status_message == "check passed"
    assert d.check_failures == 0 and d.check_retry_at is None


def test_a_bug_keeps_its_traceback_and_still_waits_for_the_interval(db_session, worker_ctx, work, running,
                                                                    monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr("workers.checks.make_target", broken)  # a bug on the check's path
    scheduler = Scheduler(worker_ctx)
    scheduler.tick()
    work()
    d = deployment(db_session)
    assert d.status_message == "check failing: an unexpected error (ZeroDivisionError); see the worker's log"
    (line,) = check_lines(caplog)
    assert line.exc_info is not None
    assert scheduler.tick().checks == []
    assert scheduler.tick(now=d.checked_at + timedelta(seconds=61)).checks == [running.id]
