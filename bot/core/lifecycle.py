"""The words of a deployment's life: its states, the changes allowed between them, why one fails,
and where an action is. Plain enums and sets, free of the database, so that the CLI's client
shares them with the server; ``bot.core.states`` makes the changes.
"""

from __future__ import annotations

import enum


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
