"""An ASGI sidecar that serves only Sami's ``/events`` (starlette on uvicorn), for bench_events.py.

A proxy would send ``/events`` here and everything else to `sami serve`. Each request is authorised
by Sami's own view (``bot.web.pages.live_events`` with its before- and after-request handlers, in a
Flask request context on a worker thread, since it reads the database); a granted stream is an
asyncio task waiting on its own queue. Changes come from the hub's poller queries in one thread.

    uvicorn --app-dir bench/events sidecar:app
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import anyio
from flask import Response as FlaskResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from streams import HEADERS, ChangeFeed, Subscriber, hello

from bot.web import create_app, events
from bot.web.events import KEEPALIVE_SECONDS, sse


class Granted(FlaskResponse):
    """What Sami's /events view answers here: the viewer may stream, reading what ``may_read`` allows."""

    may_read: Callable[[dict], bool]
    token_id: str | None


def granted(may_read: Callable[[dict], bool], token_id: str | None = None) -> Granted:
    answer = Granted(mimetype="text/event-stream")
    answer.may_read, answer.token_id = may_read, token_id
    return answer


flask_app = create_app()
events.stream_response = granted
_feed: ChangeFeed | None = None


def authorise(path: str, query: bytes, headers: list[tuple[str, str]], client: str) -> FlaskResponse:
    """Sami's answer to this request, through its own guards and view (a redirect, a 403, or Granted)."""
    with flask_app.test_request_context(path, query_string=query, headers=headers,
                                        environ_base={"REMOTE_ADDR": client}):
        return flask_app.full_dispatch_request()


def feed() -> ChangeFeed:
    global _feed
    if _feed is None:
        _feed = ChangeFeed(flask_app.extensions["sami.db"])
    return _feed


async def live_events(request: Request) -> Response:
    answer = await anyio.to_thread.run_sync(authorise, request.url.path, request.url.query.encode(),
                                            list(request.headers.items()),
                                            request.client.host if request.client else "")
    if not isinstance(answer, Granted):
        return Response(answer.get_data(), status_code=answer.status_code,
                        headers={k: v for k, v in answer.headers.items() if k.lower() != "content-length"})
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue = asyncio.Queue()
    subscriber = Subscriber(answer.may_read, answer.token_id,
                            lambda changes: loop.call_soon_threadsafe(inbox.put_nowait, changes))
    changes_feed = feed()

    async def body():
        changes_feed.subscribe(subscriber)
        try:
            yield hello()
            while True:
                try:
                    changes = await asyncio.wait_for(inbox.get(), KEEPALIVE_SECONDS)
                except TimeoutError:
                    yield b": keepalive\n\n"
                    continue
                if changes is None:
                    return
                visible = [change for change in changes if subscriber.may_read(change)]
                if visible:
                    yield sse("change", {"deployments": visible})
        finally:
            changes_feed.unsubscribe(subscriber)

    headers = {**HEADERS, **{k: v for k, v in answer.headers.items()
                             if k.lower() not in ("content-length", "content-type")}}
    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)


async def healthz(_request: Request) -> Response:
    return Response("ok")


app = Starlette(routes=[Route("/events", live_events), Route("/healthz", healthz)])
