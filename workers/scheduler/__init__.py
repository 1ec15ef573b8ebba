"""Periodic work, one module per step: the reaper, the sweeps, status checks, retention (ttl
archive, cleanup, tree pruning) and the GitHub rounds, which are queued here and run by workers so
that GitHub's answers (or its silence) never hold up a tick.

Every step is idempotent (conditional updates, the state machine, live-job checks), so running
more than one scheduler is safe; with Redis, a short lock also keeps two from doing one tick.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime

from workers.context import WorkerContext
from workers.lease import db_now
from workers.scheduler import checks, environments, github, reaper, releases, retention, sweep
from workers.scheduler.report import Every, TickReport

__all__ = ["Scheduler", "TickReport"]
log = logging.getLogger(__name__)

TICK_LOCK = "sami:scheduler:tick"


class Scheduler:
    """Runs the periodic steps every ``interval`` seconds; ``steps`` names each, in the order a tick runs them."""

    def __init__(self, ctx: WorkerContext, interval: float = 5.0):
        self.ctx = ctx
        self.interval = interval
        self._stop = threading.Event()
        step = functools.partial
        # In this order: the reaper first, so that what it re-queues is not swept twice.
        self.steps: dict[str, Callable[[TickReport, datetime], None]] = {
            "reap": step(reaper.reap, ctx),
            "sweep": step(sweep.sweep_actions, ctx),
            "environments": step(environments.advance_runs, ctx),
            "releases": step(releases.releases_step, ctx),
            "sweep_deliveries": step(sweep.sweep_deliveries, ctx),
            "sweep_outbox": step(sweep.sweep_outbox, ctx, pruned=Every()),
            "checks": step(checks.checks, ctx),
            "retention": step(retention.retention, ctx),
            "expire": step(retention.expire, ctx, every=Every()),
            "prune": step(retention.prune, ctx, every=Every()),
            "reconcile": step(github.queue_round, ctx, every=Every(), kind="reconcile"),
            "redeliver": step(github.queue_round, ctx, every=Every(), kind="redeliver"),
        }

    def _lock(self) -> bool:
        connection = getattr(self.ctx.broker, "connection", None)
        if connection is None:
            return True
        try:
            return bool(connection.set(TICK_LOCK, "1", nx=True, px=int(self.interval * 900)))
        except Exception:
            return True  # Redis down: the steps are idempotent, and the sweep must still run

    def tick(self, now: datetime | None = None) -> TickReport:
        """Run every step once; times are the database's (every machine's scheduler agrees)."""
        if now is None:
            with self.ctx.session() as session:
                now = db_now(session)
        report = TickReport()
        for name, run in self.steps.items():
            try:
                run(report, now)
            except Exception:
                log.exception("scheduler step %s failed", name)
        return report

    def run_forever(self) -> None:
        log.info("scheduler started (every %.0f s)", self.interval)
        while not self._stop.is_set():
            started = time.monotonic()
            if self._lock():
                try:
                    report = self.tick()
                except Exception:  # the database is unreachable: try again next tick
                    log.exception("scheduler tick failed")
                    self._stop.wait(self.interval)
                    continue
                if report.did_something():
                    log.info("scheduler: %s", report)
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def stop(self) -> None:
        self._stop.set()
