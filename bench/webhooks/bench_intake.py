"""Webhook intake under load: signed `pull_request.synchronize` deliveries (GitHub's example
payload, each with its own X-GitHub-Delivery id) posted by wrk to `sami serve` (production shape:
gunicorn with its default workers and threads, PostgreSQL, Redis) and, in the same run and on the
same gunicorn settings, to two reference apps:

- the **bare** app only checks the signature and answers 202;
- the **durable limit** does exactly the durable work the intake must do and nothing more: checks
  the signature, parses the JSON, runs one INSERT ... ON CONFLICT DO NOTHING of the delivery into
  Sami's own ``deliveries`` table (migrated by the working tree: payload as json, LZ4) and commits
  on a pooled psycopg2 connection, pushes the new row's id on a Redis list, answers 202 (200 for a
  delivery id it has already).

Then, the same way, ``POST /deployment_request`` (``--endpoints``): wrk posts updates of 16
deployments of one service in turn (each request a tag of its own, with an admin token) to Sami
and to the durable limit's equivalent: the token's row read and its secret's hash compared, the
deployment's row locked, the deployment updated and its action inserted, one commit, the action's
id pushed on a Redis list, 202. Afterwards each must hold one action per accepted request.

    .venv/bin/python bench/webhooks/bench_intake.py [--duration 20] [--requests 20000]
        [--connections 32,4] [--rounds 1] [--endpoints webhook,deploy] [--code REV] [--baseline REV]

Each measured run stops after ``--duration`` seconds or ``--requests`` answers, whichever comes
first; every server listens on 127.0.0.1. Afterwards each server that records deliveries must
hold exactly one row per delivery id (rows between the answered and the sent deliveries: requests
in flight when wrk stops may still be recorded), and a sample of the deliveries, sent again, must
be answered as duplicates without adding rows. ``--code REV`` serves Sami from ``git archive REV``
(or from a folder) instead of the working tree; ``--baseline REV`` serves a second Sami from REV
in the same run, on a database of its own (to measure a change: the commit before it).

Needs Debian's wrk (scripts/install-test-deps installs it) and what the tests need (PostgreSQL,
Redis): private servers are started on free ports and stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Made per run: the bare app (a child process) gets it in its environment.
HMAC_KEY = os.environ.get("BENCH_WEBHOOK_KEY") or secrets.token_hex(16)
PATH = "/webhooks/github"
DEPLOY_PATH = "/deployment_request"
SERVICE = "bench"  # the service deployment requests name; environments e0, e1, ...
ENVIRONMENTS = 16  # deployments the requests take turns on (each request locks one)
ENDPOINTS = {"webhook": f"POST {PATH}", "deploy": f"POST {DEPLOY_PATH}"}

# The Lua side of wrk: every request gets a delivery id of its own (run prefix, thread, counter);
# a thread stops once it has its share of the answers; done() prints one JSON line.
WRK_SCRIPT = r"""
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clock, bench_timespec *now);
]]
local clock = ffi.new("bench_timespec")

-- Microseconds on the monotonic clock: wrk reports the whole -d duration even when the threads
-- stopped earlier (on reaching their share of the answers), so the run is timed here.
function now_us()
  ffi.C.clock_gettime(1, clock)
  return tonumber(clock.tv_sec) * 1000000 + tonumber(clock.tv_nsec) / 1000
end

local threads = {}
local count = 0
SERVICE = "bench"

function setup(thread)
  count = count + 1
  thread:set("tid", count)
  table.insert(threads, thread)
end

function init(args)
  prefix, quota = args[1], tonumber(args[2])
  if args[3] == "deploy" then return init_deploy(args) end
  local file = assert(io.open(args[3], "rb"))
  wrk.method = "POST"
  wrk.body = file:read("*a")
  file:close()
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["User-Agent"] = "GitHub-Hookshot/bench"
  wrk.headers["X-GitHub-Event"] = "pull_request"
  wrk.headers["X-Hub-Signature-256"] = args[4]
  sent, answered, other = 0, 0, 0
  first, last = now_us(), 0
