"""The status page and the deployment list API under gunicorn, on a large database; and 500 open
live-update streams held by one web process.

    .venv/bin/python bench/page/bench_page.py [--deployments 10000] [--actions 100000]
        [--big-logs 2000] [--requests 200] [--streams 500]

Starts a private PostgreSQL and Redis (so no worker or scheduler runs in the web process), fills
the database (deployments in 40 services, 10 actions each, ``--big-logs`` of them with 50 KiB of
log), then runs `sami serve` (gunicorn, 2 processes of 8 threads) and times requests one after
the other on a kept-alive connection over loopback, so the figure is the server's time plus a
fraction of a millisecond. Then `sami serve --workers 1` holds ``--streams`` open ``/events``
streams, a deployment changes in the database, and the time until every stream has the change
is measured, with the web process's thread count and a page request while the streams are open.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import random
import selectors
import socket
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sqlalchemy import text  # noqa: E402
from sqlalchemy.orm import sessionmaker  # noqa: E402

from bot.core import db  # noqa: E402
from bot.services.tokens import Scopes, create_token  # noqa: E402
from tests.support.sami_server import SamiServer, sami_env  # noqa: E402
from tests.support.servers import PostgresServer, RedisServer, running  # noqa: E402

STATES = ["Running"] * 70 + ["Failure"] * 8 + ["Archived"] * 10 + ["UpdatePending"] * 5 + ["CleanupFailed"] * 2 + \
    ["Removed"] * 5
SERVICES = [f"svc{i:02d}" for i in range(40)]


def log_text(size: int, seed: int) -> str:
    rng = random.Random(seed)
    lines, length = [], 0
    while length < size:
        line = f"step {len(lines):05d}: layer sha256:{rng.getrandbits(128):032x} pulled in {rng.random():.3f} s\n"
        lines.append(line)
        length += len(line)
    return "".join(lines)[:size]


def seed(url: str, deployments: int, actions: int, big_logs: int) -> None:
    """Fill the database with COPY (fast and close to what years of use leave behind)."""
    engine = db.make_engine(url)
    rng = random.Random(7)
    now = datetime.now(UTC)
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        rows = io.StringIO()
        for i in range(deployments):
            service = SERVICES[i % len(SERVICES)]
            environment = f"pr-{i}" if i % 3 else f"env{i:05d}"
            pr = str(i) if i % 3 else "\\N"
            state = rng.choice(STATES)
            updated = now - timedelta(seconds=rng.randrange(0, 90 * 86400))
            links = json.dumps([{"name": "app", "url": f"https://{service}-{environment}.example.test"}])
            rows.write("\t".join([str(i + 1), f"{service}-{environment}", service, environment, "swarm", state,
                                  f"v{rng.randrange(1, 500)}", f"local/{service}:v1", "{}", "{}", links,
                                  f"acme/{service}" if pr != "\\N" else "\\N", pr, f"{rng.getrandbits(160):040x}",
                                  updated.isoformat(), updated.isoformat(), updated.isoformat(), "1"]) + "\n")
        rows.seek(0)
        cursor.copy_expert(
            "COPY deployments (id, name, service, environment, type, state, tag, image, app_overrides, "
            "deployment_overrides, links, source_repo, pull_request, sha, created_at, updated_at, status_changed_at, "
            "version) FROM STDIN", rows)
        per = max(1, actions // deployments)
        big_every = max(1, actions // max(1, big_logs)) if big_logs else 0
        big = log_text(50 * 1024, 1).replace("\\", "\\\\").replace("\n", "\\n")
        small = "probe update ok\\n# update: exit 0 after 1.2 s\\n"
        batch = io.StringIO()
        for n in range(actions):
            deployment_id = n // per % deployments + 1
            created = now - timedelta(seconds=rng.randrange(0, 90 * 86400))
            log = big if big_every and n % big_every == 0 else small
            batch.write("\t".join([str(n + 1), str(deployment_id), "update", "succeeded", "token:ci", "api",
                                   json.dumps({"tag": "v1"}), "0", log, "f", created.isoformat(),
                                   created.isoformat(), "1200"]) + "\n")
            if batch.tell() > 32 * 1024 * 1024:
                batch.seek(0)
                cursor.copy_expert("COPY actions (id, deployment_id, kind, state, requested_by, origin, config, "
                                   "exit_code, log, log_truncated, created_at, finished_at, duration_ms) FROM STDIN",
                                   batch)
                batch = io.StringIO()
        batch.seek(0)
        cursor.copy_expert("COPY actions (id, deployment_id, kind, state, requested_by, origin, config, exit_code, "
                           "log, log_truncated, created_at, finished_at, duration_ms) FROM STDIN", batch)
        cursor.execute("SELECT setval('deployments_id_seq', (SELECT max(id) FROM deployments))")
        cursor.execute("SELECT setval('actions_id_seq', (SELECT max(id) FROM actions))")
        raw.commit()
        cursor.execute("ANALYZE")
        raw.commit()
    finally:
        raw.close()
    engine.dispose()


def timed(port: int, paths: list[str], count: int, headers: dict[str, str]) -> dict[str, dict]:
    """Per path: p50, p95 and max milliseconds of ``count`` requests, interleaved round-robin."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    times: dict[str, list[float]] = {p: [] for p in paths}
    sizes: dict[str, int] = {}
    for _ in range(3):  # warm up: imports, template compilation, the pools
        for path in paths:
            connection.request("GET", path, headers=headers)
            connection.getresponse().read()
    for _ in range(count):
        for path in paths:
            started = time.perf_counter()
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            body = response.read()
            times[path].append((time.perf_counter() - started) * 1000)
            assert response.status == 200, (path, response.status, body[:300])
            sizes[path] = len(body)
    connection.close()
    return {p: {"p50": round(statistics.median(t), 1), "p95": round(sorted(t)[int(len(t) * 0.95) - 1], 1),
                "max": round(max(t), 1), "bytes": sizes[p]} for p, t in times.items()}


