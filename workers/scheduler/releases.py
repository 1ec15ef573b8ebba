"""Blue-green releases (bot.services.releases): archive the previous colour once ``keep_previous`` has
passed since the switch (scaled to zero, data kept), move releases whose deploy run has finished to
"awaiting release", and queue again the switches the queue does not hold (Redis was down, or the
worker that took one died)."""

from __future__ import annotations

from datetime import datetime

from bot.services import releases
from bot.services.deployments import Context
from workers.context import WorkerContext
from workers.queue import switch_job_id
from workers.scheduler.report import TickReport


def releases_step(ctx: WorkerContext, report: TickReport, now: datetime) -> None:
    services_ctx = Context.from_settings(ctx.settings, ctx.broker)
    repo = ctx.manifests.current()
    report.releases_archived.extend(releases.expire(ctx.session, repo, services_ctx, now))
    with ctx.session() as session:
        waiting = releases.switching(session)
    for release_id in waiting:
        broker = ctx.broker
        if broker is not None and not broker.job_is_live(switch_job_id(release_id)):
            broker.enqueue_switch(release_id)
            report.switches.append(release_id)
