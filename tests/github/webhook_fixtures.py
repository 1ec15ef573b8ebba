"""Fixtures and helpers of the webhook tests: signed posts of real payloads to the app, a worker
context on the test database and Redis, and a burst worker that runs what is queued."""

from __future__ import annotations

from typing import Any

import pytest
from rq import Queue
from rq.job import Job
from rq.registry import FailedJobRegistry
from sqlalchemy import select

from bot.core.config import settings_from_mapping
from bot.core.models import Delivery
from tests.conftest import WEBHOOK_SECRET
from tests.support import github_payloads
from workers.context import ContextWorker, build_context
from workers.queue import ACTIONS_QUEUE, CHECKS_QUEUE, DELIVERIES_HANDED_OFF, RQBroker, delivery_job_id

PATH = "/webhooks/github"


def post(client, event: str, payload: dict[str, Any] | bytes, *, secret: str | None = WEBHOOK_SECRET,
         delivery: str | None = None, **headers):
    """Post a delivery of ``payload`` to the app as GitHub does (signed with ``secret``)."""
    data = payload if isinstance(payload, bytes) else github_payloads.body(payload)
    sent = github_payloads.delivery_headers(event, data, secret, delivery)
    for name, value in headers.items():
        name = name.replace("_", "-")
        if value is None:
            sent.pop(name, None)
        else:
            sent[name] = value
    return client.post(PATH, data=data, headers=sent)


def deliveries(session) -> list[Delivery]:
    session.expire_all()
    return list(session.scalars(select(Delivery).order_by(Delivery.id)))


def queued_jobs(redis_client) -> list[str]:
    """The jobs waiting on the actions queue, then the deliveries the intake handed off to become
    jobs, named as their jobs will be."""
    handed_off = [delivery_job_id(int(row_id)) for row_id in redis_client.lrange(DELIVERIES_HANDED_OFF, 0, -1)]
    return Queue(ACTIONS_QUEUE, connection=redis_client).job_ids + handed_off


def handed_off(redis_client) -> list[int]:
    """The row ids of the deliveries handed off and not yet taken by a worker."""
    return [int(row_id) for row_id in redis_client.lrange(DELIVERIES_HANDED_OFF, 0, -1)]


@pytest.fixture
def worker_ctx(test_config, session_factory, redis_client):
    """The context jobs run with in this process; jobs see the test's transaction."""
    ctx = build_context(settings_from_mapping(test_config), broker=RQBroker(redis_client),
                        session_factory=session_factory)
    yield ctx


@pytest.fixture
def work(worker_ctx, redis_client):
    """Run every queued job in this process until the queues are empty."""

    def run() -> None:
        ContextWorker([ACTIONS_QUEUE, CHECKS_QUEUE], connection=redis_client, context=worker_ctx).work(
            burst=True, logging_level="WARNING")
        for name in (ACTIONS_QUEUE, CHECKS_QUEUE):
            for job_id in FailedJobRegistry(name, connection=redis_client).get_job_ids():
                job = Job.fetch(job_id, connection=redis_client)
                raise AssertionError(f"job {job_id} raised:\n{job.latest_result().exc_string}")

    return run
