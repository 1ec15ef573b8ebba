"""Webhooks against real processes: `sami serve` under gunicorn on PostgreSQL and Redis (ten
concurrent copies of a delivery, Redis going away, `sami github send`), and the embedded default
with its generated secret."""

from __future__ import annotations

import json
import re
import sqlite3
import stat
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from rq import Queue
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from bot.core import db
from bot.core.models import Delivery, DeliveryStatus
from tests.conftest import create_database
from tests.support import github_payloads
from tests.support.procs import wait_until
from tests.support.sami_server import PRODUCTION_SECRET_KEY, ROOT, SamiServer, post, sami, sami_env
from tests.support.servers import RedisServer
from workers.queue import ACTIONS_QUEUE, DELIVERIES_HANDED_OFF, delivery_job_id

pytestmark = pytest.mark.slow

SECRET = "server-test-webhook-secret"
PATH = "/webhooks/github"


class Stack:
    """`sami serve` in production mode (gunicorn, 2 workers) on a database and Redis of its own."""

    def __init__(self, tmp_path, database_url: str, redis: RedisServer):
        self.redis = redis
        self.database_url = database_url
        self.env = sami_env(SAMI_MODE="production", SAMI_DATABASE_URL=database_url, SAMI_REDIS_URL=redis.url(0),
                            SAMI_SECRET_KEY=PRODUCTION_SECRET_KEY, SAMI_WEBHOOK_SECRET=SECRET,
                            SAMI_INSTANCE_DIR=str(tmp_path / "instance"), SAMI_LOG_LEVEL="warning")
        self.server = SamiServer(self.env, tmp_path / "serve.log")
        self.engine = create_engine(database_url)

    def deliveries(self, delivery_id: str) -> list[Delivery]:
        with Session(self.engine) as session:
            return list(session.scalars(select(Delivery).where(Delivery.delivery_id == delivery_id)))

    def jobs(self) -> list[str]:
        import redis

        connection = redis.Redis.from_url(self.redis.url(0))
        try:
            # Deliveries handed off by the intake count as their jobs: a worker turns each into one.
            handed_off = [delivery_job_id(int(row_id)) for row_id in connection.lrange(DELIVERIES_HANDED_OFF, 0, -1)]
            return Queue(ACTIONS_QUEUE, connection=connection).job_ids + handed_off
        finally:
            connection.close()

    def send(self, event: str, payload: dict, delivery: str, secret: str = SECRET) -> tuple[int, dict]:
        data = github_payloads.body(payload)
        status, answer = post(self.server.url, PATH, data, github_payloads.delivery_headers(event, data, secret,
                                                                                             delivery))
        return status, json.loads(answer)


@pytest.fixture(scope="module")
def stack(postgres, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("webhook-server")
    name = f"sami_webhooks_{uuid.uuid4().hex[:8]}"
    url = create_database(postgres, name)
    db.upgrade(url)
    redis = RedisServer()
    redis.start()
    stack = Stack(tmp_path, url, redis)
    try:
        stack.server.start()
        yield stack
    finally:
        stack.server.stop()
        stack.redis.stop()  # the test that stops Redis starts another on its port
        stack.engine.dispose()


def test_ten_concurrent_copies_of_a_delivery_make_one_row_and_one_job(stack):
    data = github_payloads.body(github_payloads.example("pull_request", "synchronize"))
    headers = github_payloads.delivery_headers("pull_request", data, SECRET, "concurrent-copies")
    start = threading.Barrier(10)

    def send(_):
        start.wait()
        return post(stack.server.url, PATH, data, headers)

    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(send, range(10)))
    statuses = sorted(status for status, _ in answers)
    assert statuses == [200] * 9 + [202], [answer for _, answer in answers]
    assert sorted(json.loads(answer).get("duplicate", False) for _, answer in answers) == [False] + [True] * 9
    [row] = stack.deliveries("concurrent-copies")
    assert stack.jobs().count(f"delivery-{row.id}") == 1


def test_a_running_worker_processes_a_delivery_without_the_sweep(stack, tmp_path):
    # No scheduler runs: only the worker's taking of handed-off deliveries can queue the job.
    import redis
    from rq import Worker

    with open(tmp_path / "worker.log", "wb") as log:
        worker = subprocess.Popen([sys.executable, "-m", "bot.cli", "worker"], env=stack.env, cwd=ROOT, stdout=log,
                                  stderr=subprocess.STDOUT)
    connection = redis.Redis.from_url(stack.redis.url(0))
    try:
        wait_until(lambda: Worker.count(connection=connection), 60, "the worker to start")
        status, _ = stack.send("star", github_payloads.example("star", "created"), "to-a-running-worker")
        assert status == 202
        sent = time.monotonic()
        wait_until(lambda: stack.deliveries("to-a-running-worker")[0].status is DeliveryStatus.IGNORED, 30,
                   "the delivery to be processed", interval=0.02)
        assert time.monotonic() - sent < 5, (tmp_path / "worker.log").read_text()[-2000:]
        assert stack.jobs() == []
    finally:
        connection.close()
        worker.terminate()
        worker.wait(30)


