"""The web layer's handle on the queue: one broker per app, made from its settings."""

from __future__ import annotations

from flask import Flask

from workers.queue import make_broker


def init_app(app: Flask, broker=None) -> None:
    """Give the app its broker: ``broker`` (the embedded default shares its worker's), or one made
    from the app's settings on first use."""
    app.extensions["sami.broker"] = broker


def get_broker(app: Flask):
    """The app's broker."""
    broker = app.extensions.get("sami.broker")
    if broker is None:
        broker = make_broker(app.config["SAMI"])
        app.extensions["sami.broker"] = broker
    return broker
