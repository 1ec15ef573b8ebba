"""Status checks: queue ``check`` of live deployments and ``archive_check`` of archiving ones when
due, each deployment at its own offset within SAMI_CHECK_INTERVAL."""

from __future__ import annotations

import zlib
from datetime import datetime, timedelta

from sqlalchemy import exists, select

from bot.core.lifecycle import LIVE_STATES, ActionState, DeploymentState
from bot.core.models import Action, Deployment
from workers.context import WorkerContext
from workers.scheduler.report import TickReport

S = DeploymentState
CHECKS_PER_TICK = 200


def checks(ctx: WorkerContext, report: TickReport, now: datetime) -> None:
    """Queue ``check`` of live deployments and ``archive_check`` of archiving ones when due."""
    busy = exists().where(Action.deployment_id == Deployment.id,
                          Action.state.in_((ActionState.QUEUED, ActionState.RUNNING)))
    with ctx.session() as session:
        rows = session.execute(
            select(Deployment.id, Deployment.state, Deployment.checked_at).where(
                Deployment.state.in_([*LIVE_STATES, S.ARCHIVE_PENDING]), Deployment.lease_owner.is_(None),
                ~busy, Deployment.check_retry_at.is_(None) | (Deployment.check_retry_at <= now))
            .order_by(Deployment.checked_at.asc().nulls_first()).limit(CHECKS_PER_TICK * 2)).all()
    for deployment_id, state, checked_at in rows:
        if len(report.checks) + len(report.archive_checks) >= CHECKS_PER_TICK:
            break
        if not _due(ctx, deployment_id, checked_at, now):
            continue
        kind = "archive_check" if state is S.ARCHIVE_PENDING else "check"
        if ctx.broker.enqueue_check(deployment_id, kind, started_counts=False):
            (report.archive_checks if kind == "archive_check" else report.checks).append(deployment_id)


def _due(ctx: WorkerContext, deployment_id: int, checked_at: datetime | None, now: datetime) -> bool:
    if checked_at is None:
        return True
    # Stagger: each deployment gets its own offset within the interval.
    interval = ctx.settings.check_interval
    offset = (zlib.crc32(str(deployment_id).encode()) % 1000) / 1000 * interval * 0.2
    return checked_at < now - timedelta(seconds=interval - offset)
