"""The Redis connection that carries work; an in-process one when no Redis is configured."""

from __future__ import annotations

import threading

import redis
from flask import Flask

from bot.config import Settings

_embedded_lock = threading.Lock()
_embedded_server = None


def connect_redis(settings: Settings) -> redis.Redis:
    """A Redis client for ``settings``; the embedded default shares one in-process server."""
    if settings.redis_url:
        return redis.Redis.from_url(
            settings.redis_url, socket_connect_timeout=2, socket_timeout=10, health_check_interval=30
        )
    import fakeredis

    global _embedded_server
    with _embedded_lock:
        if _embedded_server is None:
            _embedded_server = fakeredis.FakeServer()
    return fakeredis.FakeRedis(server=_embedded_server)


def init_app(app: Flask) -> None:
    """Give the app its Redis client (created lazily, once)."""
    app.extensions["sami.redis"] = None


def get_redis(app: Flask) -> redis.Redis:
    """The app's Redis client."""
    client = app.extensions.get("sami.redis")
    if client is None:
        client = connect_redis(app.config["SAMI"])
        app.extensions["sami.redis"] = client
    return client
