"""The sweeps: queue again what the queue does not hold — accepted actions that are due, webhook
deliveries still waiting, and the GitHub side effects that are due (Redis was down or lost them,
a worker died, or no scheduler moved a job when its time came)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select

from bot.core.models import Action, Delivery, DeliveryStatus, Deployment
from bot.core.states import ActionState
from workers.context import WorkerContext
from workers.deliveries import sweepable
from workers.outbox import due_rows
from workers.outbox import prune as prune_outbox
from workers.queue import delivery_job_id, outbox_job_id
from workers.scheduler.report import Every, TickReport

SWEEP_AFTER = timedelta(seconds=2)   # an action accepted this long ago and not on the queue is re-queued
DELIVERIES_PER_TICK = 500
PRUNE_OUTBOX_EVERY = timedelta(hours=1)  # rows sent long ago are forgotten


def sweep_actions(ctx: WorkerContext, report: TickReport, now: datetime) -> None:
    """Queue every accepted action that is due and that the queue does not hold (Redis was down,
    or lost it, or no scheduler moved its job when its time came)."""
    leased = (Deployment.lease_owner.is_not(None)) & (Deployment.lease_expires_at >= now)
    with ctx.session() as session:
        rows = session.execute(
            select(Action.id, Action.deployment_id).join(Deployment, Deployment.id == Action.deployment_id)
            .where(Action.state == ActionState.QUEUED, Action.created_at < now - SWEEP_AFTER, ~leased,
                   (Action.retry_at.is_(None)) | (Action.retry_at <= now))
            .order_by(Action.id)).all()
    seen: set[int] = set()
    for action_id, deployment_id in rows:
        # One job per deployment is enough: the lease holder drains the rest.
        if deployment_id in seen:
            continue
        seen.add(deployment_id)
        # No worker holds this deployment, so a "started" job belonged to a dead worker; and the
        # action is due, so a job still scheduled for later lost the scheduler that was to queue it.
        if ctx.broker.job_is_live(str(action_id), started_counts=False, scheduled_counts=False):
            continue
        if ctx.broker.enqueue_action(action_id, started_counts=False):
            report.queued.append(action_id)


def sweep_deliveries(ctx: WorkerContext, report: TickReport, now: datetime) -> None:
    """Queue webhook deliveries still waiting: Redis was down when they came (or lost their
    job), a retry is due, or the worker processing one died."""
    with ctx.session() as session:
        rows = session.execute(select(Delivery.id, Delivery.status).where(sweepable(now, SWEEP_AFTER))
                               .order_by(Delivery.id).limit(DELIVERIES_PER_TICK)).all()
    for row_id, status in rows:
        # A delivery left "processing" lost its worker: its "started" job is a dead one.
        started_counts = status is not DeliveryStatus.PROCESSING
        if ctx.broker.job_is_live(delivery_job_id(row_id), started_counts=started_counts):
            continue
        if ctx.broker.enqueue_delivery(row_id, started_counts=started_counts):
            report.deliveries.append(row_id)


def sweep_outbox(ctx: WorkerContext, report: TickReport, now: datetime, pruned: Every) -> None:
    """Queue the GitHub side effects that are due: new, coalesced, retried, or lost by a dead worker;
    hourly, forget those sent long ago."""
    with ctx.session() as session:
        rows = due_rows(session, now)
        if pruned.due(now, PRUNE_OUTBOX_EVERY):
            prune_outbox(session, now)
    for row_id in rows:
        # A running job of a due row is a dead worker's (the claim protects against two senders).
        if ctx.broker.job_is_live(outbox_job_id(row_id), started_counts=False):
            continue
        if ctx.broker.enqueue_outbox(row_id, started_counts=False):
            report.outbox.append(row_id)
