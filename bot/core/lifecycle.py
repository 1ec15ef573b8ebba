"""The words of a deployment's life: its states, the changes allowed between them, why one fails,
and where an action is. Plain enums and sets, free of the database, so that the CLI's client
shares them with the server; ``bot.core.states`` makes the changes.
"""

from __future__ import annotations

import enum
import re


class DeploymentState(enum.StrEnum):
    """Where a deployment is in its life; Octopod's states plus CleanupPending and Removed."""

    CREATE_PENDING = "CreatePending"
    UPDATE_PENDING = "UpdatePending"
    ARCHIVE_PENDING = "ArchivePending"
    CLEANUP_PENDING = "CleanupPending"
    RUNNING = "Running"
    FAILURE = "Failure"
    ARCHIVED = "Archived"
    CLEANUP_FAILED = "CleanupFailed"
    # A cleaned-up (or deleted) deployment: its row and history stay, its name can be reused.
    REMOVED = "Removed"


class FailureReason(enum.StrEnum):
    """Why a deployment is in Failure; ``check`` exit codes 2 and 3 map to the first two."""

    PARTIAL_AVAILABILITY = "partial_availability"
    TAG_MISMATCH = "tag_mismatch"
    TIMED_OUT = "timed_out"
    GENERIC = "generic"
    # its action was cancelled (while queued or while its script ran)
    CANCELLED = "cancelled"


