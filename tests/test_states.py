"""Every pair of deployment states, allowed and refused, against an independent table."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, object_session

from bot.core.models import Action, Deployment
from bot.core.states import (
    ACTION_TRANSITIONS,
    TRANSITIONS,
    ActionState,
    DeploymentState,
    FailureReason,
    IllegalActionTransition,
    IllegalTransition,
    StateChange,
    after_cancel,
    changes_pending,
    pin,
    take_changes,
    transition,
    transition_action,
    unpin,
)

# The graph as the README documents it, written out here so the module is checked against it.
EXPECTED = {
    "CreatePending": {"Running", "Failure", "UpdatePending", "Archived"},
    "UpdatePending": {"Running", "Failure", "UpdatePending"},
    "ArchivePending": {"Archived", "Failure"},
    "CleanupPending": {"Removed", "CleanupFailed", "Archived"},
    "Running": {"Failure", "UpdatePending", "ArchivePending"},
    "Failure": {"Running", "Failure", "UpdatePending", "ArchivePending"},
    "Archived": {"CreatePending", "CleanupPending"},
    "CleanupFailed": {"CleanupPending", "Removed"},
    "Removed": {"CreatePending"},
}

ALL_PAIRS = list(itertools.product(DeploymentState, DeploymentState))


def _deployment(state):
    """A deployment record in a session of its own (no database: states only records the change on it)."""
    deployment = Deployment(name="web-stage", state=state, failure_reason=None, status_message=None)
    Session().add(deployment)
    return deployment


def _action(state):
    action = Action(state=state, started_at=None, heartbeat_at=None, finished_at=None, duration_ms=None, worker="w1")
    Session().add(action)
    return action


def test_expected_table_names_every_state():
    assert set(EXPECTED) == {s.value for s in DeploymentState}


@pytest.mark.parametrize(("current", "wanted"), ALL_PAIRS, ids=[f"{a}->{b}" for a, b in ALL_PAIRS])
def test_every_pair(current, wanted):
    deployment = _deployment(current)
    if wanted.value in EXPECTED[current.value]:
        previous = transition(deployment, wanted)
        assert previous is current
        assert deployment.state is wanted
    else:
        with pytest.raises(IllegalTransition) as info:
            transition(deployment, wanted)
        assert deployment.state is current, "a refused transition must not change the state"
        assert info.value.current is current and info.value.wanted is wanted
        assert f"is {current} and cannot become {wanted}" in str(info.value)


def test_failure_records_reason_and_leaving_failure_clears_it():
    deployment = _deployment(DeploymentState.RUNNING)
    transition(deployment, DeploymentState.FAILURE, reason=FailureReason.TAG_MISMATCH,
               message="web runs tag a, expected b")
    assert deployment.failure_reason is FailureReason.TAG_MISMATCH
    assert deployment.status_message == "web runs tag a, expected b"
    assert deployment.status_changed_at is not None
    transition(deployment, DeploymentState.RUNNING)
    assert deployment.failure_reason is None


def test_failure_without_reason_is_generic():
    deployment = _deployment(DeploymentState.CREATE_PENDING)
    transition(deployment, DeploymentState.FAILURE)
    assert deployment.failure_reason is FailureReason.GENERIC


def test_archived_sets_archived_at_and_restore_clears_it():
    deployment = _deployment(DeploymentState.ARCHIVE_PENDING)
    transition(deployment, DeploymentState.ARCHIVED)
    assert deployment.archived_at is not None
    transition(deployment, DeploymentState.CREATE_PENDING)
    assert deployment.archived_at is None


def test_refusal_lists_what_is_possible():
    with pytest.raises(IllegalTransition, match=r"it can become: CleanupPending, CreatePending"):
        transition(_deployment(DeploymentState.ARCHIVED), DeploymentState.RUNNING)


EXPECTED_ACTIONS = {
    "queued": {"running", "superseded", "cancelled"},
    "running": {"succeeded", "failed", "timed_out", "cancelled", "queued"},
    "succeeded": set(),
    "failed": set(),
    "timed_out": set(),
    "cancelled": set(),
    "superseded": set(),
}
ACTION_PAIRS = list(itertools.product(ActionState, ActionState))


@pytest.mark.parametrize(("current", "wanted"), ACTION_PAIRS,
                         ids=[f"{a}->{b}" for a, b in ACTION_PAIRS])
def test_every_action_pair(current, wanted):
    action = _action(current)
    if wanted.value in EXPECTED_ACTIONS[current.value]:
        transition_action(action, wanted)
        assert action.state is wanted
        assert (action.finished_at is not None) == wanted.finished
    else:
        with pytest.raises(IllegalActionTransition):
            transition_action(action, wanted)
        assert action.state is current
    assert len(ACTION_TRANSITIONS) == sum(len(v) for v in EXPECTED_ACTIONS.values())


def test_readme_diagram_matches_the_state_machine():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = re.search(r"```mermaid\nstateDiagram-v2\n(.*?)```", readme, re.S)
    assert block, "README.md has no stateDiagram-v2 block"
    edges = set()
    for line in block.group(1).splitlines():
        match = re.match(r"\s*(\[\*\]|\w+)\s*-->\s*(\[\*\]|\w+)", line)
        if match and "[*]" not in match.groups():
            edges.add((match.group(1), match.group(2)))
    assert edges == {(a.value, b.value) for a, b in TRANSITIONS}


@pytest.mark.parametrize(("kind", "ran", "wanted"), [
    ("create", False, DeploymentState.FAILURE), ("create", True, DeploymentState.FAILURE),
    ("update", False, DeploymentState.FAILURE), ("archive", True, DeploymentState.FAILURE),
    ("restore", False, DeploymentState.ARCHIVED), ("restore", True, DeploymentState.FAILURE),
    ("cleanup", False, DeploymentState.ARCHIVED), ("cleanup", True, DeploymentState.CLEANUP_FAILED),
])
def test_after_cancel_is_a_transition_from_the_pending_state(kind, ran, wanted):
    pending = {"create": DeploymentState.CREATE_PENDING, "update": DeploymentState.UPDATE_PENDING,
               "archive": DeploymentState.ARCHIVE_PENDING, "restore": DeploymentState.CREATE_PENDING,
               "cleanup": DeploymentState.CLEANUP_PENDING}[kind]
    assert after_cancel(kind, ran) is wanted
    deployment = _deployment(pending)
    transition(deployment, wanted, reason=FailureReason.CANCELLED)
    if wanted is DeploymentState.FAILURE:
        assert deployment.failure_reason is FailureReason.CANCELLED


def test_every_change_is_recorded_on_its_session_in_order_and_taken_once():
    session = Session()
    deployment = Deployment(id=3, name="web-stage", state=DeploymentState.RUNNING)
    action = Action(id=8, state=ActionState.QUEUED)
    session.add_all([deployment, action])
    transition(deployment, DeploymentState.UPDATE_PENDING)
    transition_action(action, ActionState.RUNNING)
    assert changes_pending(session)
    assert take_changes(session) == [StateChange("deployment", 3, "Running", "UpdatePending"),
                                     StateChange("action", 8, "queued", "running")]
    assert take_changes(session) == [] and not changes_pending(session)


def test_a_refused_change_records_nothing():
    deployment = _deployment(DeploymentState.ARCHIVED)
    with pytest.raises(IllegalTransition):
        transition(deployment, DeploymentState.RUNNING)
    assert take_changes(object_session(deployment)) == []


def test_a_change_outside_a_session_is_refused_rather_than_lost():
    with pytest.raises(RuntimeError, match="outside a database session"):
        transition(Deployment(name="web-stage", state=DeploymentState.RUNNING), DeploymentState.FAILURE)


def test_a_pin_and_an_unpin_are_recorded_changes_and_a_removed_deployment_keeps_no_pin():
    session = Session()
    deployment = Deployment(id=4, name="web-stage", state=DeploymentState.CLEANUP_PENDING)
    session.add(deployment)
    pin(deployment, by="alice", action_id=9, reason="rollback to v1 (the configuration of action 2)")
    assert (deployment.pinned_by, deployment.pinned_action_id, deployment.pinned_at is not None) == ("alice", 9, True)
    assert unpin(deployment) is True and deployment.pinned_by is None and deployment.pinned_at is None
    assert unpin(deployment) is False  # not pinned: nothing to record
    assert take_changes(session) == [StateChange("pin", 4, None, "pinned"), StateChange("pin", 4, "pinned", "unpinned")]
    pin(deployment, by="bob", action_id=None, reason="x" * 600)
    assert len(deployment.pin_reason) == 500
    transition(deployment, DeploymentState.REMOVED)
    assert (deployment.pinned_by, deployment.pinned_at, deployment.pinned_action_id, deployment.pin_reason) == (
        None, None, None, None)
