"""The embedded default: the queue, worker and scheduler as threads of the web process."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from bot.core.config import Settings
from workers.context import WorkerContext, build_context
from workers.queue import InProcessBroker
from workers.scheduler import Scheduler

log = logging.getLogger(__name__)


@dataclass
class Embedded:
    """The worker and scheduler running inside a web process, and the context they share with it."""

    context: WorkerContext
    scheduler: Scheduler

    def stop(self) -> None:
        """The web process is stopping (its requests are done): the scheduler stops after its tick, a
        running action is handed back to the queue (its script group stopped), and waiting jobs are
        dropped; the next start's sweep queues what is still queued in the database."""
        self.context.stopping.request(0)
        self.scheduler.stop()
        self.context.broker.shutdown(wait=True)
        log.info("embedded worker and scheduler stopped")


def start_embedded(settings: Settings, scheduler_interval: float = 2.0) -> Embedded:
    """Start the in-process worker and scheduler of the web process. The web app is then given their
    context's broker, so that what it queues runs here."""
    context = build_context(settings, broker=InProcessBroker())
    scheduler = Scheduler(context, interval=scheduler_interval)
    threading.Thread(target=scheduler.run_forever, name="sami-scheduler", daemon=True).start()
    log.info("embedded worker and scheduler started (no SAMI_REDIS_URL)")
    return Embedded(context, scheduler)
