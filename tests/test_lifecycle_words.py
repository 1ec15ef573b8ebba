"""One vocabulary for the status page, the pull request comment and the CLI (bot.core.lifecycle)."""

from __future__ import annotations

import pytest

from bot.core.lifecycle import (
    STATE_WORDS,
    ActionState,
    DeploymentState,
    FailureReason,
    last_deploy_failed,
    last_deploy_words,
    short_reason,
    state_words,
)

S, A = DeploymentState, ActionState


@pytest.mark.parametrize(("state", "reason", "message", "words"), [
    (S.RUNNING, None, None, "Running"),
    (S.CREATE_PENDING, None, None, "Creating"),
    (S.FAILURE, FailureReason.PARTIAL_AVAILABILITY, "check: partly available: 1 of 3 up", "Failed (partly available)"),
    (S.FAILURE, "tag_mismatch", None, "Failed (tag mismatch)"),
    (S.FAILURE, FailureReason.CANCELLED, "action 4 (update) was cancelled by alice", "Failed (cancelled)"),
    # a generic failure says what failed: the script and its exit code, or the message's first clause
    (S.FAILURE, FailureReason.GENERIC, "create failed (exit 1): image web:v9 not found", "Failed (create exit 1)"),
    (S.FAILURE, FailureReason.GENERIC, "check failed (exit 7): connection refused", "Failed (check exit 7)"),
    (S.FAILURE, FailureReason.GENERIC, "the worker died: lost", "Failed (the worker died)"),
    (S.FAILURE, FailureReason.GENERIC, "x" * 100, "Failed (" + "x" * 39 + "…)"),
    (S.FAILURE, FailureReason.GENERIC, None, "Failed"),
    (S.RUNNING, FailureReason.GENERIC, "check passed", "Running"),  # only a Failure has a reason
])
def test_state_words(state, reason, message, words):
    assert state_words(state, reason, message) == words


def test_every_state_has_an_icon_a_capitalised_word_and_a_tone():
    assert set(STATE_WORDS) == set(DeploymentState)
    for icon, word, tone in STATE_WORDS.values():
        assert icon and word[0].isupper() and tone in ("ok", "busy", "bad", "quiet")


@pytest.mark.parametrize(("state", "deploy", "shown"), [
    (S.RUNNING, A.FAILED, True),
    (S.RUNNING, A.TIMED_OUT, True),
    (S.RUNNING, "cancelled", True),
    (S.ARCHIVED, A.FAILED, True),
    (S.RUNNING, A.SUCCEEDED, False),
    (S.FAILURE, A.FAILED, False),  # its reason says it
    (S.UPDATE_PENDING, A.QUEUED, False),  # a newer deploy is under way
    (S.RUNNING, None, False),
])
def test_a_last_deploy_that_did_not_take_is_said_beside_a_state_that_does_not_say_it(state, deploy, shown):
    assert last_deploy_failed(state, deploy) is shown


def test_last_deploy_words():
    assert last_deploy_words("update", A.FAILED, "v2") == "update to v2 failed"
    assert last_deploy_words("rollback", "succeeded", None) == "rollback succeeded"
    assert short_reason(S.FAILURE, "exploded") == "exploded"  # a reason this version does not know
