"""The queue the web layer hands accepted actions to: RQ on Redis, or in-process threads."""

from __future__ import annotations

import threading

import redis
from flask import Flask

from bot.config import Settings

_embedded_lock = threading.Lock()
_embedded_broker = None


def connect_redis(settings: Settings) -> redis.Redis:
    """A Redis client for ``settings.redis_url``."""
    return redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=10,
                                health_check_interval=30)


def make_broker(settings: Settings):
    """RQ on the configured Redis; without one, the process-wide in-process broker."""
    from workers.queue import InProcessBroker, RQBroker

    if settings.redis_url:
        return RQBroker(connect_redis(settings))
    global _embedded_broker
    with _embedded_lock:
        if _embedded_broker is None:
            _embedded_broker = InProcessBroker()
        return _embedded_broker


def init_app(app: Flask) -> None:
    """Give the app its broker (created lazily, once)."""
    app.extensions["sami.broker"] = None


def get_broker(app: Flask):
    """The app's broker."""
    broker = app.extensions.get("sami.broker")
    if broker is None:
        broker = make_broker(app.config["SAMI"])
        app.extensions["sami.broker"] = broker
    return broker
