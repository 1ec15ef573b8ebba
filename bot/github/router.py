"""One router for GitHub webhook events: ``(event, action)`` -> a small handler.

Each handler is a function whose one-line docstring says the decision it makes; the routes to
them are listed in one place (``bot.github.routes``). A handler gets the delivery as an ``Event``
and its collaborators in a ``HandlerContext``, and returns an ``Outcome``: its kind is the
delivery's status, its text the line recorded on the delivery row (``"created web-pr-3"``,
``"ignored: ..."``). Handlers decide nothing that services would decide differently for CI: they
translate the event and call the services layer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from bot.github.outcomes import Outcome
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


Handler = Callable[[Event, HandlerContext], Outcome]


class Router:
    """``(event, action)`` -> its handler, built once (``bot.github.routes.make_router``) and held by
    whoever dispatches deliveries. An action of ``"*"`` takes every action of its event."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str | None], Handler] = {}

    def add(self, handler: Handler, event: str, *actions: str | None) -> Router:
        """Route ``event`` with each of ``actions`` (no actions: events without one) to ``handler``."""
        for action in actions or (None,):
            key = (event, action)
            if key in self.routes:
                raise ValueError(f"{event}.{action} is handled twice")
            self.routes[key] = handler
        return self

    def dispatch(self, event: Event, ctx: HandlerContext) -> Outcome:
        """Run the handler of ``event``; the outcome says what it did, or why nothing was done."""
        problem = payload_problem(event.name, event.payload)
        if problem is not None:
            return Outcome.ignored(f"the payload is not as GitHub sends it ({problem})")
        handler = self.routes.get((event.name, event.action)) or self.routes.get((event.name, "*"))
        if handler is None:
            what = f"{event.name}.{event.action}" if event.action else event.name
            if any(name == event.name for name, _ in self.routes):
                return Outcome.ignored(f"Sami does not act on {what}")
            return Outcome.ignored(f"Sami does not act on {event.name} events")
        return handler(event, ctx)


class Retry(Exception):
    """Raised by a handler that cannot decide yet (GitHub answered 5xx, checks still running):
    the delivery is tried again after ``after_seconds``."""

    def __init__(self, after_seconds: float, reason: str = ""):
        super().__init__(reason or f"try again in {after_seconds:g} s")
        self.after_seconds = after_seconds
        self.reason = reason
