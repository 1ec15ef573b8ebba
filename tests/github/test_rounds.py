"""The scheduler's GitHub rounds (reconciliation, redelivery) are queue jobs: a tick only queues them,
so a GitHub that hangs holds up no reaper, sweep or check; a worker runs them, up to their deadline."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import timedelta

import pytest
from rq import Queue
from sqlalchemy import select, update

from bot.core.models import Action, Deployment
from bot.core.states import ActionState, DeploymentState
from bot.github.client import GitHubClient
from bot.services import deployments
from tests.github.conftest import CANARY_TOKEN, token_client
from tests.pipeline import conftest as pipeline
from tests.support.github_mock import Reply, SilentGitHub
from workers.context import build_context
from workers.lease import db_now
from workers.queue import CHECKS_QUEUE, InProcessBroker
from workers.scheduler import Scheduler, TickReport

# The pipeline's fixtures: the probe deployments repo, a worker context on the test database and Redis.
record, probe_repo, test_config = pipeline.record, pipeline.probe_repo, pipeline.test_config
settings, worker_ctx, services_ctx, work = pipeline.settings, pipeline.worker_ctx, pipeline.services_ctx, pipeline.work

S = DeploymentState
PULLS = "/repos/acme/probe/pulls"


@pytest.fixture
def silent():
    with SilentGitHub() as server:
        yield server


def request(db_session, worker_ctx, services_ctx, environment: str, pull_request: int | None = None):
    req = deployments.DeploymentRequest(service="probe", environment=environment, tag="v1", requested_by="test",
                                     origin="cli", pull_request=pull_request,
                                     source_repo="acme/probe" if pull_request else None)
    return deployments.request_deployment(db_session, worker_ctx.manifests.current(), req, services_ctx)


def test_a_silent_github_holds_up_no_tick(db_session, worker_ctx, services_ctx, work, redis_client, silent):
    # Work for the reaper (an action whose worker died before its script) and for the sweep (one the
    # queue lost when Redis restarted empty).
    dead = request(db_session, worker_ctx, services_ctx, "stage")
    lost = request(db_session, worker_ctx, services_ctx, "pull_request", pull_request=7)
    long_ago = db_now(db_session) - timedelta(minutes=5)
    db_session.execute(update(Action).where(Action.id == dead.action_id).values(
        state=ActionState.RUNNING, started_at=long_ago, heartbeat_at=long_ago, worker="dead-worker"))
    db_session.execute(update(Deployment).where(Deployment.name == "probe-stage").values(
        lease_owner="dead-worker", lease_expires_at=long_ago))
    db_session.commit()
    redis_client.flushdb()
    # Production's client timeout is 10 s; two are enough to see who waits for it.
    worker_ctx.github = GitHubClient(silent.url, token=CANARY_TOKEN, timeout=2)

    report = Scheduler(worker_ctx).tick(now=db_now(db_session) + timedelta(seconds=5))
    assert silent.accepted == 0, "the tick itself asked GitHub"
    assert report.requeued == [dead.action_id] and report.queued == [lost.action_id]
    assert report.rounds == ["reconcile", "redeliver"]

    # A worker runs the rounds: each sends one request, waits out its timeout and leaves the rest.
    work()
    assert silent.accepted == 2
    states = dict(db_session.execute(select(Deployment.name, Deployment.state)).all())
    assert states == {"probe-stage": S.RUNNING, "probe-pr-7": S.RUNNING}


def test_a_round_is_queued_once_however_many_schedulers_find_it_due(db_session, worker_ctx, redis_client,
                                                                    token_fake):
    worker_ctx.github = token_client(token_fake.url)
    now = db_now(db_session)
    for scheduler in (Scheduler(worker_ctx), Scheduler(worker_ctx)):
        scheduler.steps["reconcile"](report := TickReport(), now)
        assert report.rounds == ["reconcile"]
    assert Queue(CHECKS_QUEUE, connection=redis_client).job_ids == ["github-reconcile"]
    assert token_fake.requests == []


def test_the_embedded_broker_runs_the_rounds_on_its_threads(db_session, settings, session_factory, token_fake):
    # One thread: the jobs share the test's one database connection.
    ctx = build_context(settings, broker=InProcessBroker(threads=1), session_factory=session_factory)
    ctx.github = token_client(token_fake.url)
    token_fake.on("GET", PULLS, Reply(200, []))
    token_fake.on("GET", "/repos/acme/probe/hooks", Reply(200, []))
    report = Scheduler(ctx).tick(now=db_now(db_session))
    assert report.rounds == ["reconcile", "redeliver"]
    give_up = time.monotonic() + 60  # generous: the two rounds take milliseconds against the fake
    while any(ctx.broker.job_is_live(f"github-{name}") for name in report.rounds) and time.monotonic() < give_up:
        time.sleep(0.05)
    ctx.broker.shutdown()
    assert sorted(r.path for r in token_fake.requests) == ["/repos/acme/probe/hooks", PULLS]


def test_the_rounds_come_as_often_as_the_settings_say(db_session, worker_ctx, work, token_fake):
    worker_ctx.settings = replace(worker_ctx.settings, reconcile_interval=60, redeliver_interval=7200)
    worker_ctx.github = token_client(token_fake.url)
    scheduler = Scheduler(worker_ctx)
    now = db_now(db_session)

    def queued(seconds_later: int) -> list[str]:
        report = TickReport()
        scheduler.steps["reconcile"](report, now + timedelta(seconds=seconds_later))
        scheduler.steps["redeliver"](report, now + timedelta(seconds=seconds_later))
        work()  # the rounds run (GitHub answers 404 to all), so the next copy is a new job
        return report.rounds

    assert queued(0) == ["reconcile", "redeliver"]
    assert queued(59) == []
    assert queued(60) == ["reconcile"]
    assert queued(7199) == ["reconcile"]
    assert queued(7200) == ["redeliver"]  # reconciliation is next due at 7259
