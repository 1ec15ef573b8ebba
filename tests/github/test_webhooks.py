"""`POST /webhooks/github`: GitHub's own example payloads, signed as GitHub signs them, are
verified, recorded once and queued; everything else is refused with a message and stores nothing."""

from __future__ import annotations

import json
import threading
import time

import pytest
from rq import Queue
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bot.core import metrics
from bot.core.models import DeliveryStatus
from bot.web import create_app
from bot.web.queue import get_broker
from tests.conftest import WEBHOOK_SECRET
from tests.github import webhook_fixtures
from tests.github.webhook_fixtures import deliveries, handed_off, post, queued_jobs
from tests.support import github_payloads
from tests.support.servers import free_port
from workers import context
from workers.queue import ACTIONS_QUEUE

worker_ctx, work = webhook_fixtures.worker_ctx, webhook_fixtures.work

# Events the router does not act on, each with an action GitHub's examples have.
IGNORED = [("issues", "opened"), ("star", "created"), ("check_run", "completed"), ("workflow_run", "completed"),
           ("release", "published"), ("create", None)]


@pytest.mark.parametrize("index", range(len(github_payloads.examples("ping"))))
def test_ping_is_answered_with_its_zen_and_recorded_as_pong(client, db_session, redis_client, index):
    payload = github_payloads.example("ping", index=index)
    response = post(client, "ping", payload, delivery=f"ping-{index}")
    assert response.status_code == 200, response.json
    assert response.json["zen"] == payload["zen"]
    assert response.json["hook_id"] == payload["hook_id"]
    assert response.json["delivery"] == f"ping-{index}"
    [row] = deliveries(db_session)
    assert (row.delivery_id, row.event, row.status, row.outcome) == (f"ping-{index}", "ping",
                                                                      DeliveryStatus.PROCESSED, "pong")
    assert row.processed_at is not None
    assert row.payload == payload
    assert queued_jobs(redis_client) == []  # nothing left to do


def test_a_pull_request_delivery_is_recorded_whole_and_queued(client, db_session, redis_client):
    payload = github_payloads.example("pull_request", "synchronize")
    body = json.dumps(payload, indent=1).encode()  # kept as sent, not as Sami would write it
    response = post(client, "pull_request", body, delivery="d-1")
    assert response.status_code == 202, response.json
    assert response.json == {"delivery": "d-1", "status": "queued"}
    [row] = deliveries(db_session)
    assert row.event == "pull_request"
    assert row.action == "synchronize"
    assert row.repository == payload["repository"]["full_name"] == "Codertocat/Hello-World"
    assert row.installation_id == payload["installation"]["id"]
    assert row.sender == payload["sender"]["login"]
    assert row.payload == payload
    assert row.status is DeliveryStatus.RECEIVED
    assert row.outcome is None and row.processed_at is None and row.received_at is not None
    assert queued_jobs(redis_client) == [f"delivery-{row.id}"]
    stored = db_session.execute(text("SELECT payload::text FROM deliveries WHERE id = :id"), {"id": row.id}).scalar()
    assert stored == body.decode()


@pytest.mark.parametrize(("event", "action"), IGNORED)
def test_events_sami_does_not_act_on_are_recorded_ignored_with_the_reason(client, db_session, work, event, action):
    payload = github_payloads.example(event, action)
    response = post(client, event, payload)
    assert response.status_code == 202, response.json
    work()
    [row] = deliveries(db_session)
    assert (row.event, row.action) == (event, action)
    assert row.status is DeliveryStatus.IGNORED
    assert row.outcome.startswith("ignored: ")
    assert row.processed_at is not None


def test_an_unknown_event_is_recorded_ignored(client, db_session, work):
    response = post(client, "made_up_event", {"action": "happened", "sender": {"login": "octocat"}})
    assert response.status_code == 202
    work()
    [row] = deliveries(db_session)
    assert row.status is DeliveryStatus.IGNORED
    assert "made_up_event" in row.outcome or "no handlers" in row.outcome


