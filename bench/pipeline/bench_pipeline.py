"""Pipeline benchmarks: bot overhead per action, accepted -> script started latency, a burst of pull
requests with quick pushes through signed webhooks, and a swarm deployment through Sami against
doing it by hand. Each compares side by side in one run.

    .venv/bin/python bench/pipeline/bench_pipeline.py [--actions 40] [--latency 200] [--burst 200] [--swarm 3]

Needs what the test suite needs (PostgreSQL, Redis; root and docker.io for --swarm): it starts
private servers on free ports and stops them at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
import yaml  # noqa: E402
from sqlalchemy import create_engine, select, text  # noqa: E402
from sqlalchemy.orm import Session, sessionmaker  # noqa: E402

from bot.core import db  # noqa: E402
from bot.core.config import settings_from_mapping  # noqa: E402
from bot.core.models import Action, Delivery, DeliveryStatus, Deployment  # noqa: E402
from bot.core.states import DeploymentState  # noqa: E402
from bot.services.deployments import Context, DeploymentRequest, request_deployment  # noqa: E402
from tests.support import github_payloads  # noqa: E402
from tests.support.servers import PostgresServer, RedisServer  # noqa: E402
from workers.context import ContextWorker, build_context  # noqa: E402
from workers.queue import ACTIONS_QUEUE, CHECKS_QUEUE, RQBroker  # noqa: E402

WEBHOOK_SECRET = secrets.token_hex(16)
NOOP_OPERATIONS = ("config_check", "create", "update", "check", "info", "archive", "unarchive",
                   "archive_check", "cleanup")


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


def write_repo(root: Path, stack: dict | None = None, type_: str = "swarm", scripts: bool = True) -> Path:
    """A deployments repo with service ``bench`` (stage and pull_request)."""
    if scripts:
        folder = root / "scripts" / "noop"
        folder.mkdir(parents=True)
        for operation in NOOP_OPERATIONS:
            path = folder / operation
            path.write_text("#!/bin/sh\nexit 0\n")
            path.chmod(0o755)
    for environment in ("stage", "pull_request"):
        folder = root / "services" / "bench" / type_ / environment
        folder.mkdir(parents=True)
        (folder / "stack.yml").write_text(yaml.safe_dump(stack or {
            "version": "3.8", "services": {"app": {"image": "local/bench:latest"}}}))
        manifest = {"version": "v1beta", "service_name": "bench", "type": type_, "image": "local/bench",
                    "files": ["stack.yml"], "status_timeout": "2m",
                    "oob": {"update-image": {"file": "stack.yml", "path": "services.app.image"}},
                    "allowed_overrides": {"deployment": ["port"]}}
        if scripts:
            manifest["control_scripts"] = "scripts/noop"
        if environment == "pull_request":
            manifest.update(pr_deploy=True, repository="acme/bench")
        (folder / "sami.yaml").write_text(yaml.safe_dump(manifest))
    return root


class Servers:
    def __init__(self):
        self.postgres = PostgresServer()
        self.redis = RedisServer()

    def __enter__(self):
        self.postgres.start()
        self.redis.start()
        return self

    def __exit__(self, *exc):
        self.redis.stop()
        self.postgres.stop()

    def database(self) -> str:
        name = f"bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(self.postgres.url(), isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        url = self.postgres.url(name)
        db.upgrade(url)
        return url


class WorkerStack:
    """A database, Redis index, web app (in this process), `sami worker` processes and, with
    ``scheduler``, a `sami scheduler`; ``settings`` adds SAMI_* variables of the workers and the scheduler."""

    def __init__(self, servers: Servers, tmp: Path, redis_db: int, workers: int, name: str,
                 settings: dict[str, str] | None = None, scheduler: bool = False):
        self.repo = write_repo(tmp / f"{name}-repo")
        self.url = servers.database()
        self.redis_url = servers.redis.url(redis_db)
        redis.Redis.from_url(self.redis_url).flushdb()
        instance = str(tmp / f"{name}-instance")
        env = {k: v for k, v in os.environ.items() if not k.startswith("SAMI_")}
        env.update({"SAMI_DATABASE_URL": self.url, "SAMI_REDIS_URL": self.redis_url,
                    "SAMI_DEPLOYMENTS_REPO": str(self.repo), "SAMI_INSTANCE_DIR": instance,
                    "SAMI_LOG_LEVEL": "warning", **(settings or {})})
        from bot.services.tokens import Scopes, create_token
        from bot.web import create_app

        self.engine = create_engine(self.url)
        with Session(self.engine) as session:
            self.token = create_token(session, "bench", Scopes(admin=True))
            session.commit()
        self.app = create_app({"mode": "test", "database_url": self.url, "redis_url": self.redis_url,
                               "deployments_repo": str(self.repo), "instance_dir": instance,
                               "webhook_secret": WEBHOOK_SECRET})
        self.client = self.app.test_client()
        commands = [["worker"]] * workers + ([["scheduler", "--interval", "2"]] if scheduler else [])
        self.processes = [subprocess.Popen([sys.executable, "-m", "bot.cli", *command], env=env,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                          for command in commands]
        time.sleep(3)  # let the workers start

    def request(self, body: dict) -> int:
        response = self.client.post("/deployment_request", data=json.dumps(body), content_type="application/json",
                                    headers={"Authorization": f"Bearer {self.token}"})
        assert response.status_code == 202, response.json
        return response.json["action_id"]

    def action(self, action_id: int) -> Action:
        with Session(self.engine) as session:
            return session.get(Action, action_id)

    def wait_all(self, timeout: float = 120) -> list[Action]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with Session(self.engine) as session:
                actions = list(session.scalars(select(Action).order_by(Action.id)))
            if all(a.finished_at is not None for a in actions):
                return actions
            time.sleep(0.2)
        raise RuntimeError("actions did not finish")

    def close(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.wait(20)
        self.engine.dispose()


def bench_overhead(servers: Servers, count: int, tmp: Path) -> dict:
    """Per update through Sami (accepted -> finished, one `sami worker`) vs the same scripts run directly."""
    stack = WorkerStack(servers, tmp, redis_db=2, workers=1, name="overhead")
    manifest_dir = stack.repo / "services" / "bench" / "swarm" / "stage"
    scripts = stack.repo / "scripts" / "noop"

    def through_sami(tag: str) -> float:
        action_id = stack.request({"service": "bench", "environment": "stage", "tag": tag})
        while (action := stack.action(action_id)).finished_at is None:
            time.sleep(0.002)
        assert action.state.value == "succeeded", action.error
        return (action.finished_at - action.created_at).total_seconds()

    def directly(tag: str) -> float:
        # What the worker runs for an update that settles: config_check, update, check, info.
        started = time.perf_counter()
        for operation in ("config_check", "update", "check", "info"):
            subprocess.run([str(scripts / operation), "--name", "bench-stage", "--tag", tag,
                            "--manifest-dir", str(manifest_dir)], check=True, env={"PATH": os.environ["PATH"]})
        return time.perf_counter() - started

    try:
        through_sami("warmup")
        sami_times, direct_times = [], []
        for n in range(count):  # interleaved, so both see the same machine
            sami_times.append(through_sami(f"v{n}"))
            direct_times.append(directly(f"v{n}"))
    finally:
        stack.close()
    sami_ms = statistics.median(sami_times) * 1000
    direct_ms = statistics.median(direct_times) * 1000
    return {"actions": count, "sami_median_ms": round(sami_ms, 1), "direct_median_ms": round(direct_ms, 1),
            "overhead_median_ms": round(sami_ms - direct_ms, 1), "ratio": round(sami_ms / direct_ms, 2)}


def bench_latency(servers: Servers, count: int, tmp: Path, workers: int = 2, interval: float = 0.1) -> dict:
    """Accepted (action row written) -> first script started, with ``workers`` `sami worker` processes,
    one request every ``interval`` seconds, each for a deployment of its own."""
    stack = WorkerStack(servers, tmp, redis_db=3, workers=workers, name="latency")
    try:
        for n in range(count):
            stack.request({"service": "bench", "environment": "pull_request", "tag": "v1", "pull_request": n + 1})
            time.sleep(interval)
        actions = stack.wait_all()
    finally:
        stack.close()
    latencies = [(a.script_started_at - a.created_at).total_seconds() * 1000 for a in actions]
    return {"requests": count, "workers": workers, "per_second": round(1 / interval, 1),
            "p50_ms": round(percentile(latencies, 50), 1), "p99_ms": round(percentile(latencies, 99), 1),
            "max_ms": round(max(latencies), 1)}


def commit(pr: int, push: int) -> str:
    """A distinct head commit sha for push ``push`` (0: the one the pull request was opened at)."""
    return hashlib.sha256(f"{pr}-{push}".encode()).hexdigest()[:40]


def pull_request_event(action: str, pr: int, head: str) -> bytes:
    """GitHub's example ``pull_request.<action>`` delivery, moved to acme/bench pull request ``pr``."""
    payload = github_payloads.example("pull_request", action)
    payload["number"] = pr
    payload["repository"]["full_name"] = "acme/bench"
    pull = payload["pull_request"]
    pull["number"] = pr
    pull["base"]["repo"]["full_name"] = pull["head"]["repo"]["full_name"] = "acme/bench"
    pull["head"]["sha"] = head
    pull["state"] = "open"
    return github_payloads.body(payload)


