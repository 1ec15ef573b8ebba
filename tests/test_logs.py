"""JSON log lines carry the ids that tie them to deliveries, deployments and actions."""

from __future__ import annotations

import json
import logging

from bot.core.logs import JsonFormatter


def test_json_lines_carry_context_ids():
    record = logging.LogRecord("workers.jobs", logging.INFO, __file__, 1, "action %s %s", (7, "succeeded"), None)
    record.deployment = "web-stage"
    record.action_id = 7
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "action 7 succeeded"
    assert entry["level"] == "info" and entry["logger"] == "workers.jobs"
    assert entry["deployment"] == "web-stage" and entry["action_id"] == 7
    assert "delivery_id" not in entry


def test_exceptions_are_kept_in_one_line():
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord("bot", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = JsonFormatter().format(record)
    assert "\n" not in line
    assert "ValueError: boom" in json.loads(line)["exception"]
