"""The embedded default: the queue, worker and scheduler as threads of the web process."""

from __future__ import annotations

import logging
import threading

from bot.core.config import Settings
from workers.context import WorkerContext, build_context
from workers.queue import InProcessBroker
from workers.scheduler import Scheduler
from workers.shutdown import STOPPING

log = logging.getLogger(__name__)
_running: list[tuple[Scheduler, InProcessBroker]] = []


def start_embedded(settings: Settings, scheduler_interval: float = 2.0) -> WorkerContext:
    """Start the in-process worker and scheduler of the web process; return their context, whose
    in-process broker the web app is then given, so that what the app queues runs here."""
    context = build_context(settings, broker=InProcessBroker())
    scheduler = Scheduler(context, interval=scheduler_interval)
    threading.Thread(target=scheduler.run_forever, name="sami-scheduler", daemon=True).start()
    _running.append((scheduler, context.broker))
    log.info("embedded worker and scheduler started (no SAMI_REDIS_URL)")
    return context


def stop_embedded() -> None:
    """The web process is stopping (its requests are done): the scheduler stops after its tick, a
    running action is handed back to the queue (its script group stopped), and waiting jobs are
    dropped; the next start's sweep queues what is still queued in the database."""
    if not _running:
        return
    STOPPING.request(0)
    while _running:
        scheduler, broker = _running.pop()
        scheduler.stop()
        broker.shutdown(wait=True)
    log.info("embedded worker and scheduler stopped")
