"""The app a web process of ``sami serve`` serves, built when the process starts; in the embedded
default, with the worker and scheduler of the process, which share one context with it."""

from __future__ import annotations

from flask import Flask

from bot.core.config import Settings
from bot.web import auth, create_app, queue, shared
from workers.embedded import start_embedded

EMBEDDED = "sami.embedded"  # the app's extension holding its embedded worker, if it has one


def build_app(settings: Settings) -> Flask:
    """The web app from ``SAMI_*`` variables; without Redis, its in-process worker and scheduler too."""
    app = create_app()
    if settings.embedded:
        # One context for the process: the app queues onto the worker's broker, reads the
        # manifests through the worker's store and asks GitHub through the worker's client.
        embedded = start_embedded(app.config["SAMI"])
        queue.init_app(app, embedded.context.broker)
        shared.init_app(app, embedded.context.manifests)
        auth.init_app(app, embedded.context.github)
        app.extensions[EMBEDDED] = embedded
    return app


def stop(app: Flask) -> None:
    """The web process is stopping: so does its embedded worker, if it has one."""
    embedded = app.extensions.get(EMBEDDED)
    if embedded is not None:
        embedded.stop()
