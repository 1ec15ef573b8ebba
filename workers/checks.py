"""Queue job for periodic work: ``check`` of a live deployment, ``archive_check`` of an archiving
one. It takes the deployment's lease like an action does, and skips a deployment that is busy.

A check that cannot start (a secret missing, the manifest gone, the deployments repo unreadable, or
a bug) is noted on the deployment, and the scheduler tries it again after the check interval,
doubling with each failure in a row up to CHECK_BACKOFF_CAP."""

from __future__ import annotations

import logging
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import exists, select
from sqlalchemy.orm.exc import StaleDataError

from bot import outbox
from bot.core import logs
from bot.core.models import Action, Deployment
from bot.core.states import (
    LIVE_STATES,
    ActionState,
    DeploymentState,
    FailureReason,
    clear_check_failing,
    note_check_failing,
    transition,
)
from bot.manifests import DeploymentsRepoError
from bot.services.deployments import action_config
from workers.context import WorkerContext
from workers.executor import ExecutorError, prepare_manifest_dir
from workers.jobs import (
    CHECK_EXIT_REASONS,
    HEARTBEAT_SECONDS,
    REASON_WORDS,
    drain,
    make_target,
    next_queued_action,
)
from workers.lease import LeaseLost, claim_lease, db_now, release_lease, renew_lease, worker_identity

log = logging.getLogger(__name__)
S = DeploymentState

CHECK_BACKOFF_CAP = 3600  # seconds: the longest wait between tries of a check that cannot start
# Failures of the setting around a check, not of Sami: one line with the reason, no traceback.
CANNOT_START = (ExecutorError, DeploymentsRepoError)


def check_deployment(deployment_id: int, kind: str = "check", *, ctx: WorkerContext) -> None:
    """Queue job: a periodic ``check`` of a live deployment, or ``archive_check`` of an archiving one.
    Its log lines name the deployment."""
    with ctx.session() as session:
        name = session.scalar(select(Deployment.name).where(Deployment.id == deployment_id))
    if name is None:
        return  # deleted meanwhile
    with logs.about(deployment=name):
        _check(ctx, deployment_id, kind)


def _check(ctx: WorkerContext, deployment_id: int, kind: str) -> None:
    owner = worker_identity()
    if not claim_lease(ctx.session, deployment_id, owner):
        return  # busy: an action is running on it, and it will settle the state
    try:
        _periodic(ctx, deployment_id, kind, owner)
    except (StaleDataError, LeaseLost) as exc:
        log.info("%s of deployment %s dropped: %s", kind, deployment_id, type(exc).__name__)
    except CANNOT_START as exc:
        name, delay = _note_failure(ctx, deployment_id, kind, str(exc))
        log.warning("%s of %s cannot run: %s; next try in %d s", kind, name, exc, delay)
    except Exception as exc:
        name, delay = _note_failure(ctx, deployment_id, kind,
                                    f"an unexpected error ({type(exc).__name__}); see the worker's log")
        log.exception("%s of %s failed; next try in %d s", kind, name, delay)
    finally:
        release_lease(ctx.session, deployment_id, owner)
    if next_queued_action(ctx, deployment_id) is not None and claim_lease(ctx.session, deployment_id, owner):
        drain(ctx, deployment_id, owner)


