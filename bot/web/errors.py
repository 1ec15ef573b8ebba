"""JSON error answers: every error says what went wrong and what to do next."""

from __future__ import annotations

import logging

from flask import Flask, jsonify, request
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm.exc import StaleDataError
from werkzeug.exceptions import HTTPException

from bot.core.errors import Conflict, Invalid, NotAllowed, NotFound, SamiError
from bot.core.states import IllegalTransition
from bot.manifests import DeploymentsRepoError

log = logging.getLogger(__name__)


class WebError(SamiError):
    """A refusal only the web layer makes (no token, out of scope, a feature turned off), with its status."""

    status = 400

    def __init__(self, message: str, *, status: int | None = None, **details):
        super().__init__(message, **details)
        if status is not None:
            self.status = status


class Unauthorized(WebError):
    status = 401


class Forbidden(WebError):
    status = 403


# The status of each kind of refusal the services make.
STATUSES: tuple[tuple[type[SamiError], int], ...] = ((Invalid, 400), (NotFound, 404), (Conflict, 409),
                                                        (NotAllowed, 403))


def status_of(exc: Exception) -> int:
    """The HTTP status that answers ``exc``."""
    if isinstance(exc, WebError):
        return exc.status
    return next((status for kind, status in STATUSES if isinstance(exc, kind)), 400)


def error_response(status: int, message: str, **details):
    body = {"error": message, "status": status}
    body.update(details)
    return jsonify(body), status


# Paths whose callers are programs: their errors stay JSON whatever the Accept header says.
API_PREFIXES = ("/api/", "/webhooks/", "/deployment_request", "/healthz", "/readyz", "/metrics", "/events")


def wants_page() -> bool:
    """A browser asked (it prefers text/html to JSON) for a path that is not an API's: it gets a page."""
    if request.path.startswith(API_PREFIXES):
        return False
    accept = request.accept_mimetypes
    return accept["text/html"] > accept["application/json"]


def http_error_response(exc: HTTPException, max_body: int | None = None):
    """An HTTP error (no such path, method not allowed, body too large) as the API's JSON error."""
    messages = {
        413: f"request body too large: at most {max_body} bytes",
        404: "no such page or API endpoint",
        405: f"method not allowed here; use {', '.join(sorted(exc.valid_methods or []))}"
        if getattr(exc, "valid_methods", None)
        else "method not allowed here",
    }
    return error_response(exc.code or 500, messages.get(exc.code, exc.description))


def init_app(app: Flask) -> None:
    """Answer every error with JSON."""

    @app.errorhandler(SamiError)
    def _sami_error(exc: SamiError):
        return error_response(status_of(exc), exc.message, **exc.details)

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

    @app.errorhandler(DBAPIError)
    def _database_error(exc: DBAPIError):
        # A lost or refused connection (PostgreSQL restarting, unreachable) is temporary: 503, so
        # clients (and GitHub's redelivery) try again; any other database error is a bug.
        if exc.connection_invalidated or isinstance(exc, OperationalError):
            log.warning("database unavailable: %s", (str(exc.orig or exc).strip().splitlines() or ["?"])[0])
            response = error_response(503, "the database cannot be reached right now; try again shortly")
            response[0].headers["Retry-After"] = "1"
            return response
        return _unexpected(exc)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        return http_error_response(exc, app.config["MAX_CONTENT_LENGTH"])

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return error_response(500, "internal error; the server log has the details")
