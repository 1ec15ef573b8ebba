"""``sami serve``: the web application under gunicorn (and, in the embedded default, the worker and
scheduler as threads of its process).

This module imports nothing that loads prometheus_client: its multiprocess mode is chosen when
that library is first imported, so the samples folder is set first and the app, which records
metrics, is built afterwards, in each web process, by ``bot.cli.served``.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

import click
from gunicorn.app.base import BaseApplication

from bot.cli.common import one_line_errors, warn_if_metrics_open
from bot.core import db, signing
from bot.core.config import Settings, load_settings
from bot.core.logs import configure_logging


@click.command()
@click.option("--bind", "-b", default="127.0.0.1:8000", show_default=True, help="HOST:PORT to listen on.")
@click.option("--workers", "-w", type=click.IntRange(1, 64), default=None,
              help="Web processes (default 2; 1 in the embedded default).")
@click.option("--threads", type=click.IntRange(1, 64), default=8, show_default=True)
@click.option("--migrate/--no-migrate", default=False, help="Apply database migrations first.")
@one_line_errors
def serve(bind: str, workers: int | None, threads: int, migrate: bool) -> None:
    """Serve the web application with gunicorn.

    On SIGTERM it stops accepting, lets in-flight requests finish (up to SAMI_SHUTDOWN_GRACE
    seconds) and, in the embedded default, hands a running action back to the queue.
    """
    settings = load_settings()
    configure_logging(settings)
    warn_if_metrics_open(settings)
    # Before anything imports prometheus_client: every gunicorn process writes its samples here.
    metrics_dir = _metrics_folder()
    if migrate:
        db.upgrade(settings.database_url)
    else:
        db.check_reachable(settings.database_url)  # a database that does not answer: one line, not 500s
    if workers is None:
        workers = 1 if settings.embedded else 2
    if settings.embedded and settings.mode == "development" and not settings.webhook_secret:
        _announce_webhook_secret(settings)
    elif settings.embedded and workers > 1:
        raise click.UsageError(
            "the embedded default (no SAMI_REDIS_URL) runs in one process: use --workers 1"
        )
    if settings.embedded and settings.mode == "development":
        _announce_sign_in_link(settings)
    _Server(settings, {
        "bind": bind,
        "workers": workers,
        "threads": threads,
        # gthread, answering gunicorn's own errors (414, 431, 400) with JSON.
        "worker_class": "bot.web.gunicorn_worker.JSONErrorWorker",
        "accesslog": "-",
        "timeout": 60,
        # Server-sent events keep connections open; gthread handles them.
        "keepalive": 5,
        # SIGTERM: stop accepting, finish in-flight requests for this long, then stop.
        "graceful_timeout": settings.shutdown_grace,
        "worker_exit": _web_process_exit,
        "child_exit": _web_process_gone,
        "on_exit": lambda _arbiter: shutil.rmtree(metrics_dir, ignore_errors=True),
    }).run()


class _Server(BaseApplication):
    """gunicorn with Sami's settings; each web process builds the app when it starts."""

    def __init__(self, settings: Settings, options: dict):
        self.settings = settings
        self.options = options
        super().__init__()

    def load_config(self):
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        # The one deferred import of the command line: the web layer loads prometheus_client,
        # which must come after the samples folder is set (see the module's docstring).
        from bot.cli.served import build_app

        return build_app(self.settings)


def _announce_sign_in_link(settings: Settings) -> None:
    """The embedded default's one-time sign-in link, so a newcomer can drive deployments from the page.

    The code rides in the URL's fragment, which browsers do not send, so it never reaches an access
    log; the server keeps only its hash, and it works once, within the hour. Its session is a fresh
    admin token's (``sami token list`` shows it; signing out of the page revokes it, as ``sami token
    revoke`` does).
    """
    code = signing.make_one_time_code(settings.instance_dir)
    click.echo(f"Sign in to the status page (one-time link, valid {signing.ONE_TIME_TTL // 60} minutes): "
               f"{settings.public_url.rstrip('/')}/login/once#{code}")
    sys.stdout.flush()


def _metrics_folder() -> str:
    """A private, empty folder for this server's metrics samples, named in PROMETHEUS_MULTIPROC_DIR
    (prometheus_client's multiprocess mode): /metrics adds up every gunicorn process's."""
    if "prometheus_client" in sys.modules:
        raise RuntimeError("prometheus_client was imported before its multiprocess folder was set")
    path = tempfile.mkdtemp(prefix="sami-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    return path


def _web_process_exit(_arbiter, worker) -> None:
    """gunicorn's worker_exit hook (in the web process, its requests done): stop the embedded worker."""
    served = sys.modules.get("bot.cli.served")  # loaded with the app; not loaded, nothing to stop
    app = getattr(worker, "wsgi", None)
    if served is not None and app is not None:
        served.stop(app)


def _web_process_gone(_arbiter, worker) -> None:
    """gunicorn's child_exit hook (in the master): a web process ended; its live gauges go."""
    # Imported here, in the master, long after the samples folder is set.
    from bot.core.metrics import child_exited

    child_exited(worker.pid)


def _announce_webhook_secret(settings: Settings) -> None:
    """The embedded default's generated webhook secret: shown once, when it is made (not logged)."""
    secret, created, path = signing.embedded_secret(settings.instance_dir)
    if created:
        click.echo(f"GitHub webhook secret (generated, stored in {path}, shown this once): {secret}")
    else:
        click.echo(f"GitHub webhook secret: the one stored in {path}")
    sys.stdout.flush()  # before gunicorn takes over this process's output
