"""Missed webhook deliveries: ask GitHub to deliver again what failed and Sami has no record of.

GitHub does not retry a failed delivery by itself; it keeps a record of each one for three days
and redelivers on request. After downtime, Sami lists recent deliveries of its webhook (the App's,
or with a token the repository webhooks that point at Sami), and for each delivery GUID that never
got through (every attempt failed: status code 400 and above, or 0 when GitHub could not connect)
and that has no Delivery row, asks for one redelivery.

What was asked is remembered for ASK_WINDOW in Redis (a key per GUID with a time to live, set
only if absent, so two workers do not both ask), not in the deliveries table: a Delivery row
means "received", and a row written for a delivery that was not would make the webhook endpoint
drop the very redelivery as a duplicate. Losing that memory costs one extra request at most,
which the delivery id makes harmless.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.core.models import Delivery
from bot.github.client import DeadlinePassed, GitHubClient, GitHubError, RateLimited, RepositoryHook
from bot.github.pulls import repository_allowed
from bot.manifests import DeploymentsRepo

log = logging.getLogger(__name__)

LOOKBACK = timedelta(hours=1)  # a round looks back this far before the last one that read everything
FIRST_LOOKBACK = timedelta(hours=24)  # ... and a round when no earlier one read everything
MAX_LOOKBACK = timedelta(days=3)  # GitHub keeps deliveries this long
ASK_WINDOW = timedelta(minutes=30)  # one redelivery request per GUID in this window
WEBHOOK_PATH = "/webhooks/github"
MEMORY_PREFIX = "sami:github:redelivery:"


class AskedMemory(Protocol):
    """Which delivery GUIDs Sami asked GitHub to redeliver lately."""

    def claim(self, guid: str) -> bool:
        """Remember ``guid`` for ASK_WINDOW; False when it was asked for already."""

    def asked(self, guid: str) -> bool:
        """Whether ``guid`` was asked for within ASK_WINDOW."""

    def release(self, guid: str) -> None:
        """Forget ``guid`` (the request did not go through)."""


class RedisAskedMemory:
    """Asked GUIDs as Redis keys that expire after ASK_WINDOW."""

    def __init__(self, connection, window: timedelta = ASK_WINDOW):
        self.connection = connection
        self.window = window

    def claim(self, guid: str) -> bool:
        return bool(self.connection.set(MEMORY_PREFIX + guid, "1", nx=True,
                                        px=int(self.window.total_seconds() * 1000)))

    def asked(self, guid: str) -> bool:
        return bool(self.connection.exists(MEMORY_PREFIX + guid))

    def release(self, guid: str) -> None:
        self.connection.delete(MEMORY_PREFIX + guid)


class LocalAskedMemory:
    """Asked GUIDs in this process (the embedded default, which has no Redis)."""

    def __init__(self, window: timedelta = ASK_WINDOW):
        self.window = window.total_seconds()
        self._lock = threading.Lock()
        self._until: dict[str, float] = {}

    def claim(self, guid: str) -> bool:
        now = time.monotonic()
        with self._lock:
            self._until = {g: until for g, until in self._until.items() if until > now}
            if guid in self._until:
                return False
            self._until[guid] = now + self.window
            return True

    def asked(self, guid: str) -> bool:
        with self._lock:
            return self._until.get(guid, 0) > time.monotonic()

    def release(self, guid: str) -> None:
        with self._lock:
            self._until.pop(guid, None)


def asked_memory(broker) -> AskedMemory:
    """Redis when the broker has a connection, else this process's memory."""
    connection = getattr(broker, "connection", None)
    return RedisAskedMemory(connection) if connection is not None else LocalAskedMemory()


@dataclass(frozen=True)
class Missed:
    """A delivery GUID that never got through and that Sami has no record of."""

    guid: str
    delivery_id: int  # its newest attempt, the one redelivered
    event: str
    action: str | None
    delivered_at: str
    status_code: int
    status: str
    hook: RepositoryHook | None = None

    def __str__(self) -> str:
        what = f"{self.event}.{self.action}" if self.action else self.event
        return f"{self.guid} {what} ({self.status_code} {self.status!r} at {self.delivered_at})"


@dataclass
class RedeliveryReport:
    """What one round found and asked for."""

    missed: list[Missed] = field(default_factory=list)
    asked: list[str] = field(default_factory=list)  # GUIDs GitHub was asked to redeliver
    already_asked: list[str] = field(default_factory=list)  # within ASK_WINDOW, not asked again
    failed: dict[str, str] = field(default_factory=dict)  # GUID or hook -> what went wrong
    retry_after: float | None = None  # GitHub's rate limit stopped the round


def _failed(attempt: dict[str, Any]) -> bool:
    code = attempt.get("status_code")
    return isinstance(code, int) and (code == 0 or code >= 400)


