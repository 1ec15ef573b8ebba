"""An external third-party service's endpoint check (its manifest's ``check``), run by Sami itself after
a deploy's ``check`` script and in the periodic checks, against real listeners on loopback: a TCP port
and a small HTTP server. Up, the check passes; down, it fails with a message naming the endpoint."""

from __future__ import annotations

import http.server
import socket
import threading
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from bot.core.models import Action, Deployment
from bot.core.states import DeploymentState
from bot.services import environments
from tests.pipeline.environment_repo import EnvironmentManifests, Service, write_environment_repo
from workers.checks import check_deployment
from workers.scheduler import Scheduler, TickReport

S = DeploymentState
WHO = dict(requested_by="test", origin="cli")


def listening_port() -> socket.socket:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    return server


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then let go)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


def add_check(root: Path, service: str, check: dict) -> None:
    path = root / "services" / service / "swarm" / "stage" / "sami.yaml"
    manifest = yaml.safe_load(path.read_text())
    manifest.update(check=check, status_timeout="2s")
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))


@pytest.fixture
def listener():
    server = listening_port()
    yield server
    server.close()


@pytest.fixture
def http_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def make_repo(tmp_path, record, worker_ctx, services: dict[str, Service], checks: dict[str, dict]):
    root = write_environment_repo(tmp_path / "external-repo", record, services)
    for service, check in checks.items():
        add_check(root, service, check)
    worker_ctx.manifests = EnvironmentManifests(root, services)
    return worker_ctx.manifests


def deployment(db_session, name: str) -> Deployment:
    db_session.expire_all()
    return db_session.scalars(select(Deployment).where(Deployment.name == name)).one()


def test_tcp_check_after_deploy_and_periodically(tmp_path, record, worker_ctx, db_session, services_ctx, work,
                                                 listener):
    port = listener.getsockname()[1]
    services = {"pay": Service(third_party=True, external=True, endpoint=f"127.0.0.1:{port}")}
    repo = make_repo(tmp_path, record, worker_ctx, services, {"pay": {"type": "tcp", "timeout": "2s"}})
    run = environments.start_run(db_session, repo.current(), "stage", "deploy", services_ctx,
                                 versions={"pay": "1"}, **WHO)
    work()
    pay = deployment(db_session, "pay-stage")
    assert pay.state is S.RUNNING, pay.status_message
    action = db_session.get(Action, db_session.get(type(run), run.id).components[0].action_id)
    assert f"# endpoint check (tcp) of 127.0.0.1:{port}: passed" in action.log

    # The provider goes away: the periodic check fails, naming the endpoint.
    listener.close()
    check_deployment(pay.id, "check", ctx=worker_ctx)
    pay = deployment(db_session, "pay-stage")
    assert pay.state is S.FAILURE
    assert f"127.0.0.1:{port}: TCP connection failed" in pay.status_message, pay.status_message

    # Back on the same port: the next check passes again.
    again = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    again.bind(("127.0.0.1", port))
    again.listen(4)
    try:
        check_deployment(pay.id, "check", ctx=worker_ctx)
        assert deployment(db_session, "pay-stage").state is S.RUNNING
    finally:
        again.close()


def test_a_deploy_fails_when_the_endpoint_does_not_answer_and_stops_its_dependents(
        tmp_path, record, worker_ctx, db_session, services_ctx, work, listener):
    down = closed_port()
    up = listener.getsockname()[1]
    services = {
        "pay": Service(third_party=True, external=True, endpoint=f"127.0.0.1:{up}, 127.0.0.1:{down}"),
        "shop": Service(depends_on=("pay",)),
    }
    repo = make_repo(tmp_path, record, worker_ctx, services, {"pay": {"type": "tcp", "timeout": "1s"}})
    run = environments.start_run(db_session, repo.current(), "stage", "deploy", services_ctx,
                                 versions={"pay": "1", "shop": "v1"}, **WHO)
    work()
    db_session.expire_all()
    run = db_session.get(type(run), run.id)
    by_service = {c.service: c for c in run.components}
    assert by_service["pay"].status == "failed"
    message = by_service["pay"].message
    assert f"127.0.0.1:{down}: TCP connection failed" in message, message
    assert f"127.0.0.1:{up}:" not in message, "only the entry that failed is named"
    assert by_service["shop"].status == "skipped"
    assert deployment(db_session, "pay-stage").state is S.FAILURE


def test_http_check_wants_an_answer_below_400(tmp_path, record, worker_ctx, db_session, services_ctx, work,
                                              http_server):
    port = http_server.server_address[1]
    services = {"pay": Service(third_party=True, external=True, endpoint=f"127.0.0.1:{port}")}
    repo = make_repo(tmp_path, record, worker_ctx, services,
                     {"pay": {"type": "http", "path": "/healthz", "timeout": "2s"}})
    environments.start_run(db_session, repo.current(), "stage", "deploy", services_ctx, versions={"pay": "1"}, **WHO)
    work()
    pay = deployment(db_session, "pay-stage")
    assert pay.state is S.RUNNING, pay.status_message

    Health.status = 503
    try:
        check_deployment(pay.id, "check", ctx=worker_ctx)
    finally:
        Health.status = 200
    pay = deployment(db_session, "pay-stage")
    assert pay.state is S.FAILURE
    assert f"GET http://127.0.0.1:{port}/healthz answered 503" in pay.status_message, pay.status_message
    check_deployment(pay.id, "check", ctx=worker_ctx)
    assert deployment(db_session, "pay-stage").state is S.RUNNING


