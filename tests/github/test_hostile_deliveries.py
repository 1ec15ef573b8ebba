"""Deliveries that are signed but not as GitHub sends them: recorded, then ignored with the field and
the reason; never a 500, never a deployment, and never database text in what the API shows."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text

from bot.core.models import DeliveryStatus, Deployment
from bot.github.outcomes import Outcome
from bot.services.tokens import Scopes, create_token
from tests.github import webhook_fixtures
from tests.github.webhook_fixtures import deliveries, post
from tests.support import github_payloads
from workers.deliveries import process_delivery

worker_ctx = webhook_fixtures.worker_ctx


@pytest.fixture
def work(db_session, worker_ctx):
    """Run the delivery job of every recorded delivery (the actions they queue are not run)."""

    def run() -> None:
        for row in deliveries(db_session):
            process_delivery(row.id, ctx=worker_ctx)

    return run


def docs_pull_request(action: str = "opened", number: int = 7) -> dict:
    """GitHub's example pull request delivery, for acme/docs (whose docs service deploys pull requests)."""
    payload = github_payloads.example("pull_request", action)
    payload["number"] = number
    payload["repository"]["full_name"] = "acme/docs"
    payload["pull_request"]["number"] = number
    payload["pull_request"]["base"]["repo"]["full_name"] = "acme/docs"
    payload["pull_request"]["head"]["repo"]["full_name"] = "acme/docs"
    return payload


def test_the_example_pull_request_deploys(client, db_session, work):
    """The baseline the hostile cases below change one field of: this delivery creates docs-pr-7."""
    assert post(client, "pull_request", docs_pull_request()).status_code == 202
    work()
    [row] = deliveries(db_session)
    assert row.status is DeliveryStatus.PROCESSED, row.outcome
    assert db_session.scalars(select(Deployment.name)).all() == ["docs-pr-7"]


@pytest.mark.parametrize(("field", "change"), [
    ("action", lambda p: p.update(action="opened\x00")),
    ("sender.login", lambda p: p["sender"].update(login="octo\x00cat")),
    ("repository.full_name", lambda p: p["repository"].update(full_name="acme/docs\x00")),
])
def test_a_nul_in_a_recorded_field_is_stored_cleaned_and_the_delivery_ignored(client, db_session, work, field,
                                                                               change):
    payload = docs_pull_request()
    change(payload)
    response = post(client, "pull_request", payload, delivery="nul-1")
    assert response.status_code == 202, response.json
    [row] = deliveries(db_session)
    assert "\x00" not in f"{row.action}{row.sender}{row.repository}"
    assert "\ufffd" in f"{row.action}{row.sender}{row.repository}"
    assert row.payload == payload  # the payload is kept as sent
    work()
    [row] = deliveries(db_session)
    assert row.status is DeliveryStatus.IGNORED
    assert row.outcome.startswith(f"ignored: the payload is not as GitHub sends it ({field}: ")
    assert db_session.scalars(select(Deployment)).all() == []
    # A redelivery is answered as the duplicate it is, not failed again.
    assert post(client, "pull_request", payload, delivery="nul-1").json == {"delivery": "nul-1", "duplicate": True}


def test_a_pull_request_number_past_the_database_range_is_ignored_without_sql(client, db_session, work):
    payload = docs_pull_request(number=2**31)
    assert post(client, "pull_request", payload).status_code == 202
    work()
    [row] = deliveries(db_session)
    assert row.status is DeliveryStatus.IGNORED
    assert row.outcome == ("ignored: the payload is not as GitHub sends it (pull_request.number: 2147483648 is out "
                           "of range (1 to 2147483647))")
    assert db_session.scalars(select(Deployment)).all() == []


def test_a_repository_that_is_a_list_deploys_nothing(client, db_session, work):
    payload = docs_pull_request()
    payload["repository"] = []
    assert post(client, "pull_request", payload).status_code == 202
    work()
    [row] = deliveries(db_session)
    assert row.status is DeliveryStatus.IGNORED
    assert row.outcome == "ignored: the payload is not as GitHub sends it (repository: must be an object, not an array)"
    assert db_session.scalars(select(Deployment)).all() == []


def test_a_database_error_is_logged_and_only_named_in_the_outcome(client, db_session, worker_ctx, work, caplog):
    def fails_in_the_database(event, ctx):
        ctx.session.execute(text("SELECT 'secret-literal'::int"))
        return Outcome.processed("processed")

    worker_ctx.router.add(fails_in_the_database, "made_up")
    assert post(client, "made_up", {"zen": "x"}).status_code == 202
    work()
    [row] = deliveries(db_session)
    assert row.status is DeliveryStatus.FAILED
    assert row.outcome == "failed: DataError from the database (the server log has the details)"
    # The API shows the outcome as stored; the log keeps the statement for whoever debugs it.
    assert "secret-literal" in caplog.text
    admin = create_token(db_session, "admin-test", Scopes(admin=True))
    db_session.commit()
    shown = client.get("/api/v1/deliveries", headers={"Authorization": f"Bearer {admin}"})
    assert shown.status_code == 200
    assert [d["outcome"] for d in shown.json["deliveries"]] == [row.outcome]
