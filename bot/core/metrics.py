"""Prometheus metrics: every metric Sami exports is defined here (the web process serves them on
``/metrics``: bot.web.metrics).

Counters and histograms are updated where things happen (webhook intake, delivery processing,
actions, control scripts, GitHub calls); the queue depth and the deployments by state are read
at scrape time by a collector (two cheap queries), so they are never stale and cost nothing
between scrapes.

Processes. ``sami serve`` runs several gunicorn processes: it points ``PROMETHEUS_MULTIPROC_DIR``
at a private folder before any of them imports prometheus_client (``prepare_multiprocess``), each
process writes its samples there, and ``/metrics`` adds them up. ``sami worker`` and
``sami scheduler`` are separate processes (in Kubernetes, separate pods): with
``SAMI_METRICS_PORT`` set each serves its own ``/metrics`` on that port (``serve_metrics``).
In the embedded default the worker runs inside ``sami serve``, so its ``/metrics`` has it all.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from wsgiref.simple_server import make_server

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler
from sqlalchemy import func, select

from bot.core.models import Action, Deployment
from bot.core.states import ActionState, DeploymentState

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# -- the metrics ---------------------------------------------------------------------------------

WEBHOOK_DELIVERIES = Counter(
    "sami_webhook_deliveries", "GitHub webhook deliveries received, by event and intake outcome "
    "(queued, received: recorded while the queue was down, duplicate, pong, bad_signature, rejected, "
    "not_configured, unavailable: the database could not be reached)", ["event", "outcome"])
DELIVERIES_PROCESSED = Counter(
    "sami_webhook_deliveries_processed", "Recorded deliveries processed by a worker, by event and status "
    "(processed, ignored, retrying, failed)", ["event", "status"])
ACTIONS = Counter(
    "sami_actions", "Actions that ended, by kind (create, update, ...) and result (succeeded, failed, "
    "timed_out, ...)", ["kind", "result"])
ACTION_DURATION = Histogram(
    "sami_action_duration_seconds", "Time from an action's start on a worker to its end, by kind", ["kind"],
    buckets=(1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600))
ACTION_QUEUE_WAIT = Histogram(
    "sami_action_queue_wait_seconds",
    "Time from an action's acceptance (or the end of its wait for a retry or newer pushes) to its start on a worker, "
    "by kind",
    ["kind"], buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800))
SCRIPT_TIMEOUTS = Counter(
    "sami_script_timeouts", "Control scripts stopped by their timeout, by operation (create, check, ...)",
    ["operation"])
GITHUB_CALLS = Counter(
    "sami_github_api_calls", "Requests to GitHub's API, by method and status (0: GitHub unreachable)",
    ["method", "status"])
GITHUB_RATE_REMAINING = Gauge(
    "sami_github_rate_limit_remaining", "Requests left in the current rate-limit window, as GitHub last said, "
    "by credential (token, app, installation)", ["credential"], multiprocess_mode="mostrecent")
HTTP_REQUESTS = Counter(
    "sami_http_requests", "HTTP requests answered by the web process, by endpoint and status class",
    ["endpoint", "status"])


# -- helpers where things happen -----------------------------------------------------------------

def _seconds_since(moment: datetime | None) -> float:
    if moment is None:
        return 0.0
    if moment.tzinfo is None:  # SQLite hands back naive UTC times
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (datetime.now(UTC) - moment).total_seconds())


def action_started(kind: str, may_start_at: datetime | None) -> None:
    """A worker claimed an action that could start from ``may_start_at`` on."""
    ACTION_QUEUE_WAIT.labels(kind).observe(_seconds_since(may_start_at))


def action_finished(kind: str, result: str, seconds: float) -> None:
    """An action ended with ``result`` after running ``seconds``."""
    ACTIONS.labels(kind, str(result)).inc()
    ACTION_DURATION.labels(kind).observe(max(0.0, seconds))


def github_call(method: str, status: int, credential: object, remaining: str | None) -> None:
    """One request to GitHub; ``remaining`` is its X-RateLimit-Remaining header, if any."""
    GITHUB_CALLS.labels(method.upper(), str(status)).inc()
    if remaining is not None:
        name = credential if credential in ("app", "token") else "installation"
        with contextlib.suppress(ValueError):
            GITHUB_RATE_REMAINING.labels(name).set(float(remaining))


# -- read at scrape time -------------------------------------------------------------------------

class StateCollector:
    """Deployments by state and queue depth, read when Prometheus scrapes (not stored between)."""

    def __init__(self, session_factory, broker_factory):
        self.session_factory = session_factory
        self.broker_factory = broker_factory

    def describe(self):
        return []  # not probed at registration: the database may not be up yet

    def collect(self) -> Iterator[GaugeMetricFamily]:
        deployments = GaugeMetricFamily("sami_deployments", "Deployments by state", labels=["state"])
        queued = GaugeMetricFamily("sami_actions_queued", "Actions accepted and not yet started (the database's "
                                   "view: it includes actions the queue lost and the sweep will queue again)")
        drifted = GaugeMetricFamily("sami_deployments_drifted", "Deployments whose target no longer runs what "
                                    "Sami deployed (drift), by service and environment",
                                    labels=["service", "environment"])
        up = GaugeMetricFamily("sami_database_up", "1 when the database answered this scrape")
        try:
            with self.session_factory() as session:
                counts = dict(session.execute(select(Deployment.state, func.count()).group_by(Deployment.state)).all())
                waiting = session.scalar(select(func.count()).select_from(Action)
                                         .where(Action.state == ActionState.QUEUED))
                # drift_since is set exactly while a deployment drifts
                drift_counts = session.execute(
                    select(Deployment.service, Deployment.environment, func.count())
                    .where(Deployment.drift_since.is_not(None)).group_by(Deployment.service, Deployment.environment)
                ).all()
            for state in DeploymentState:
                deployments.add_metric([str(state)], counts.get(state, 0))
            queued.add_metric([], waiting or 0)
            for service, environment, count in drift_counts:
                drifted.add_metric([service, environment], count)
            up.add_metric([], 1)
            yield deployments
            yield queued
            yield drifted
        except Exception as exc:
            log.warning("metrics: the database did not answer (%s)", type(exc).__name__)
            up.add_metric([], 0)
        yield up
        depth = GaugeMetricFamily("sami_queue_depth", "Jobs waiting on each queue", labels=["queue"])
        try:
            for name, count in queue_depths(self.broker_factory()).items():
                depth.add_metric([name], count)
            yield depth
        except Exception as exc:
            log.warning("metrics: the queue did not answer (%s)", type(exc).__name__)


def queue_depths(broker) -> dict[str, int]:
    """Jobs waiting per queue: RQ's queues on Redis, or the embedded default's in-process queue."""
    queues = [q for q in (getattr(broker, "actions", None), getattr(broker, "checks", None)) if q is not None]
    if queues:
        return {queue.name: queue.count for queue in queues}
    waiting = getattr(broker, "waiting", None)
    return {"embedded": waiting()} if waiting else {}


# -- exposition ----------------------------------------------------------------------------------

def registry_for_scrape(extra=()) -> CollectorRegistry:
    """The registry to expose: every process's samples in multiprocess mode, else this process's."""
    path = os.environ.get(MULTIPROC_ENV)
    if path:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=path)
    else:
        registry = CollectorRegistry()
        registry.register(_Forward(REGISTRY))
    for collector in extra:
        registry.register(collector)
    return registry


class _Forward:
    """Exposes another registry's metrics (the process-wide one) inside a per-scrape registry."""

    def __init__(self, source: CollectorRegistry):
        self.source = source

    def describe(self):
        return []

    def collect(self):
        return self.source.collect()


