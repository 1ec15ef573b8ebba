"""Queue job for periodic work: ``check`` of a live deployment, ``archive_check`` of an archiving
one. It takes the deployment's lease like an action does, and skips a deployment that is busy."""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

from sqlalchemy import exists, select
from sqlalchemy.orm.exc import StaleDataError

from bot.models import Action, Deployment
from bot.services import action_config
from bot.states import LIVE_STATES, ActionState, DeploymentState, FailureReason, transition
from workers.context import WorkerContext, get_context
from workers.executor import prepare_manifest_dir
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


def check_deployment(deployment_id: int, kind: str = "check", ctx: WorkerContext | None = None) -> None:
    """Queue job: a periodic ``check`` of a live deployment, or ``archive_check`` of an archiving one."""
    ctx = ctx or get_context()
    owner = worker_identity()
    if not claim_lease(ctx.session, deployment_id, owner):
        return  # busy: an action is running on it, and it will settle the state
    try:
        _periodic(ctx, deployment_id, kind, owner)
    except (StaleDataError, LeaseLost) as exc:
        log.info("%s of deployment %s dropped: %s", kind, deployment_id, type(exc).__name__)
    except Exception:
        log.exception("%s of deployment %s failed", kind, deployment_id)
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
        wanted = (kind == "archive_check" and deployment.state is S.ARCHIVE_PENDING) or \
            (kind == "check" and deployment.state in LIVE_STATES)
        manifest = repo.find(deployment.service, deployment.environment)
        if busy or not wanted or manifest is None:
            return
        name, service, environment, pr = (deployment.name, deployment.service, deployment.environment,
                                          deployment.pull_request)
        # The config the deployment runs with, as an action on it would get it.
        config = action_config(deployment, manifest, repo)
    target = make_target(ctx, name, service, environment, pr, manifest, config)

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
        if kind == "archive_check":
            if result.ok and deployment.state is S.ARCHIVE_PENDING:
                transition(deployment, S.ARCHIVED)
        elif deployment.state in LIVE_STATES:
            if result.ok and deployment.state is S.FAILURE:
                transition(deployment, S.RUNNING, message="check passed")
            elif not result.ok:
                reason = FailureReason.TIMED_OUT if result.timed_out else CHECK_EXIT_REASONS.get(
                    result.exit_code, FailureReason.GENERIC)
                detail = (result.stderr or result.stdout).strip().splitlines()
                message = f"check: {REASON_WORDS[reason]}" + (f": {detail[-1][:300]}" if detail else "")
                if deployment.state is S.RUNNING or deployment.failure_reason is not reason:
                    transition(deployment, S.FAILURE, reason=reason, message=message)
        deployment.checked_at = db_now(session)
        session.commit()
        if deployment.state is not old:
            log.info("%s: %s is %s (was %s)", kind, deployment.name, deployment.state, old,
                     extra={"deployment": deployment.name})
