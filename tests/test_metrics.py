"""/metrics of real processes, parsed with prometheus_client's own parser: the embedded default
(`sami serve` runs everything), and the full setup (`sami serve` with two gunicorn processes on
PostgreSQL and Redis, a `sami worker` serving its own /metrics)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.pipeline.probe_scripts import write_probe_repo
from tests.support.github_payloads import body as payload_body
from tests.support.github_payloads import delivery_headers, example
from tests.support.procs import wait_until
from tests.support.sami_server import (
    PRODUCTION_SECRET_KEY,
    PRODUCTION_WEBHOOK_SECRET,
    ROOT,
    SamiServer,
    call,
    post,
    sami,
    sami_env,
)
from tests.support.servers import free_port

pytestmark = pytest.mark.slow

SECRET = "metrics-test-webhook-secret"
METRICS_TOKEN = "metrics-test-scrape-token"


def scrape(url: str, token: str | None = METRICS_TOKEN) -> dict[tuple[str, frozenset], float]:
    """Every sample of ``url`` (a /metrics), keyed by name and labels."""
    status, text = call(url, token)
    assert status == 200, text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def deliver(base: str, event: str, payload: dict, *, delivery: str | None = None, secret: str = SECRET) -> int:
    data = payload_body(payload)
    status, _ = post(base, "/webhooks/github", data, delivery_headers(event, data, secret, delivery))
    return status


def other_repository_pull_request() -> dict:
    """A real pull_request.opened payload, of a repository no manifest names (so it is ignored)."""
    payload = example("pull_request", "opened")
    payload["repository"]["full_name"] = "someone/elsewhere"
    return payload


def test_embedded_metrics_count_deliveries_actions_and_deployments(tmp_path):
    port = free_port()
    (tmp_path / "tmp").mkdir()
    env = sami_env(SAMI_INSTANCE_DIR=str(tmp_path / "instance"), SAMI_BASE_DOMAIN=f"127.0.0.1:{port}",
                   SAMI_PUBLIC_URL=f"http://127.0.0.1:{port}", TMPDIR=str(tmp_path / "tmp"),
                   SAMI_WEBHOOK_SECRET=SECRET, SAMI_METRICS_TOKEN=METRICS_TOKEN)
    sami("db", "upgrade", env=env)
    token = sami("token", "create", "ops", "--admin", env=env).stdout.strip()
    with SamiServer(env, tmp_path / "serve.log", port=port) as server:
        metrics_url = f"{server.url}/metrics"
        # The token guards the metrics: none, or a wrong one, is a 401 in JSON.
        assert call(metrics_url)[0] == 401
        status, body = call(metrics_url, "not-the-token")
        assert status == 401 and "SAMI_METRICS_TOKEN" in json.loads(body)["error"]
        before = scrape(metrics_url)

        status, body = call(f"{server.url}/deployment_request", token,
                            {"service": "docs", "environment": "stage", "tag": "v1"})
        assert status == 202, body
        action_id = json.loads(body)["action_id"]
        wait_until(lambda: json.loads(call(f"{server.url}/api/v1/actions/{action_id}", token)[1])["state"]
                   == "succeeded", 60, "the create to succeed")

        delivery = str(uuid.uuid4())
        assert deliver(server.url, "ping", example("ping")) == 200
        assert deliver(server.url, "pull_request", other_repository_pull_request(), delivery=delivery) == 202
        assert deliver(server.url, "pull_request", other_repository_pull_request(), delivery=delivery) == 200
        assert deliver(server.url, "pull_request", other_repository_pull_request(), secret="wrong") == 401
        wait_until(lambda: value(scrape(metrics_url), "sami_webhook_deliveries_processed_total",
                                 event="pull_request", status="ignored") == 1, 30, "the delivery to be processed")
        after = scrape(metrics_url)

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("sami_webhook_deliveries_total", event="ping", outcome="pong") == 1
    assert moved("sami_webhook_deliveries_total", event="pull_request", outcome="queued") == 1
    assert moved("sami_webhook_deliveries_total", event="pull_request", outcome="duplicate") == 1
    assert moved("sami_webhook_deliveries_total", event="pull_request", outcome="bad_signature") == 1
    assert moved("sami_actions_total", kind="create", result="succeeded") == 1
    assert moved("sami_action_duration_seconds_count", kind="create") == 1
    assert moved("sami_action_queue_wait_seconds_count", kind="create") == 1
    assert value(after, "sami_action_duration_seconds_sum", kind="create") > 0
    assert moved("sami_http_requests_total", endpoint="api.deployment_request", status="2xx") == 1
    # Read from the database at scrape time.
    assert value(before, "sami_deployments", state="Running") == 0
    assert value(after, "sami_deployments", state="Running") == 1
    assert value(after, "sami_database_up") == 1
    assert ("sami_queue_depth", frozenset({("queue", "embedded")})) in after


def test_web_processes_add_up_and_a_worker_serves_its_own_metrics(tmp_path, own_database_url, own_redis):
    record = tmp_path / "record"
    repo = write_probe_repo(tmp_path / "deployments", record, timeout="3s", status_timeout="5s")
    worker_port = free_port()
    env = sami_env(SAMI_DATABASE_URL=own_database_url, SAMI_REDIS_URL=own_redis.url(0),
                   SAMI_DEPLOYMENTS_REPO=str(repo), SAMI_INSTANCE_DIR=str(tmp_path / "instance"),
                   SAMI_BASE_DOMAIN="example.test", SAMI_WEBHOOK_SECRET=SECRET, SAMI_LOG_LEVEL="warning",
                   SAMI_METRICS_PORT=str(worker_port))
    token = sami("token", "create", "ops", "--admin", env=env).stdout.strip()
    worker_log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115 - closed below
    worker = subprocess.Popen([sys.executable, "-m", "bot.cli", "worker"], env=env, cwd=ROOT,
                              stdout=worker_log, stderr=subprocess.STDOUT)
    try:
        with SamiServer(env, tmp_path / "serve.log", "--workers", "2") as server:
            # The gunicorn processes share a private samples folder that nobody else sees.
            folder = wait_until(lambda: _multiproc_folder(server.process.pid), 10, "the metrics folder")
            assert os.path.basename(folder).startswith("sami-metrics-")
            worker_url = f"http://127.0.0.1:{worker_port}/metrics"
            wait_until(lambda: _answers(worker_url), 30, "the worker's metrics endpoint")
            for _ in range(6):
                assert deliver(server.url, "pull_request", other_repository_pull_request()) == 202
            status, body = call(f"{server.url}/deployment_request", token,
                                {"service": "probe", "environment": "stage", "tag": "v1"})
            assert status == 202, body
            wait_until(lambda: value(scrape(worker_url, None), "sami_actions_total", kind="create",
                                     result="succeeded") == 1, 60, "the create to succeed")
            # An update whose script hangs past the manifest's 3 s timeout.
            status, body = call(f"{server.url}/deployment_request", token,
                                {"service": "probe", "environment": "stage", "tag": "v2",
                                 "overrides": {"deployment": {"hang": "update"}}})
            assert status == 202, body
            wait_until(lambda: value(scrape(worker_url, None), "sami_actions_total", kind="update",
                                     result="timed_out") == 1, 60, "the update to time out")
            worker_samples = wait_until(
                lambda: (s := scrape(worker_url, None)) and value(
                    s, "sami_webhook_deliveries_processed_total", event="pull_request", status="ignored") == 6 and s,
                30, "the deliveries to be processed")
            web = scrape(f"{server.url}/metrics", None)
        assert not os.path.exists(folder), "the samples folder is removed when the server stops"
    finally:
        worker.terminate()
        worker.wait(30)
        worker_log.close()

    # Six deliveries, whichever of the two web processes took each.
    assert value(web, "sami_webhook_deliveries_total", event="pull_request", outcome="queued") == 6
    assert value(web, "sami_http_requests_total", endpoint="api.deployment_request", status="2xx") == 2
    assert value(web, "sami_deployments", state="Failure") == 1
    assert ("sami_queue_depth", frozenset({("queue", "sami-actions")})) in web
    assert value(worker_samples, "sami_script_timeouts_total", operation="update") == 1
    assert value(worker_samples, "sami_action_duration_seconds_count", kind="update") == 1
    assert value(worker_samples, "sami_action_duration_seconds_sum", kind="update") >= 3
    assert value(worker_samples, "sami_deployments", state="Failure") == 1
    assert value(worker_samples, "sami_actions_queued") == 0


def _multiproc_folder(pid: int) -> str | None:
    """The folder of the samples files a gunicorn process under ``pid`` has mapped."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    for child in children:
        try:
            maps = Path(f"/proc/{child}/maps").read_text().splitlines()
        except OSError:
            continue
        for line in maps:
            path = line.split(maxsplit=5)[-1]
            if "/sami-metrics-" in path and path.endswith(".db"):
                return os.path.dirname(path)
    return None


