"""Periodic work: the queue sweep, the reaper, status checks, archive checks, retention and the
archive of idle pull request environments; the GitHub rounds are queued here and run by workers, so
that GitHub's answers (or its silence) never hold up a tick.

Every step is idempotent (conditional updates, the state machine, live-job checks), so running
more than one scheduler is safe; with Redis, a short lock also keeps two from doing one tick.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import exists, func, select, update

from bot import outbox
from bot.core.models import Action, Delivery, DeliveryStatus, Deployment
from bot.core.states import (
    LIVE_STATES,
    PENDING_STATES,
    ActionState,
    DeploymentState,
    FailureReason,
    after_cancel,
    transition,
    transition_action,
)
from bot.manifests import prune_trees
from bot.services.deployments import Context, cleanup_deployment, ensure_archived
from workers.context import WorkerContext
from workers.deliveries import sweepable
from workers.jobs import action_dir_prefix, script_label
from workers.lease import db_now, on_this_host
from workers.outbox import due_rows
from workers.outbox import prune as prune_outbox
from workers.queue import delivery_job_id, outbox_job_id
from workers.runner import kill_script_group

log = logging.getLogger(__name__)
S = DeploymentState

SWEEP_AFTER = timedelta(seconds=2)   # an action accepted this long ago and not on the queue is re-queued
DEAD_AFTER = timedelta(seconds=30)    # a running action without a heartbeat this long has lost its worker
CHECKS_PER_TICK = 200
DELIVERIES_PER_TICK = 500
TICK_LOCK = "sami:scheduler:tick"
PRUNE_EVERY = timedelta(hours=1)  # extracted trees of old deployments-repo commits
EXPIRE_EVERY = timedelta(minutes=1)  # look for pull request environments idle past their ttl


@dataclass
class TickReport:
    """What one scheduler tick did, for logs, metrics and tests."""

    queued: list[int] = field(default_factory=list)
    reaped: list[int] = field(default_factory=list)
    requeued: list[int] = field(default_factory=list)
    checks: list[int] = field(default_factory=list)
    archive_checks: list[int] = field(default_factory=list)
    cleanups: list[str] = field(default_factory=list)
    leases_freed: list[int] = field(default_factory=list)
    deliveries: list[int] = field(default_factory=list)
    rounds: list[str] = field(default_factory=list)  # GitHub rounds queued: reconcile, redeliver
    outbox: list[int] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)


class Scheduler:
    """Runs the periodic steps every ``interval`` seconds."""

    def __init__(self, ctx: WorkerContext, interval: float = 5.0):
        self.ctx = ctx
        self.interval = interval
        self._stop = threading.Event()
        self._pruned_at: datetime | None = None
        self._outbox_pruned_at: datetime | None = None
        self._expired_at: datetime | None = None
        self._reconcile_at: datetime | None = None
        self._redeliver_at: datetime | None = None

    # -- steps ---------------------------------------------------------------------------------

    def sweep(self, report: TickReport, now: datetime) -> None:
        """Queue every accepted action that is due and that the queue does not hold (Redis was down,
        or lost it, or no scheduler moved its job when its time came)."""
        leased = (Deployment.lease_owner.is_not(None)) & (Deployment.lease_expires_at >= now)
        with self.ctx.session() as session:
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
            if self.ctx.broker.job_is_live(str(action_id), started_counts=False, scheduled_counts=False):
                continue
            with self.ctx.session() as session:
                if self.ctx.broker.enqueue_action(session, action_id, started_counts=False):
                    report.queued.append(action_id)

    def sweep_deliveries(self, report: TickReport, now: datetime) -> None:
        """Queue webhook deliveries still waiting: Redis was down when they came (or lost their
        job), a retry is due, or the worker processing one died."""
        with self.ctx.session() as session:
            rows = session.execute(select(Delivery.id, Delivery.status).where(sweepable(now, SWEEP_AFTER))
                                   .order_by(Delivery.id).limit(DELIVERIES_PER_TICK)).all()
        for row_id, status in rows:
            # A delivery left "processing" lost its worker: its "started" job is a dead one.
            started_counts = status is not DeliveryStatus.PROCESSING
            if self.ctx.broker.job_is_live(delivery_job_id(row_id), started_counts=started_counts):
                continue
            if self.ctx.broker.enqueue_delivery(row_id, started_counts=started_counts):
                report.deliveries.append(row_id)

    def sweep_outbox(self, report: TickReport, now: datetime) -> None:
        """Queue the GitHub side effects that are due: new, coalesced, retried, or lost by a dead worker;
        hourly, forget those sent long ago."""
        with self.ctx.session() as session:
            rows = due_rows(session, now)
            if self._outbox_pruned_at is None or now - self._outbox_pruned_at >= PRUNE_EVERY:
                self._outbox_pruned_at = now
                prune_outbox(session, now)
        for row_id in rows:
            # A running job of a due row is a dead worker's (the claim protects against two senders).
            if self.ctx.broker.job_is_live(outbox_job_id(row_id), started_counts=False):
                continue
            if self.ctx.broker.enqueue_outbox(row_id, started_counts=False):
                report.outbox.append(row_id)

    def reap(self, report: TickReport, now: datetime) -> None:
        """Settle actions whose worker died: re-queue if no script ran yet, else fail them. On the
        dead worker's host, also stop what its script left running and remove its working copy."""
        cutoff = now - DEAD_AFTER
        with self.ctx.session() as session:
            dead = session.execute(select(Action.id, Action.deployment_id).where(
                Action.state == ActionState.RUNNING, Action.heartbeat_at < cutoff)).all()
        for action_id, deployment_id in dead:
            with self.ctx.session() as session:
                # Deployment before action, the order every writer locks them in.
                deployment = session.scalars(select(Deployment).where(Deployment.id == deployment_id)
                                             .with_for_update().execution_options(populate_existing=True)).one()
                action = session.scalars(
                    select(Action).where(Action.id == action_id, Action.state == ActionState.RUNNING,
                                         Action.heartbeat_at < cutoff)
                    .with_for_update().execution_options(populate_existing=True)).first()
                if action is None:
                    continue  # it came back to life or finished meanwhile
                worker = action.worker
                leftovers = _stop_leftovers(action.id, worker, action.script_pgid)
                if action.cancel_requested_at is not None:
                    # Cancelled while its worker was gone: it ends as asked, and never runs again.
                    _settle_cancelled(session, deployment, action)
                    report.reaped.append(action.id)
                elif action.script_started_at is None:
                    transition_action(action, ActionState.QUEUED)
                    report.requeued.append(action.id)
                else:
                    transition_action(action, ActionState.FAILED)
                    action.error = "the worker running this action stopped responding"
                    # Appended in SQL: the log itself is never loaded here.
                    action.log = Action.log + "\n# the worker stopped responding; action failed" + (
                        f" ({leftovers})\n" if leftovers else "\n")
                    report.reaped.append(action.id)
                    others = session.scalar(select(exists().where(
                        Action.deployment_id == deployment.id, Action.state == ActionState.QUEUED)))
                    if not others and deployment.state in PENDING_STATES:
                        target = S.CLEANUP_FAILED if action.kind == "cleanup" else S.FAILURE
                        transition(deployment, target, message=action.error)
                if deployment.lease_owner == worker:
                    deployment.lease_owner = None
                    deployment.lease_expires_at = None
                outbox.commit(session)
                log.warning("reaped action %s of %s (%s)", action.id, deployment.name,
                            "re-queued" if action.state is ActionState.QUEUED else str(action.state),
                            extra={"action_id": action.id, "deployment": deployment.name})
        with self.ctx.session() as session:
            # Leases of workers that died outside an action (a check job).
            freed = session.execute(
                update(Deployment).where(Deployment.lease_owner.is_not(None), Deployment.lease_expires_at < now)
                .values(lease_owner=None, lease_expires_at=None)
                .returning(Deployment.id).execution_options(synchronize_session=False)).scalars().all()
            session.commit()
            report.leases_freed.extend(freed)
        for action_id in report.requeued:
            with self.ctx.session() as session:
                self.ctx.broker.enqueue_action(session, action_id, started_counts=False)

    def _due(self, deployment_id: int, checked_at: datetime | None, now: datetime) -> bool:
        if checked_at is None:
            return True
        # Stagger: each deployment gets its own offset within the interval.
        interval = self.ctx.settings.check_interval
        offset = (zlib.crc32(str(deployment_id).encode()) % 1000) / 1000 * interval * 0.2
        return checked_at < now - timedelta(seconds=interval - offset)

    def checks(self, report: TickReport, now: datetime) -> None:
        """Queue ``check`` of live deployments and ``archive_check`` of archiving ones when due."""
        busy = exists().where(Action.deployment_id == Deployment.id,
                              Action.state.in_((ActionState.QUEUED, ActionState.RUNNING)))
        with self.ctx.session() as session:
            rows = session.execute(
                select(Deployment.id, Deployment.state, Deployment.checked_at).where(
                    Deployment.state.in_([*LIVE_STATES, S.ARCHIVE_PENDING]), Deployment.lease_owner.is_(None),
                    ~busy, Deployment.check_retry_at.is_(None) | (Deployment.check_retry_at <= now))
                .order_by(Deployment.checked_at.asc().nulls_first()).limit(CHECKS_PER_TICK * 2)).all()
        for deployment_id, state, checked_at in rows:
            if len(report.checks) + len(report.archive_checks) >= CHECKS_PER_TICK:
                break
            if not self._due(deployment_id, checked_at, now):
                continue
            kind = "archive_check" if state is S.ARCHIVE_PENDING else "check"
            if self.ctx.broker.enqueue_check(deployment_id, kind, started_counts=False):
                (report.archive_checks if kind == "archive_check" else report.checks).append(deployment_id)

    def retention(self, report: TickReport, now: datetime) -> None:
        """Clean up deployments archived longer than the retention period."""
        cutoff = now - timedelta(days=self.ctx.settings.retention_days)
        with self.ctx.session() as session:
            names = session.scalars(select(Deployment.name).where(
                Deployment.state == S.ARCHIVED, Deployment.archived_at < cutoff)).all()
        if not names:
            return
        repo = self.ctx.manifests.current()
        services_ctx = Context.from_settings(self.ctx.settings, self.ctx.broker)
        for name in names:
            with self.ctx.session() as session:
                try:
                    cleanup_deployment(session, repo, name, services_ctx, requested_by="schedule:retention",
                                       origin="schedule")
                    report.cleanups.append(name)
                except Exception as exc:  # another scheduler got there first, or it changed state
                    session.rollback()
                    log.info("retention cleanup of %s skipped: %s", name, exc)

    def expire(self, report: TickReport, now: datetime) -> None:
        """Archive pull request environments with no action for longer than their manifest's ttl."""
        if self._expired_at and now - self._expired_at < EXPIRE_EVERY:
            return
        self._expired_at = now
        last_action = select(func.max(Action.created_at)).where(Action.deployment_id == Deployment.id)
        busy = exists().where(Action.deployment_id == Deployment.id,
                              Action.state.in_((ActionState.QUEUED, ActionState.RUNNING)))
        with self.ctx.session() as session:
            rows = session.execute(select(Deployment.name, Deployment.service, last_action.scalar_subquery()).where(
                Deployment.state.in_(LIVE_STATES), Deployment.environment == "pull_request",
                Deployment.pull_request.is_not(None), ~busy)).all()
        if not rows:
            return
        repo = self.ctx.manifests.current()
        services_ctx = Context.from_settings(self.ctx.settings, self.ctx.broker)
        for name, service, last in rows:
            manifest = repo.find(service, "pull_request")
            if manifest is None or manifest.ttl is None or (last and last > now - timedelta(seconds=manifest.ttl)):
                continue
            with self.ctx.session() as session:
                ensured = ensure_archived(session, repo, name, services_ctx, requested_by="schedule:ttl",
                                          origin="schedule")
            if ensured.done:
                report.expired.append(name)
                log.info("archived %s: no action for longer than its ttl (%d s)", name, manifest.ttl,
                         extra={"deployment": name})

    def prune(self, report: TickReport, now: datetime) -> None:
        """Remove extracted trees of old deployments-repo commits (git sources), hourly."""
        store = self.ctx.manifests
        if not store.is_git or (self._pruned_at and now - self._pruned_at < PRUNE_EVERY):
            return
        self._pruned_at = now
        removed = prune_trees(store.cache_dir, keep=5)
        if removed:
            log.info("pruned %d old deployments-repo trees", len(removed))

    def reconcile(self, report: TickReport, now: datetime) -> None:
        """Every SAMI_RECONCILE_INTERVAL seconds, queue a round that makes pull request environments match
        GitHub's open pull requests."""
        if self.ctx.github is None or (self._reconcile_at and now < self._reconcile_at):
            return
        if self.ctx.broker.enqueue_github_round("reconcile", now.isoformat()):
            self._reconcile_at = now + timedelta(seconds=self.ctx.settings.reconcile_interval)
            report.rounds.append("reconcile")

    def redeliver(self, report: TickReport, now: datetime) -> None:
        """Every SAMI_REDELIVER_INTERVAL seconds, queue a round that asks GitHub to redeliver failed webhook
        deliveries Sami has no record of."""
        if self.ctx.github is None or (self._redeliver_at and now < self._redeliver_at):
            return
        if self.ctx.broker.enqueue_github_round("redeliver", now.isoformat()):
            self._redeliver_at = now + timedelta(seconds=self.ctx.settings.redeliver_interval)
            report.rounds.append("redeliver")

    # -- running -------------------------------------------------------------------------------

    def _lock(self) -> bool:
        connection = getattr(self.ctx.broker, "connection", None)
        if connection is None:
            return True
        try:
            return bool(connection.set(TICK_LOCK, "1", nx=True, px=int(self.interval * 900)))
        except Exception:
            return True  # Redis down: the steps are idempotent, and the sweep must still run

    def tick(self, now: datetime | None = None) -> TickReport:
        """Run every step once; times are the database's (every machine's scheduler agrees)."""
        if now is None:
            with self.ctx.session() as session:
                now = db_now(session)
        report = TickReport()
        for step in (self.reap, self.sweep, self.sweep_deliveries, self.sweep_outbox, self.checks, self.retention,
                     self.expire, self.prune, self.reconcile, self.redeliver):
            try:
                step(report, now)
            except Exception:
                log.exception("scheduler step %s failed", step.__name__)
        return report

    def run_forever(self) -> None:
        log.info("scheduler started (every %.0f s)", self.interval)
        while not self._stop.is_set():
            started = time.monotonic()
            if self._lock():
                try:
                    report = self.tick()
                except Exception:  # the database is unreachable: try again next tick
                    log.exception("scheduler tick failed")
                    self._stop.wait(self.interval)
                    continue
                if (report.queued or report.reaped or report.outbox or report.requeued or report.cleanups
                        or report.deliveries or report.rounds or report.expired):
                    log.info("scheduler: %s", report)
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def stop(self) -> None:
        self._stop.set()


