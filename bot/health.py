"""Liveness and readiness endpoints for load balancers and orchestrators."""

from __future__ import annotations

import logging

from flask import Blueprint, current_app, jsonify

from bot import db, queue

bp = Blueprint("health", __name__)
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
        db.ping(db.get_session())
        checks["database"] = "ok"
    except Exception as exc:
        log.warning("readiness: database unreachable: %s", type(exc).__name__)
        checks["database"] = "unreachable"
    try:
        queue.get_broker(current_app).ping()
        checks["redis"] = "ok" if not current_app.config["SAMI"].embedded else "ok (embedded)"
    except Exception as exc:
        log.warning("readiness: redis unreachable: %s", type(exc).__name__)
        checks["redis"] = "unreachable"
    if checks["database"] == "unreachable":
        down = sorted(name for name, state in checks.items() if state == "unreachable")
        return jsonify(status="unavailable", down=down, checks=checks), 503
    if checks["redis"] == "unreachable":
        return jsonify(status="degraded", degraded=["redis"], checks=checks)
    return jsonify(status="ok", checks=checks)
