"""What one scheduler tick did, and when a step that runs now and then last ran."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta


@dataclass
class TickReport:
    """What one scheduler tick did, for logs, metrics and tests."""

    queued: list[int] = field(default_factory=list)
    reaped: list[int] = field(default_factory=list)
    requeued: list[int] = field(default_factory=list)
    checks: list[int] = field(default_factory=list)
    # The checks of ``checks`` queued together, one ``check_batch`` call per list.
    check_batches: list[list[int]] = field(default_factory=list)
    archive_checks: list[int] = field(default_factory=list)
    cleanups: list[str] = field(default_factory=list)
    leases_freed: list[int] = field(default_factory=list)
    deliveries: list[int] = field(default_factory=list)
    rounds: list[str] = field(default_factory=list)  # GitHub rounds queued: reconcile, redeliver
    outbox: list[int] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    runs: list[int] = field(default_factory=list)  # whole-environment runs moved on by the backstop
    releases_archived: list[int] = field(default_factory=list)  # releases whose previous colour was archived
    switches: list[int] = field(default_factory=list)  # release switches queued again

    def did_something(self) -> bool:
        """Whether the tick changed or queued anything (a check queued alone is routine)."""
        return bool(self.queued or self.reaped or self.outbox or self.requeued or self.cleanups
                    or self.deliveries or self.rounds or self.expired or self.runs
                    or self.releases_archived or self.switches)


@dataclass
class Every:
    """When a step that runs at most once per period last ran (this scheduler's memory)."""

    last: datetime | None = None

    def due(self, now: datetime, period: timedelta) -> bool:
        """Whether ``period`` has passed since the last run; if so, ``now`` becomes the last run."""
        if self.last is not None and now - self.last < period:
            return False
        self.last = now
        return True

    def forget(self) -> None:
        """The run did not happen after all: the next tick is due again."""
        self.last = None
