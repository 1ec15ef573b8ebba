"""SIGTERM on real processes: `sami worker` finishes or hands back its action, `sami scheduler`
stops between ticks, `sami serve` finishes in-flight requests and (embedded) hands back its action."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
import uuid

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session, undefer

from bot.core.models import Action, ActionStep, Deployment
from bot.core.states import ActionState, DeploymentState
from tests.pipeline.probe_scripts import write_probe_repo
from tests.pipeline.test_processes import Stack
from tests.support.github_payloads import body as payload_body
from tests.support.github_payloads import delivery_headers, example
from tests.support.procs import alive, wait_until
from tests.support.sami_server import SamiServer, post, sami, sami_env
from tests.support.servers import free_port

pytestmark = pytest.mark.slow


@pytest.fixture
def stack(tmp_path, own_database_url, own_redis):
    stack = Stack(tmp_path, own_database_url, own_redis)
    yield stack
    stack.stop()


def pid_file(path) -> int:
    return int(wait_until(lambda: path.exists() and path.read_text().strip(), 30, path.name))


def stopped_within(process: subprocess.Popen, seconds: float) -> int:
    try:
        return process.wait(seconds)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"still running {seconds} s after SIGTERM") from None


def test_a_worker_lets_its_running_action_finish_within_the_grace_period(stack):
    stack.env["SAMI_SHUTDOWN_GRACE"] = "30"
    worker = stack.start("worker")
    assert stack.request("v1", sleep="3")[0] == 202
    stack.wait(lambda: stack.actions()[0].script_started_at is not None, 30, "the script to start")
    worker.send_signal(signal.SIGTERM)
    assert stopped_within(worker, 30) == 0
    action = stack.actions()[0]
    assert action.state is ActionState.SUCCEEDED, action.log
    assert stack.deployment().state is DeploymentState.RUNNING


def test_a_worker_hands_back_an_action_that_outlasts_the_grace_period(stack):
    stack.env["SAMI_SHUTDOWN_GRACE"] = "2"
    worker = stack.start("worker")
    assert stack.request("v1", hang="create")[0] == 202
    stack.wait(lambda: stack.actions()[0].script_started_at is not None, 30, "the script to start")
    script_pid = pid_file(stack.record.parent / "record.pid")
    child_pid = pid_file(stack.record.parent / "record.child")  # `sleep 300 &`, started by the script
    signalled = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    assert stopped_within(worker, 30) == 0
    took = time.monotonic() - signalled
    assert took >= 2, "the action had its grace period"
    # Handed back: queued again (not failed), its script group stopped, the lease let go.
    action = stack.actions()[0]
    assert action.state is ActionState.QUEUED
    assert action.script_started_at is None and action.worker is None
    assert "handed back to the queue" in action.log
    wait_until(lambda: not alive(script_pid) and not alive(child_pid), 10, "the script group to stop")
    deployment = stack.deployment()
    assert deployment.lease_owner is None
    assert deployment.state is DeploymentState.CREATE_PENDING
    # The next worker runs it again, from its first script.
    stack.start("worker")
    stack.start("scheduler", "--interval", "1")
    stack.wait(lambda: stack.record.read_text().count("create probe-stage v1") == 2, 60, "the action to run again")
    assert stack.actions()[0].state is ActionState.RUNNING
    # Its steps: those of the first run (the create stopped without an exit code), then the new ones.
    with Session(stack.engine) as session:
        steps = session.scalars(select(ActionStep).where(ActionStep.action_id == action.id)
                                .order_by(ActionStep.position)).all()
        assert [(s.position, s.operation, s.exit_code, s.finished_at is not None) for s in steps] == [
            (1, "config_check", 0, True), (2, "create", None, True), (3, "config_check", 0, True),
            (4, "create", None, False)]


def test_a_second_sigterm_hands_the_action_back_at_once(stack):
    stack.env["SAMI_SHUTDOWN_GRACE"] = "600"
    worker = stack.start("worker")
    assert stack.request("v1", hang="create")[0] == 202
    stack.wait(lambda: stack.actions()[0].script_started_at is not None, 30, "the script to start")
    pid_file(stack.record.parent / "record.pid")
    worker.send_signal(signal.SIGTERM)
    time.sleep(1)
    assert worker.poll() is None, "the first SIGTERM waits for the action"
    worker.send_signal(signal.SIGTERM)
    assert stopped_within(worker, 30) == 0
    assert stack.actions()[0].state is ActionState.QUEUED


def test_the_scheduler_stops_between_ticks(stack):
    scheduler = stack.start("scheduler", "--interval", "1")
    log = stack.logs / "scheduler-0.log"
    wait_until(lambda: "scheduler running" in log.read_text(), 30, "the scheduler to start")
    time.sleep(1.5)
    scheduler.send_signal(signal.SIGTERM)
    assert stopped_within(scheduler, 15) == 0
    assert "scheduler stopped" in log.read_text()


def test_the_web_process_finishes_an_in_flight_request_and_stops_accepting(tmp_path, own_database_url, own_redis):
    env = sami_env(SAMI_DATABASE_URL=own_database_url, SAMI_REDIS_URL=own_redis.url(0),
                   SAMI_INSTANCE_DIR=str(tmp_path / "instance"), SAMI_WEBHOOK_SECRET="shutdown-secret",
                   SAMI_SHUTDOWN_GRACE="20")
    server = SamiServer(env, tmp_path / "serve.log", "--workers", "2").start()
    try:
        data = payload_body(example("ping"))
        headers = delivery_headers("ping", data, "shutdown-secret", str(uuid.uuid4()))
        connection = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        connection.sendall(f"POST /webhooks/github HTTP/1.1\r\nHost: sami\r\n{head}"
                           f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data[:10])
        time.sleep(0.5)  # the request is being read by a web process
        server.process.send_signal(signal.SIGTERM)
        wait_until(lambda: not _accepts(server.port), 10, "the listening socket to close")
        connection.sendall(data[10:])
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
        connection.close()
        status_line, _, rest = answer.partition(b"\r\n")
        assert status_line.startswith(b"HTTP/1.1 200"), answer[:500]
        assert json.loads(rest.split(b"\r\n\r\n", 1)[1])["outcome"] == "pong"
        assert stopped_within(server.process, 30) == 0
    finally:
        server.stop()


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def test_the_embedded_default_hands_back_its_running_action_and_stops_at_once(tmp_path):
    record = tmp_path / "record"
    repo = write_probe_repo(tmp_path / "deployments", record, timeout="120s")
    port = free_port()
    env = sami_env(SAMI_INSTANCE_DIR=str(tmp_path / "instance"), SAMI_DEPLOYMENTS_REPO=str(repo),
                   SAMI_BASE_DOMAIN="example.test", SAMI_WEBHOOK_SECRET="embedded-secret")
    sami("db", "upgrade", env=env)
    token = sami("token", "create", "ops", "--admin", env=env).stdout.strip()
    engine = create_engine(f"sqlite:///{tmp_path / 'instance' / 'sami.sqlite3'}")

    def action() -> Action:
        with Session(engine) as session:
            return session.scalars(select(Action).options(undefer(Action.log))).one()

    server = SamiServer(env, tmp_path / "serve.log", port=port).start()
    try:
        body = json.dumps({"service": "probe", "environment": "stage", "tag": "v1",
                           "overrides": {"deployment": {"hang": "create"}}}).encode()
        code, answer = post(server.url, "/deployment_request", body,
                            {"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
        assert code == 202, answer
        script_pid = pid_file(tmp_path / "record.pid")
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert stopped_within(server.process, 25) == 0
        # Without the hand-back, gunicorn would wait its whole graceful timeout for the action.
        assert time.monotonic() - signalled < 15
        assert not alive(script_pid)
        assert action().state is ActionState.QUEUED
        assert "handed back to the queue" in action().log
        with Session(engine) as session:
            assert session.scalars(select(Deployment)).one().lease_owner is None
    finally:
        server.stop()
    # The next start's sweep runs it again.
    with SamiServer(env, tmp_path / "serve-again.log", port=port):
        wait_until(lambda: record.read_text().count("create probe-stage v1") == 2, 60, "the action to run again")
    engine.dispose()