def missed_deliveries(attempts: Iterable[dict[str, Any]], known: set[str],
                      hook: RepositoryHook | None = None) -> list[Missed]:
    """GUIDs whose every listed attempt failed and that are not in ``known``, newest attempt each."""
    by_guid: dict[str, list[dict[str, Any]]] = {}
    for attempt in attempts:
        if attempt.get("guid") and isinstance(attempt.get("id"), int):
            by_guid.setdefault(attempt["guid"], []).append(attempt)
    missed = []
    for guid, tries in by_guid.items():
        if guid in known or not all(_failed(a) for a in tries):
            continue
        newest = max(tries, key=lambda a: (str(a.get("delivered_at") or ""), a["id"]))
        missed.append(Missed(guid=guid, delivery_id=newest["id"], event=str(newest.get("event") or "?"),
                             action=newest.get("action"), delivered_at=str(newest.get("delivered_at") or "?"),
                             status_code=newest["status_code"], status=str(newest.get("status") or ""), hook=hook))
    return sorted(missed, key=lambda m: m.delivered_at)


def watched_repositories(repo: DeploymentsRepo, patterns: Iterable[str]) -> list[str]:
    """Repositories Sami hears from: those manifests name (admitted by the ``owner/name`` or
    ``owner/*`` patterns of SAMI_GITHUB_REPOSITORIES, when set) and those the patterns name outright."""
    patterns = [p.lower() for p in patterns]
    found: dict[str, str] = {}
    for manifest in repo.manifests:
        if manifest.repository and repository_allowed(manifest.repository, patterns, repo):
            found.setdefault(manifest.repository.lower(), manifest.repository)
    for pattern in patterns:
        if not pattern.endswith("/*"):
            found.setdefault(pattern, pattern)
    return sorted(found.values(), key=str.lower)


def sami_hooks(github: GitHubClient, repositories: Iterable[str], public_url: str,
               report: RedeliveryReport) -> list[RepositoryHook | None]:
    """The webhooks whose deliveries are read: the App's (None), or with a token each repository
    webhook that posts to Sami's webhook URL."""
    if github.mode == "app":
        return [None]
    target = public_url.rstrip("/") + WEBHOOK_PATH
    hooks: list[RepositoryHook | None] = []
    for repository in repositories:
        try:
            found = [h for h in github.repository_hooks(repository)
                     if str((h.get("config") or {}).get("url") or "").rstrip("/") == target]
        except (RateLimited, DeadlinePassed):
            raise
        except GitHubError as exc:
            report.failed[repository] = exc.message
            continue
        if not found:
            report.failed[repository] = f"no webhook of {repository} posts to {target}"
        hooks.extend(RepositoryHook(repository, int(h["id"])) for h in found)
    return hooks


def redeliver_missed(sessions: Callable[[], Session], github: GitHubClient, memory: AskedMemory, *,
                     since: datetime, repositories: Iterable[str] = (), public_url: str = "",
                     dry_run: bool = False) -> RedeliveryReport:
    """Find deliveries since ``since`` that never reached Sami, and ask GitHub to redeliver each once."""
    report = RedeliveryReport()
    try:
        for hook in sami_hooks(github, repositories, public_url, report):
            try:
                attempts = github.list_hook_deliveries(since=since, hook=hook)
            except (RateLimited, DeadlinePassed):
                raise
            except GitHubError as exc:
                report.failed[hook.repository if hook else "app webhook"] = exc.message
                continue
            guids = {a["guid"] for a in attempts if a.get("guid")}
            report.missed.extend(missed_deliveries(attempts, _known(sessions, guids), hook))
        for missed in report.missed:
            if dry_run:
                (report.already_asked if memory.asked(missed.guid) else report.asked).append(missed.guid)
                continue
            if not memory.claim(missed.guid):
                report.already_asked.append(missed.guid)
                continue
            try:
                github.redeliver(missed.delivery_id, hook=missed.hook)
            except GitHubError as exc:
                memory.release(missed.guid)
                if isinstance(exc, (RateLimited, DeadlinePassed)):
                    raise
                report.failed[missed.guid] = exc.message
                continue
            report.asked.append(missed.guid)
            log.info("asked GitHub to redeliver %s", missed, extra={"delivery_id": missed.guid})
    except RateLimited as exc:
        report.retry_after = exc.retry_after
        report.failed["rate limit"] = exc.message
    except DeadlinePassed as exc:
        report.failed["deadline"] = exc.message  # what is left waits for the next round
    return report


def _known(sessions: Callable[[], Session], guids: set[str]) -> set[str]:
    known: set[str] = set()
    ordered = sorted(guids)
    with sessions() as session:
        for start in range(0, len(ordered), 500):
            chunk = ordered[start:start + 500]
            known.update(session.scalars(select(Delivery.delivery_id).where(Delivery.delivery_id.in_(chunk))))
    return known