def test_a_redelivery_is_acknowledged_and_does_nothing_more(client, db_session, redis_client, work):
    payload = github_payloads.example("star", "created")
    first = post(client, "star", payload, delivery="same")
    assert first.status_code == 202
    work()
    again = post(client, "star", payload, delivery="same")
    assert again.status_code == 200
    assert again.json == {"delivery": "same", "duplicate": True}
    assert len(deliveries(db_session)) == 1
    assert queued_jobs(redis_client) == []  # processed once, not queued again
    ping = github_payloads.example("ping")
    assert post(client, "ping", ping, delivery="p").status_code == 200
    assert post(client, "ping", ping, delivery="p").json == {"delivery": "p", "duplicate": True}


def test_a_new_delivery_is_handed_off_with_one_push_and_a_worker_queues_its_job_once(
        client, db_session, redis_client, worker_ctx):
    response = post(client, "pull_request", github_payloads.example("pull_request", "synchronize"), delivery="d-1")
    assert response.status_code == 202
    [row] = deliveries(db_session)
    # The request pushed the row's id and wrote no RQ job: that is the workers' part.
    assert handed_off(redis_client) == [row.id]
    assert Queue(ACTIONS_QUEUE, connection=redis_client).job_ids == []
    assert worker_ctx.broker.take_deliveries() == 1
    assert handed_off(redis_client) == []
    assert Queue(ACTIONS_QUEUE, connection=redis_client).job_ids == [f"delivery-{row.id}"]
    assert worker_ctx.broker.take_deliveries() == 0
    # A duplicate hands nothing off.
    assert post(client, "pull_request", github_payloads.example("pull_request", "synchronize"),
                delivery="d-1").status_code == 200
    assert queued_jobs(redis_client) == [f"delivery-{row.id}"]


def test_a_handed_off_delivery_that_the_sweep_queued_first_gets_no_second_job(client, db_session, redis_client,
                                                                               worker_ctx):
    assert post(client, "star", github_payloads.example("star", "created"), delivery="s-1").status_code == 202
    [row] = deliveries(db_session)
    assert worker_ctx.broker.enqueue_delivery(row.id)  # the sweep's way
    assert worker_ctx.broker.take_deliveries() == 1
    assert Queue(ACTIONS_QUEUE, connection=redis_client).job_ids == [f"delivery-{row.id}"]


def test_a_working_worker_queues_handed_off_deliveries_as_they_come(client, db_session, redis_client, worker_ctx):
    stop = threading.Event()
    taker = threading.Thread(target=context._take_deliveries, args=(worker_ctx.broker.take_deliveries, stop))
    taker.start()
    try:
        assert post(client, "star", github_payloads.example("star", "created"), delivery="s-2").status_code == 202
        [row] = deliveries(db_session)
        deadline = time.monotonic() + 10
        while Queue(ACTIONS_QUEUE, connection=redis_client).job_ids != [f"delivery-{row.id}"]:
            assert time.monotonic() < deadline, "the handed-off delivery was not queued"
            time.sleep(0.01)
    finally:
        stop.set()
        taker.join(5)
    assert handed_off(redis_client) == []


# --- refused: nothing is stored ---------------------------------------------------------------

def signed_elsewhere(client):
    other = github_payloads.body(github_payloads.example("star", "deleted"))
    return post(client, "star", github_payloads.example("star", "created"),
                X_Hub_Signature_256=github_payloads.sign(other, WEBHOOK_SECRET))