class ActionState(enum.StrEnum):
    """Where one requested operation is: queued, running, or one of its ends."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    SUPERSEDED = "superseded"

    @property
    def finished(self) -> bool:
        return self not in (ActionState.QUEUED, ActionState.RUNNING)


S = DeploymentState

PENDING_STATES = frozenset({S.CREATE_PENDING, S.UPDATE_PENDING, S.ARCHIVE_PENDING, S.CLEANUP_PENDING})
LIVE_STATES = frozenset({S.RUNNING, S.FAILURE})
# The app answers at its links: live, or live while an update or an archive is under way.
SERVING_STATES = frozenset({S.RUNNING, S.FAILURE, S.UPDATE_PENDING, S.ARCHIVE_PENDING})

# (from, to) pairs that are allowed; everything else is refused with IllegalTransition.
TRANSITIONS: frozenset[tuple[DeploymentState, DeploymentState]] = frozenset(
    {
        # a new deployment, or a removed one whose name is used again
        (S.REMOVED, S.CREATE_PENDING),
        # create/update settle when `check` passes or the script/status timeout fails them
        (S.CREATE_PENDING, S.RUNNING),
        (S.CREATE_PENDING, S.FAILURE),
        (S.UPDATE_PENDING, S.RUNNING),
        (S.UPDATE_PENDING, S.FAILURE),
        # a newer request while one is pending replaces it (the older action is superseded)
        (S.CREATE_PENDING, S.UPDATE_PENDING),
        (S.UPDATE_PENDING, S.UPDATE_PENDING),
        # live deployments: periodic checks move them between Running and Failure
        (S.RUNNING, S.FAILURE),
        (S.FAILURE, S.RUNNING),
        (S.FAILURE, S.FAILURE),
        (S.RUNNING, S.UPDATE_PENDING),
        (S.FAILURE, S.UPDATE_PENDING),
        (S.RUNNING, S.ARCHIVE_PENDING),
        (S.FAILURE, S.ARCHIVE_PENDING),
        # archive settles when `archive_check` passes; a failed archive leaves a Failure to retry
        (S.ARCHIVE_PENDING, S.ARCHIVED),
        (S.ARCHIVE_PENDING, S.FAILURE),
        # archived: restore, or clean up
        (S.ARCHIVED, S.CREATE_PENDING),
        (S.ARCHIVED, S.CLEANUP_PENDING),
        (S.CLEANUP_PENDING, S.REMOVED),
        (S.CLEANUP_PENDING, S.CLEANUP_FAILED),
        # a restore or cleanup cancelled before it ran leaves the deployment archived
        (S.CREATE_PENDING, S.ARCHIVED),
        (S.CLEANUP_PENDING, S.ARCHIVED),
        # a failed cleanup can be retried, or the record deleted by an admin
        (S.CLEANUP_FAILED, S.CLEANUP_PENDING),
        (S.CLEANUP_FAILED, S.REMOVED),
    }
)


def after_cancel(kind: str, ran: bool) -> DeploymentState:
    """Where a deployment goes when its pending action of ``kind`` is cancelled.

    Before its script ran, a restore or cleanup changed nothing: the deployment is Archived again.
    Any other cancelled action (and a restore whose script was stopped midway) leaves a Failure
    with the reason ``cancelled``: what runs is unknown until the next check, which moves a
    healthy one back to Running. A cleanup stopped midway is a CleanupFailed, to retry or delete.
    """
    if kind == "cleanup":
        return S.CLEANUP_FAILED if ran else S.ARCHIVED
    if kind == "restore" and not ran:
        return S.ARCHIVED
    return S.FAILURE


A = ActionState
ACTION_TRANSITIONS: frozenset[tuple[ActionState, ActionState]] = frozenset(
    {
        (A.QUEUED, A.RUNNING),
        (A.QUEUED, A.SUPERSEDED),
        (A.QUEUED, A.CANCELLED),
        (A.RUNNING, A.SUCCEEDED),
        (A.RUNNING, A.FAILED),
        (A.RUNNING, A.TIMED_OUT),
        (A.RUNNING, A.CANCELLED),
        # the reaper puts back an action whose worker died before it started the script
        (A.RUNNING, A.QUEUED),
    }
)


# A blue-green release (bot.services.releases): deployed into the idle colour, then awaiting QA and
# the release; switching the entry; live. A rollback starts switching. A live one is replaced by the
# next switch; one awaiting is superseded by a newer release deployed into the same idle colour.
RELEASE_STATES = ("deploying", "awaiting", "switching", "live", "replaced", "failed", "superseded")
RELEASE_TRANSITIONS: frozenset[tuple[str, str]] = frozenset(
    {
        ("deploying", "awaiting"),
        ("deploying", "failed"),
        ("deploying", "superseded"),
        ("awaiting", "switching"),
        ("awaiting", "superseded"),
        ("switching", "live"),
        ("switching", "failed"),
        ("live", "replaced"),
    }
)
RELEASE_WORDS: dict[str, str] = {
    "deploying": "deploying into the idle colour",
    "awaiting": "awaiting release",
    "switching": "switching",
    "live": "live",
    "replaced": "replaced",
    "failed": "failed",
    "superseded": "superseded",
}


# --- the words people read: one table for the status page, the pull request comment and the CLI ---------

# Each state as an icon, a word and a tone (the page's colour: ok, busy, bad, quiet); the icon never
# stands alone, and the word alone says it all (a terminal without colour, a screen reader).
STATE_WORDS: dict[DeploymentState, tuple[str, str, str]] = {
    S.RUNNING: ("🟢", "Running", "ok"),
    S.CREATE_PENDING: ("🟡", "Creating", "busy"),
    S.UPDATE_PENDING: ("🟡", "Updating", "busy"),
    S.ARCHIVE_PENDING: ("🟡", "Archiving", "busy"),
    S.CLEANUP_PENDING: ("🟡", "Cleaning up", "busy"),
    S.FAILURE: ("🔴", "Failed", "bad"),
    S.CLEANUP_FAILED: ("🔴", "Cleanup failed", "bad"),
    S.ARCHIVED: ("⚪", "Archived", "quiet"),
    S.REMOVED: ("⚫", "Removed", "quiet"),
}
# Why a deployment failed, in a few words; a generic failure's words come from its status message.
REASON_WORDS: dict[FailureReason, str] = {
    FailureReason.PARTIAL_AVAILABILITY: "partly available",
    FailureReason.TAG_MISMATCH: "tag mismatch",
    FailureReason.TIMED_OUT: "timed out",
    FailureReason.CANCELLED: "cancelled",
    FailureReason.GENERIC: "failed",  # in a sentence ("check: failed"); a list says what failed instead
}
ACTION_WORDS: dict[ActionState, tuple[str, str, str]] = {
    A.QUEUED: ("⏳", "queued", "busy"),
    A.RUNNING: ("🔄", "running", "busy"),
    A.SUCCEEDED: ("✅", "succeeded", "ok"),
    A.FAILED: ("❌", "failed", "bad"),
    A.TIMED_OUT: ("⌛", "timed out", "bad"),
    A.CANCELLED: ("⏹️", "cancelled", "quiet"),
    A.SUPERSEDED: ("⏭️", "superseded", "quiet"),
}
# The kinds of action that deploy a config (run create, update or unarchive and wait for check): the
# result of the last is "the last deploy", and the last that succeeded is what the deployment runs, as
# far as Sami knows. A rollback or a reconcile is an update.
DEPLOY_KINDS = ("create", "update", "restore")
SHORT_REASON = 40  # characters of a generic failure's reason on a list or in a comment
# "create failed (exit 1): ..." as the worker words a failed script: the script and its exit code.
_SCRIPT_FAILED = re.compile(r"(?P<script>[a-z_]+) failed \(exit (?P<code>-?\d+)\)")


def state_word(state: DeploymentState | str) -> str:
    """The word of ``state``, e.g. "Failed" for Failure; an unknown state as it is."""
    try:
        return STATE_WORDS[DeploymentState(state)][1]
    except ValueError:
        return str(state)


def state_icon(state: DeploymentState | str) -> str:
    try:
        return STATE_WORDS[DeploymentState(state)][0]
    except ValueError:
        return "❔"


def state_tone(state: DeploymentState | str) -> str:
    try:
        return STATE_WORDS[DeploymentState(state)][2]
    except ValueError:
        return "busy"


def short_reason(state: DeploymentState | str, reason: FailureReason | str | None,
                 message: str | None = None) -> str | None:
    """Why a failed deployment failed, in a few words ("tag mismatch", "create exit 1"), or None.

    A generic failure says what failed, taken from its status message (the script and its exit code,
    or the message's first clause, shortened)."""
    if str(state) != S.FAILURE:
        return None
    try:
        reason = FailureReason(reason or FailureReason.GENERIC)
    except ValueError:
        return str(reason)[:SHORT_REASON]
    if reason is not FailureReason.GENERIC:
        return REASON_WORDS[reason]
    if not message:
        return None  # "Failed" says it all
    failed = _SCRIPT_FAILED.match(message)
    if failed:
        return f"{failed['script']} exit {failed['code']}"
    first = " ".join(message.split(": ", 1)[0].split())
    return first if len(first) <= SHORT_REASON else first[:SHORT_REASON - 1].rstrip() + "…"


def state_words(state: DeploymentState | str, reason: FailureReason | str | None = None,
                message: str | None = None) -> str:
    """The state with its short reason, e.g. "Failed (tag mismatch)", "Running"."""
    why = short_reason(state, reason, message)
    return f"{state_word(state)} ({why})" if why else state_word(state)


def action_word(state: ActionState | str) -> str:
    try:
        return ACTION_WORDS[ActionState(state)][1]
    except ValueError:
        return str(state)


def last_deploy_failed(state: DeploymentState | str, deploy_state: ActionState | str | None) -> bool:
    """Whether the list should say, beside ``state``, that the last deploy did not succeed: a deployment
    that still runs (or was archived since) after its last deploy failed, was cancelled or timed out. A
    Failure's reason says it already, and a pending deployment has a newer deploy under way."""
    if deploy_state is None or str(state) == S.FAILURE or str(state) in PENDING_STATES:
        return False
    return str(deploy_state) in (A.FAILED, A.TIMED_OUT, A.CANCELLED)


def last_deploy_note(state: DeploymentState | str, deploy_state: ActionState | str | None) -> str | None:
    """What a list says beside ``state`` about the last deploy ("last deploy failed"), or None."""
    return f"last deploy {action_word(deploy_state)}" if last_deploy_failed(state, deploy_state) else None


def last_deploy_words(kind: str, deploy_state: ActionState | str, tag: str | None = None) -> str:
    """The last deploy in a few words: "update to v2 failed", "create to v1 succeeded"."""
    what = f"{kind} to {tag}" if tag else kind
    return f"{what} {action_word(deploy_state)}"
