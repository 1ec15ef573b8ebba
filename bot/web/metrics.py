"""``GET /metrics`` of the web process, and the counts of what it answers (HTTP requests by
endpoint and status class, webhook deliveries by event and intake outcome)."""

from __future__ import annotations

from flask import Response, current_app, g, jsonify, request

from bot.core import metrics
from bot.web import queue
from bot.web.webhooks import EVENT_RE


def init_app(app) -> None:
    """Serve ``GET /metrics`` and count webhook deliveries and HTTP answers."""
    # Looked up at scrape time: tests hand the app another session factory after it is made.
    collector = metrics.StateCollector(lambda: app.extensions["sami.db"](), lambda: queue.get_broker(app))

    @app.get("/metrics", endpoint="metrics")
    def serve_metrics():
        token = current_app.config["SAMI"].metrics_token
        if not metrics.authorized(request.headers.get("Authorization"), token):
            response = jsonify(error="metrics need Authorization: Bearer <SAMI_METRICS_TOKEN>", status=401)
            response.status_code = 401
            response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
        body, content_type = metrics.render([collector])
        return Response(body, content_type=content_type)

    @app.after_request
    def count(response):
        endpoint = request.endpoint or "unmatched"
        if endpoint != "metrics":
            metrics.HTTP_REQUESTS.labels(endpoint, f"{response.status_code // 100}xx").inc()
        if endpoint == "webhooks.receive_github":
            metrics.WEBHOOK_DELIVERIES.labels(_event(), _intake_outcome(response)).inc()
        return response


def _event() -> str:
    event = request.headers.get("X-GitHub-Event", "")
    return event if EVENT_RE.match(event) else "invalid"


def _intake_outcome(response) -> str:
    outcome = g.get("sami_intake_outcome")  # an answered delivery's, as the intake says
    if outcome:
        return outcome
    # Refused before it was recorded: the database unreachable (503) is not the delivery's fault.
    return {401: "bad_signature", 503: "unavailable"}.get(response.status_code, "rejected")