def authorized(header: str | None, token: str) -> bool:
    """Whether an Authorization header carries the metrics token (always, when none is set)."""
    if not token:
        return True
    scheme, _, value = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())


def render(extra=()) -> tuple[bytes, str]:
    """The text exposition and its content type."""
    return generate_latest(registry_for_scrape(extra)), CONTENT_TYPE_LATEST


# -- processes -----------------------------------------------------------------------------------

def prepare_multiprocess() -> str:
    """Give this ``sami serve`` (and the gunicorn processes it forks) a private, empty samples folder.

    Must run before prometheus_client is imported anywhere in the process: it picks the
    multiprocess value store at import. Returns the folder (``cleanup_multiprocess`` removes it).
    """
    if "prometheus_client" in sys.modules and not os.environ.get(MULTIPROC_ENV):
        raise RuntimeError("prometheus_client was imported before the multiprocess folder was set")
    path = tempfile.mkdtemp(prefix="sami-metrics-")
    os.environ[MULTIPROC_ENV] = path
    return path


def child_exited(pid: int) -> None:
    """gunicorn's child_exit hook: drop the live gauges of a web process that ended."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)


def cleanup_multiprocess(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def serve_metrics(port: int, token: str, extra=(), host: str = "0.0.0.0") -> threading.Thread | None:  # noqa: S104
    """Serve ``/metrics`` of this process (a worker, the scheduler) on ``port``, in a thread."""
    def app(environ, start_response):
        if environ.get("PATH_INFO") not in ("/metrics", "/"):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"only /metrics here\n"]
        if not authorized(environ.get("HTTP_AUTHORIZATION"), token):
            start_response("401 Unauthorized", [("Content-Type", "application/json"),
                                                ("WWW-Authenticate", 'Bearer realm="metrics"')])
            return [b'{"error": "metrics need Authorization: Bearer <SAMI_METRICS_TOKEN>", "status": 401}']
        body, content_type = render(extra)
        start_response("200 OK", [("Content-Type", content_type)])
        return [body]

    try:
        server = make_server(host, port, app, ThreadingWSGIServer, handler_class=_SilentHandler)
    except OSError as exc:
        # The process's work matters more than its metrics: say so loudly and go on without them.
        log.error("metrics: cannot listen on %s:%d (%s); this process serves no /metrics", host, port, exc.strerror)
        return None
    thread = threading.Thread(target=server.serve_forever, name="sami-metrics", daemon=True)
    thread.start()
    log.info("metrics on http://%s:%d/metrics", host, server.server_port)
    return thread