def _periodic(ctx: WorkerContext, deployment_id: int, kind: str, owner: str) -> None:
    repo = ctx.manifests.current()
    # Read what is needed, then let the session go: no transaction stays open while a script runs.
    with ctx.session() as session:
        deployment = session.get(Deployment, deployment_id)
        if deployment is None:
            return
        busy = session.scalar(select(exists().where(
            Action.deployment_id == deployment_id, Action.state.in_((ActionState.QUEUED, ActionState.RUNNING)))))
        if busy or not _wanted(kind, deployment.state):
            return
        manifest = repo.find(deployment.service, deployment.environment)
        if manifest is None:
            raise ExecutorError(f"no manifest for {deployment.service} {deployment.environment} in the "
                                "deployments repo")
        name, service, environment, pr = (deployment.name, deployment.service, deployment.environment,
                                          deployment.pull_request)
        # The config the deployment runs with, as an action on it would get it.
        config = action_config(deployment, manifest, repo)
    target = make_target(ctx, name, service, environment, pr, manifest, config, repo)

    last_beat = time.monotonic()

    def beat():  # called on every tick of the runner; renews every HEARTBEAT_SECONDS
        nonlocal last_beat
        if time.monotonic() - last_beat < HEARTBEAT_SECONDS:
            return
        last_beat = time.monotonic()
        if not renew_lease(ctx.session, deployment_id, owner):
            raise LeaseLost(f"lost the lease of {name}")

    with tempfile.TemporaryDirectory(prefix="sami-check-") as temp:
        manifest_dir = prepare_manifest_dir(repo, manifest, target.image, Path(temp))
        result = ctx.executor.run(kind, repo, target, manifest_dir, on_tick=beat,
                                  label=f"sami-check-{deployment_id}")
    with ctx.session() as session:
        deployment = session.scalars(select(Deployment).where(Deployment.id == deployment_id).with_for_update()
                                     .execution_options(populate_existing=True)).one()
        old = deployment.state
        was_failing = deployment.check_failures > 0  # its status message says the check could not run
        if kind == "archive_check":
            if result.ok and deployment.state is S.ARCHIVE_PENDING:
                transition(deployment, S.ARCHIVED)
            elif was_failing:
                clear_check_failing(deployment)
        elif deployment.state in LIVE_STATES:
            if result.ok and deployment.state is S.FAILURE:
                transition(deployment, S.RUNNING, message="check passed")
            elif result.ok and was_failing:
                clear_check_failing(deployment, "check passed")
            elif not result.ok:
                reason = FailureReason.TIMED_OUT if result.timed_out else CHECK_EXIT_REASONS.get(
                    result.exit_code, FailureReason.GENERIC)
                detail = (result.stderr or result.stdout).strip().splitlines()
                message = f"check: {REASON_WORDS[reason]}" + (f": {detail[-1][:300]}" if detail else "")
                if deployment.state is S.RUNNING or deployment.failure_reason is not reason or was_failing:
                    transition(deployment, S.FAILURE, reason=reason, message=message)
        deployment.checked_at = db_now(session)
        deployment.check_failures, deployment.check_retry_at = 0, None
        outbox.commit(session)
        if deployment.state is not old:
            log.info("%s: %s is %s (was %s)", kind, deployment.name, deployment.state, old)


def _wanted(kind: str, state: DeploymentState) -> bool:
    """Whether a deployment in ``state`` gets periodic ``kind``: check when live, archive_check when archiving."""
    return (kind == "archive_check" and state is S.ARCHIVE_PENDING) or (kind == "check" and state in LIVE_STATES)


def check_backoff(interval: int, failures: int) -> int:
    """Seconds until the next try of a check that could not start ``failures`` times in a row: the check
    interval, doubling, up to CHECK_BACKOFF_CAP (or the interval, when that is longer)."""
    return min(interval * 2 ** min(failures - 1, 16), max(interval, CHECK_BACKOFF_CAP))


def _note_failure(ctx: WorkerContext, deployment_id: int, kind: str, reason: str) -> tuple[str, int]:
    """Record that the check could not start, when to try it again, and why (on its status message);
    returns the deployment's name and the seconds until the next try."""
    with ctx.session() as session:
        deployment = session.scalars(select(Deployment).where(Deployment.id == deployment_id).with_for_update()
                                     .execution_options(populate_existing=True)).one()
        now = db_now(session)
        deployment.check_failures += 1
        delay = check_backoff(ctx.settings.check_interval, deployment.check_failures)
        deployment.checked_at = now
        deployment.check_retry_at = now + timedelta(seconds=delay)
        if _wanted(kind, deployment.state):
            note_check_failing(deployment, kind, reason)
        session.commit()
        return deployment.name, delay
