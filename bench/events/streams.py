"""Sami's app with ``/events`` as a plain streaming response, for bench_events.py to compare with the hub.

``GET /events`` keeps its authorisation (bot.web.pages.live_events decides what the viewer may read)
and answers with a generator that yields events for as long as the page stays: one gunicorn thread
(gthread) or greenlet (gevent) per open page. Changes come from one poller per process running the
hub's own queries (``bot.web.events.Hub.poll`` and ``revoked_tokens``) without its selector thread.

    gunicorn --pythonpath bench/events 'streams:create()'   # BENCH_EVENTS_FEED=poller (default) or flask-sse

With ``BENCH_EVENTS_FEED=flask-sse`` the poller publishes each change to Redis through flask-sse and
every stream reads it from a Redis subscription of its own (flask-sse's ``messages()``), as an app
built on flask-sse would; flask-sse sends no keep-alive comments, so none are sent then.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
from collections.abc import Callable

from flask import Flask, Response, current_app

from bot.web import create_app, events
from bot.web.events import KEEPALIVE_SECONDS, POLL_SECONDS, RETRY_MS, Hub, sse

HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


class Subscriber:
    """One open page: what its viewer may read, its token, and how changes reach its stream."""

    __slots__ = ("deliver", "may_read", "token_id")

    def __init__(self, may_read: Callable[[dict], bool], token_id: str | None, deliver: Callable[[object], None]):
        self.may_read = may_read
        self.token_id = token_id  # read by Hub.revoked_tokens
        self.deliver = deliver  # called from the poller thread with a list of changes, or None: close


class ChangeFeed(Hub):
    """The hub's poller (the same queries, the same one-second interval) without its selector thread."""

    def __init__(self, session_factory, poll_seconds: float = POLL_SECONDS,
                 publish: Callable[[list[dict]], None] | None = None):
        self.session_factory = session_factory
        self.poll_seconds = poll_seconds
        self.publish = publish or self._fan_out
        self.streams: dict[int, Subscriber] = {}
        self.signature: tuple | None = None
        self.versions: dict[str, int] = {}
        self.last_change = None
        self.sent_events = 0
        self.pid = os.getpid()
        threading.Thread(target=self._poll_forever, name="bench-events-poller", daemon=True).start()

    def subscribe(self, subscriber: Subscriber) -> None:
        self.streams[id(subscriber)] = subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.streams.pop(id(subscriber), None)

    def _send_to_hub(self, item) -> None:
        """Hub's poller hands its findings here: changes go to every stream, revocations close streams."""
        kind, found = item
        if kind == "changes":
            self.publish(found)
        elif kind == "revoked":
            for subscriber in [s for s in list(self.streams.values()) if s.token_id in found]:
                subscriber.deliver(None)

    def _fan_out(self, changes: list[dict]) -> None:
        for subscriber in list(self.streams.values()):
            subscriber.deliver(changes)


_feed_lock = threading.Lock()


def get_feed(app: Flask, publish: Callable[[list[dict]], None] | None = None) -> ChangeFeed:
    """This process's feed, started on first use (after gunicorn forked the worker)."""
    with _feed_lock:
        feed = app.extensions.get("bench.feed")
        if feed is None or feed.pid != os.getpid():
            feed = ChangeFeed(app.extensions["sami.db"], publish=publish)
            app.extensions["bench.feed"] = feed
        return feed


def hello() -> bytes:
    return f"retry: {RETRY_MS}\n\n".encode() + sse("hello", {"live": True})


def generator_response(may_read: Callable[[dict], bool], token_id: str | None = None) -> Response:
    """``/events`` as a generator: it waits on its own queue, so it holds a thread or greenlet while open."""
    feed = get_feed(current_app._get_current_object())

    def body():
        inbox: queue.Queue = queue.Queue()
        subscriber = Subscriber(may_read, token_id, inbox.put)
        feed.subscribe(subscriber)  # before the first event, so no change falls between
        try:
            yield hello()
            while True:
                try:
                    changes = inbox.get(timeout=KEEPALIVE_SECONDS)
                except queue.Empty:
                    yield b": keepalive\n\n"  # also how a thread learns that its page went away
                    continue
                if changes is None:
                    return
                visible = [change for change in changes if may_read(change)]
                if visible:
                    yield sse("change", {"deployments": visible})
        finally:
            feed.unsubscribe(subscriber)

    return Response(body(), mimetype="text/event-stream", headers=HEADERS)


def flask_sse_response(may_read: Callable[[dict], bool], token_id: str | None = None) -> Response:
    """``/events`` on flask-sse: every stream listens to the Redis channel the poller publishes to."""
    from flask_sse import sse as flask_sse

    app = current_app._get_current_object()
    get_feed(app, publish=lambda changes: _publish(app, changes))

    def body():
        yield hello()
        with app.app_context():
            for message in flask_sse.messages():
                visible = [change for change in message.data if may_read(change)]
                if visible:
                    yield sse("change", {"deployments": visible})

    return Response(body(), mimetype="text/event-stream", headers=HEADERS)


def _publish(app: Flask, changes: list[dict]) -> None:
    from flask_sse import sse as flask_sse

    with app.app_context():
        flask_sse.publish(changes, type="change")


def _cooperative_database() -> None:
    """Under gunicorn's gevent worker psycopg2 would block every greenlet during a query: psycogreen
    makes it wait through gevent instead (what production on gevent would need too)."""
    if "gevent" not in sys.modules:
        return
    from gevent import monkey

    if monkey.is_module_patched("socket"):
        from psycogreen.gevent import patch_psycopg

        patch_psycopg()


def create() -> Flask:
    """The app gunicorn serves: Sami, with /events answered by the feed BENCH_EVENTS_FEED names."""
    _cooperative_database()
    app = create_app()
    if os.environ.get("BENCH_EVENTS_FEED", "poller") == "flask-sse":
        app.config["SSE_REDIS_URL"] = app.config["SAMI"].redis_url
        events.stream_response = flask_sse_response
    else:
        events.stream_response = generator_response
    return app
