"""Whole-environment deploy time against the critical path: 20 components in a DAG whose control
scripts (the probe set) take set times, deployed by `sami env`'s run through two `sami worker`
processes on private PostgreSQL and Redis servers.

    .venv/bin/python bench/environments/bench_environments.py [--runs 3] [--chain 2.0] [--side 0.5]

The critical path is the longest sum of script times along the dependencies; with two workers the
lower bound is max(critical path, total script time / 2). What is measured: the run's record
(``created_at``) to the end of its last component's action (``finished_at``). Each run updates every
component to a new version.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, select, text  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from bot.core import db  # noqa: E402
from bot.core.models import Action, ActionStep, EnvironmentRun  # noqa: E402
from bot.manifests import load_deployments_repo  # noqa: E402
from bot.services import environments  # noqa: E402
from bot.services.deployments import Context  # noqa: E402
from tests.pipeline.environment_repo import Service, with_topology, write_environment_repo  # noqa: E402
from tests.support.servers import PostgresServer, RedisServer  # noqa: E402
from workers.queue import RQBroker  # noqa: E402


def dag(chain_seconds: float, side_seconds: float, size: int = 20, chain: int = 6,
        seed: int = 7) -> tuple[dict[str, set[str]], dict[str, float]]:
    """A chain of ``chain`` slow components with ``size - chain`` quick ones hanging off it and each other."""
    rng = random.Random(seed)
    names = [f"c{i:02d}" for i in range(size)]
    chain_nodes = set(names[:: size // chain][:chain])
    graph: dict[str, set[str]] = {}
    durations: dict[str, float] = {}
    previous_chain = None
    for index, name in enumerate(names):
        if name in chain_nodes:
            graph[name] = {previous_chain} if previous_chain else set()
            durations[name] = chain_seconds
            previous_chain = name
        else:
            earlier = names[:index]
            graph[name] = set(rng.sample(earlier, min(len(earlier), rng.randint(1, 2)))) if earlier else set()
            durations[name] = side_seconds
    return graph, durations


def critical_path(graph: dict[str, set[str]], durations: dict[str, float]) -> float:
    finish: dict[str, float] = {}
    for name in sorted(graph):  # dependencies come earlier in name order
        finish[name] = durations[name] + max((finish[d] for d in graph[name]), default=0.0)
    return max(finish.values())


def chain_of(graph: dict[str, set[str]], durations: dict[str, float]) -> list[str]:
    """The critical path's components, first to last."""
    finish: dict[str, float] = {}
    previous: dict[str, str | None] = {}
    for name in sorted(graph):
        before = max(graph[name], key=lambda d: finish[d], default=None)
        previous[name] = before
        finish[name] = durations[name] + (finish[before] if before else 0.0)
    node: str | None = max(finish, key=finish.get)
    chain = []
    while node is not None:
        chain.append(node)
        node = previous[node]
    return chain[::-1]


def links(session: Session, by_service: dict[str, Action], chain: list[str], durations: dict[str, float],
          start) -> tuple[list[dict], dict]:
    """Each link of the critical path as time stamps from its dependency's end (ms), and the medians of
    each part over the links."""
    steps: dict[int, list[ActionStep]] = {}
    for step in session.scalars(select(ActionStep).where(ActionStep.action_id.in_([a.id for a in by_service.values()]))
                                .order_by(ActionStep.position)):
        steps.setdefault(step.action_id, []).append(step)
    rows = []
    ready = start
    for service in chain:
        action = by_service[service]

        def ms(moment, since=ready):
            return round((moment - since).total_seconds() * 1000)
        own = steps.get(action.id, [])
        row = {"service": service, "accepted": ms(action.created_at), "claimed": ms(action.started_at)}
        for step in own:
            row[f"{step.operation}_start"] = ms(step.started_at)
            row[f"{step.operation}_end"] = ms(step.finished_at)
        row["finished"] = ms(action.finished_at)
        row["beyond_sleep"] = row["finished"] - round(durations[service] * 1000)
        rows.append(row)
        ready = action.finished_at
    parts: dict[str, list[int]] = {}
    for row in rows[1:]:  # the first link starts from the run's record, not from an action's end
        marks = [(k, v) for k, v in row.items() if k not in ("service", "beyond_sleep")]
        previous = ("ready", 0)
        for key, value in marks:
            parts.setdefault(f"{previous[0]}->{key}", []).append(value - previous[1])
            previous = (key, value)
    return rows, {k: round(statistics.median(v)) for k, v in parts.items()}


def stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        process.wait(20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--chain", type=float, default=2.0, help="seconds of each critical-chain component's script")
    parser.add_argument("--side", type=float, default=0.5, help="seconds of every other component's script")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--links", action="store_true", help="print each critical-path link's time stamps")
    args = parser.parse_args()
    graph, durations = dag(args.chain, args.side)
    path = critical_path(graph, durations)
    bound = max(path, sum(durations.values()) / args.workers)
    services = {name: Service(depends_on=tuple(sorted(deps)), deployment_overrides={"sleep": f"{durations[name]:g}"})
                for name, deps in graph.items()}
    postgres, redis_server = PostgresServer(), RedisServer()
    postgres.start()
    redis_server.start()
    processes = []
    try:
        with tempfile.TemporaryDirectory(prefix="sami-bench-env-") as tmp:
            tmp = Path(tmp)
            repo_root = write_environment_repo(tmp / "repo", tmp / "record", services)
            name = f"bench_{uuid.uuid4().hex[:8]}"
            admin = create_engine(postgres.url(), isolation_level="AUTOCOMMIT")
            with admin.connect() as connection:
                connection.execute(text(f'CREATE DATABASE "{name}"'))
            admin.dispose()
            url = postgres.url(name)
            db.upgrade(url)
            env = {k: v for k, v in os.environ.items() if not k.startswith("SAMI_")}
            env.update({"SAMI_DATABASE_URL": url, "SAMI_REDIS_URL": redis_server.url(0),
                        "SAMI_DEPLOYMENTS_REPO": str(repo_root), "SAMI_INSTANCE_DIR": str(tmp / "instance"),
                        "SAMI_LOG_LEVEL": "warning"})
            processes = [subprocess.Popen([sys.executable, "-m", "bot.cli", "worker"], env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                         for _ in range(args.workers)]
            time.sleep(3)
            import redis

            broker = RQBroker(redis.Redis.from_url(redis_server.url(0)))
            ctx = Context("sami", "example.test", "sami", broker)
            repo = with_topology(load_deployments_repo(repo_root), services)
            engine = create_engine(url)
            totals, breakdown = [], []
            for run_number in range(1, args.runs + 1):
                with Session(engine) as session:
                    run = environments.start_run(session, repo, "stage", "deploy", ctx, requested_by="bench",
                                                 origin="cli", versions=dict.fromkeys(graph, f"v{run_number}"))
                    run_id = run.id
                deadline = time.monotonic() + 600
                while True:
                    with Session(engine) as session:
                        run = session.get(EnvironmentRun, run_id)
                        if run.state != "running":
                            ids = [c.action_id for c in run.components]
                            last = max(session.scalars(select(Action.finished_at).where(Action.id.in_(ids))))
                            total = (last - run.created_at).total_seconds()
                            state = run.state
                            break
                    if time.monotonic() > deadline:
                        raise RuntimeError("the run did not end")
                    time.sleep(0.2)
                if state != "succeeded":
                    raise RuntimeError(f"run {run_id} {state}")
                totals.append(total)
                with Session(engine) as session:
                    run = session.get(EnvironmentRun, run_id)
                    actions = {a.id: a for a in session.scalars(
                        select(Action).where(Action.id.in_([c.action_id for c in run.components])))}
                    by_service = {c.service: actions[c.action_id] for c in run.components}
                waits, pickups, extra = [], [], []
                for service, action in by_service.items():
                    ready = max((by_service[d].finished_at for d in graph[service]), default=run.created_at)
                    waits.append((action.created_at - ready).total_seconds())  # dependency done -> accepted
                    pickups.append((action.script_started_at - action.created_at).total_seconds())
                    extra.append((action.finished_at - action.script_started_at).total_seconds() - durations[service])
                breakdown.append({"accept_after_dependencies_ms": round(statistics.median(waits) * 1000),
                                  "accepted_to_script_ms": round(statistics.median(pickups) * 1000),
                                  "beyond_script_sleep_ms": round(statistics.median(extra) * 1000)})
                print("  medians per component:", breakdown[-1], flush=True)
                if args.links:
                    with Session(engine) as session:
                        rows, parts = links(session, by_service, chain_of(graph, durations), durations,
                                            run.created_at)
                    for row in rows:
                        print("   ", row)
                    print("  critical-path links, median ms per part:", parts, flush=True)
                    gaps = []
                    process = {a.id: a.worker.split(":")[1] for a in by_service.values()}  # host:pid:thread:random
                    for worker in set(process.values()):
                        own = sorted((a for a in by_service.values() if process[a.id] == worker),
                                     key=lambda a: a.started_at)
                        gaps += [(b.started_at - a.finished_at).total_seconds() for a, b in itertools.pairwise(own)]
                    print("  a worker's action settled -> its next claimed: median "
                          f"{statistics.median(gaps) * 1000:.0f} ms, max {max(gaps) * 1000:.0f} ms", flush=True)
                over = (total / path - 1) * 100
                print(f"run {run_number}: {total:.2f} s (critical path {path:.2f} s, +{over:.1f} %)", flush=True)
            engine.dispose()
            stop(processes)
            result = {
                "components": len(graph), "workers": args.workers, "critical_path_s": round(path, 2),
                "script_time_total_s": round(sum(durations.values()), 2), "lower_bound_s": round(bound, 2),
                "runs_s": [round(t, 2) for t in totals], "median_s": round(statistics.median(totals), 2),
                "over_critical_path_pct": round((statistics.median(totals) / path - 1) * 100, 1),
                "breakdown": breakdown, "load_average": round(os.getloadavg()[0], 2),
            }
            print(json.dumps(result, indent=2))
    finally:
        stop(processes)
        redis_server.stop()
        postgres.stop()


if __name__ == "__main__":
    main()
