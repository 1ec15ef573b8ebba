"""JSON error answers: every error says what went wrong and what to do next."""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm.exc import StaleDataError
from werkzeug.exceptions import HTTPException

from bot.manifests import DeploymentsRepoError
from bot.states import IllegalTransition

log = logging.getLogger(__name__)


class SamiError(Exception):
    """An error with an HTTP status and a message a person can act on."""

    status = 400

    def __init__(self, message: str, *, status: int | None = None, **details):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.details = details


class NotFound(SamiError):
    status = 404


class Conflict(SamiError):
    status = 409


def failure_text(exc: Exception) -> str:
    """What an outcome says of an unexpected error: its type and message, but only the type of a
    database error, whose message holds SQL and the values sent (the log has them)."""
    if isinstance(exc, SQLAlchemyError):
        return f"{type(exc).__name__} from the database (the server log has the details)"
    return f"{type(exc).__name__}: {exc}"


def error_response(status: int, message: str, **details):
    body = {"error": message, "status": status}
    body.update(details)
    return jsonify(body), status


def init_app(app: Flask) -> None:
    """Answer every error with JSON."""

    @app.errorhandler(SamiError)
    def _sami_error(exc: SamiError):
        return error_response(exc.status, exc.message, **exc.details)

    @app.errorhandler(IllegalTransition)
    def _illegal_transition(exc: IllegalTransition):
        return error_response(409, str(exc), state=str(exc.current))

    @app.errorhandler(DeploymentsRepoError)
    def _repo_unreadable(exc: DeploymentsRepoError):
        log.warning("deployments repo unreadable: %s", exc)
        return error_response(503, f"the deployments repo cannot be read right now ({exc}); try again later")

    @app.errorhandler(StaleDataError)
    def _stale(exc: StaleDataError):
        return error_response(409, "the deployment changed while this request was handled: try again")

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        messages = {
            413: f"request body too large: at most {app.config['MAX_CONTENT_LENGTH']} bytes",
            404: "no such page or API endpoint",
            405: f"method not allowed here; use {', '.join(sorted(exc.valid_methods or []))}"
            if getattr(exc, "valid_methods", None)
            else "method not allowed here",
        }
        return error_response(exc.code or 500, messages.get(exc.code, exc.description))

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return error_response(500, "internal error; the server log has the details")