end

-- Deployment requests: args are prefix, quota, "deploy", the bearer token, the environment count.
-- Each request updates one of the environments' deployments in turn, to a tag naming the request.
function init_deploy(args)
  deploy, environments = true, tonumber(args[5])
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. args[4]
  sent, answered, other = 0, 0, 0
  first, last = now_us(), 0
end

function request()
  sent = sent + 1
  if deploy then
    return wrk.format(nil, nil, nil, string.format('{"service": "%s", "environment": "e%d", "tag": "%s-%d-%d"}',
      SERVICE, (sent * 2 + tid) % environments, prefix, tid, sent))
  end
  wrk.headers["X-GitHub-Delivery"] = prefix .. "-" .. tid .. "-" .. sent
  return wrk.format()
end

function response(status, headers, body)
  answered = answered + 1
  last = now_us()
  if status ~= 202 then other = other + 1 end
  if answered >= quota then wrk.thread:stop() end
end

function done(summary, latency, requests)
  local sent_total, other_total, ids, first, last = 0, 0, {}, math.huge, 0
  for _, thread in ipairs(threads) do
    first = math.min(first, thread:get("first"))
    last = math.max(last, thread:get("last"))
    sent_total = sent_total + thread:get("sent")
    other_total = other_total + thread:get("other")
    table.insert(ids, string.format('"%s-%d": %d', thread:get("prefix"), thread:get("tid"), thread:get("sent")))
  end
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, ' ..
    '"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d, "sent": %d, "not_202": %d, ' ..
    '"sent_by_thread": {%s}}\n',
    summary.requests, last - first, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, e.connect, e.read, e.write, e.status, e.timeout, sent_total, other_total, table.concat(ids, ", ")))
end
"""

# The same gunicorn settings `sami serve` uses (bot/cli.py).
GUNICORN = {"workers": 2, "threads": 8, "worker_class": "bot.web.gunicorn_worker.JSONErrorWorker", "accesslog": "-",
            "timeout": 60, "keepalive": 5}


def bare_app():
    """A Flask app that only checks the delivery's signature and answers 202."""
    import hashlib
    import hmac

    from flask import Flask, abort, jsonify, request

    app = Flask("bare")
    key = HMAC_KEY.encode()

    @app.post(PATH)
    def receive():
        body = request.get_data(cache=False)
        expected = "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), request.headers.get("X-Hub-Signature-256", "").encode()):
            abort(401)
        return jsonify(delivery=request.headers.get("X-GitHub-Delivery"), status="queued"), 202

    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok")

    return app


DURABLE_QUEUE = "bench:deliveries"
# The columns Sami's intake writes; the rest keep their defaults.
DURABLE_INSERT = (
    "INSERT INTO deliveries (delivery_id, event, action, repository, installation_id, sender, status, payload, "
    "attempts, received_at) VALUES (%s, %s, %s, %s, %s, %s, 'received', %s, 0, now()) "
    "ON CONFLICT (delivery_id) DO NOTHING RETURNING id")


# A deployment request's durable work: the token, the deployment's row locked, the deployment updated
# and its action inserted, one commit, the action's id pushed.
DURABLE_ACTIONS = "bench:actions"
DURABLE_API_KEY_ROW = "SELECT secret_hash, revoked_at, name FROM api_tokens WHERE token_id = %s"
DURABLE_LOCK = "SELECT id, state FROM deployments WHERE name = %s FOR UPDATE"
DURABLE_UPDATE = ("UPDATE deployments SET state = 'UpdatePending', tag = %s, version = version + 1, "
                  "updated_at = now(), status_changed_at = now() WHERE id = %s")
DURABLE_ACTION = (
    "INSERT INTO actions (deployment_id, kind, state, requested_by, origin, config, log, log_truncated, attempts, "
    "created_at) VALUES (%s, 'update', 'queued', %s, 'api', %s, '', false, 0, now()) RETURNING id")


