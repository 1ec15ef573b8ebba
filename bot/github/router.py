"""One router for GitHub webhook events: ``(event, action)`` -> a small handler.

Each handler is a function registered with ``@handles(event, *actions)`` whose one-line
docstring says the decision it makes. It gets the delivery as an ``Event`` and its
collaborators in a ``HandlerContext``, and returns the outcome recorded on the delivery row
(``"created web-pr-3"``, ``"ignored: ..."``). Handlers decide nothing that services would
decide differently for CI: they translate the event and call the services layer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from bot.github.payloads import payload_problem

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    """One webhook delivery as the handlers see it."""

    name: str  # X-GitHub-Event: pull_request, push, ping, ...
    action: str | None  # the payload's "action", when the event has one
    delivery_id: str  # X-GitHub-Delivery
    payload: dict[str, Any]

    @property
    def repository(self) -> str | None:
        return _name(self.payload, "repository", "full_name")

    @property
    def sender(self) -> str | None:
        return _name(self.payload, "sender", "login")


def _name(payload: dict[str, Any], field: str, key: str) -> str | None:
    value = payload.get(field)
    name = value.get(key) if isinstance(value, dict) else None
    return name if isinstance(name, str) else None


@dataclass
class HandlerContext:
    """What a handler may use: the database session, the manifests, the services context, the
    settings and the GitHub client (None where none is configured)."""

    session: Session
    manifests: Any  # bot.manifests.store.ManifestStore
    services: Any  # bot.services.deployments.Context
    settings: Any  # bot.core.config.Settings
    github: Any = None  # bot.github.client.GitHubClient


Handler = Callable[[Event, HandlerContext], str]
ROUTES: dict[tuple[str, str | None], Handler] = {}


def handles(event: str, *actions: str | None) -> Callable[[Handler], Handler]:
    """Register a handler for ``event`` with each of ``actions`` (no actions: events without one)."""

    def register(handler: Handler) -> Handler:
        for action in actions or (None,):
            key = (event, action)
            if key in ROUTES:
                raise ValueError(f"{event}.{action} is handled twice")
            ROUTES[key] = handler
        return handler

    return register


def dispatch(event: Event, ctx: HandlerContext) -> str:
    """Run the handler of ``event``; the outcome says what it did, or why nothing was done."""
    problem = payload_problem(event.name, event.payload)
    if problem is not None:
        return f"ignored: the payload is not as GitHub sends it ({problem})"
    handler = ROUTES.get((event.name, event.action)) or ROUTES.get((event.name, "*"))
    if handler is None:
        known = sorted({name for name, _ in ROUTES})
        what = f"{event.name}.{event.action}" if event.action else event.name
        if event.name in known:
            return f"ignored: Sami does not act on {what}"
        return f"ignored: Sami does not act on {event.name} events"
    return handler(event, ctx)


class Retry(Exception):
    """Raised by a handler that cannot decide yet (GitHub answered 5xx, checks still running):
    the delivery is tried again after ``after_seconds``."""

    def __init__(self, after_seconds: float, reason: str = ""):
        super().__init__(reason or f"try again in {after_seconds:g} s")
        self.after_seconds = after_seconds
        self.reason = reason
