"""What the GitHub rounds (reconciliation, redelivery) remember between runs, whichever worker runs
them: until when GitHub's rate limit holds a round back, and up to when redelivery has read.

In Redis when there is one (every worker and scheduler sees it), else in this process (the embedded
default, whose jobs run on its own threads). Losing it costs little: a round tried once too early,
or one redelivery round looking back further than it needed to.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Protocol

MARK_PREFIX = "sami:github:round:"
MARK_LIFETIME = timedelta(days=3)  # GitHub keeps deliveries this long: an older mark tells nothing


class RoundMarks(Protocol):
    """Named times the GitHub rounds leave for the next round."""

    def get(self, name: str) -> datetime | None:
        """The time last set under ``name``; None when there is none."""

    def set(self, name: str, at: datetime) -> None:
        """Remember ``at`` under ``name``."""


class RedisRoundMarks:
    """Marks as Redis keys (ISO times) that expire after MARK_LIFETIME."""

    def __init__(self, connection):
        self.connection = connection

    def get(self, name: str) -> datetime | None:
        raw = self.connection.get(MARK_PREFIX + name)
        return datetime.fromisoformat(raw.decode()) if raw else None

    def set(self, name: str, at: datetime) -> None:
        self.connection.set(MARK_PREFIX + name, at.isoformat(), px=int(MARK_LIFETIME.total_seconds() * 1000))


class LocalRoundMarks:
    """Marks in this process (the embedded default, which has no Redis)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._marks: dict[str, datetime] = {}

    def get(self, name: str) -> datetime | None:
        with self._lock:
            return self._marks.get(name)

    def set(self, name: str, at: datetime) -> None:
        with self._lock:
            self._marks[name] = at


def round_marks(broker) -> RoundMarks:
    """Redis when the broker has a connection, else this process's memory."""
    connection = getattr(broker, "connection", None)
    return RedisRoundMarks(connection) if connection is not None else LocalRoundMarks()
