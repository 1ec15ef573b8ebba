"""Logging set-up: plain text for people, JSON lines for log collectors, ids carried along.

What a line is about (the webhook delivery, the deployment, the action) is kept in context
variables, set where the work starts (``about``): every line logged inside carries them, in the
code that set them and in everything it calls, with no ``extra=`` at each call. A job that
continues another's work (a delivery's action, an outbox row's send) sets the ids it continues
from, so one delivery can be followed from its receipt to its last GitHub call.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime

from bot.core.config import Settings

CONTEXT_FIELDS = ("delivery_id", "deployment", "action_id")
_CONTEXT: dict[str, contextvars.ContextVar] = {
    name: contextvars.ContextVar(f"sami_{name}", default=None) for name in CONTEXT_FIELDS}


@contextlib.contextmanager
def about(**ids: object) -> Iterator[None]:
    """Log lines inside carry these ids (delivery_id, deployment, action_id); None leaves one as it is."""
    tokens = [(_CONTEXT[name], _CONTEXT[name].set(value)) for name, value in ids.items() if value is not None]
    try:
        yield
    finally:
        for variable, token in reversed(tokens):
            variable.reset(token)


def current(name: str) -> object:
    """The id ``name`` the current work is about, or None."""
    return _CONTEXT[name].get()


class ContextFilter(logging.Filter):
    """Puts the current ids on every record (an id given with ``extra=`` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, variable in _CONTEXT.items():
            value = variable.get()
            if value is not None and getattr(record, name, None) is None:
                setattr(record, name, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line with time, level, logger, message and any context ids."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """Plain text, with the ids a line is about after its message: ``[delivery=... action=12]``."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        ids = " ".join(f"{name.removesuffix('_id')}={value}" for name in CONTEXT_FIELDS
                       if (value := getattr(record, name, None)) is not None)
        if not ids:
            return text
        first, newline, rest = text.partition("\n")
        return f"{first} [{ids}]{newline}{rest}"


def configure_logging(settings: Settings) -> None:
    """Send Sami's logs to stderr in the configured format and level."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    # Alembic names each of its plugins at INFO whenever its commands are imported: noise at every start.
    logging.getLogger("alembic.runtime.plugins").setLevel(max(logging.WARNING, root.level))
