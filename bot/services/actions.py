"""Actions once requested: cancel one, queued (it never runs) or running (its worker stops the script)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from bot import outbox
from bot.core.errors import Conflict
from bot.core.models import Action
from bot.core.states import PENDING_STATES, ActionState, FailureReason, after_cancel, transition, transition_action
from bot.services.deployments import ORIGINS, Context, lock_deployment, unknown_action

log = logging.getLogger(__name__)


def cancel_action(session: Session, action_id: int, ctx: Context, *, requested_by: str, origin: str) -> Action:
    """Cancel a queued action (it never runs), or ask the worker running one to stop its script.

    A queued action is cancelled at once and, when it was its deployment's pending work, the
    deployment settles as ``states.after_cancel`` says. A running one gets ``cancel_requested_at``:
    its worker sees it within a tick, stops the script's process group (TERM, then KILL) and ends
    the action ``cancelled``; the answer shows the action still running, with the request.
    """
    if origin not in ORIGINS:
        raise ValueError(f"unknown origin {origin!r}")
    found = session.get(Action, action_id)
    if found is None:
        raise unknown_action(action_id)
    # The deployment's row first (the lock every decision about it takes), then the action's, so a
    # worker's claim (an UPDATE of the action row) waits for this decision.
    deployment = lock_deployment(session, found.deployment.name)
    action = session.scalars(select(Action).where(Action.id == action_id).with_for_update()
                             .execution_options(populate_existing=True)).one()
    who = requested_by[:255]
    if action.state is ActionState.QUEUED:
        transition_action(action, ActionState.CANCELLED)
        action.error = f"cancelled by {who} before it ran"
        others = session.scalar(select(exists().where(
            Action.deployment_id == deployment.id, Action.id != action.id,
            Action.state.in_((ActionState.QUEUED, ActionState.RUNNING)))))
        if not others and deployment.state in PENDING_STATES:
            wanted = after_cancel(action.kind, ran=False)
            transition(deployment, wanted, reason=FailureReason.CANCELLED,
                       message=f"action {action.id} ({action.kind}) was cancelled by {who} before it ran")
    elif action.state is ActionState.RUNNING:
        if action.cancel_requested_at is None:
            action.cancel_requested_at = datetime.now(UTC)
            action.cancel_requested_by = who
    else:
        raise Conflict(f"action {action_id} already ended ({action.state}); there is nothing to cancel",
                       state=str(deployment.state), action_state=str(action.state))
    outbox.commit(session)
    log.info("cancel of action %s (%s) by %s: it is %s", action.id, action.kind, who, action.state,
             extra={"deployment": deployment.name, "action_id": action.id})
    return action