def test_sami_github_send_signs_like_github(stack, tmp_path):
    payload = tmp_path / "star.json"
    payload.write_text(json.dumps(github_payloads.example("star", "created"), indent=2))
    env = {**stack.env, "SAMI_URL": stack.server.url}

    sent = sami("github", "send", "star", str(payload), "--delivery", "cli-1", env=env, check=False)
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.startswith("202 ") and '"queued"' in sent.stdout
    [row] = stack.deliveries("cli-1")
    assert (row.event, row.action, row.repository) == ("star", "created", "Codertocat/Hello-World")

    again = sami("github", "send", "star", str(payload), "--delivery", "cli-1", env=env, check=False)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("200 ") and '"duplicate":true' in again.stdout

    other = sami("github", "send", "star", str(payload), "--action", "deleted", env=env, check=False)
    assert other.returncode == 0, other.stderr
    delivery = json.loads(other.stdout.split(" ", 1)[1])["delivery"]
    assert uuid.UUID(delivery).version == 4
    assert stack.deliveries(delivery)[0].action == "deleted"

    wrong = sami("github", "send", "star", str(payload), env={**env, "SAMI_WEBHOOK_SECRET": "not-the-secret"},
                 check=False)
    assert wrong.returncode == 1
    assert wrong.stdout.startswith("401 ")
    [line] = wrong.stderr.strip().splitlines()
    assert re.match(r"sami: the server refused delivery [0-9a-f-]+ \(401\): X-Hub-Signature-256 does not match", line)

    unsigned = sami("github", "send", "star", str(payload), env={**env, "SAMI_WEBHOOK_SECRET": ""}, check=False)
    assert unsigned.returncode == 2 and "SAMI_WEBHOOK_SECRET" in unsigned.stderr

    down = sami("github", "send", "star", str(payload), "--url", "http://127.0.0.1:9", env=env, check=False)
    assert down.returncode == 1 and down.stderr.startswith("sami: cannot reach http://127.0.0.1:9/webhooks/github")


def test_a_delivery_received_while_redis_is_down_is_processed_when_it_is_back(stack):
    stack.redis.stop()
    try:
        status, answer = stack.send("star", github_payloads.example("star", "created"), "while-redis-is-down")
        assert (status, answer) == (202, {"delivery": "while-redis-is-down", "status": "received"})
    finally:
        port = stack.redis.port
        stack.redis = RedisServer()
        stack.redis.port = port
        stack.redis.start()
    [row] = stack.deliveries("while-redis-is-down")
    assert row.status is DeliveryStatus.RECEIVED
    assert f"delivery-{row.id}" not in stack.jobs()
    time.sleep(2.5)  # the sweep leaves a delivery's own job two seconds to come
    tick = sami("scheduler", "--once", env=stack.env)
    # Every delivery whose job the restarted (empty) Redis lost is queued again, this one included.
    swept = re.search(r"deliveries=\[([0-9, ]*)\]", tick.stdout)
    assert swept and str(row.id) in swept.group(1).split(", "), tick.stdout
    sami("worker", "--burst", env=stack.env, timeout=120)
    [row] = stack.deliveries("while-redis-is-down")
    assert row.status is DeliveryStatus.IGNORED, row.outcome
    assert row.outcome.startswith("ignored: ")


def sqlite_delivery(instance, delivery_id: str):
    with sqlite3.connect(instance / "sami.sqlite3") as connection:
        return connection.execute("SELECT status, outcome FROM deliveries WHERE delivery_id = ?",
                                  (delivery_id,)).fetchone()


def test_the_embedded_default_generates_a_secret_prints_it_once_and_accepts_deliveries_signed_with_it(tmp_path):
    instance = tmp_path / "instance"
    env = sami_env(SAMI_INSTANCE_DIR=str(instance), SAMI_LOG_LEVEL="info")
    sami("db", "upgrade", env=env)
    log = tmp_path / "serve.log"
    with SamiServer(env, log) as server:
        secret_file = instance / "webhook-secret"
        secret = secret_file.read_text().strip()
        assert re.fullmatch(r"[0-9a-f]{64}", secret)
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
        [line] = [line for line in server.output().splitlines() if "webhook secret" in line]
        assert line == f"GitHub webhook secret (generated, stored in {secret_file}, shown this once): {secret}"

        sent = sami("github", "send", "ping", str(ROOT / "examples" / "github" / "ping.json"),
                    env={**env, "SAMI_WEBHOOK_SECRET": secret, "SAMI_URL": server.url}, check=False)
        assert sent.returncode == 0, sent.stderr
        assert sent.stdout.startswith("200 ") and '"outcome":"pong"' in sent.stdout

        data = github_payloads.body(github_payloads.example("pull_request", "opened"))
        status, _ = post(server.url, PATH, data, github_payloads.delivery_headers("pull_request", data, secret,
                                                                                  "embedded-1"))
        assert status == 202
        done = wait_until(lambda: (row := sqlite_delivery(instance, "embedded-1")) and row[0] != "received" and
                        row[0] != "processing" and row, 30, "the in-process worker to process the delivery")
        assert done[0] in ("processed", "ignored"), done

        status, _ = post(server.url, PATH, data, github_payloads.delivery_headers("pull_request", data, "guess",
                                                                                  "embedded-2"))
        assert status == 401
        assert sqlite_delivery(instance, "embedded-2") is None

    # Started again, it keeps the secret and does not show it again.
    with SamiServer(env, log) as server:
        assert secret_file.read_text().strip() == secret
        assert f"GitHub webhook secret: the one stored in {secret_file}" in server.output()
        assert server.output().count(secret) == 1