def worker_pid(server: SamiServer) -> int:
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children").read_text().split()
    return int(children[0])


def threads_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def streams(port: int, count: int, url: str, pid: int) -> dict:
    """Open ``count`` streams, change a deployment, time until each stream has the change."""
    selector = selectors.DefaultSelector()
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall(b"GET /events HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n")
        sock.setblocking(False)
        socks.append(sock)
        selector.register(sock, selectors.EVENT_READ, {"seen": b"", "at": None})
    deadline = time.monotonic() + 120
    hello = 0
    while hello < count:
        assert time.monotonic() < deadline, f"only {hello} of {count} streams opened"
        for key, _ in selector.select(timeout=1):
            data = key.data
            data["seen"] += key.fileobj.recv(65536)
            if b"event: hello" in data["seen"] and not data.get("hello"):
                data["hello"] = True
                hello += 1
    time.sleep(2.5)  # every poller has taken note of the table as it is
    engine = db.make_engine(url)
    with engine.begin() as connection:
        changed_at = time.monotonic()
        connection.execute(text("UPDATE deployments SET state = 'Failure', version = version + 1, "
                                "updated_at = now() WHERE id = 1"))
    engine.dispose()
    got = 0
    deadline = time.monotonic() + 30
    while got < count and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=1):
            data = key.data
            data["seen"] += key.fileobj.recv(65536)
            if data["at"] is None and b"event: change" in data["seen"]:
                data["at"] = time.monotonic() - changed_at
                got += 1
    delays = sorted(key.data["at"] for key in selector.get_map().values() if key.data["at"] is not None)
    threads = threads_of(pid)
    page = timed(port, ["/?service=svc07&state=Running"], 20, {})
    for sock in socks:
        sock.close()
    return {"streams": count, "reached": len(delays), "p50_s": round(statistics.median(delays), 2),
            "max_s": round(max(delays), 2), "web_process_threads_with_streams_open": threads,
            "page_while_streams_open_ms": page}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deployments", type=int, default=10000)
    parser.add_argument("--actions", type=int, default=100000)
    parser.add_argument("--big-logs", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--streams", type=int, default=500)
    args = parser.parse_args()
    results: dict = {"args": vars(args)}
    with running(PostgresServer()) as postgres, running(RedisServer()) as redis, \
            tempfile.TemporaryDirectory() as tmp:
        from tests.conftest import create_database

        url = create_database(postgres, "sami_bench_page")
        db.upgrade(url)
        started = time.monotonic()
        seed(url, args.deployments, args.actions, args.big_logs)
        results["seed_s"] = round(time.monotonic() - started, 1)
        engine = db.make_engine(url)
        with sessionmaker(bind=engine)() as session:
            admin = create_token(session, "bench-admin", Scopes(admin=True))
            session.commit()
            size = session.execute(text("SELECT pg_size_pretty(pg_database_size(current_database()))")).scalar()
        engine.dispose()
        results["database_size"] = size
        env = sami_env(SAMI_DATABASE_URL=url, SAMI_REDIS_URL=redis.url(0), SAMI_INSTANCE_DIR=f"{tmp}/instance",
                       SAMI_MODE="production", SAMI_SECRET_KEY="k" * 32, SAMI_WEBHOOK_SECRET="w" * 32,
                       SAMI_LOG_LEVEL="warning")
        auth = {"Authorization": f"Bearer {admin}"}
        paths = ["/?service=svc07&state=Running",
                 "/?q=pr-12",
                 "/?sort=attention",
                 "/?service=svc07&sort=-updated&limit=200",
                 "/api/v1/deployments?service=svc07&state=Running",
                 "/api/v1/deployments?q=pr-12",
                 "/api/v1/deployments?sort=attention&limit=200",
                 "/deployments/svc00-env00000"]
        with SamiServer(env, Path(tmp) / "serve.log", "--workers", "2") as server:
            # a cursor from the middle of the list, as the page's "Next page" gives
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            cursor = None
            for _ in range(args.deployments // 400):  # about half way down
                suffix = f"&cursor={cursor}" if cursor else ""
                connection.request("GET", f"/api/v1/deployments?sort=-updated&limit=200{suffix}", headers=auth)
                cursor = json.loads(connection.getresponse().read())["next_cursor"] or cursor
            connection.close()
            paths.append(f"/api/v1/deployments?sort=-updated&limit=200&cursor={cursor}")
            results["requests"] = timed(server.port, paths, args.requests, auth)
        with SamiServer(env, Path(tmp) / "serve-one.log", "--workers", "1", "--threads", "8") as server:
            pid = worker_pid(server)
            results["web_process_threads_before"] = threads_of(pid)
            results["live"] = streams(server.port, args.streams, url, pid)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