def bench_burst(servers: Servers, prs: int, pushes: int, gap: float, window: int, tmp: Path, workers: int = 2,
                senders: int = 25) -> dict:
    """``prs`` pull requests opened and pushed to ``pushes`` times each, ``gap`` seconds apart (``senders``
    pull requests at a time), through signed webhooks to the web app, processed by `sami worker`
    processes and a `sami scheduler` with SAMI_PR_DEBOUNCE_SECONDS=``window``: scripts run per pull
    request (create and updates), and the time from a pull request's last push to its environment
    running it."""
    stack = WorkerStack(servers, tmp, redis_db=6 if window else 5, workers=workers, name=f"burst-{window}",
                        settings={"SAMI_PR_DEBOUNCE_SECONDS": str(window)}, scheduler=True)
    last_push: dict[int, datetime] = {}

    def post(action: str, pr: int, head: str) -> None:
        data = pull_request_event(action, pr, head)
        response = stack.app.test_client().post("/webhooks/github", data=data, headers=github_payloads.delivery_headers(
            "pull_request", data, WEBHOOK_SECRET))
        assert response.status_code == 202, response.get_data(as_text=True)

    def series(pr: int) -> None:
        post("opened", pr, commit(pr, 0))
        for push in range(1, pushes + 1):
            time.sleep(gap)
            post("synchronize", pr, commit(pr, push))
        last_push[pr] = datetime.now(UTC)

    def settled() -> bool:
        with Session(stack.engine) as session:
            waiting = session.scalar(select(Delivery.id).where(Delivery.status.in_(
                (DeliveryStatus.RECEIVED, DeliveryStatus.PROCESSING, DeliveryStatus.RETRYING))).limit(1))
            busy = session.scalar(select(Action.id).where(Action.finished_at.is_(None)).limit(1))
            return waiting is None and busy is None and session.scalar(
                select(Deployment.id).where(Deployment.lease_owner.is_not(None)).limit(1)) is None

    try:
        started = time.perf_counter()
        with ThreadPoolExecutor(senders) as pool:
            list(pool.map(series, range(1, prs + 1)))
        sent_in = time.perf_counter() - started
        deadline = time.monotonic() + 600
        while not settled():
            assert time.monotonic() < deadline, "the burst did not settle within 10 minutes"
            time.sleep(0.5)
        with Session(stack.engine) as session:
            deployments = {d.pull_request: d for d in session.scalars(select(Deployment))}
            ran = session.execute(select(Deployment.pull_request, Action.finished_at).join(Action)
                                  .where(Action.script_started_at.is_not(None),
                                         Action.kind.in_(("create", "update")))).all()
            failed = session.scalar(select(Delivery.id).where(Delivery.status == DeliveryStatus.FAILED).limit(1))
    finally:
        stack.close()
    runs = Counter(pr for pr, _ in ran)
    last_done = {}
    for pr, finished in ran:
        last_done[pr] = max(last_done.get(pr, finished), finished)
    lag = [(last_done[pr] - last_push[pr]).total_seconds() * 1000 for pr in last_push]
    wrong = [(pr, str(d.state), next((f"push {n}" for n in range(pushes + 1) if commit(pr, n) == d.sha), d.sha))
             for pr, d in deployments.items() if d.state is not DeploymentState.RUNNING or d.sha != commit(pr, pushes)]
    return {"window_s": window, "pull_requests": prs, "pushes_each": pushes, "gap_s": gap,
            "sent_in_s": round(sent_in, 1),
            "scripts_per_pr": dict(sorted(Counter(runs.values()).items())), "max_scripts": max(runs.values()),
            "failed_deliveries": failed is not None,
            "not_running_at_last_push": wrong[:5] + ([f"{len(wrong) - 5} more"] if len(wrong) > 5 else []),
            "last_push_to_done_p50_ms": round(percentile(lag, 50)),
            "last_push_to_done_p99_ms": round(percentile(lag, 99)), "last_push_to_done_max_ms": round(max(lag))}


