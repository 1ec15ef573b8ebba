"""The errors Sami's services refuse a request with: plain, named, free of HTTP (the web layer maps
each kind to a status), each with a message a person can act on."""

from __future__ import annotations

from sqlalchemy.exc import SQLAlchemyError


class SamiError(Exception):
    """A request Sami refuses; ``details`` are extra fields for the answer (a state, an action id)."""

    def __init__(self, message: str, **details):
        super().__init__(message)
        self.message = message
        self.details = details


class Invalid(SamiError):
    """The request names something unknown, or asks for something not allowed."""


class NotFound(SamiError):
    """What the request names does not exist (or the caller may not know of it)."""


class Conflict(SamiError):
    """The request is at odds with the current state (a deployment busy, a name taken)."""


class NotAllowed(SamiError):
    """The caller is known but may not do this (not among an environment's release approvers)."""


class Pinned(Conflict):
    """The deployment is pinned (a rollback pinned it): nothing moves it on by itself until it is unpinned.
    ``details`` name who pinned it, when, why, and how to unpin."""


def failure_text(exc: Exception) -> str:
    """What an outcome says of an unexpected error: its type and message, but only the type of a
    database error, whose message holds SQL and the values sent (the log has them)."""
    if isinstance(exc, SQLAlchemyError):
        return f"{type(exc).__name__} from the database (the server log has the details)"
    return f"{type(exc).__name__}: {exc}"
