"""How long things are kept: pull request environments idle past their manifest's ttl are
archived, deployments archived longer than SAMI_RETENTION_DAYS are cleaned up, and extracted trees
of old deployments-repo commits are removed."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import exists, func, select

from bot.core.lifecycle import LIVE_STATES, ActionState, DeploymentState
from bot.core.models import Action, Deployment
from bot.manifests import prune_trees
from bot.services.deployments import Context, cleanup_deployment, ensure_archived
from workers.context import WorkerContext
from workers.scheduler.report import Every, TickReport

log = logging.getLogger(__name__)
S = DeploymentState

PRUNE_EVERY = timedelta(hours=1)  # extracted trees of old deployments-repo commits
EXPIRE_EVERY = timedelta(minutes=1)  # look for pull request environments idle past their ttl


def retention(ctx: WorkerContext, report: TickReport, now: datetime) -> None:
    """Clean up deployments archived longer than the retention period."""
    cutoff = now - timedelta(days=ctx.settings.retention_days)
    with ctx.session() as session:
        names = session.scalars(select(Deployment.name).where(
            Deployment.state == S.ARCHIVED, Deployment.archived_at < cutoff)).all()
    if not names:
        return
    repo = ctx.manifests.current()
    services_ctx = Context.from_settings(ctx.settings, ctx.broker)
    for name in names:
        with ctx.session() as session:
            try:
                cleanup_deployment(session, repo, name, services_ctx, requested_by="schedule:retention",
                                   origin="schedule")
                report.cleanups.append(name)
            except Exception as exc:  # another scheduler got there first, or it changed state
                session.rollback()
                log.info("retention cleanup of %s skipped: %s", name, exc)


def expire(ctx: WorkerContext, report: TickReport, now: datetime, every: Every) -> None:
    """Archive pull request environments with no action for longer than their manifest's ttl."""
    if not every.due(now, EXPIRE_EVERY):
        return
    last_action = select(func.max(Action.created_at)).where(Action.deployment_id == Deployment.id)
    busy = exists().where(Action.deployment_id == Deployment.id,
                          Action.state.in_((ActionState.QUEUED, ActionState.RUNNING)))
    with ctx.session() as session:
        rows = session.execute(select(Deployment.name, Deployment.service, last_action.scalar_subquery()).where(
            Deployment.state.in_(LIVE_STATES), Deployment.environment == "pull_request",
            Deployment.pull_request.is_not(None), ~busy)).all()
    if not rows:
        return
    repo = ctx.manifests.current()
    services_ctx = Context.from_settings(ctx.settings, ctx.broker)
    for name, service, last in rows:
        manifest = repo.find(service, "pull_request")
        if manifest is None or manifest.ttl is None or (last and last > now - timedelta(seconds=manifest.ttl)):
            continue
        with ctx.session() as session:
            ensured = ensure_archived(session, repo, name, services_ctx, requested_by="schedule:ttl",
                                      origin="schedule")
        if ensured.done:
            report.expired.append(name)
            log.info("archived %s: no action for longer than its ttl (%d s)", name, manifest.ttl,
                     extra={"deployment": name})


def prune(ctx: WorkerContext, report: TickReport, now: datetime, every: Every) -> None:
    """Remove extracted trees of old deployments-repo commits (git sources), hourly."""
    store = ctx.manifests
    if not store.is_git or not every.due(now, PRUNE_EVERY):
        return
    removed = prune_trees(store.cache_dir, keep=5)
    if removed:
        log.info("pruned %d old deployments-repo trees", len(removed))
