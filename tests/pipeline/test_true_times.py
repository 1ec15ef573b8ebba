"""A deployment's "updated" time is its last real change: a periodic check that finds nothing new
writes ``checked_at`` only, and a check that changes the state moves ``updated_at`` with it."""

from __future__ import annotations

import shutil
from datetime import timedelta

from sqlalchemy import select, update

from bot.core.models import Deployment
from bot.core.states import DeploymentState, FailureReason
from bot.services import deployments
from bot.services.queries import DeploymentFilter, list_deployments
from workers.scheduler import Scheduler

S = DeploymentState
HOUR = timedelta(hours=1)


def deployment(db_session, name: str) -> Deployment:
    db_session.expire_all()
    return db_session.scalars(select(Deployment).where(Deployment.name == name)).one()


def deploy(db_session, worker_ctx, services_ctx, work, environment: str, pull_request: int | None = None) -> None:
    req = deployments.DeploymentRequest(service="probe", environment=environment, tag="v1", requested_by="test",
                                        origin="cli", pull_request=pull_request)
    deployments.request_deployment(db_session, worker_ctx.manifests.current(), req, services_ctx)
    work()


def age_by(db_session, name: str, updated: timedelta, checked: timedelta) -> None:
    """Move the deployment's times into the past, as if its last change and check were that long ago."""
    d = deployment(db_session, name)
    db_session.execute(update(Deployment).where(Deployment.name == name)
                       .values(updated_at=d.updated_at - updated, checked_at=d.checked_at - checked))
    db_session.commit()


def test_a_check_that_changes_nothing_leaves_updated_at_and_a_state_change_moves_it(
        db_session, worker_ctx, services_ctx, work, record):
    deploy(db_session, worker_ctx, services_ctx, work, "stage")
    age_by(db_session, "probe-stage", updated=3 * HOUR, checked=HOUR)
    before = deployment(db_session, "probe-stage")
    changed_at, checked_at = before.updated_at, before.checked_at
    assert before.state is S.RUNNING

    scheduler = Scheduler(worker_ctx)
    assert scheduler.tick().checks == [before.id]
    work()
    after = deployment(db_session, "probe-stage")
    assert after.state is S.RUNNING
    assert after.checked_at > checked_at  # the check ran ...
    assert after.updated_at == changed_at  # ... and changed nothing

    # What runs is gone: the next check fails (tag mismatch), a real change.
    shutil.rmtree(record.parent / "record.d" / "probe-stage")
    age_by(db_session, "probe-stage", updated=timedelta(0), checked=HOUR)
    assert scheduler.tick().checks == [before.id]
    work()
    failed = deployment(db_session, "probe-stage")
    assert failed.state is S.FAILURE and failed.failure_reason is FailureReason.TAG_MISMATCH
    assert failed.updated_at > changed_at + 2 * HOUR
    assert failed.updated_at == failed.status_changed_at


def test_latest_change_sorts_by_real_changes_not_by_checks(db_session, worker_ctx, services_ctx, work):
    deploy(db_session, worker_ctx, services_ctx, work, "stage")
    deploy(db_session, worker_ctx, services_ctx, work, "pull_request", pull_request=7)
    # probe-stage changed long ago, probe-pr-7 recently; probe-stage's check is due, probe-pr-7's is not.
    age_by(db_session, "probe-stage", updated=5 * HOUR, checked=HOUR)
    age_by(db_session, "probe-pr-7", updated=HOUR, checked=timedelta(0))
    Scheduler(worker_ctx).tick()
    work()
    assert deployment(db_session, "probe-stage").checked_at > deployment(db_session, "probe-pr-7").checked_at
    for sort in ("-updated", "attention"):
        page = list_deployments(db_session, DeploymentFilter(sort=sort), None)
        assert [d.name for d in page.rows] == ["probe-pr-7", "probe-stage"]
