"""The backstop of whole-environment runs: a run whose component's action was settled without the
worker's step (by the reaper, a cancel, a worker that died after settling it) or whose next
component could not be queued yet moves on here (see bot.services.environments)."""

from __future__ import annotations

from datetime import datetime

from bot.services import environments
from bot.services.deployments import Context
from workers.context import WorkerContext
from workers.scheduler.report import TickReport


def advance_runs(ctx: WorkerContext, report: TickReport, now: datetime) -> None:
    services_ctx = Context.from_settings(ctx.settings, ctx.broker)
    report.runs.extend(environments.advance_runs(ctx.session, ctx.manifests.at, services_ctx))