REFUSALS = {
    "unsigned": (lambda c: post(c, "star", github_payloads.example("star", "created"), secret=None),
                 401, "missing X-Hub-Signature-256"),
    "wrong secret": (lambda c: post(c, "star", github_payloads.example("star", "created"), secret="not-the-secret"),
                     401, "does not match"),
    "signature of another body": (signed_elsewhere, 401, "does not match"),
    "sha1 signature only": (lambda c: post(c, "star", github_payloads.example("star", "created"),
                                           X_Hub_Signature_256=None, X_Hub_Signature="sha1=0123456789abcdef"),
                            401, "missing X-Hub-Signature-256"),
    "signature not ascii": (lambda c: post(c, "star", github_payloads.example("star", "created"),
                                           X_Hub_Signature_256="sha256=\u00e9\u00e9"), 401, "does not match"),
    # Nothing is read before the signature is checked: an unsigned or wrongly signed delivery is 401
    # whatever else is wrong with it.
    "unsigned malformed JSON": (lambda c: post(c, "star", b'{"action": "created",', secret=None),
                                401, "missing X-Hub-Signature-256"),
    "wrong secret, malformed JSON": (lambda c: post(c, "star", b'{"action": "created",', secret="not-the-secret"),
                                     401, "does not match"),
    "unsigned, not UTF-8": (lambda c: post(c, "star", '{"action": "created"}'.encode("utf-16"), secret=None),
                            401, "missing X-Hub-Signature-256"),
    "wrong secret, form-encoded": (lambda c: post(c, "star", b"payload=%7B%7D", secret="not-the-secret",
                                                  Content_Type="application/x-www-form-urlencoded"),
                                   401, "does not match"),
    "wrong secret, no event header": (lambda c: post(c, "star", github_payloads.example("star", "created"),
                                                     secret="not-the-secret", X_GitHub_Event=None),
                                      401, "does not match"),
    "unsigned, invalid delivery header": (lambda c: post(c, "star", github_payloads.example("star", "created"),
                                                         secret=None, delivery="x" * 65),
                                          401, "missing X-Hub-Signature-256"),
    "malformed JSON": (lambda c: post(c, "star", b'{"action": "created",'), 400, "not valid JSON"),
    "a JSON array": (lambda c: post(c, "star", b'[{"action": "created"}]'), 400, "not a list"),
    "a JSON string": (lambda c: post(c, "star", b'"created"'), 400, "not a str"),
    "empty body": (lambda c: post(c, "star", b""), 400, "not valid JSON"),
    "NaN": (lambda c: post(c, "star", b'{"action": "created", "stars": NaN}'), 400, "NaN is not JSON"),
    "not UTF-8": (lambda c: post(c, "star", '{"action": "created"}'.encode("utf-16")), 400, "in UTF-8"),
    "form-encoded": (lambda c: post(c, "star", b"payload=%7B%7D", Content_Type="application/x-www-form-urlencoded"),
                     400, "content type to application/json"),
    "no event header": (lambda c: post(c, "star", {"action": "created"}, X_GitHub_Event=None),
                        400, "X-GitHub-Event header missing"),
    "invalid event header": (lambda c: post(c, "star", {"action": "created"}, X_GitHub_Event="Star Created!"),
                             400, "X-GitHub-Event header invalid"),
    "no delivery header": (lambda c: post(c, "star", {"action": "created"}, X_GitHub_Delivery=None),
                           400, "X-GitHub-Delivery header missing"),
    "invalid delivery header": (lambda c: post(c, "star", {"action": "created"}, delivery="x" * 65),
                                400, "X-GitHub-Delivery header invalid"),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_refused_deliveries_say_why_and_store_nothing(client, db_session, redis_client, case):
    send, status, message = REFUSALS[case]
    response = send(client)
    assert response.status_code == status, response.json
    assert message in response.json["error"]
    assert deliveries(db_session) == []
    assert queued_jobs(redis_client) == []


def test_a_body_over_the_limit_is_413(test_config, session_factory, db_session):
    app = create_app({**test_config, "max_request_bytes": 4096})
    app.extensions["sami.db"] = session_factory
    payload = github_payloads.example("pull_request", "synchronize")
    assert len(github_payloads.body(payload)) > 4096
    response = post(app.test_client(), "pull_request", payload)
    assert response.status_code == 413
    assert "too large" in response.json["error"]
    assert deliveries(db_session) == []


def test_without_a_secret_webhooks_are_off_and_say_how_to_turn_them_on(test_config, session_factory, db_session):
    app = create_app({**test_config, "webhook_secret": ""})
    app.extensions["sami.db"] = session_factory
    response = post(app.test_client(), "ping", github_payloads.example("ping"))
    assert response.status_code == 503
    assert "SAMI_WEBHOOK_SECRET" in response.json["error"]
    assert deliveries(db_session) == []


def test_a_development_app_with_redis_gets_no_generated_secret(test_config, tmp_path):
    app = create_app({**test_config, "mode": "development", "webhook_secret": ""})
    response = post(app.test_client(), "ping", github_payloads.example("ping"))
    assert response.status_code == 503
    assert not (tmp_path / "instance" / "webhook-secret").exists()


def test_while_redis_is_down_a_delivery_is_still_recorded(test_config, session_factory, db_session):
    app = create_app({**test_config, "redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    app.extensions["sami.db"] = session_factory
    response = post(app.test_client(), "star", github_payloads.example("star", "created"), delivery="while-down")
    assert response.status_code == 202
    assert response.json == {"delivery": "while-down", "status": "received"}
    [row] = deliveries(db_session)
    assert row.status is DeliveryStatus.RECEIVED


def test_the_answer_is_json(client):
    response = post(client, "star", github_payloads.example("star", "created"))
    assert response.content_type == "application/json"
    assert json.loads(response.data)["status"] == "queued"


def _drop_connections(database_url: str) -> int:
    """What a PostgreSQL restart does to the web's pooled connections: every one of them is closed."""
    admin = create_engine(make_url(database_url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        dropped = connection.execute(text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = :name"),
            {"name": make_url(database_url).database}).scalar()
    admin.dispose()
    return dropped


def test_after_the_database_closed_every_connection_a_delivery_is_still_recorded_and_queued(
        test_config, own_database_url, redis_client):
    # The app's own engine and pool, as `sami serve` has: pooled connections that PostgreSQL has
    # closed (it restarted) must not lose the delivery or answer it with an error.
    app = create_app({**test_config, "database_url": own_database_url})
    client = app.test_client()
    payload = github_payloads.example("pull_request", "synchronize")
    assert post(client, "pull_request", payload, delivery="before").status_code == 202
    assert _drop_connections(own_database_url) >= 1
    response = post(client, "pull_request", payload, delivery="after")
    assert response.status_code == 202, response.json
    assert response.json == {"delivery": "after", "status": "queued"}
    engine = create_engine(own_database_url)
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT delivery_id, id FROM deliveries ORDER BY id")).all()
    engine.dispose()
    app.extensions["sami.db"].kw["bind"].dispose()
    assert [delivery_id for delivery_id, _ in rows] == ["before", "after"]
    assert queued_jobs(redis_client) == [f"delivery-{row_id}" for _, row_id in rows]


def test_while_the_database_is_unreachable_a_delivery_is_answered_503_to_be_sent_again(test_config, redis_client):
    # GitHub marks the delivery failed, and it is sent again (by hand, or by Sami's redeliver round).
    app = create_app({**test_config, "database_url": f"postgresql+psycopg2://sami@127.0.0.1:{free_port()}/sami"})
    counted = metrics.WEBHOOK_DELIVERIES.labels("pull_request", "unavailable")
    before = counted._value.get()
    response = post(app.test_client(), "pull_request", github_payloads.example("pull_request", "synchronize"))
    assert response.status_code == 503, response.json
    assert counted._value.get() == before + 1
    assert response.headers["Retry-After"] == "1"
    assert "database" in response.json["error"]
    assert queued_jobs(redis_client) == []


def test_a_delivery_is_answered_202_and_handed_off_only_once_its_row_is_committed(
        test_config, own_database_url, redis_client):
    # The app's own engine and pool, as `sami serve` has. A deferred constraint trigger makes
    # PostgreSQL refuse the COMMIT itself (the INSERT went through): the delivery must not be
    # answered as accepted, nor handed to the workers, and no row stays behind.
    engine = create_engine(own_database_url)
    with engine.begin() as connection:
        connection.execute(text(
            "CREATE FUNCTION refuse_commit() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN IF NEW.delivery_id LIKE 'refused-%' THEN RAISE EXCEPTION 'refused at commit'; END IF; "
            "RETURN NULL; END $$"))
        connection.execute(text(
            "CREATE CONSTRAINT TRIGGER refuse_commit AFTER INSERT ON deliveries DEFERRABLE INITIALLY DEFERRED "
            "FOR EACH ROW EXECUTE FUNCTION refuse_commit()"))
    app = create_app({**test_config, "database_url": own_database_url})
    client = app.test_client()
    payload = github_payloads.example("pull_request", "synchronize")
    try:
        refused = post(client, "pull_request", payload, delivery="refused-1")
        accepted = post(client, "pull_request", payload, delivery="accepted-1")
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT delivery_id, id FROM deliveries ORDER BY id")).all()
    finally:
        app.extensions["sami.db"].kw["bind"].dispose()
        get_broker(app).connection.close()
        engine.dispose()
    assert refused.status_code == 500, refused.json
    assert accepted.status_code == 202, accepted.json
    assert [delivery_id for delivery_id, _ in rows] == ["accepted-1"]
    assert queued_jobs(redis_client) == [f"delivery-{rows[0][1]}"]
