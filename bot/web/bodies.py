"""Request bodies: read whole or refused (413) when longer than the limit, and parsed as JSON
with errors a person can act on (400) instead of internal errors."""

from __future__ import annotations

import typing as t
from collections.abc import Mapping

import flask
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import BadRequest, HTTPException, RequestEntityTooLarge
from werkzeug.utils import cached_property
from werkzeug.wsgi import LimitedStream

from bot.core.errors import Invalid
from bot.services import deployments


class _StreamWithinLimit(LimitedStream):
    """A body without Content-Length (chunked) read up to ``limit`` bytes; one byte more is a 413.

    werkzeug's own maximum-length stream stops at the limit and returns what it read, so a longer
    chunked body would arrive cut short (and then fail as bad JSON) instead of being refused.
    """

    def __init__(self, stream: t.IO[bytes], limit: int) -> None:
        super().__init__(stream, limit + 1, is_max=True)

    def readinto(self, b) -> int | None:  # type: ignore[override]
        try:
            count = super().readinto(b)
        except HTTPException:
            raise
        except Exception as exc:
            # The server could not read the body as it was framed (gunicorn: InvalidChunkSize,
            # ChunkMissingTerminator, NoMoreData): the client's fault, whatever the server calls it.
            raise BadRequest(f"the request body could not be read ({type(exc).__name__}): send it with a "
                             "Content-Length, or in valid chunked framing") from None
        if self.is_exhausted:
            raise RequestEntityTooLarge()
        return count


class Request(flask.Request):
    """Flask's request with a body limit that also holds for chunked bodies, and JSON errors
    that say what is wrong."""

    @cached_property
    def stream(self) -> t.IO[bytes]:
        limit = self.max_content_length
        # The server (gunicorn) ends the input stream itself, chunked or not; without that
        # promise werkzeug's safe default (an empty stream for a body without length) stands.
        if limit is None or self.shallow or "wsgi.input_terminated" not in self.environ:
            return super().stream
        if self.content_length is not None and self.content_length > limit:
            raise RequestEntityTooLarge()
        return _StreamWithinLimit(self.environ["wsgi.input"], limit)

    def on_json_loading_failed(self, e: ValueError | None) -> t.Any:
        if e is None:
            raise BadRequest("the body must be a JSON object (send it with Content-Type: application/json)")
        raise BadRequest(f"the body must be a JSON object, and this is not valid JSON: {e}")


class JSONProvider(DefaultJSONProvider):
    """Flask's JSON, where a document nested past the parser's depth is malformed JSON (400), not
    an internal error."""

    def loads(self, s: str | bytes, **kwargs: t.Any) -> t.Any:
        if isinstance(s, bytes | bytearray):
            # JSON travels in UTF-8 (RFC 8259); Python's json would also guess UTF-16 and UTF-32.
            try:
                s = bytes(s).decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError("it is not UTF-8, the encoding JSON is sent in") from None
        try:
            return super().loads(s, **kwargs)
        except RecursionError:
            raise ValueError("it is nested too deeply (a request body is an object whose fields are at most "
                             "a few levels deep)") from None


def json_object() -> dict:
    """The request's body, which must be a JSON object (400 otherwise)."""
    body = flask.request.get_json()  # malformed JSON: 400 (bot.web.bodies), too long: 413
    if not isinstance(body, dict):
        raise Invalid("the body must be a JSON object, not a " + type(body).__name__)
    return body


# What a JSON value of a Python type is called in an error a person reads.
JSON_KINDS = {str: "a string (text)", int: "a whole number", bool: "true or false", dict: "an object ({...})",
              list: "a list ([...])", float: "a number with a fraction"}


def body_field(body: Mapping, name: str, kind: type | tuple, required: bool = False):
    """``body[name]`` when it is of JSON ``kind`` (None when absent, unless ``required``); 400 naming what
    it must be otherwise."""
    value = body.get(name)
    if value is None:
        if required:
            raise Invalid(f"'{name}' is required")
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        kinds = kind if isinstance(kind, tuple) else (kind,)
        wanted = " or ".join(JSON_KINDS.get(k, k.__name__) for k in kinds)
        raise Invalid(f"'{name}' must be {wanted}, not {JSON_KINDS.get(type(value), type(value).__name__)}")
    low, high = deployments.MIN_INT64, deployments.MAX_INT64
    if isinstance(value, int) and not isinstance(value, bool) and not low <= value <= high:
        raise Invalid(f"'{name}' must be a whole number from {low} to {high} (64 bits)")
    return value
