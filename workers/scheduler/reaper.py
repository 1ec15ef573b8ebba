"""The reaper: settle actions whose worker died, and free leases of workers that died outside one."""

from __future__ import annotations

import logging
import shutil
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import exists, select, update

from bot import outbox
from bot.core.models import Action, ActionStep, Deployment
from bot.core.states import (
    PENDING_STATES,
    ActionState,
    DeploymentState,
    FailureReason,
    after_cancel,
    transition,
    transition_action,
)
from workers.context import WorkerContext
from workers.jobs import action_dir_prefix, script_label
from workers.lease import on_this_host
from workers.runner import kill_script_group
from workers.scheduler.report import TickReport

log = logging.getLogger(__name__)
S = DeploymentState

DEAD_AFTER = timedelta(seconds=30)    # a running action without a heartbeat this long has lost its worker


def reap(ctx: WorkerContext, report: TickReport, now: datetime) -> None:
    """Settle actions whose worker died: re-queue if no script ran yet, else fail them. On the
    dead worker's host, also stop what its script left running and remove its working copy."""
    cutoff = now - DEAD_AFTER
    with ctx.session() as session:
        dead = session.execute(select(Action.id, Action.deployment_id).where(
            Action.state == ActionState.RUNNING, Action.heartbeat_at < cutoff)).all()
    for action_id, deployment_id in dead:
        with ctx.session() as session:
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
            # The call its worker was making ended with the worker: no exit code, ended now.
            session.execute(update(ActionStep).where(ActionStep.action_id == action.id,
                                                     ActionStep.finished_at.is_(None))
                            .values(finished_at=now).execution_options(synchronize_session=False))
            if deployment.lease_owner == worker:
                deployment.lease_owner = None
                deployment.lease_expires_at = None
            outbox.commit(session)
            log.warning("reaped action %s of %s (%s)", action.id, deployment.name,
                        "re-queued" if action.state is ActionState.QUEUED else str(action.state),
                        extra={"action_id": action.id, "deployment": deployment.name})
    with ctx.session() as session:
        # Leases of workers that died outside an action (a check job).
        freed = session.execute(
            update(Deployment).where(Deployment.lease_owner.is_not(None), Deployment.lease_expires_at < now)
            .values(lease_owner=None, lease_expires_at=None)
            .returning(Deployment.id).execution_options(synchronize_session=False)).scalars().all()
        session.commit()
        report.leases_freed.extend(freed)
    for action_id in report.requeued:
        ctx.broker.enqueue_action(action_id, started_counts=False)


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