def _stop_leftovers(action_id: int, worker: str | None, pgid: int | None) -> str:
    """On the dead worker's host: kill the action's script group if it still runs, and remove its
    working copies. Elsewhere the script's supervisor has already killed the group. Returns what
    was done, for the action's log."""
    if not on_this_host(worker):
        return ""
    done = []
    if pgid and kill_script_group(pgid, script_label(action_id)):
        done.append(f"stopped its script's process group {pgid}")
    for folder in Path(tempfile.gettempdir()).glob(action_dir_prefix(action_id) + "*"):
        shutil.rmtree(folder, ignore_errors=True)
        done.append(f"removed {folder.name}")
    return "; ".join(done)


def _settle_cancelled(session, deployment: Deployment, action: Action) -> None:
    """End a running action someone cancelled after its worker stopped responding."""
    transition_action(action, ActionState.CANCELLED)
    action.error = f"action {action.id} ({action.kind}) cancelled by {action.cancel_requested_by}"
    action.log = Action.log + "\n# cancelled; its worker had stopped responding\n"
    others = session.scalar(select(exists().where(
        Action.deployment_id == deployment.id, Action.state == ActionState.QUEUED)))
    if not others and deployment.state in PENDING_STATES:
        transition(deployment, after_cancel(action.kind, ran=action.script_started_at is not None),
                   reason=FailureReason.CANCELLED, message=action.error)
