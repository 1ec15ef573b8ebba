"""Liveness and readiness endpoints for load balancers and orchestrators."""

from __future__ import annotations

import logging

from flask import Blueprint, current_app, jsonify

from bot.core import db
from bot.web import queue
from bot.web.database import get_session

bp = Blueprint("health", __name__)
NOT_MIGRATED = "not migrated: run `sami db upgrade` (or `sami serve --migrate`)"
log = logging.getLogger(__name__)


@bp.get("/healthz")
def healthz():
    """The process is up."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """Ready while the database answers (503 otherwise). Redis down is reported as degraded, not
    unready: requests are still accepted and recorded then, and the scheduler's sweep queues them
    once Redis is back, so taking the web process out of its load balancer would only lose them."""
    checks: dict[str, str] = {}
    try:
        session = get_session()
        db.ping(session)
        # A database without Sami's tables answers, but every request would fail: say what to run.
        migrated = db.revision_of(session.connection()) is not None
        checks["database"] = "ok" if migrated else NOT_MIGRATED
    except Exception as exc:
        log.warning("readiness: database unreachable: %s", type(exc).__name__)
        checks["database"] = "unreachable"
    try:
        queue.get_broker(current_app).ping()
        checks["redis"] = "ok" if not current_app.config["SAMI"].embedded else "ok (embedded)"
    except Exception as exc:
        log.warning("readiness: redis unreachable: %s", type(exc).__name__)
        checks["redis"] = "unreachable"
    if checks["database"] != "ok":
        down = sorted(name for name, state in checks.items() if state in ("unreachable", NOT_MIGRATED))
        return jsonify(status="unavailable", down=down, checks=checks), 503
    if checks["redis"] == "unreachable":
        return jsonify(status="degraded", degraded=["redis"], checks=checks)
    return jsonify(status="ok", checks=checks)
