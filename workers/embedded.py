"""The embedded default: the queue, worker and scheduler as threads of the web process."""

from __future__ import annotations

import logging
import threading

from bot.config import Settings
from bot.queue import make_broker
from workers.context import WorkerContext, build_context, set_context
from workers.scheduler import Scheduler

log = logging.getLogger(__name__)
_started: WorkerContext | None = None
_lock = threading.Lock()


def start_embedded(settings: Settings, scheduler_interval: float = 2.0) -> WorkerContext:
    """Start the in-process worker and scheduler once per process; return their context."""
    global _started
    with _lock:
        if _started is not None:
            return _started
        context = build_context(settings, broker=make_broker(settings))
        set_context(context)
        scheduler = Scheduler(context, interval=scheduler_interval)
        threading.Thread(target=scheduler.run_forever, name="sami-scheduler", daemon=True).start()
        log.info("embedded worker and scheduler started (no SAMI_REDIS_URL)")
        _started = context
        return context
