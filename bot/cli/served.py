"""The app a web process of ``sami serve`` serves, built when the process starts; in the embedded
default, with the worker and scheduler of the process, which share one context with it."""

from __future__ import annotations

from flask import Flask

from bot.core.config import Settings
from bot.web import create_app
from workers.embedded import start_embedded

EMBEDDED = "sami.embedded"  # the app's extension holding its embedded worker, if it has one


def build_app(settings: Settings) -> Flask:
    """The web app from ``SAMI_*`` variables; without Redis, its in-process worker and scheduler too,
    which share one context with it (settings, database pool, broker, manifests, GitHub client)."""
    if not settings.embedded:
        return create_app()
    embedded = start_embedded(settings)
    app = create_app(context=embedded.context)
    app.extensions[EMBEDDED] = embedded
    return app


def stop(app: Flask) -> None:
    """The web process is stopping: so does its embedded worker, if it has one."""
    embedded = app.extensions.get(EMBEDDED)
    if embedded is not None:
        embedded.stop()