def _answers(url: str, token: str | None = None) -> bool:
    try:
        return call(url, token)[0] == 200
    except OSError:
        return False


@pytest.mark.parametrize("token", ["", "metrics-scrape-token-0123456789"], ids=["open", "token"])
def test_a_production_scheduler_says_once_at_start_when_its_metrics_are_open(tmp_path, token):
    port = free_port()
    env = sami_env(SAMI_MODE="production", SAMI_DATABASE_URL=f"sqlite:///{tmp_path / 'sami.sqlite3'}",
                   SAMI_INSTANCE_DIR=str(tmp_path / "instance"), SAMI_SECRET_KEY=PRODUCTION_SECRET_KEY,
                   SAMI_WEBHOOK_SECRET=PRODUCTION_WEBHOOK_SECRET, SAMI_METRICS_PORT=str(port),
                   SAMI_METRICS_TOKEN=token)
    sami("db", "upgrade", env=env)
    url = f"http://127.0.0.1:{port}/metrics"
    with open(tmp_path / "scheduler.log", "wb") as log:
        scheduler = subprocess.Popen([sys.executable, "-m", "bot.cli", "scheduler", "--interval", "0.5"], env=env,
                                     cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: _answers(url, token), 30, "the scheduler's metrics port")
            for _ in range(3):  # scrapes and ticks add no warning
                assert scrape(url, token or None)
        finally:
            scheduler.terminate()
            scheduler.wait(30)
    output = (tmp_path / "scheduler.log").read_text()
    warnings = [line for line in output.splitlines() if "/metrics is open" in line]
    assert len(warnings) == (0 if token else 1), output
    assert all("WARNING" in line and "SAMI_METRICS_TOKEN" in line for line in warnings)


def test_the_sample_dashboard_names_only_metrics_sami_exports():
    import re

    from prometheus_client import Counter, Gauge, Histogram

    from bot.core import metrics

    exported = set(re.findall(r'GaugeMetricFamily\(\s*"(sami_\w+)"', Path(metrics.__file__).read_text()))
    for item in vars(metrics).values():
        if isinstance(item, Counter):
            exported.add(f"{item._name}_total")
        elif isinstance(item, Histogram):
            exported.update(f"{item._name}_{suffix}" for suffix in ("bucket", "count", "sum"))
        elif isinstance(item, Gauge):
            exported.add(item._name)
    dashboard = json.loads((ROOT / "examples" / "grafana" / "sami-dashboard.json").read_text())
    named = {name for panel in dashboard["panels"] for target in panel["targets"]
             for name in re.findall(r"\bsami_\w+", target["expr"])}
    assert named, "the dashboard queries Sami's metrics"
    assert named <= exported, named - exported
