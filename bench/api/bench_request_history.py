"""Requests against deployments with a long history (by default 500 earlier actions with 100 KB
of log each): `POST /deployment_request` for one, `GET /api/v1/deployments/NAME` for another (whose
latest actions stay the ones with logs), timed for two versions of the code side by side in one
run, on one database, in alternating rounds.

    .venv/bin/python bench/api/bench_request_history.py --baseline REV [--candidate REV]
        [--actions 500] [--log-kb 100] [--requests 20] [--rounds 5]

Each version runs in a process of its own from `git archive REV` (``--candidate .``, the default,
is the working tree). Needs what the test suite needs (PostgreSQL, Redis): it starts private
servers on free ports and stops them at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICE = "bench"
POSTED, SHOWN = "stage", "qa"  # the environments requests are posted to, and shown


def write_repo(root: Path, environments: tuple[str, ...] = (POSTED, SHOWN)) -> Path:
    """A deployments repo with service ``bench`` in ``environments`` (its scripts never run here)."""
    import yaml

    for environment in environments:
        folder = root / "services" / SERVICE / "swarm" / environment
        folder.mkdir(parents=True)
        (folder / "stack.yml").write_text(yaml.safe_dump(
            {"version": "3.8", "services": {"app": {"image": "local/bench:latest"}}}))
        (folder / "sami.yaml").write_text(yaml.safe_dump({
            "version": "v1beta", "service_name": SERVICE, "type": "swarm", "image": "local/bench",
            "files": ["stack.yml"], "oob": {"update-image": {"file": "stack.yml", "path": "services.app.image"}}}))
    return root


def extract(rev: str, into: Path) -> Path:
    """The code of ``rev`` (bot/, workers/, the schema) in a folder of its own."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "bot", "workers", "manifests_schema"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def child(code: Path, mode: str, config: dict, **params) -> dict:
    """Run this file in ``mode`` with ``code`` first on sys.path; its last stdout line is JSON."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAMI_")}
    env["PYTHONPATH"] = str(code)
    result = subprocess.run([sys.executable, __file__, "--child", mode, json.dumps({"config": config, **params})],
                            env=env, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise SystemExit(f"{mode} in {code} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# --- in the child process: the code under test is imported from PYTHONPATH ---------------------

def log_text(size: int) -> str:
    """``size`` characters of log lines that compress about as well as real output does (a
    repeated character would be stored compressed to almost nothing)."""
    rng = random.Random(size)
    lines, length = [], 0
    while length < size:
        line = f"step {len(lines):05d}: layer sha256:{rng.getrandbits(128):032x} pulled in {rng.random():.3f} s\n"
        lines.append(line)
        length += len(line)
    return "".join(lines)[:size]


def seed(config: dict, actions: int, log_kb: int) -> dict:
    """Migrate, create an admin token, and two Running deployments with ``actions`` earlier actions."""
    from sqlalchemy import insert, select, update
    from sqlalchemy.orm import Session

    from bot.core import db
    from bot.core.models import Action, Deployment
    from bot.core.states import ActionState, DeploymentState
    from bot.services.tokens import Scopes, create_token
    from bot.web import create_app

    db.upgrade(config["database_url"])
    engine = db.make_engine(config["database_url"])
    with Session(engine) as session:
        token = create_token(session, "bench", Scopes(admin=True))
        session.commit()
    client = create_app(config).test_client()
    log = log_text(log_kb * 1024)
    for environment in (POSTED, SHOWN):
        response = client.post("/deployment_request", json={"service": SERVICE, "environment": environment,
                                                             "tag": "v0"}, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 202, response.json
        with Session(engine) as session:
            deployment_id = session.scalar(select(Deployment.id).where(Deployment.name == response.json["deployment"]))
            session.execute(update(Action).where(Action.deployment_id == deployment_id)
                            .values(state=ActionState.SUCCEEDED, log=log))
            for start in range(0, actions - 1, 50):
                session.execute(insert(Action), [
                    {"deployment_id": deployment_id, "kind": "update", "state": ActionState.SUCCEEDED,
                     "requested_by": "bench", "origin": "api", "config": {}, "log": log}
                    for _ in range(start, min(actions - 1, start + 50))])
            session.commit()
    with Session(engine) as session:
        session.execute(update(Deployment).values(state=DeploymentState.RUNNING))
        session.commit()
    return {"token": token}


def timed(config: dict, token: str, requests: int) -> dict:
    """Milliseconds of each POST /deployment_request and GET /api/v1/deployments/NAME."""
    from bot.web import create_app

    client = create_app(config).test_client()
    headers = {"Authorization": f"Bearer {token}"}

    def post(tag: str):
        response = client.post("/deployment_request", json={"service": SERVICE, "environment": POSTED,
                                                             "tag": tag}, headers=headers)
        assert response.status_code == 202, response.json
        return response.json

    def get():
        response = client.get(f"/api/v1/deployments/{SERVICE}-{SHOWN}", headers=headers)
        assert response.status_code == 200, response.json
        return response.json

    post("warm-up"), get()
    posts, gets, answer = [], [], None
    for number in range(requests):
        started = time.perf_counter()
        answer = post(f"v{number}")
        posts.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        get()
        gets.append((time.perf_counter() - started) * 1000)
    return {"post": posts, "get": gets, "answer": {k: answer[k] for k in ("deployment", "kind", "state")}}


# --- in the parent process ----------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", required=True, help="the commit to compare against")
    parser.add_argument("--candidate", default=".", help="the commit to measure ('.': the working tree)")
    parser.add_argument("--actions", type=int, default=500)
    parser.add_argument("--log-kb", type=int, default=100)
    parser.add_argument("--requests", type=int, default=20, help="requests of each kind per round and version")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from sqlalchemy import create_engine, text

    from tests.support.servers import PostgresServer, RedisServer, running

    with tempfile.TemporaryDirectory(prefix="sami-bench-") as tmp, \
            running(PostgresServer()) as postgres, running(RedisServer()) as redis_server:
        tmp = Path(tmp)
        versions = {"baseline": extract(args.baseline, tmp / "baseline"),
                    "candidate": ROOT if args.candidate == "." else extract(args.candidate, tmp / "candidate")}
        admin = create_engine(postgres.url(), isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text('CREATE DATABASE "bench_history"'))
        admin.dispose()
        config = {"mode": "test", "database_url": postgres.url("bench_history"), "redis_url": redis_server.url(1),
                  "deployments_repo": str(write_repo(tmp / "deployments")), "instance_dir": str(tmp / "instance"),
                  "base_domain": "example.test", "log_level": "warning"}
        token = child(versions["candidate"], "seed", config, actions=args.actions, log_kb=args.log_kb)["token"]
        results = {name: {"post": [], "get": []} for name in versions}
        answers = {}
        for round_ in range(args.rounds):
            order = list(versions) if round_ % 2 == 0 else list(reversed(versions))
            for name in order:
                result = child(versions[name], "time", config, token=token, requests=args.requests)
                results[name]["post"] += result["post"]
                results[name]["get"] += result["get"]
                answers[name] = result["answer"]
        assert answers["baseline"] == answers["candidate"], answers

    print(f"{args.actions} earlier actions with {args.log_kb} KB of log each; "
          f"{args.rounds} rounds x {args.requests} requests of each kind per version")
    print(f"{'request':<34} {'baseline ms':>18} {'candidate ms':>18} {'ratio':>7}")
    for kind, label in (("post", "POST /deployment_request"), ("get", f"GET /api/v1/deployments/{SERVICE}-{SHOWN}")):
        base, cand = statistics.median(results["baseline"][kind]), statistics.median(results["candidate"][kind])
        p90 = {name: statistics.quantiles(results[name][kind], n=10)[-1] for name in versions}
        print(f"{label:<34} {base:>8.1f} (p90 {p90['baseline']:>6.1f}) {cand:>8.1f} (p90 {p90['candidate']:>6.1f}) "
              f"{base / cand:>6.1f}x")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        params = json.loads(sys.argv[3])
        run = {"seed": seed, "time": timed}[sys.argv[2]]
        print(json.dumps(run(**params)))
    else:
        main()
