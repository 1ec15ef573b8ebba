"""Status checks: queue ``check`` of live deployments and ``archive_check`` of archiving ones when
due, each deployment at its own offset within SAMI_CHECK_INTERVAL. Deployments whose script set has
``check_batch`` (and whose manifest names no secret) are checked together: one call per set; an
external third-party service, which has no scripts, is checked alone (its endpoint)."""

from __future__ import annotations

import logging
import zlib
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import exists, select

from bot.core.lifecycle import LIVE_STATES, ActionState, DeploymentState
from bot.core.models import Action, Deployment
from workers import endpoints
from workers.context import WorkerContext
from workers.executor import BATCH_OPERATION
from workers.scheduler.report import TickReport

log = logging.getLogger(__name__)
S = DeploymentState
CHECKS_PER_TICK = 200
# Deployments checked through check_batch per tick, and per call.
BATCHED_PER_TICK = 5000
BATCH_SIZE = 1000


def checks(ctx: WorkerContext, report: TickReport, now: datetime) -> None:
    """Queue ``check`` of live deployments and ``archive_check`` of archiving ones when due."""
    busy = exists().where(Action.deployment_id == Deployment.id,
                          Action.state.in_((ActionState.QUEUED, ActionState.RUNNING)))
    with ctx.session() as session:
        rows = session.execute(
            select(Deployment.id, Deployment.state, Deployment.checked_at, Deployment.service,
                   Deployment.environment).where(
                Deployment.state.in_([*LIVE_STATES, S.ARCHIVE_PENDING]), Deployment.lease_owner.is_(None),
                ~busy, Deployment.check_retry_at.is_(None) | (Deployment.check_retry_at <= now))
            .order_by(Deployment.checked_at.asc().nulls_first()).limit(CHECKS_PER_TICK * 2 + BATCHED_PER_TICK)).all()
    batch_set = _batch_sets(ctx)
    batches: dict[Path, list[int]] = {}
    batched = single = 0
    for deployment_id, state, checked_at, service, environment in rows:
        if not _due(ctx, deployment_id, checked_at, now):
            continue
        kind = "archive_check" if state is S.ARCHIVE_PENDING else "check"
        scripts = batch_set(service, environment) if kind == "check" else None
        if scripts is not None:
            if batched < BATCHED_PER_TICK:
                batches.setdefault(scripts, []).append(deployment_id)
                batched += 1
            continue
        if single >= CHECKS_PER_TICK:
            continue
        if ctx.broker.enqueue_check(deployment_id, kind, started_counts=False):
            single += 1
            (report.archive_checks if kind == "archive_check" else report.checks).append(deployment_id)
    for ids in batches.values():
        for start in range(0, len(ids), BATCH_SIZE):
            chunk = ids[start:start + BATCH_SIZE]
            if ctx.broker.enqueue_check_batch(chunk, now):
                report.check_batches.append(chunk)
                report.checks.extend(chunk)


def _batch_sets(ctx: WorkerContext):
    """``(service, environment) -> the script folder`` when that deployment's check can go in a
    ``check_batch`` call, else None (no such script, a secret to pass, no manifest)."""
    try:
        repo = ctx.manifests.current()
    except Exception as exc:  # the repo is unreadable: every check goes alone, and says why itself
        log.debug("checks go one by one: %s", exc)
        return lambda service, environment: None
    known: dict[tuple[str, str], Path | None] = {}

    def batch_set(service: str, environment: str) -> Path | None:
        key = (service, environment)
        if key not in known:
            manifest = repo.find(service, environment)
            folder = None
            if (manifest is not None and not manifest.secrets and not endpoints.external(manifest)
                    and ctx.executor.has(repo, manifest, BATCH_OPERATION)):
                folder = ctx.executor.scripts_dir(repo, manifest)
            known[key] = folder
        return known[key]

    return batch_set


def _due(ctx: WorkerContext, deployment_id: int, checked_at: datetime | None, now: datetime) -> bool:
    if checked_at is None:
        return True
    # Stagger: each deployment gets its own offset within the interval.
    interval = ctx.settings.check_interval
    offset = (zlib.crc32(str(deployment_id).encode()) % 1000) / 1000 * interval * 0.2
    return checked_at < now - timedelta(seconds=interval - offset)
