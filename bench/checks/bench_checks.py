"""Periodic checks at scale: N no-op static_file deployments due in one check interval, checked one
`check` per deployment (the built-in bash script, through a set without check_batch) and with the
built-in set's `check_batch` (one call for all), side by side in one run.

    .venv/bin/python bench/checks/bench_checks.py [--count 1000] [--rounds 3] [--interval 60]

One round is one interval's work: the scheduler's checks step finds every deployment due, then one
RQ worker in this process runs the queued jobs until the queue is empty. Measured per round: CPU
time of this process (the scheduler step and the worker: Sami's own code) and of its children (the
script supervisors and the control scripts), and the wall time. CPU of PostgreSQL and Redis is
left out. Needs what the test suite needs (PostgreSQL, Redis): it starts private servers on free
ports and stops them at the end.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
import yaml  # noqa: E402
from sqlalchemy import update  # noqa: E402
from sqlalchemy.orm import sessionmaker  # noqa: E402

from bench.pipeline.bench_pipeline import Servers  # noqa: E402
from bot.core import db  # noqa: E402
from bot.core.config import settings_from_mapping  # noqa: E402
from bot.core.models import Action, Deployment  # noqa: E402
from bot.core.states import ActionState, DeploymentState  # noqa: E402
from workers.context import ContextWorker, build_context  # noqa: E402
from workers.lease import db_now  # noqa: E402
from workers.queue import CHECKS_QUEUE, RQBroker  # noqa: E402
from workers.scheduler import Scheduler, TickReport  # noqa: E402

BUILTIN = ROOT / "control_scripts"
TAG = "v1"


def write_repo(root: Path, batch: bool) -> Path:
    """The deployments repo: service `site`, static_file, pull_request environment. Without ``batch`` its
    manifest names a copy of the built-in set with check_batch taken out (the same bash `check`)."""
    folder = root / "services" / "site" / "static_file" / "pull_request"
    (folder / "site").mkdir(parents=True)
    (folder / "site" / "index.html").write_text("<h1>site</h1>\n")
    manifest = {"version": "v1beta", "service_name": "site", "type": "static_file", "files": ["site"],
                "pr_deploy": True, "repository": "acme/site"}
    if not batch:
        scripts = root / "scripts"
        shutil.copytree(BUILTIN / "static_file", scripts / "static_file")
        shutil.copytree(BUILTIN / "lib", scripts / "lib")
        (scripts / "static_file" / "check_batch").unlink()
        manifest["control_scripts"] = "scripts/static_file"
    (folder / "sami.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    return root


def deploy_in_place(static_root: Path, count: int) -> None:
    """What `create` leaves for each deployment: a release folder and `current` pointing at it."""
    for number in range(1, count + 1):
        base = static_root / f"site-pr-{number}"
        release = base / "releases" / f"{TAG}@bench"
        release.mkdir(parents=True)
        (release / "index.html").write_text("<h1>site</h1>\n")
        (base / "current").symlink_to(f"releases/{TAG}@bench")


def record_deployments(session_factory, count: int, manifest_path: str) -> None:
    """N Running deployments, each with the succeeded create that deployed it (and its report)."""
    with session_factory() as session:
        now = db_now(session)
        for number in range(1, count + 1):
            config = {"tag": TAG, "image": None, "app_overrides": {}, "deployment_overrides": {},
                      "manifest": manifest_path, "manifest_sha": None, "type": "static_file",
                      "pull_request": number, "sha": None}
            deployment = Deployment(name=f"site-pr-{number}", service="site", environment="pull_request",
                                    type="static_file", state=DeploymentState.RUNNING, tag=TAG, pull_request=number,
                                    app_overrides={}, deployment_overrides={}, links=[], checked_at=now,
                                    drift=[])
            session.add(deployment)
            session.flush()
            session.add(Action(deployment_id=deployment.id, kind="create", state=ActionState.SUCCEEDED,
                               requested_by="bench", origin="cli", config=config, finished_at=now,
                               running={"components": [{"name": "current", "image": None, "tag": TAG,
                                                        "replicas": None, "running": None, "env": {}}]}))
        session.commit()


def cpu() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def run_mode(servers: Servers, tmp: Path, redis_db: int, batch: bool, count: int, rounds: int,
             interval: int) -> list[dict]:
    name = "batch" if batch else "single"
    repo = write_repo(tmp / f"{name}-repo", batch)
    static_root = tmp / f"{name}-sites"
    deploy_in_place(static_root, count)
    url = servers.database()
    settings = settings_from_mapping({"mode": "test", "database_url": url, "redis_url": servers.redis.url(redis_db),
                                      "deployments_repo": str(repo), "instance_dir": str(tmp / f"{name}-inst"),
                                      "static_root": str(static_root), "check_interval": interval})
    connection = redis.Redis.from_url(settings.redis_url)
    connection.flushdb()
    session_factory = sessionmaker(bind=db.make_engine(url), expire_on_commit=False)
    ctx = build_context(settings, broker=RQBroker(connection), session_factory=session_factory)
    record_deployments(session_factory, count, "services/site/static_file/pull_request/sami.yaml")
    scheduler = Scheduler(ctx)
    worker = ContextWorker([CHECKS_QUEUE], connection=connection, context=ctx)
    results = []
    for _ in range(rounds):
        with session_factory() as session:  # every deployment due: its last check one interval ago
            due = db_now(session) - timedelta(seconds=interval + 1)
            session.execute(update(Deployment).values(checked_at=due))
            session.commit()
            now = db_now(session)
        own0, children0 = cpu()
        started = time.perf_counter()
        # Ticks until nothing is due: a tick queues at most CHECKS_PER_TICK single checks (the scheduler
        # ticks every few seconds, a dozen times an interval), the worker runs what each queued.
        jobs = 0
        scheduling = 0.0
        while True:
            report = TickReport()
            tick = time.perf_counter()
            scheduler.steps["checks"](report, now)
            scheduling += time.perf_counter() - tick
            if not report.checks:
                break
            jobs += len(report.check_batches) or len(report.checks)
            worker.work(burst=True, logging_level="WARNING")
        wall = time.perf_counter() - started
        own1, children1 = cpu()
        with session_factory() as session:
            checked = session.query(Deployment).filter(Deployment.checked_at > due).count()
            drifted = session.query(Deployment).filter(Deployment.drift_since.is_not(None)).count()
            failing = session.query(Deployment).filter(Deployment.state != DeploymentState.RUNNING).count()
        results.append({"own": own1 - own0, "children": children1 - children0, "wall": wall,
                        "schedule": scheduling, "jobs": jobs,
                        "checked": checked, "drifted": drifted, "failing": failing})
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--interval", type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sami-bench-checks-") as temp, Servers() as servers:
        tmp = Path(temp)
        modes = {"one check per deployment": run_mode(servers, tmp, 6, False, args.count, args.rounds, args.interval),
                 "check_batch": run_mode(servers, tmp, 7, True, args.count, args.rounds, args.interval)}
    print(f"{args.count} static_file deployments, one round = one {args.interval} s interval's checks "
          f"({args.rounds} rounds each)")
    print("| mode | jobs | checked | Sami CPU (s) | scripts CPU (s) | total CPU (s) | share of one core over the "
          "interval | wall (s) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for mode, rounds in modes.items():
        own = statistics.median(r["own"] for r in rounds)
        children = statistics.median(r["children"] for r in rounds)
        total = statistics.median(r["own"] + r["children"] for r in rounds)
        wall = statistics.median(r["wall"] for r in rounds)
        checked = {r["checked"] for r in rounds}
        assert all(r["drifted"] == 0 and r["failing"] == 0 for r in rounds), rounds  # every check passed
        print(f"| {mode} | {rounds[0]['jobs']} | {'/'.join(map(str, sorted(checked)))} | {own:.2f} | "
              f"{children:.2f} | {total:.2f} | {100 * total / args.interval:.1f} % | {wall:.1f} |")
    for mode, rounds in modes.items():
        print(f"{mode}: " + "; ".join(f"own {r['own']:.2f} s, scripts {r['children']:.2f} s, wall {r['wall']:.1f} s"
                                     for r in rounds))


if __name__ == "__main__":
    main()
