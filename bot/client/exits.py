"""The client's exit codes, in one place: scripts and CI jobs branch on them, the README lists them."""

from __future__ import annotations

import enum


class Exit(enum.IntEnum):
    """How a client command ended."""

    OK = 0
    #: the action ended without success: failed, cancelled, or superseded by a newer request
    FAILED = 1
    #: the request was refused as it stands: bad input (400, 413) or a conflict with the deployment's state (409)
    BAD_INPUT = 2
    #: the token was refused: missing or wrong (401), or out of its scope (403)
    REFUSED = 3
    #: no such deployment or action (404)
    NOT_FOUND = 4
    #: the action ran past its time limit, or ``--timeout`` ran out while waiting for it
    TIMED_OUT = 5
    #: the server could not be reached, or what answered is not a Sami server
    UNREACHABLE = 6
    #: the server failed to answer (5xx)
    SERVER_ERROR = 7


def for_status(status: int) -> Exit:
    """The exit code for an HTTP error status."""
    if status in (401, 403):
        return Exit.REFUSED
    if status == 404:
        return Exit.NOT_FOUND
    if status >= 500:
        return Exit.SERVER_ERROR
    return Exit.BAD_INPUT


#: Which action ends are which exits (an action that is still queued or running has none).
ACTION_EXITS = {"succeeded": Exit.OK, "failed": Exit.FAILED, "cancelled": Exit.FAILED,
                "superseded": Exit.FAILED, "timed_out": Exit.TIMED_OUT}

#: One line per code, for ``--help`` and the README.
DESCRIPTIONS = {
    Exit.OK: "success (with --wait: the action succeeded)",
    Exit.FAILED: "the action failed, was cancelled, or was superseded by a newer request",
    Exit.BAD_INPUT: "bad input (400, 413, a wrong option) or a conflict with the deployment's state (409)",
    Exit.REFUSED: "the token is missing or wrong (401) or out of its scope (403)",
    Exit.NOT_FOUND: "no such deployment or action (404)",
    Exit.TIMED_OUT: "the action ran past its time limit, or --timeout ran out while waiting",
    Exit.UNREACHABLE: "the server cannot be reached, or what answered is not a Sami server",
    Exit.SERVER_ERROR: "the server failed (5xx)",
}
