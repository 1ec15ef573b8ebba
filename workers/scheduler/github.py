"""The GitHub rounds, queued here and run by workers on the checks queue (one of each at a time),
so that GitHub's answers, or its silence, never hold up a tick."""

from __future__ import annotations

from datetime import datetime, timedelta

from workers.context import WorkerContext
from workers.scheduler.report import Every, TickReport


def reconcile(ctx: WorkerContext, report: TickReport, now: datetime, every: Every) -> None:
    """Every SAMI_RECONCILE_INTERVAL seconds, queue a round that makes pull request environments match
    GitHub's open pull requests."""
    if ctx.github is None or not every.due(now, timedelta(seconds=ctx.settings.reconcile_interval)):
        return
    if ctx.broker.enqueue_github_round("reconcile", now.isoformat()):
        report.rounds.append("reconcile")
    else:
        every.forget()  # not queued: the next tick tries again


def redeliver(ctx: WorkerContext, report: TickReport, now: datetime, every: Every) -> None:
    """Every SAMI_REDELIVER_INTERVAL seconds, queue a round that asks GitHub to redeliver failed webhook
    deliveries Sami has no record of."""
    if ctx.github is None or not every.due(now, timedelta(seconds=ctx.settings.redeliver_interval)):
        return
    if ctx.broker.enqueue_github_round("redeliver", now.isoformat()):
        report.rounds.append("redeliver")
    else:
        every.forget()  # not queued: the next tick tries again