def durable_app(database_url: str, redis_url: str):
    """The durable limit: signature, JSON, one insert and commit on a pooled connection, one push;
    and for a deployment request: the token, one deployment locked, two rows, a commit, one push."""
    import contextlib
    import hashlib
    import hmac
    import json as json_
    import re
    import threading

    import psycopg2.pool
    from flask import Flask, abort, jsonify, request
    from redis import Redis
    from sqlalchemy.engine import make_url

    app = Flask("durable")
    key = HMAC_KEY.encode()
    url = make_url(database_url)
    dsn = dict(host=url.host, port=url.port, user=url.username, dbname=url.database)
    state: dict = {}
    lock = threading.Lock()

    def pool() -> psycopg2.pool.ThreadedConnectionPool:
        # Made in the worker process (after gunicorn's fork): a connection per thread, kept (psycopg2's
        # pool closes a returned connection beyond ``minconn``, so both are the thread count).
        with lock:
            if "pool" not in state:
                threads = GUNICORN["threads"]
                state["pool"] = psycopg2.pool.ThreadedConnectionPool(threads, threads, **dsn)
            return state["pool"]

    redis = Redis.from_url(redis_url)

    @contextlib.contextmanager
    def transaction():
        """A cursor of this thread's pooled connection; committed at the end, rolled back on an error."""
        connections = pool()
        connection = connections.getconn()
        try:
            with connection.cursor() as cursor:
                yield cursor
            connection.commit()
        except BaseException:
            connection.rollback()
            raise
        finally:
            connections.putconn(connection)

    def text(value, length):
        return value[:length] if isinstance(value, str) and value else None

    @app.post(PATH)
    def receive():
        body = request.get_data(cache=False)
        expected = "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), request.headers.get("X-Hub-Signature-256", "").encode()):
            abort(401)
        delivery_id = request.headers.get("X-GitHub-Delivery", "")
        event = request.headers.get("X-GitHub-Event", "")
        payload_text = body.decode()
        payload = json_.loads(payload_text)
        if not isinstance(payload, dict) or not delivery_id or not event:
            abort(400)
        repository, installation, sender = (payload.get(k) or {} for k in ("repository", "installation", "sender"))
        with transaction() as cursor:
            cursor.execute(DURABLE_INSERT, (
                delivery_id, event, text(payload.get("action"), 64), text(repository.get("full_name"), 255),
                installation.get("id"), text(sender.get("login"), 255), payload_text))
            row = cursor.fetchone()
        if row is None:
            return jsonify(delivery=delivery_id, duplicate=True), 200
        redis.lpush(DURABLE_QUEUE, row[0])
        return jsonify(delivery=delivery_id, status="queued"), 202

    token_re = re.compile(r"^sami_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")

    @app.post(DEPLOY_PATH)
    def deployment_request():
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        token = token_re.match(value.strip())
        if scheme.lower() != "bearer" or not token:
            abort(401)
        body = request.get_json()
        service, environment, tag = (body.get(key) for key in ("service", "environment", "tag"))
        if not all(isinstance(value, str) and value for value in (service, environment, tag)):
            abort(400)
        name = f"{service}-{environment}"
        with transaction() as cursor:
            cursor.execute(DURABLE_API_KEY_ROW, (token[1],))
            found = cursor.fetchone()
            expected = found[0] if found else ""
            if not hmac.compare_digest(expected, hashlib.sha256(token[2].encode()).hexdigest()) or found[1]:
                abort(401)
            cursor.execute(DURABLE_LOCK, (name,))
            deployment = cursor.fetchone()
            if deployment is None:
                abort(404)
            cursor.execute(DURABLE_UPDATE, (tag, deployment[0]))
            cursor.execute(DURABLE_ACTION, (deployment[0], found[2], json_.dumps({"tag": tag})))
            action_id = cursor.fetchone()[0]
        redis.rpush(DURABLE_ACTIONS, action_id)
        return jsonify(deployment=name, action_id=action_id, kind="update", state="UpdatePending",
                       status_url=f"http://127.0.0.1/api/v1/actions/{action_id}"), 202

    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok")

    return app


