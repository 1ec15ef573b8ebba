"""GitHub API calls per pull request lifecycle, counted where they arrive.

One pull request of a service that deploys pull requests goes through: opened, three pushes
(synchronize), a `/sami status` comment, closed. Each event is GitHub's own example payload
(npm @octokit/webhooks-examples), recorded as a delivery and processed by the delivery job; the
actions it queues run the probe control scripts on an RQ worker; the outbox rows are queued by the
scheduler's sweep and sent by the outbox job through PyGithub to Prism serving GitHub's API
description, behind a proxy that counts every request per kind (method and path shape). The sticky
comment, GitHub Deployments, Deployment statuses and commit statuses are all on.

Two runs side by side:

- ``quick``: each action settles within the coalescing delay (3 s), so its queued, running and
  finished states are sent as one update of each thing: what a deploy of a few seconds costs.
- ``slow``: the outbox is sent after each event and again after each action, so every state is
  sent: what deploys longer than the coalescing delay cost (the worst case).

Time is simulated by moving the rows' due times, not by sleeping.

    .venv/bin/python bench/github/bench_lifecycle.py

Needs what the tests need (PostgreSQL, Redis, tests/node with Prism): private servers are started
on free ports and stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sqlalchemy import select, update  # noqa: E402
from sqlalchemy.orm import sessionmaker  # noqa: E402

import bot.github.handlers  # noqa: E402,F401  (registers the handlers)
from bot.core import db  # noqa: E402
from bot.core.config import settings_from_mapping  # noqa: E402
from bot.core.models import OutboxRow, OutboxState  # noqa: E402
from bot.github.client import GitHubClient  # noqa: E402
from bot.web.webhooks import parse_delivery, record_delivery  # noqa: E402
from tests.pipeline.probe_scripts import write_probe_repo  # noqa: E402
from tests.support import github_payloads  # noqa: E402
from tests.support.github_mock import FlakyProxy, PrismServer, trimmed_spec  # noqa: E402
from tests.support.servers import PostgresServer, RedisServer, running  # noqa: E402
from workers import outbox as outbox_jobs  # noqa: E402
from workers.context import ContextWorker, build_context  # noqa: E402
from workers.deliveries import process_delivery  # noqa: E402
from workers.lease import db_now  # noqa: E402
from workers.queue import ACTIONS_QUEUE, RQBroker, connect_redis  # noqa: E402

REPOSITORY, NUMBER = "acme/probe", 5
GOAL = 20


def sha(n: int) -> str:
    import hashlib

    return hashlib.sha256(str(n).encode()).hexdigest()[:40]


def pr_payload(action: str, head: str) -> dict:
    payload = github_payloads.example("pull_request", action)
    payload["number"] = NUMBER
    payload["repository"]["full_name"] = REPOSITORY
    pr = payload["pull_request"]
    pr["number"] = NUMBER
    pr["base"]["repo"]["full_name"] = pr["head"]["repo"]["full_name"] = REPOSITORY
    pr["head"]["sha"] = head
    pr["state"] = "closed" if action == "closed" else "open"
    pr["updated_at"] = datetime.now(UTC).isoformat()
    return payload


def comment_payload(body: str) -> dict:
    payload = github_payloads.example("issue_comment", "created")
    payload["repository"]["full_name"] = REPOSITORY
    payload["issue"]["number"] = NUMBER
    payload["issue"]["pull_request"] = {"url": f"https://api.github.com/repos/{REPOSITORY}/pulls/{NUMBER}"}
    payload["comment"]["body"] = body
    return payload


class Lifecycle:
    def __init__(self, ctx, redis_client):
        self.ctx = ctx
        self.redis = redis_client

    def deliver(self, event: str, payload: dict) -> str:
        with self.ctx.session() as session:
            row_id = record_delivery(session, parse_delivery(str(uuid.uuid4()), event, payload))
            session.commit()
        # Processed here, so that the actions it queues wait for run_actions().
        status = process_delivery(row_id, ctx=self.ctx)
        return str(status)

    def run_actions(self) -> None:
        worker = ContextWorker([ACTIONS_QUEUE], connection=self.redis, context=self.ctx)
        worker.work(burst=True, logging_level="WARNING")

    def send_outbox(self) -> int:
        """Send every waiting row, as the sweep does once their coalescing delay has passed."""
        sent = 0
        for _ in range(10):
            with self.ctx.session() as session:
                session.execute(update(OutboxRow).where(OutboxRow.state == OutboxState.PENDING)
                                .values(due_at=db_now(session) - timedelta(seconds=1)))
                session.commit()
                due = outbox_jobs.due_rows(session, db_now(session))
            if not due:
                return sent
            for row_id in due:
                outbox_jobs.deliver_outbox_row(row_id, ctx=self.ctx)
                sent += 1
        return sent

    def run(self, slow: bool) -> list[str]:
        outcomes = []
        heads = [sha(1), sha(2), sha(3), sha(4)]
        steps = [("pull_request", pr_payload("opened", heads[0]))]
        steps += [("pull_request", pr_payload("synchronize", head)) for head in heads[1:]]
        steps += [("issue_comment", comment_payload("/sami status")), ("pull_request", pr_payload("closed", heads[-1]))]
        for event, payload in steps:
            outcomes.append(self.deliver(event, payload))
            if slow:
                self.send_outbox()
            self.run_actions()
            self.send_outbox()
        return outcomes


def measure(postgres, redis_server, prism, slow: bool, workdir: Path) -> dict:
    name = f"bench_github_{'slow' if slow else 'quick'}"
    from tests.conftest import create_database

    url = create_database(postgres, name)
    db.upgrade(url)
    repo = write_probe_repo(workdir / name / "deployments", workdir / name / "record")
    settings = settings_from_mapping({
        "mode": "test", "database_url": url, "redis_url": redis_server.url(2 if slow else 3),
        "instance_dir": str(workdir / name / "instance"), "webhook_secret": "bench", "secret_key": "bench",
        "deployments_repo": str(repo), "base_domain": "example.test", "public_url": "https://sami.example.test",
        "static_root": str(workdir / name / "sites"),
        # Each push is deployed before the next comes: pushes further apart than the wait for newer ones.
        "pr_debounce_seconds": 0})
    redis_client = connect_redis(settings)
    redis_client.flushdb()
    engine = db.make_engine(url)
    with FlakyProxy(prism.url) as proxy:
        ctx = build_context(settings, broker=RQBroker(redis_client),
                            session_factory=sessionmaker(bind=engine, expire_on_commit=False))
        ctx.github = GitHubClient(proxy.url, token=secrets.token_hex(8), seconds_between_writes=0)  # Prism checks none
        outcomes = Lifecycle(ctx, redis_client).run(slow)
        with ctx.session() as session:
            rows = session.scalars(select(OutboxRow)).all()
            by_state: dict[str, int] = {}
            for row in rows:
                by_state[str(row.state)] = by_state.get(str(row.state), 0) + 1
        counts = proxy.counts()
    engine.dispose()
    return {"outcomes": outcomes, "calls": counts, "total": sum(counts.values()), "rows": by_state}


def main() -> None:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    with tempfile.TemporaryDirectory(prefix="sami-bench-github-") as tmp, \
            running(PostgresServer()) as postgres, running(RedisServer()) as redis_server:
        workdir = Path(tmp)
        prism = PrismServer(trimmed_spec(workdir / "spec"), workdir)
        prism.start()
        try:
            results = {mode: measure(postgres, redis_server, prism, mode == "slow", workdir)
                       for mode in ("quick", "slow")}
        finally:
            prism.stop()
    kinds = sorted({kind for result in results.values() for kind in result["calls"]})
    print("| GitHub API call | quick actions | slow actions |")
    print("| --- | --- | --- |")
    for kind in kinds:
        print(f"| `{kind}` | {results['quick']['calls'].get(kind, 0)} | {results['slow']['calls'].get(kind, 0)} |")
    print(f"| **total** (goal <= {GOAL}) | **{results['quick']['total']}** | **{results['slow']['total']}** |")
    print()
    for mode, result in results.items():
        print(f"{mode}: outbox rows by state {result['rows']}; deliveries: {result['outcomes']}")
    print(json.dumps({mode: {"total": r["total"], "calls": r["calls"]} for mode, r in results.items()}))


if __name__ == "__main__":
    main()
