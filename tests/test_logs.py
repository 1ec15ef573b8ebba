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


def test_ids_set_where_work_starts_reach_every_line_inside_and_no_further(caplog):
    from bot.core.logs import ContextFilter, about, current

    caplog.handler.addFilter(ContextFilter())
    log = logging.getLogger("workers.jobs")
    with caplog.at_level(logging.INFO):
        with about(delivery_id="d-1"):
            log.info("processing")
            with about(deployment="web-pr-3", action_id=12, delivery_id=None):  # None leaves the delivery as it is
                log.info("running")
                assert (current("delivery_id"), current("action_id")) == ("d-1", 12)
            log.info("processed")
        log.info("idle")
    ids = [tuple(getattr(r, name, None) for name in ("delivery_id", "deployment", "action_id")) for r in caplog.records]
    assert ids == [("d-1", None, None), ("d-1", "web-pr-3", 12), ("d-1", None, None), (None, None, None)]
