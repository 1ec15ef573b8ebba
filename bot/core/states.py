"""The deployment and action state machines: the only place that writes a state.

Every change made here is recorded on its session (``StateChange``); ``bot.outbox.commit`` turns
the recorded changes into the GitHub side effects they imply and commits them together, so a
caller that changes a state commits with the outbox, and what GitHub hears follows from the call.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import update
from sqlalchemy.orm import Session, object_session

from bot.core.lifecycle import (
    ACTION_TRANSITIONS,
    LIVE_STATES,
    PENDING_STATES,
    RELEASE_TRANSITIONS,
    TRANSITIONS,
    ActionState,
    DeploymentState,
    FailureReason,
    after_cancel,
)
from bot.core.models import Action, Deployment, Release

# The machine's words live in bot.core.lifecycle (free of the database, so the CLI shares them).
__all__ = ["ACTION_TRANSITIONS", "LIVE_STATES", "PENDING_STATES", "TRANSITIONS", "ActionState", "DeploymentState",
           "FailureReason", "after_cancel"]

S = DeploymentState

class IllegalTransition(Exception):
    """A state change the state machine does not allow; the web layer answers 409."""

    def __init__(self, name: str, current: DeploymentState, wanted: DeploymentState):
        allowed = sorted(str(to) for frm, to in TRANSITIONS if frm is current)
        super().__init__(
            f"deployment {name!r} is {current} and cannot become {wanted}"
            f" (from {current} it can become: {', '.join(allowed) or 'nothing'})"
        )
        self.name = name
        self.current = current
        self.wanted = wanted


def can_transition(current: DeploymentState, wanted: DeploymentState) -> bool:
    """Whether the state machine allows ``current`` -> ``wanted``."""
    return (DeploymentState(current), DeploymentState(wanted)) in TRANSITIONS


def transition(deployment, wanted: DeploymentState, *, reason: FailureReason | None = None,
               message: str | None = None, now: datetime | None = None) -> DeploymentState:
    """Move ``deployment`` to ``wanted`` or raise IllegalTransition; return the previous state."""
    session = _session_of(deployment)
    current = DeploymentState(deployment.state)
    wanted = DeploymentState(wanted)
    if (current, wanted) not in TRANSITIONS:
        raise IllegalTransition(deployment.name, current, wanted)
    now = now or datetime.now(UTC)
    deployment.state = wanted
    deployment.failure_reason = FailureReason(reason or FailureReason.GENERIC) if wanted is S.FAILURE else None
    deployment.status_message = message
    deployment.updated_at = now
    if current is not wanted:
        deployment.status_changed_at = now
    if wanted is S.ARCHIVED:
        deployment.archived_at = now
    elif wanted in (S.CREATE_PENDING, S.REMOVED) and current is not S.CLEANUP_FAILED:
        deployment.archived_at = None
    if wanted is S.REMOVED and deployment.pinned_by is not None:
        # Nothing runs any more to keep at a version: a deployment made again under the name starts unpinned.
        deployment.pinned_by = deployment.pinned_at = deployment.pinned_action_id = deployment.pin_reason = None
    _record(session, StateChange("deployment", deployment.id, str(current), str(wanted)))
    return current


def note_check_failing(deployment, kind: str, reason: str) -> None:
    """Say why the periodic ``kind`` (check or archive_check) of ``deployment`` cannot run; its state stays,
    since nothing is known about what runs."""
    deployment.status_message = f"{kind} failing: {reason}"[:1000]


def clear_check_failing(deployment, message: str | None = None) -> None:
    """The periodic check of ``deployment`` runs again: ``message`` replaces the note that it could not."""
    deployment.status_message = message


def drift_status(differences: list | None) -> str:
    """``unknown`` (no report to judge), ``in_sync`` or ``drifted``."""
    return "unknown" if differences is None else ("drifted" if differences else "in_sync")


def note_running(deployment, running: dict | None, differences: list | None, now: datetime | None = None) -> bool:
    """Record what the target of ``deployment`` reports running and how that differs from what Sami deployed
    (None: no verdict). Drift is no state of the machine: the deployment stays where it is; a change of the
    verdict or of what differs is recorded (the PR's comment shows it). True when it changed."""
    now = now or datetime.now(UTC)
    if running is not None:
        deployment.running = running
        deployment.running_at = now
    before = deployment.drift
    if differences == before:
        return False
    deployment.drift = differences
    if differences and not before:
        deployment.drift_since = now
    elif not differences:
        deployment.drift_since = None
    previous, current = drift_status(before), drift_status(differences)
    if previous != current or current == "drifted":
        _record(_session_of(deployment), StateChange("drift", deployment.id, previous, current))
    return True


def pin(deployment, *, by: str, action_id: int | None, reason: str, now: datetime | None = None) -> None:
    """Pin ``deployment`` (a rollback did it): while pinned, what would move it on by itself (a CI request,
    a push to the deployments repo) is refused. Pinning again names the newer pin. The pull request's
    comment says so."""
    deployment.pinned_by = by[:255]
    deployment.pinned_at = now or datetime.now(UTC)
    deployment.pinned_action_id = action_id
    deployment.pin_reason = reason[:500]
    _record(_session_of(deployment), StateChange("pin", deployment.id, None, "pinned"))


def unpin(deployment) -> bool:
    """Clear ``deployment``'s pin (an unpin, or a new release); True when it was pinned."""
    if deployment.pinned_by is None:
        return False
    deployment.pinned_by = deployment.pinned_at = deployment.pinned_action_id = deployment.pin_reason = None
    _record(_session_of(deployment), StateChange("pin", deployment.id, "pinned", "unpinned"))
    return True


A = ActionState


class IllegalActionTransition(Exception):
    """An action state change that is not allowed (a bug or a race lost to another worker)."""

    def __init__(self, action_id: int, current: ActionState, wanted: ActionState):
        super().__init__(f"action {action_id} is {current} and cannot become {wanted}")
        self.action_id = action_id
        self.current = current
        self.wanted = wanted


def transition_action(action, wanted: ActionState, *, now: datetime | None = None) -> ActionState:
    """Move ``action`` to ``wanted`` or raise IllegalActionTransition; return the previous state."""
    session = _session_of(action)
    current = ActionState(action.state)
    wanted = ActionState(wanted)
    if (current, wanted) not in ACTION_TRANSITIONS:
        raise IllegalActionTransition(action.id, current, wanted)
    now = now or datetime.now(UTC)
    action.state = wanted
    if wanted is A.RUNNING:
        action.started_at = now
        action.heartbeat_at = now
    elif wanted is A.QUEUED:
        action.started_at = None
        action.heartbeat_at = None
        action.worker = None
    elif wanted.finished:
        action.finished_at = now
        if action.started_at is not None:
            started = action.started_at
            if started.tzinfo is None:
                started = started.replace(tzinfo=UTC)
            action.duration_ms = int((now - started).total_seconds() * 1000)
    _record(session, StateChange("action", action.id, str(current), str(wanted)))
    return current


def new_action(session: Session, action: Action) -> Action:
    """Add ``action`` to ``session`` as queued: it enters the machine (a GitHub Deployment may follow)."""
    action.state = A.QUEUED
    session.add(action)
    session.flush()  # its id, for the record and the queue
    _record(session, StateChange("action", action.id, None, str(A.QUEUED)))
    return action


def claim_action(session: Session, action_id: int, worker: str, now: datetime) -> bool:
    """queued -> running for ``worker``, only if the action is still queued (another worker may have
    taken it, or a cancel come first): one conditional update, so two claims never both win."""
    claimed = session.execute(
        update(Action).where(Action.id == action_id, Action.state == A.QUEUED)
        .values(state=A.RUNNING, started_at=now, heartbeat_at=now, worker=worker[:255])
        .execution_options(synchronize_session=False)).rowcount == 1
    if claimed:
        _record(session, StateChange("action", action_id, str(A.QUEUED), str(A.RUNNING)))
    return claimed


def supersede_queued_updates(session: Session, deployment: Deployment, keep: Action) -> list[int]:
    """Mark the queued updates of ``deployment`` older than ``keep`` superseded (only the newest runs);
    returns their ids. One statement, whatever their number (a burst of pushes)."""
    now = datetime.now(UTC)
    ids = list(session.scalars(
        update(Action)
        .where(Action.deployment_id == deployment.id, Action.id != keep.id,
               Action.state == A.QUEUED, Action.kind == "update")
        .values(state=A.SUPERSEDED, finished_at=now, error=f"superseded by action {keep.id}")
        .returning(Action.id).execution_options(synchronize_session=False)))
    for action_id in ids:
        _record(session, StateChange("action", action_id, str(A.QUEUED), str(A.SUPERSEDED)))
    return ids


class IllegalReleaseTransition(Exception):
    """A release state change that is not allowed (the web layer answers 409)."""

    def __init__(self, release_id: int, current: str, wanted: str):
        allowed = sorted(to for frm, to in RELEASE_TRANSITIONS if frm == current)
        super().__init__(f"release {release_id} is {current} and cannot become {wanted} (from {current} it can "
                         f"become: {', '.join(allowed) or 'nothing'})")
        self.release_id = release_id


def new_release(session: Session, release: Release, state: str) -> Release:
    """Add ``release`` to ``session`` in its first state (deploying for a release, switching for a rollback)."""
    if state not in ("deploying", "switching"):
        raise IllegalReleaseTransition(0, "new", state)
    release.state = state
    session.add(release)
    session.flush()
    _record(session, StateChange("release", release.id, None, state))
    return release


def transition_release(release: Release, wanted: str, *, message: str | None = None,
                       now: datetime | None = None) -> str:
    """Move ``release`` to ``wanted`` or raise IllegalReleaseTransition; return the previous state."""
    session = _session_of(release)
    current = release.state
    if (current, wanted) not in RELEASE_TRANSITIONS:
        raise IllegalReleaseTransition(release.id, current, wanted)
    release.state = wanted
    if message is not None:
        release.message = message[:2000]
    if wanted == "live":
        release.switched_at = now or datetime.now(UTC)
    _record(session, StateChange("release", release.id, current, wanted))
    return current


# --- the record of changes ------------------------------------------------------------------------

CHANGES = "sami.state_changes"  # the session's info key of the changes not committed yet


@dataclass(frozen=True)
class StateChange:
    """One state change made here: a deployment's or an action's, from what (None: new) to what."""

    # "deployment", "action", "release", "drift" (a deployment's verdict on what its target runs) or "pin"
    # (a rollback's pin set or cleared)
    record: str
    id: int
    previous: str | None
    current: str


def _session_of(record) -> Session:
    session = object_session(record)
    if session is None:
        raise RuntimeError(f"{record!r} changed state outside a database session: its change cannot be recorded")
    return session


def _record(session: Session, change: StateChange) -> None:
    # Kept with the transaction they were made in: a rolled-back transaction's changes never happened.
    session.info.setdefault(CHANGES, []).append((session.get_transaction(), change))


def take_changes(session: Session) -> list[StateChange]:
    """The changes made in ``session``'s current transaction since the last call, in order (those of
    a transaction rolled back since are dropped)."""
    current = session.get_transaction()
    recorded = session.info.pop(CHANGES, [])
    return [change for transaction, change in recorded if transaction is current and current is not None]


def changes_pending(session: Session) -> bool:
    """Whether ``session``'s current transaction has changes the outbox has not taken."""
    current = session.get_transaction()
    return any(transaction is current for transaction, _ in session.info.get(CHANGES, ()))
