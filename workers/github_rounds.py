"""Queue jobs for the scheduler's GitHub rounds: reconcile pull request environments, and ask GitHub to
redeliver missed webhook deliveries. Each round sends requests until its deadline, then leaves the
rest for the next round; what a round leaves for the next one is kept in the context's round marks."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from bot.github.client import Deadline
from bot.github.reconcile import ReconcileReport, reconcile_pull_requests
from bot.github.redeliver import (
    FIRST_LOOKBACK,
    LOOKBACK,
    MAX_LOOKBACK,
    RedeliveryReport,
    redeliver_missed,
    watched_repositories,
)
from bot.services.deployments import Context
from workers.context import WorkerContext

log = logging.getLogger(__name__)

ROUND_DEADLINE = 120.0  # seconds a round sends requests for
RECONCILE_HELD = "reconcile-held-until"  # GitHub's rate limit: no reconciliation before this time
REDELIVER_HELD = "redeliver-held-until"  # ... no redelivery round before this time
REDELIVERED_TO = "redelivered-to"  # when the last redelivery round that read everything began


def reconcile_round(round_at: str, *, ctx: WorkerContext) -> ReconcileReport | None:
    """Queue job: make pull request environments match GitHub's open pull requests, as of ``round_at``
    (the scheduler's time); None when there is nothing to do or a rate limit holds the round back."""
    now = datetime.fromisoformat(round_at)
    if ctx.github is None or _held(ctx, RECONCILE_HELD, now):
        return None
    with ctx.github.deadline(Deadline.after(ROUND_DEADLINE)):
        report = reconcile_pull_requests(ctx.session, ctx.manifests.current(), ctx.github,
                                         Context.from_settings(ctx.settings, ctx.broker), ctx.settings)
    if report.retry_after:
        ctx.rounds.set(RECONCILE_HELD, now + timedelta(seconds=report.retry_after))
    if report.done:
        log.info("reconciliation: %s", "; ".join(report.done))
    return report


def redeliver_round(round_at: str, *, ctx: WorkerContext) -> RedeliveryReport | None:
    """Queue job: ask GitHub to redeliver failed deliveries Sami has no record of, looking back to an hour
    before the last round that read everything (a day when none did); None when held back or nothing to do."""
    now = datetime.fromisoformat(round_at)
    if ctx.github is None or _held(ctx, REDELIVER_HELD, now):
        return None
    read_to = ctx.rounds.get(REDELIVERED_TO)
    since = max(read_to - LOOKBACK if read_to else now - FIRST_LOOKBACK, now - MAX_LOOKBACK)
    repositories = [] if ctx.github.mode == "app" else watched_repositories(
        ctx.manifests.current(), ctx.settings.github_repositories)
    with ctx.github.deadline(Deadline.after(ROUND_DEADLINE)):
        report = redeliver_missed(ctx.session, ctx.github, ctx.asked, since=since, repositories=repositories,
                                  public_url=ctx.settings.public_url)
    if report.retry_after:
        ctx.rounds.set(REDELIVER_HELD, now + timedelta(seconds=report.retry_after))
    elif not report.failed:
        ctx.rounds.set(REDELIVERED_TO, now)
    for what, why in report.failed.items():
        log.warning("redelivery round: %s: %s", what, why)
    return report


def _held(ctx: WorkerContext, mark: str, now: datetime) -> bool:
    until = ctx.rounds.get(mark)
    if until is not None and now < until:
        log.info("GitHub round skipped: GitHub's rate limit holds it back until %s", until.isoformat())
        return True
    return False
