"""The embedded default: the queue, worker and scheduler as threads of the web process."""

from __future__ import annotations

import logging
import threading

from flask import Flask

from bot import queue
from workers.context import WorkerContext, build_context
from workers.queue import InProcessBroker
from workers.scheduler import Scheduler

log = logging.getLogger(__name__)


def start_embedded(app: Flask, scheduler_interval: float = 2.0) -> WorkerContext:
    """Start the in-process worker and scheduler of ``app`` (the web process); return their context.

    The app and the worker share one in-process broker, so what the app queues runs here.
    """
    context = build_context(app.config["SAMI"], broker=InProcessBroker())
    queue.init_app(app, context.broker)
    scheduler = Scheduler(context, interval=scheduler_interval)
    threading.Thread(target=scheduler.run_forever, name="sami-scheduler", daemon=True).start()
    log.info("embedded worker and scheduler started (no SAMI_REDIS_URL)")
    return context
