"""Logging set-up: plain text for people, JSON lines for log collectors, ids carried along."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from bot.core.config import Settings

CONTEXT_FIELDS = ("delivery_id", "deployment", "action_id")


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


def configure_logging(settings: Settings) -> None:
    """Send Sami's logs to stderr in the configured format and level."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    # Alembic names each of its plugins at INFO whenever its commands are imported: noise at every start.
    logging.getLogger("alembic.runtime.plugins").setLevel(max(logging.WARNING, root.level))
