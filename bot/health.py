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
    """The database and Redis answer; 503 names what is down."""
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
    down = sorted(name for name, state in checks.items() if state == "unreachable")
    if down:
        return jsonify(status="unavailable", down=down, checks=checks), 503
    return jsonify(status="ok", checks=checks)
