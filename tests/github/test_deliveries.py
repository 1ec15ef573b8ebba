"""The job that processes a recorded delivery, and the scheduler's sweep of deliveries: each is
processed once however often its job runs; failures, retries and lost workers are recorded."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from bot.core import db
from bot.core.logs import ContextFilter
from bot.core.models import Delivery, DeliveryStatus
from bot.github import router
from bot.github.outcomes import Outcome
from bot.web.webhooks import parse_delivery, record_delivery
from tests.conftest import WEBHOOK_SECRET
from tests.github import webhook_fixtures
from tests.github.webhook_fixtures import deliveries, queued_jobs
from tests.support import github_payloads
from workers import deliveries as delivery_jobs
from workers.lease import db_now
from workers.queue import PROCESS_DELIVERY
from workers.scheduler import Scheduler

worker_ctx, work = webhook_fixtures.worker_ctx, webhook_fixtures.work
EVENT = "sami_test_event"  # an event of the tests' own, so the real handlers never answer it


@pytest.fixture
def routes(worker_ctx):
    """Route the test's event to test handlers, in the router of the test's worker context."""

    def register(action, handler):
        worker_ctx.router.add(handler, EVENT, action)

    return register


def recorded(session, delivery="d-1", action="opened", payload=None) -> int:
    payload = payload or {**github_payloads.example("pull_request", "opened"), "action": action}
    row_id = record_delivery(session, parse_delivery(delivery, EVENT, payload))
    session.commit()
    return row_id


def test_a_delivery_is_processed_once_however_often_its_job_runs(db_session, worker_ctx, routes):
    calls = []

    def handler(event, ctx):
        """Counts its calls."""
        calls.append((event.name, event.action, event.delivery_id, event.repository, event.sender))
        assert ctx.session is not None and ctx.settings is worker_ctx.settings
        assert ctx.manifests is worker_ctx.manifests and ctx.services.broker is worker_ctx.broker
        return Outcome.processed("created web-pr-1")

    routes("opened", handler)
    row_id = recorded(db_session)
    assert delivery_jobs.process_delivery(row_id, ctx=worker_ctx) == "processed"
    assert delivery_jobs.process_delivery(row_id, ctx=worker_ctx) is None
    assert calls == [(EVENT, "opened", "d-1", "Codertocat/Hello-World", "Codertocat")]
    [row] = deliveries(db_session)
    assert (row.status, row.outcome, row.attempts) == (DeliveryStatus.PROCESSED, "created web-pr-1", 1)
    assert row.started_at is not None and row.processed_at >= row.started_at


def test_two_queued_jobs_of_one_delivery_process_it_once(db_session, worker_ctx, routes, work):
    calls = []
    routes("opened", lambda event, ctx: calls.append(1) or Outcome.processed("done"))
    row_id = recorded(db_session)
    assert worker_ctx.broker.enqueue_delivery(row_id)
    # A second job of the same delivery under another id (queued again by hand, say): the claim
    # lets one of them through.
    worker_ctx.broker.actions.enqueue_call(PROCESS_DELIVERY, args=(row_id,), job_id="by-hand", result_ttl=0)
    work()
    assert calls == [1]
    assert deliveries(db_session)[0].attempts == 1


def test_an_action_without_a_handler_is_ignored_with_the_reason(db_session, worker_ctx, routes):
    routes("opened", lambda event, ctx: Outcome.processed("done"))
    row_id = recorded(db_session, action="closed")
    assert delivery_jobs.process_delivery(row_id, ctx=worker_ctx) == "ignored"
    [row] = deliveries(db_session)
    assert row.outcome == f"ignored: Sami does not act on {EVENT}.closed"


def test_the_kind_of_a_handlers_outcome_is_the_deliverys_status_and_its_text_the_outcome(db_session, worker_ctx,
                                                                                         routes):
    routes("opened", lambda event, ctx: Outcome.ignored("nothing of Sami's"))
    # An outcome whose text begins like another kind's is recorded as its kind says.
    routes("closed", lambda event, ctx: Outcome.processed("ignored nothing: archived web-pr-1"))
    assert delivery_jobs.process_delivery(recorded(db_session, "d-1", "opened"), ctx=worker_ctx) == "ignored"
    assert delivery_jobs.process_delivery(recorded(db_session, "d-2", "closed"), ctx=worker_ctx) == "processed"
    assert [(row.status, row.outcome) for row in deliveries(db_session)] == [
        (DeliveryStatus.IGNORED, "ignored: nothing of Sami's"),
        (DeliveryStatus.PROCESSED, "ignored nothing: archived web-pr-1")]


def test_a_handler_may_not_answer_with_what_only_the_job_decides(db_session, worker_ctx, routes):
    routes("opened", lambda event, ctx: Outcome.retrying(5, 1, "made up"))
    row_id = recorded(db_session)
    assert delivery_jobs.process_delivery(row_id, ctx=worker_ctx) == "failed"
    assert deliveries(db_session)[0].outcome.startswith("failed: TypeError: the handler of")


def test_a_handler_exception_fails_the_delivery_and_is_logged_without_secrets(db_session, worker_ctx, routes,
                                                                             caplog):
    def handler(event, ctx):
        """Fails, with the webhook secret in its message."""
        raise ValueError(f"could not talk to GitHub with {WEBHOOK_SECRET}")

    routes("opened", handler)
    row_id = recorded(db_session, delivery="d-fails")
    caplog.handler.addFilter(ContextFilter())  # as configure_logging's handler has it
    with caplog.at_level(logging.INFO, logger="workers.deliveries"):
        assert delivery_jobs.process_delivery(row_id, ctx=worker_ctx) == "failed"
    [row] = deliveries(db_session)
    assert row.outcome == "failed: ValueError: could not talk to GitHub with ***"
    assert row.processed_at is not None
    [entry] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert entry.delivery_id == "d-fails"
    assert "d-fails" in entry.getMessage() and "Traceback" in entry.getMessage()
    assert WEBHOOK_SECRET not in caplog.text


def test_a_handler_that_returns_no_outcome_fails_the_delivery(db_session, worker_ctx, routes):
    routes("opened", lambda event, ctx: None)
    row_id = recorded(db_session)
    assert delivery_jobs.process_delivery(row_id, ctx=worker_ctx) == "failed"
    assert deliveries(db_session)[0].outcome.startswith("failed: TypeError: the handler of")


def test_a_handler_asking_to_retry_is_run_again_by_the_sweep_when_due(db_session, worker_ctx, routes, redis_client,
                                                                     work):
    answers = [router.Retry(30, "checks still running"), Outcome.processed("deployed")]

    def handler(event, ctx):
        """Retries once, then deploys."""
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    routes("opened", handler)
    row_id = recorded(db_session)
    before = db_now(db_session)
    assert delivery_jobs.process_delivery(row_id, ctx=worker_ctx) == "retrying"
    [row] = deliveries(db_session)
    assert row.status is DeliveryStatus.RETRYING
    assert row.outcome == "retrying in 30 s (try 1): checks still running"
    assert before + timedelta(seconds=29) < row.retry_at < before + timedelta(seconds=40)
    assert row.processed_at is None

    assert delivery_jobs.process_delivery(row_id, ctx=worker_ctx) is None  # not due yet
    scheduler = Scheduler(worker_ctx)
    assert scheduler.tick(now=row.retry_at - timedelta(seconds=1)).deliveries == []
    assert queued_jobs(redis_client) == []
    # Due: the sweep queues it and the job claims it (the database's clock is moved to retry_at).
    db_session.execute(update(Delivery).where(Delivery.id == row_id)
                       .values(retry_at=db_now(db_session) - timedelta(seconds=1)))
    db_session.commit()
    assert scheduler.tick(now=row.retry_at + timedelta(seconds=1)).deliveries == [row_id]
    work()
    [row] = deliveries(db_session)
    assert (row.status, row.outcome, row.attempts) == (DeliveryStatus.PROCESSED, "deployed", 2)


def test_a_delivery_that_keeps_asking_to_retry_fails_after_the_last_try(db_session, worker_ctx, routes):
    def handler(event, ctx):
        """Never ready."""
        raise router.Retry(0, "never ready")

    routes("opened", handler)
    row_id = recorded(db_session)
    statuses = [delivery_jobs.process_delivery(row_id, ctx=worker_ctx) for _ in range(delivery_jobs.MAX_ATTEMPTS)]
    assert statuses == ["retrying"] * (delivery_jobs.MAX_ATTEMPTS - 1) + ["failed"]
    assert deliveries(db_session)[0].outcome == (f"failed: gave up after {delivery_jobs.MAX_ATTEMPTS} tries: "
                                                 "never ready")
    assert delivery_jobs.process_delivery(row_id, ctx=worker_ctx) is None


def test_the_sweep_queues_received_deliveries_whose_job_never_came(db_session, worker_ctx, routes, redis_client,
                                                                  work):
    routes("opened", lambda event, ctx: Outcome.processed("done"))
    row_id = recorded(db_session)  # recorded, never queued: Redis was down
    received_at = deliveries(db_session)[0].received_at
    scheduler = Scheduler(worker_ctx)
    assert scheduler.tick(now=received_at + timedelta(seconds=1)).deliveries == []  # its own job may come yet
    assert scheduler.tick(now=received_at + timedelta(seconds=3)).deliveries == [row_id]
    assert scheduler.tick(now=received_at + timedelta(seconds=4)).deliveries == []  # already on the queue
    assert queued_jobs(redis_client) == [f"delivery-{row_id}"]
    work()
    assert deliveries(db_session)[0].status is DeliveryStatus.PROCESSED
    assert scheduler.tick(now=received_at + timedelta(seconds=10)).deliveries == []


def test_a_delivery_whose_worker_died_is_processed_again(db_session, worker_ctx, routes, work):
    routes("opened", lambda event, ctx: Outcome.processed("done"))
    row_id = recorded(db_session)
    now = db_now(db_session)
    # Claimed long ago by a worker that never finished.
    db_session.execute(update(Delivery).where(Delivery.id == row_id).values(
        status=DeliveryStatus.PROCESSING, started_at=now - delivery_jobs.STALE_PROCESSING - timedelta(seconds=5),
        attempts=1))
    db_session.commit()
    scheduler = Scheduler(worker_ctx)
    assert scheduler.tick(now=now).deliveries == [row_id]
    work()
    [row] = deliveries(db_session)
    assert (row.status, row.attempts) == (DeliveryStatus.PROCESSED, 2)


def test_a_delivery_being_processed_is_not_taken_over(db_session, worker_ctx, routes):
    routes("opened", lambda event, ctx: Outcome.processed("done"))
    row_id = recorded(db_session)
    now = db_now(db_session)
    db_session.execute(update(Delivery).where(Delivery.id == row_id)
                       .values(status=DeliveryStatus.PROCESSING, started_at=now))
    db_session.commit()
    assert Scheduler(worker_ctx).tick(now=now + timedelta(seconds=60)).deliveries == []
    assert delivery_jobs.process_delivery(row_id, ctx=worker_ctx) is None


def test_the_embedded_defaults_sqlite_records_a_delivery_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'sami.sqlite3'}"
    db.upgrade(url)
    engine = db.make_engine(url)
    payload = github_payloads.example("pull_request", "opened")
    try:
        with Session(engine) as session:
            first = record_delivery(session, parse_delivery("sqlite-1", "pull_request", payload))
            again = record_delivery(session, parse_delivery("sqlite-1", "pull_request", payload))
            session.commit()
            [row] = deliveries(session)
        assert first == row.id and again is None
        assert (row.action, row.status, row.payload) == ("opened", DeliveryStatus.RECEIVED, payload)
        assert row.received_at.tzinfo is not None
    finally:
        engine.dispose()