def serve(kind: str, bind: str) -> None:
    """Serve the bare app or the durable limit with gunicorn (in this process)."""
    from gunicorn.app.base import BaseApplication

    class Server(BaseApplication):
        def load_config(self):
            for key, value in {"bind": bind, **GUNICORN}.items():
                self.cfg.set(key, value)

        def load(self):
            if kind == "bare":
                return bare_app()
            return durable_app(os.environ["BENCH_DURABLE_DATABASE"], os.environ["BENCH_DURABLE_REDIS"])

    Server().run()


def extract(rev: str, into: Path) -> Path:
    """The code of ``rev`` in a folder of its own."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def wrk(url: str, script: Path, prefix: str, requests: int, duration: float, connections: int,
        args: list[str], path: str = PATH, threads: int = 2) -> dict:
    """One wrk run; ``args`` are the Lua script's after the prefix and quota: the body file and its
    signature for deliveries, or "deploy", the token and the environment count for deployment requests."""
    quota = max(1, requests // threads)
    result = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration:g}s", "--timeout", "10s",
         "-s", str(script), url + path, "--", prefix, str(quota), *args],
        capture_output=True, text=True, timeout=duration + 60, check=True)
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def _processes() -> dict[int, tuple[int, float]]:
    """Every process's parent and CPU seconds (user + system) so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # Own and reaped children's time: a database connection closed during the run still counts.
        found[int(stat.parent.name)] = (int(fields[1]), sum(int(value) for value in fields[11:15]) / ticks)
    return found


def cpu_seconds(roots: dict[str, int]) -> dict[str, float]:
    """CPU seconds used so far by each named process and its descendants."""
    processes = _processes()
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in processes.items():
        children.setdefault(parent, []).append(pid)
    totals = {}
    for name, root in roots.items():
        total, todo = 0.0, [root]
        while todo:
            pid = todo.pop()
            total += processes.get(pid, (0, 0.0))[1]
            todo += children.get(pid, [])
        totals[name] = total
    return totals


def resend(url: str, body: bytes, signature: str, delivery_ids: list[str]) -> dict[int, int]:
    """Send deliveries again, 32 at a time; how many got each status."""
    import http.client

    def send(delivery_id: str) -> int:
        connection = http.client.HTTPConnection("127.0.0.1", int(url.rsplit(":", 1)[1]), timeout=30)
        try:
            connection.request("POST", PATH, body=body, headers={
                "Content-Type": "application/json", "X-GitHub-Event": "pull_request", "X-GitHub-Delivery": delivery_id,
                "X-Hub-Signature-256": signature})
            response = connection.getresponse()
            response.read()
            return response.status
        finally:
            connection.close()

    counts: dict[int, int] = {}
    with ThreadPoolExecutor(32) as pool:
        for status in pool.map(send, delivery_ids):
            counts[status] = counts.get(status, 0) + 1
    return counts


def report(name: str, result: dict) -> dict:
    seconds = result["duration_us"] / 1e6
    errors = sum(result[kind] for kind in ("connect", "read", "write", "status", "timeout")) + result["not_202"]
    return {"server": name, "requests": result["requests"], "seconds": round(seconds, 2),
            "rps": result["requests"] / seconds, "p50_ms": result["p50_us"] / 1000, "p90_ms": result["p90_us"] / 1000,
            "p99_ms": result["p99_us"] / 1000, "max_ms": result["max_us"] / 1000, "errors": errors}