def bench_swarm(servers: Servers, runs: int, tmp: Path) -> dict:
    """/deployment_request -> Running for a one-service stack, vs docker stack deploy + waiting."""
    from tests.support.docker import free_port, start_swarm, stop_swarm

    swarm = start_swarm()
    try:
        swarm.retag("local/bench:v1")
        port = free_port()
        stack = {"version": "3.8", "services": {"app": {
            "image": "local/bench:v1", "command": ["httpd", "-f", "-p", "127.0.0.1:${PORT:-18080}", "-h", "/"],
            "networks": ["hostnet"], "deploy": {"replicas": 1}}},
            "networks": {"hostnet": {"external": True, "name": "host"}}}
        repo = write_repo(tmp / "swarm-repo", stack=stack, scripts=False)
        url = servers.database()
        for key, value in swarm.env().items():
            if key.startswith("DOCKER"):
                os.environ[key] = value
        settings = settings_from_mapping({"mode": "test", "database_url": url, "redis_url": servers.redis.url(4),
                                          "deployments_repo": str(repo), "instance_dir": str(tmp / "inst-swarm")})
        redis_client = redis.Redis.from_url(settings.redis_url)
        redis_client.flushdb()
        engine = db.make_engine(url)
        ctx = build_context(settings, broker=RQBroker(redis_client),
                            session_factory=sessionmaker(bind=engine, expire_on_commit=False))
        services = Context.from_settings(settings, ctx.broker)
        manifests = ctx.manifests.current()
        worker = ContextWorker([ACTIONS_QUEUE, CHECKS_QUEUE], connection=redis_client, context=ctx)

        def by_sami(n: int) -> float:
            started = time.perf_counter()
            with ctx.session() as session:
                request_deployment(session, manifests, DeploymentRequest(
                    service="bench", environment="stage", tag="v1", requested_by="bench", origin="cli",
                    deployment_overrides={"port": str(port)}), services)
            worker.work(burst=True, logging_level="WARNING")
            took = time.perf_counter() - started
            with Session(engine) as session:
                deployment = session.scalars(select(Deployment)).one()
                assert deployment.state is DeploymentState.RUNNING, deployment.status_message
                name = deployment.name
            # Reset for the next run (not timed).
            swarm.run("stack", "rm", name)
            wait_gone(swarm, name)
            with Session(engine) as session:
                session.execute(text("DELETE FROM actions"))
                session.execute(text("DELETE FROM deployments"))
                session.commit()
            return took

        def by_hand(n: int) -> float:
            name = f"byhand{n}"
            stack_file = tmp / f"{name}.yml"
            stack_file.write_text(yaml.safe_dump(stack))
            started = time.perf_counter()
            swarm.run("stack", "deploy", "-c", str(stack_file), name)
            while True:
                replicas = swarm.output("service", "ls", "--filter", f"label=com.docker.stack.namespace={name}",
                                        "--format", "{{.Replicas}}").split()
                if replicas == ["1/1"]:
                    break
                time.sleep(0.1)
            took = time.perf_counter() - started
            swarm.run("stack", "rm", name)
            wait_gone(swarm, name)
            return took

        sami_times, hand_times = [], []
        for n in range(runs):
            hand_times.append(by_hand(n))
            sami_times.append(by_sami(n))
        engine.dispose()
        sami_s, hand_s = statistics.median(sami_times), statistics.median(hand_times)
        return {"runs": runs, "sami_median_s": round(sami_s, 2), "by_hand_median_s": round(hand_s, 2),
                "difference_s": round(sami_s - hand_s, 2)}
    finally:
        stop_swarm(swarm)


