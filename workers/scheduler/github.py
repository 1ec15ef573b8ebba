"""The GitHub rounds, queued here and run by workers on the checks queue (one of each at a time),
so that GitHub's answers, or its silence, never hold up a tick."""

from __future__ import annotations

from datetime import datetime, timedelta

from workers.context import WorkerContext
from workers.scheduler.report import Every, TickReport


def queue_round(ctx: WorkerContext, report: TickReport, now: datetime, every: Every, *, kind: str) -> None:
    """Every ``SAMI_<KIND>_INTERVAL`` seconds, queue the GitHub round ``kind``: ``reconcile`` makes pull
    request environments match GitHub's open pull requests, ``redeliver`` asks GitHub to redeliver
    failed webhook deliveries Sami has no record of."""
    interval = {"reconcile": ctx.settings.reconcile_interval, "redeliver": ctx.settings.redeliver_interval}[kind]
    if ctx.github is None or not every.due(now, timedelta(seconds=interval)):
        return
    if ctx.broker.enqueue_github_round(kind, now.isoformat()):
        report.rounds.append(kind)
    else:
        every.forget()  # not queued: the next tick tries again