def create_database(postgres, database: str, code: Path, env: dict[str, str], name: str) -> str:
    """A database of its own, migrated by ``code`` (its schema is part of what is measured)."""
    from sqlalchemy import create_engine, text

    admin = create_engine(postgres.url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{database}"'))
    admin.dispose()
    url = postgres.url(database)
    migrated = subprocess.run([sys.executable, "-m", "bot.cli", "db", "upgrade"],
                              env={**env, "SAMI_DATABASE_URL": url, "PYTHONPATH": str(code)}, cwd=code,
                              capture_output=True, text=True, timeout=120)
    if migrated.returncode != 0:
        raise SystemExit(f"sami db upgrade failed for {name}:\n{migrated.stderr[-3000:]}")
    return url


def write_repo(root: Path) -> Path:
    """A deployments repo with service ``bench`` in ENVIRONMENTS environments (no script runs here)."""
    sys.path.insert(0, str(ROOT / "bench" / "api"))
    from bench_request_history import SERVICE as REPO_SERVICE
    from bench_request_history import write_repo as write

    assert REPO_SERVICE == SERVICE
    return write(root, tuple(f"e{number}" for number in range(ENVIRONMENTS)))


def create_token(code: Path, env: dict[str, str], database_url: str) -> str:
    """An admin API token in ``database_url``, made by ``code``'s `sami token create`."""
    made = subprocess.run([sys.executable, "-m", "bot.cli", "token", "create", "bench", "--admin"],
                          env={**env, "SAMI_DATABASE_URL": database_url, "PYTHONPATH": str(code)}, cwd=code,
                          capture_output=True, text=True, timeout=120)
    if made.returncode != 0:
        raise SystemExit(f"sami token create failed:\n{made.stderr[-3000:]}")
    return made.stdout.split()[0]


def settle(connection, count) -> None:
    """Wait until requests still being answered when wrk stopped have written their rows (``count``
    counts them)."""
    settled, rows_now = None, connection.execute(count).scalar()
    while settled != rows_now:
        time.sleep(1)
        settled, rows_now = rows_now, connection.execute(count).scalar()


class Recording:
    """A server that records deliveries in a database of its own and queues them on Redis, and
    accepts deployment requests with ``token``."""

    name: str
    tag: str
    database_url: str
    redis_url: str
    queue_keys: tuple[str, ...]
    token: str

    def check_deploys(self, prefix: str, answered: int, sent: int) -> list[str]:
        """One action per accepted deployment request (its tag names the request)."""
        from sqlalchemy import create_engine, text

        engine = create_engine(self.database_url)
        with engine.connect() as connection:
            settle(connection, text("SELECT count(*) FROM actions"))
            rows, distinct = connection.execute(text(
                "SELECT count(*), count(DISTINCT config->>'tag') FROM actions WHERE config->>'tag' LIKE :p"),
                {"p": f"{prefix}%"}).one()
        engine.dispose()
        ok = answered <= rows == distinct <= sent
        return [f"{self.name}: deployment requests: actions {rows} ({distinct} distinct tags) for {answered} "
                f"answered and {sent} sent: {'OK' if ok else 'MISMATCH'}"]

    @property
    def url(self) -> str:
        raise NotImplementedError

    @property
    def pid(self) -> int:
        raise NotImplementedError

    def check(self, prefix: str, answered: int, sent: int, body: bytes, signature: str) -> list[str]:
        """One row per delivery id, and redeliveries answered as duplicates without new rows."""
        from redis import Redis
        from sqlalchemy import create_engine, text

        engine = create_engine(self.database_url)
        like = {"p": f"{prefix}%"}
        with engine.connect() as connection:
            settle(connection, text("SELECT count(*) FROM deliveries"))
            rows, distinct = connection.execute(text(
                "SELECT count(*), count(DISTINCT delivery_id) FROM deliveries WHERE delivery_id LIKE :p"), like).one()
            # Redeliveries of recorded deliveries (some generated ids were never sent: wrk prepares
            # each connection's next request before it knows it will send it).
            sample = list(connection.execute(text(
                "SELECT delivery_id FROM deliveries WHERE delivery_id LIKE :p ORDER BY random() LIMIT 1000"),
                like).scalars())
        again = resend(self.url, body, signature, sample)
        with engine.connect() as connection:
            rows_after = connection.execute(text("SELECT count(*) FROM deliveries WHERE delivery_id LIKE :p"),
                                            like).scalar()
        engine.dispose()
        redis = Redis.from_url(self.redis_url)
        queued = sum(redis.llen(key) for key in self.queue_keys)
        redis.close()
        ok = answered <= rows == distinct <= sent
        return [f"{self.name}: deliveries rows {rows} ({distinct} distinct ids) for {answered} answered and {sent} "
                f"sent: {'OK' if ok else 'MISMATCH'}",
                f"{self.name}: {len(sample)} of them sent again: {again}; rows after: {rows_after}: "
                f"{'OK' if again == {200: len(sample)} and rows_after == rows else 'MISMATCH'}",
                f"{self.name}: waiting on {' + '.join(self.queue_keys)} (nothing consumed them; warm-up deliveries "
                f"included): {queued}"]


class Sami(Recording):
    """`sami serve` of one version of the code, on a database of its own."""

    # RQ's queue, and the list of deliveries handed off to the workers (newer code).
    queue_keys = ("rq:queue:sami-actions", "sami:deliveries:new")

    def __init__(self, name: str, code: Path, postgres, redis_server, redis_db: int, tmp: Path, repo: Path):
        from tests.support.sami_server import SamiServer, sami_env

        self.name, self.tag = name, f"sami{redis_db}"
        self.redis_url = redis_server.url(redis_db)
        env = sami_env(SAMI_MODE="production", SAMI_REDIS_URL=self.redis_url,
                       SAMI_INSTANCE_DIR=str(tmp / f"instance-{redis_db}"), PYTHONPATH=str(code),
                       SAMI_DEPLOYMENTS_REPO=str(repo))
        env.update({"SAMI_SECRET_KEY": secrets.token_hex(16), "SAMI_WEBHOOK_SECRET": HMAC_KEY})
        self.database_url = create_database(postgres, f"bench_webhooks_{redis_db}", code, env, name)
        self.token = create_token(code, env, self.database_url)
        env["SAMI_DATABASE_URL"] = self.database_url
        self.server = SamiServer(env, tmp / f"sami-{redis_db}.log", cwd=code)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def pid(self) -> int:
        return self.server.process.pid

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()


class Reference:
    """The bare app or the durable limit, served by this script in a gunicorn of its own."""

    def __init__(self, kind: str, name: str, tmp: Path, env: dict[str, str]):
        from tests.support.servers import free_port

        self.kind, self.name, self.tag = kind, name, kind
        self.port = free_port()
        self.log = tmp / f"{kind}.log"
        self.env = {**env, "PYTHONPATH": str(ROOT), "BENCH_WEBHOOK_KEY": HMAC_KEY}
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def start(self) -> None:
        from tests.support.sami_server import SamiServer

        self.process = subprocess.Popen(
            [sys.executable, __file__, f"--serve-{self.kind}", f"127.0.0.1:{self.port}"], env=self.env,
            stdout=open(self.log, "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
        probe = SamiServer(self.env, self.log, port=self.port)
        while not probe.healthy():
            if self.process.poll() is not None:
                raise SystemExit(f"the {self.name} app did not start:\n" + self.log.read_text()[-2000:])
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def seed_deployments(database_url: str) -> None:
    """The durable limit's deployments, Running (Sami creates its own with its first requests)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    with engine.begin() as connection:
        for number in range(ENVIRONMENTS):
            connection.execute(text(
                "INSERT INTO deployments (name, service, environment, type, state, app_overrides, "
                "deployment_overrides, links, created_at, updated_at, status_changed_at, check_failures, version) "
                "VALUES (:name, :service, :environment, 'swarm', 'Running', '{}', '{}', '[]', now(), now(), now(), "
                "0, 1)"),
                {"name": f"{SERVICE}-e{number}", "service": SERVICE, "environment": f"e{number}"})
    engine.dispose()


class Durable(Reference, Recording):
    """The durable limit, on a database of its own migrated by the working tree."""

    queue_keys = (DURABLE_QUEUE,)

    def __init__(self, postgres, redis_server, redis_db: int, tmp: Path):
        from tests.support.sami_server import sami_env

        self.redis_url = redis_server.url(redis_db)
        self.database_url = create_database(postgres, "bench_webhooks_durable", ROOT, sami_env(), "the durable limit")
        self.token = create_token(ROOT, sami_env(), self.database_url)
        seed_deployments(self.database_url)
        super().__init__("durable", "durable limit", tmp, {
            **sami_env(), "BENCH_DURABLE_DATABASE": self.database_url, "BENCH_DURABLE_REDIS": self.redis_url})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=20, help="seconds per measured run (at most)")
    parser.add_argument("--requests", type=int, default=20000, help="answers per measured run (at most)")
    parser.add_argument("--connections", default="32,4", help="wrk connections; a comma-separated list runs each")
    parser.add_argument("--rounds", type=int, default=1, help="measured runs per server, alternating")
    parser.add_argument("--warmup", type=float, default=3, help="seconds of unmeasured load before each run")
    parser.add_argument("--code", default=".", help="serve Sami from this commit or folder ('.': the working tree)")
    parser.add_argument("--baseline", default=None, help="also serve Sami from this commit or folder, to compare")
    parser.add_argument("--endpoints", default="webhook,deploy",
                        help="what to measure: webhook (deliveries), deploy (deployment requests), or both")
    args = parser.parse_args()
    endpoints = [part.strip() for part in args.endpoints.split(",") if part.strip()]
    if not endpoints or set(endpoints) - set(ENDPOINTS):
        raise SystemExit(f"--endpoints takes {', '.join(ENDPOINTS)}")
    connection_counts = [int(part) for part in str(args.connections).split(",") if part.strip()]
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: run scripts/install-test-deps (or apt-get install wrk)")

    sys.path.insert(0, str(ROOT))
    from tests.support import github_payloads
    from tests.support.sami_server import sami_env
    from tests.support.servers import PostgresServer, RedisServer, running

    def code_of(rev: str, tmp: Path) -> Path:
        if rev == ".":
            return ROOT
        return Path(rev) if Path(rev).is_dir() else extract(rev, tmp / f"code-{rev}")

    with tempfile.TemporaryDirectory(prefix="sami-bench-") as tmp, \
            running(PostgresServer()) as postgres, running(RedisServer()) as redis_server:
        tmp = Path(tmp)
        body = github_payloads.body(github_payloads.example("pull_request", "synchronize"))
        body_file = tmp / "pull_request.synchronize.json"
        body_file.write_bytes(body)
        signature = github_payloads.sign(body, HMAC_KEY)
        script = tmp / "deliveries.lua"
        script.write_text(WRK_SCRIPT)

        repo = write_repo(tmp / "deployments")
        sami = Sami("sami serve", code_of(args.code, tmp), postgres, redis_server, 1, tmp, repo)
        servers: list = [Reference("bare", "bare Flask", tmp, sami_env()), Durable(postgres, redis_server, 3, tmp),
                         sami]
        if args.baseline:
            servers.append(Sami(f"baseline {args.baseline}", code_of(args.baseline, tmp), postgres, redis_server, 2,
                                tmp, repo))
        checks: list[str] = []
        # Delivery ids and tags: run id, server, endpoint, connections, round, then wrk's thread and its
        # counter (the Lua side): unique across servers, endpoints, runs and wrk threads.
        run_id = uuid.uuid4().hex[:8]
        results: dict[tuple[str, str, int], list[dict]] = {}
        answered = {(server.name, endpoint): 0 for server in servers for endpoint in endpoints}
        sent = dict(answered)

        def arguments(server, endpoint: str) -> tuple[list[str], str]:
            if endpoint == "webhook":
                return [str(body_file), signature], PATH
            return ["deploy", server.token, str(ENVIRONMENTS)], DEPLOY_PATH

        try:
            for server in servers:
                server.start()
            postmaster = int((postgres.data / "postmaster.pid").read_text().split()[0])
            for endpoint in endpoints:
                # The bare app records nothing: it is measured with deliveries only.
                measured = [server for server in servers if endpoint == "webhook" or isinstance(server, Recording)]
                for connections in connection_counts:
                    for round_ in range(args.rounds):
                        order = measured if round_ % 2 == 0 else list(reversed(measured))
                        for server in order:
                            extra, path = arguments(server, endpoint)
                            label = f"{run_id}-{server.tag}-{endpoint[0]}{connections}-{round_}"
                            if args.warmup:
                                wrk(server.url, script, f"warm-{label}", 10**9, args.warmup, connections, extra, path)
                            roots = {"server": server.pid, "postgresql": postmaster,
                                     "redis": redis_server.process.pid}
                            before = cpu_seconds(roots)
                            result = wrk(server.url, script, f"bench-{run_id}-{server.tag}-{endpoint[0]}{connections}"
                                         f"-{round_}", args.requests, args.duration, connections, extra, path)
                            after = cpu_seconds(roots)
                            result["cpu_ms"] = {part: (after[part] - before[part]) * 1000 / max(1, result["requests"])
                                                for part in roots}
                            results.setdefault((server.name, endpoint, connections), []).append(result)
                            answered[server.name, endpoint] += result["requests"]
                            sent[server.name, endpoint] += result["sent"]
                            print(json.dumps({"endpoint": endpoint, "connections": connections,
                                              **report(server.name, result)}), flush=True)
            for server in servers:
                if not isinstance(server, Recording):
                    continue
                if "webhook" in endpoints:
                    checks += server.check(f"bench-{run_id}-{server.tag}-w", answered[server.name, "webhook"],
                                           sent[server.name, "webhook"], body, signature)
                if "deploy" in endpoints:
                    checks += server.check_deploys(f"bench-{run_id}-{server.tag}-d", answered[server.name, "deploy"],
                                                   sent[server.name, "deploy"])
        finally:
            for server in servers:
                server.stop()

    print()
    print(f"wrk -t 2, {args.rounds} run(s) per server, endpoint and connection count of at most {args.duration:g} s "
          f"or {args.requests} answers; deliveries: {len(body)}-byte pull_request.synchronize body; deployment "
          f"requests: updates of {ENVIRONMENTS} deployments in turn")
    width = max(len(server.name) for server in servers)
    print(f"{'server':<{width}} {'endpoint':>8} {'conns':>5} {'requests':>9} {'req/s':>7} {'p50 ms':>7} {'p90 ms':>7} "
          f"{'p99 ms':>7} {'max ms':>7} {'errors':>6}   CPU ms per request: server (all its processes), PostgreSQL, "
          "Redis")
    rates: dict[tuple[str, str, int], float] = {}
    for (name, endpoint, connections), runs in results.items():
        for result in runs:
            line = report(name, result)
            print(f"{name:<{width}} {endpoint:>8} {connections:>5} {line['requests']:>9} {line['rps']:>7.0f} "
                  f"{line['p50_ms']:>7.1f} {line['p90_ms']:>7.1f} {line['p99_ms']:>7.1f} {line['max_ms']:>7.1f} "
                  f"{line['errors']:>6}   {result['cpu_ms']['server']:.2f}, {result['cpu_ms']['postgresql']:.2f}, "
                  f"{result['cpu_ms']['redis']:.2f}")
        rates[name, endpoint, connections] = statistics.mean(report(name, result)["rps"] for result in runs)
    print()
    for endpoint in endpoints:
        for connections in connection_counts:
            for server in servers:
                if isinstance(server, Sami):
                    own = rates[server.name, endpoint, connections]
                    bare = (f", {own / rates['bare Flask', endpoint, connections]:.0%} of the bare app's"
                            if endpoint == "webhook" else "")
                    print(f"{ENDPOINTS[endpoint]}, {connections} connections: {server.name} requests/s = "
                          f"{own / rates['durable limit', endpoint, connections]:.0%} of the durable limit's{bare}")
    print("\n".join(checks))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] in ("--serve-bare", "--serve-durable"):
        sys.path.insert(0, str(ROOT))
        serve(sys.argv[1].removeprefix("--serve-"), sys.argv[2])
    else:
        main()
