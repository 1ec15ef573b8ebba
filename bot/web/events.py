"""Live updates for the status page: server-sent events that do not hold a web thread each.

gunicorn's gthread worker gives every request a thread until its response ends, so an endless
event stream per open page would use up the threads (8 by default) at the ninth page. Instead,
``GET /events`` answers its headers and a first event through gunicorn as usual and then hands
the connection to this process's one ``Hub`` thread: it keeps every stream as a non-blocking
socket in a selector, and the request's thread is free at once. gunicorn is left a stand-in
socket (the connection's descriptor number now points at a closed socket pair), so whatever it
does after the response (a half-close, a close, a wait for a next request) cannot touch the
handed-over connection. The response has a Content-Length too large to reach and no chunked
framing, so nothing gunicorn writes at the end belongs to the stream.

Changes come from the database: one poller per process reads a cheap signature of the
deployments table (count, sum of row versions, latest change) every second and, when it moved,
the rows changed since, and fans them out to every stream (each sees only the deployments its
viewer may read). Outside gunicorn (the test client, another server) ``/events`` answers one
event and ends; EventSource reconnects after ``retry``, which makes it a slow poll.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import selectors
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, timedelta

from flask import Flask, Response, current_app, request
from sqlalchemy import func, select

from bot.core import lifecycle
from bot.core.lifecycle import short_reason, state_tone, state_word
from bot.core.models import ApiToken, Deployment
from bot.services import queries

log = logging.getLogger(__name__)
POLL_SECONDS = 1.0
KEEPALIVE_SECONDS = 15.0
RETRY_MS = 3000
MAX_BUFFERED = 256 * 1024  # a stream this far behind is closed; its page reconnects
MAX_STREAMS = 5000
# A change committed this long after a later one was seen is still found (clocks of several processes).
LOOKBACK = timedelta(seconds=30)
# Larger than any stream will send: gunicorn then frames nothing and appends nothing.
ENDLESS = str(2**62)


def tone(state) -> str:
    """How a state looks: ok (green), bad (red), quiet (grey), busy (amber, everything pending)."""
    return state_tone(state)


def last_deploy_note(state, deploy: queries.LastDeploy | None) -> str | None:
    """What a list says beside ``state`` about the last deploy ("last deploy failed"), or None."""
    return lifecycle.last_deploy_note(state, deploy.state if deploy else None)


def sse(event: str, data: object) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class _Stream:
    __slots__ = ("may_read", "pending", "sock", "token_id")

    def __init__(self, sock: socket.socket, may_read: Callable[[dict], bool], token_id: str | None = None):
        self.sock = sock
        self.may_read = may_read
        self.pending = b""
        self.token_id = token_id  # the Sami token the viewer signed in with: revoking it closes the stream


class Hub:
    """Holds this process's open event streams and fans database changes out to them."""

    def __init__(self, session_factory, poll_seconds: float = POLL_SECONDS):
        self.session_factory = session_factory
        self.poll_seconds = poll_seconds
        self.selector = selectors.DefaultSelector()
        self.streams: dict[int, _Stream] = {}
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.selector.register(self.wake_r, selectors.EVENT_READ, None)
        self.signature: tuple | None = None
        self.versions: dict[str, int] = {}
        self.last_change = None
        self.sent_events = 0
        threading.Thread(target=self._serve, name="sami-events", daemon=True).start()
        threading.Thread(target=self._poll_forever, name="sami-events-poller", daemon=True).start()

    # -- called from request threads ---------------------------------------------------------------

    def adopt(self, sock: socket.socket, may_read: Callable[[dict], bool], token_id: str | None = None) -> None:
        self._send_to_hub(("adopt", sock, may_read, token_id))

    def count(self) -> int:
        return len(self.streams)

    def _send_to_hub(self, item) -> None:
        self.inbox.put(item)
        with contextlib.suppress(BlockingIOError):  # a full pipe: the hub is awake anyway
            os.write(self.wake_w, b"x")

    # -- the hub thread ----------------------------------------------------------------------------

    def _serve(self) -> None:
        last_keepalive = time.monotonic()
        while True:
            try:
                for key, mask in self.selector.select(timeout=KEEPALIVE_SECONDS / 3):
                    if key.data is None:
                        self._drain_inbox()
                    elif mask & selectors.EVENT_READ:
                        self._readable(key.data)
                    elif mask & selectors.EVENT_WRITE:
                        self._flush(key.data)
                if time.monotonic() - last_keepalive >= KEEPALIVE_SECONDS:
                    last_keepalive = time.monotonic()
                    self._broadcast(b": keepalive\n\n", None)
            except Exception:  # the hub must outlive any one bad stream
                log.exception("event hub error")

    def _drain_inbox(self) -> None:
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        while True:
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                return
            if item[0] == "adopt":
                _, sock, may_read, token_id = item
                if len(self.streams) >= MAX_STREAMS:
                    sock.close()
                    continue
                sock.setblocking(False)
                stream = _Stream(sock, may_read, token_id)
                self.streams[sock.fileno()] = stream
                self.selector.register(sock, selectors.EVENT_READ, stream)
            elif item[0] == "changes":
                self._broadcast(None, item[1])
            elif item[0] == "revoked":
                for stream in [s for s in self.streams.values() if s.token_id in item[1]]:
                    self._drop(stream)

    def _readable(self, stream: _Stream) -> None:
        try:
            data = stream.sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the page went away
            self._drop(stream)

    def _broadcast(self, raw: bytes | None, changes: list[dict] | None) -> None:
        for stream in list(self.streams.values()):
            if raw is not None:
                payload = raw
            else:
                visible = [c for c in changes or () if stream.may_read(c)]
                if not visible:
                    continue
                payload = sse("change", {"deployments": visible})
                self.sent_events += 1
            stream.pending += payload
            self._flush(stream)

    def _flush(self, stream: _Stream) -> None:
        try:
            while stream.pending:
                sent = stream.sock.send(stream.pending)
                stream.pending = stream.pending[sent:]
        except BlockingIOError:
            pass
        except OSError:
            self._drop(stream)
            return
        if len(stream.pending) > MAX_BUFFERED:
            self._drop(stream)
            return
        wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if stream.pending else 0)
        if self.selector.get_key(stream.sock).events != wanted:
            self.selector.modify(stream.sock, wanted, stream)

    def _drop(self, stream: _Stream) -> None:
        fd = stream.sock.fileno()
        if fd in self.streams and self.streams[fd] is stream:
            del self.streams[fd]
            self.selector.unregister(stream.sock)
        stream.sock.close()

    # -- the poller thread -------------------------------------------------------------------------

    def _poll_forever(self) -> None:
        while True:
            started = time.monotonic()
            try:
                changes = self.poll()
                if changes:
                    self._send_to_hub(("changes", changes))
                revoked = self.revoked_tokens()
                if revoked:
                    self._send_to_hub(("revoked", revoked))
            except Exception:
                log.warning("event poller could not read the database; trying again", exc_info=True)
            time.sleep(max(0.05, self.poll_seconds - (time.monotonic() - started)))

    def revoked_tokens(self) -> set[str]:
        """The tokens of open streams that were revoked (or deleted) since: the page signs those sessions
        out at their next request, and their streams are closed too (a page reconnects, and is refused)."""
        held = {stream.token_id for stream in list(self.streams.values()) if stream.token_id}
        if not held:
            return set()
        session = self.session_factory()
        try:
            live = set(session.scalars(select(ApiToken.token_id).where(ApiToken.token_id.in_(held),
                                                                       ApiToken.revoked_at.is_(None))))
        finally:
            session.close()
        return held - live

    def poll(self) -> list[dict]:
        """The deployments changed since the last poll (none on the first, which only takes note)."""
        session = self.session_factory()
        try:
            signature = tuple(session.execute(select(func.count(), func.coalesce(func.sum(Deployment.version), 0),
                                                     func.max(Deployment.updated_at))).one())
            if signature == self.signature:
                return []
            first = self.signature is None
            self.signature = signature
            query = select(Deployment.name, Deployment.service, Deployment.environment, Deployment.state,
                           Deployment.failure_reason, Deployment.tag, Deployment.version, Deployment.updated_at,
                           Deployment.status_message, Deployment.id)
            if self.last_change is not None:
                query = query.where(Deployment.updated_at >= self.last_change - LOOKBACK)
            rows = session.execute(query).all()
            changed = [row for row in rows if self.versions.get(row[0]) != row[6]]
            deploys = queries.last_deploys(session, [row[-1] for row in changed]) if not first else {}
        finally:
            session.close()
        changes = []
        for name, service, environment, state, reason, tag, version, updated_at, message, id_ in rows:
            if self.versions.get(name) != version:
                self.versions[name] = version
                # The words the page's macro shows (bot.core.lifecycle), so a row changed in place reads the same.
                changes.append({"name": name, "service": service, "environment": environment,
                                "state": str(state), "words": state_word(state),
                                "reason": short_reason(state, reason, message),
                                "last_deploy": last_deploy_note(state, deploys.get(id_)),
                                "tone": tone(state), "tag": tag,
                                "updated_at": updated_at.isoformat(),
                                "updated_exact": updated_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")})
            if self.last_change is None or updated_at > self.last_change:
                self.last_change = updated_at
        return [] if first else changes


_hub_lock = threading.Lock()


def get_hub(app: Flask) -> Hub:
    """This process's hub, started on first use (after gunicorn forked the worker)."""
    with _hub_lock:
        hub = app.extensions.get("sami.events")
        if hub is None or hub.pid != os.getpid():
            hub = Hub(app.extensions["sami.db"])
            hub.pid = os.getpid()
            app.extensions["sami.events"] = hub
        return hub


def _hand_over(environ) -> socket.socket | None:
    """Take the request's connection from gunicorn: a duplicate for the hub, a dead stand-in for gunicorn."""
    sock = environ.get("gunicorn.socket")
    if not isinstance(sock, socket.socket) or type(sock) is not socket.socket:
        return None  # not gunicorn, or TLS terminated by gunicorn itself: the fallback applies
    fd = sock.fileno()
    ours = socket.socket(fileno=os.dup(fd))
    stand_in, peer = socket.socketpair()
    os.dup2(stand_in.fileno(), fd)  # gunicorn's object now holds a socket whose peer is closed
    stand_in.close()
    peer.close()
    return ours


def stream_response(may_read: Callable[[dict], bool], token_id: str | None = None) -> Response:
    """The answer to ``GET /events``: the handed-over stream under gunicorn, one event elsewhere."""
    app = current_app._get_current_object()
    environ = request.environ
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    if environ.get("gunicorn.socket") is None:
        body = f"retry: {RETRY_MS}\n\n".encode() + sse("hello", {"live": False})
        return Response(body, mimetype="text/event-stream", headers=headers)
    hub = get_hub(app)

    def body():
        yield f"retry: {RETRY_MS}\n\n".encode() + sse("hello", {"live": True})
        sock = _hand_over(environ)
        if sock is not None:
            hub.adopt(sock, may_read, token_id)

    return Response(body(), mimetype="text/event-stream", headers={**headers, "Content-Length": ENDLESS})