FAILING_SCRIPT = """#!/bin/sh
# Any call leaves a mark and fails: nothing may run for an external service.
echo "$(basename "$0") $*" >> "{marker}"
exit 1
"""


def use_failing_scripts(root: Path, service: str, marker: Path) -> None:
    """Give ``service``'s manifest a script set of its own whose every operation writes to ``marker`` and fails."""
    folder = root / "scripts" / "failing"
    folder.mkdir(parents=True)
    for operation in ("config_check", "create", "update", "archive", "unarchive", "check", "archive_check",
                      "cleanup", "info", "notifications", "seed", "check_batch"):
        script = folder / operation
        script.write_text(FAILING_SCRIPT.format(marker=marker))
        script.chmod(0o755)
    path = root / "services" / service / "swarm" / "stage" / "sami.yaml"
    manifest = yaml.safe_load(path.read_text())
    manifest["control_scripts"] = "scripts/failing"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))


def test_an_external_service_runs_no_script_and_its_states_still_move(tmp_path, record, worker_ctx, db_session,
                                                                      services_ctx, work, listener):
    """Nothing of an external service is provisioned: its create, update, archive, restore and cleanup run no
    control script (each of its set's would fail and leave a mark), only record the state, and Sami checks its
    endpoint, after a deploy and periodically; the application behind it is deployed as usual."""
    port = listener.getsockname()[1]
    services = {"pay": Service(third_party=True, external=True, endpoint=f"127.0.0.1:{port}"),
                "shop": Service(depends_on=("pay",))}
    repo = make_repo(tmp_path, record, worker_ctx, services, {"pay": {"type": "tcp", "timeout": "2s"}})
    marker = tmp_path / "scripts-ran"
    use_failing_scripts(repo.root, "pay", marker)

    def run(operation: str, **extra):
        started = environments.start_run(db_session, repo.current(), "stage", operation, services_ctx, **WHO,
                                         **extra)
        work()
        db_session.expire_all()
        finished = db_session.get(type(started), started.id)
        assert finished.state == "succeeded", {c.service: (c.status, c.message) for c in finished.components}
        assert not marker.exists(), marker.read_text()
        return {c.service: c for c in finished.components}

    created = run("deploy", versions={"pay": "1", "shop": "v1"})
    pay = deployment(db_session, "pay-stage")
    assert pay.state is S.RUNNING and pay.tag == "1", pay.status_message
    log = db_session.get(Action, created["pay"].action_id).log
    assert "# create of an external service (127.0.0.1:" in log and "no control script runs" in log, log
    assert f"# endpoint check (tcp) of 127.0.0.1:{port}: passed" in log
    assert "$ " not in log, "no script line in its log"
    assert "create shop-stage v1" in record.read_text()

    run("deploy", versions={"pay": "2"})
    assert deployment(db_session, "pay-stage").tag == "2"
    assert deployment(db_session, "pay-stage").state is S.RUNNING

    check_deployment(pay.id, "check", ctx=worker_ctx)
    assert deployment(db_session, "pay-stage").state is S.RUNNING
    # The scheduler checks it alone, though its set has a check_batch: the check is its endpoint's.
    report = TickReport()
    due = deployment(db_session, "pay-stage").checked_at + timedelta(seconds=worker_ctx.settings.check_interval + 1)
    Scheduler(worker_ctx).steps["checks"](report, due)
    assert pay.id in report.checks and not any(pay.id in batch for batch in report.check_batches), report
    work()
    assert deployment(db_session, "pay-stage").state is S.RUNNING
    assert not marker.exists(), marker.read_text()

    run("archive")
    assert deployment(db_session, "pay-stage").state is S.ARCHIVED
    run("restore")
    assert deployment(db_session, "pay-stage").state is S.RUNNING
    run("archive")
    cleaned = run("cleanup")
    assert deployment(db_session, "pay-stage").state is S.REMOVED
    assert "data volumes" not in (cleaned["pay"].message or ""), "an external service has no data of Sami's"
    assert deployment(db_session, "shop-stage").state is S.REMOVED

    # The endpoint check still runs: with the provider gone, a deploy fails and says why, still without a script.
    listener.close()
    failed = environments.start_run(db_session, repo.current(), "stage", "deploy", services_ctx, **WHO,
                                    versions={"pay": "3", "shop": "v1"}, only={"pay"})
    work()
    db_session.expire_all()
    component = db_session.get(type(failed), failed.id).components
    pay_component = next(c for c in component if c.service == "pay")
    assert pay_component.status == "failed" and f"127.0.0.1:{port}: TCP connection failed" in pay_component.message
    assert not marker.exists(), marker.read_text()
