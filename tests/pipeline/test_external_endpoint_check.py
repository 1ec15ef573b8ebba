"""An external third-party service's endpoint check (its manifest's ``check``), run by Sami itself after
a deploy's ``check`` script and in the periodic checks, against real listeners on loopback: a TCP port
and a small HTTP server. Up, the check passes; down, it fails with a message naming the endpoint."""

from __future__ import annotations

import http.server
import socket
import threading
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from bot.core.models import Action, Deployment
from bot.core.states import DeploymentState
from bot.services import environments
from tests.pipeline.environment_repo import EnvironmentManifests, Service, write_environment_repo
from workers.checks import check_deployment

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