def wait_gone(swarm, name: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not swarm.output("ps", "-aq", "--filter", f"label=com.docker.stack.namespace={name}").strip():
            return
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actions", type=int, default=40, help="updates for the overhead benchmark")
    parser.add_argument("--latency", type=int, default=200, help="requests for the latency benchmark")
    parser.add_argument("--rate", type=float, default=10.0, help="requests per second in the latency benchmark")
    parser.add_argument("--burst", type=int, default=200, help="pull requests in the push burst benchmark (0: skip)")
    parser.add_argument("--pushes", type=int, default=5, help="quick pushes to each pull request in the burst")
    parser.add_argument("--gap", type=float, default=1.0, help="seconds between a pull request's pushes")
    parser.add_argument("--senders", type=int, default=25, help="pull requests pushed to at the same time")
    parser.add_argument("--window", type=int, default=5,
                        help="SAMI_PR_DEBOUNCE_SECONDS of the burst, compared with 0 (no wait)")
    parser.add_argument("--swarm", type=int, default=3, help="runs of the swarm comparison (0: skip)")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="sami-bench-") as tmp, Servers() as servers:
        tmp = Path(tmp)
        results["overhead"] = bench_overhead(servers, args.actions, tmp)
        print("overhead", results["overhead"], flush=True)
        results["latency"] = bench_latency(servers, args.latency, tmp, interval=1 / args.rate)
        print("latency", results["latency"], flush=True)
        if args.burst:
            for window in (0, args.window):
                results[f"burst_window_{window}"] = bench_burst(servers, args.burst, args.pushes, args.gap, window, tmp,
                                                                senders=args.senders)
                print(f"burst window {window}", results[f"burst_window_{window}"], flush=True)
        if args.swarm:
            results["swarm"] = bench_swarm(servers, args.swarm, tmp)
            print("swarm", results["swarm"], flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
