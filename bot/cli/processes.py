"""``sami worker`` and ``sami scheduler``: the processes that run queued work and periodic steps
beside the web processes (with Redis; the embedded default runs both inside ``sami serve``)."""

from __future__ import annotations

import signal

import click

from bot.cli.common import migrated_sessions, one_line_errors, warn_if_metrics_open
from bot.core.config import Settings, load_settings
from bot.core.logs import configure_logging
from bot.core.metrics import StateCollector, serve_metrics
from workers.afterwork import AfterWork
from workers.context import WorkerContext, build_context
from workers.queue import ACTIONS_QUEUE, CHECKS_QUEUE, RQBroker, connect_redis
from workers.scheduler import Scheduler
from workers.shutdown import GracefulWorker


@click.command()
@click.option("--burst", is_flag=True, help="Stop when the queues are empty.")
@click.option("--name", default=None, help="Worker name (default: host and pid).")
@one_line_errors
def worker(burst: bool, name: str | None) -> None:
    """Run a worker that executes queued actions and checks (needs SAMI_REDIS_URL).

    On SIGTERM it takes no new job; the running action has SAMI_SHUTDOWN_GRACE seconds to finish,
    then it is handed back to the queue (a second SIGTERM hands it back at once).
    """
    settings = load_settings()
    if settings.embedded:
        raise click.UsageError("set SAMI_REDIS_URL: without Redis, `sami serve` runs the worker itself")
    sessions = migrated_sessions(settings)  # before logging is set up: the check's own lines are noise
    configure_logging(settings)
    connection = connect_redis(settings)
    context = build_context(settings, broker=RQBroker(connection), session_factory=sessions)
    # An action's info and notifications run beside the next job: a component waiting for this one
    # starts without waiting for them too.
    context.after_work = AfterWork()
    _serve_process_metrics(settings, context)
    # No fork per job: the process keeps its database pool, and scripts run in their own
    # process groups anyway. RQ's scheduler (one process for all workers, by a lock in Redis)
    # queues actions that may not start yet when their time comes.
    GracefulWorker([ACTIONS_QUEUE, CHECKS_QUEUE], connection=connection, name=name, context=context,
                   grace=settings.shutdown_grace).work(burst=burst, logging_level=settings.log_level.upper(),
                                                       with_scheduler=True)


@click.command()
@click.option("--interval", type=click.FloatRange(0.5, 600), default=5.0, show_default=True,
              help="Seconds between ticks.")
@click.option("--once", is_flag=True, help="Run one tick and print what it did.")
@one_line_errors
def scheduler(interval: float, once: bool) -> None:
    """Run the scheduler: queue sweep, reaper, status checks, retention cleanup.

    On SIGTERM it finishes the tick under way, if any, and stops.
    """
    settings = load_settings()
    sessions = migrated_sessions(settings)  # before logging is set up: the check's own lines are noise
    configure_logging(settings)
    context = build_context(settings, session_factory=sessions)
    runner = Scheduler(context, interval=interval)
    if once:
        click.echo(runner.tick())
        return
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: runner.stop())
    _serve_process_metrics(settings, context)
    log_started = f"scheduler running (every {interval:g} s); SIGTERM stops it after the tick under way"
    click.echo(log_started, err=True)
    runner.run_forever()
    click.echo("scheduler stopped", err=True)


def _serve_process_metrics(settings: Settings, context: WorkerContext) -> None:
    """With SAMI_METRICS_PORT, this worker or scheduler serves its own /metrics on that port."""
    if not settings.metrics_port:
        return
    warn_if_metrics_open(settings)
    serve_metrics(settings.metrics_port, settings.metrics_token,
                  extra=[StateCollector(context.session, lambda: context.broker)])
