"""The GitHub outbox: rows written in the transaction of the state change that causes them, coalesced,
sent through PyGithub to Prism serving GitHub's API description, retried with backoff while GitHub
answers 502, and sent exactly once in the end. Answers Prism cannot give (a refusal, a rate limit) come
from the recording fake GitHub."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import sessionmaker

from bot import outbox
from bot.core import db
from bot.core.config import settings_from_mapping
from bot.core.models import Action, Deployment, OutboxRow, OutboxState, PullRequestRecord
from bot.core.states import ActionState, DeploymentState, note_running, transition, transition_action
from bot.github import senders
from bot.services import deployments
from tests.github import webhook_fixtures
from tests.github.conftest import token_client
from tests.pipeline.probe_scripts import write_probe_repo
from tests.support.github_mock import FlakyProxy, Reply
from workers import outbox as outbox_jobs
from workers.context import build_context
from workers.lease import db_now
from workers.queue import RQBroker
from workers.scheduler import Scheduler, TickReport

work = webhook_fixtures.work
HEAD = "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d"
O = OutboxState  # noqa: E741


@pytest.fixture
def settings(test_config, tmp_path):
    repo = write_probe_repo(tmp_path / "deployments", tmp_path / "record")
    return settings_from_mapping({**test_config, "deployments_repo": str(repo), "base_domain": "example.test",
                                  "public_url": "https://sami.example.test"})


@pytest.fixture
def worker_ctx(settings, session_factory, redis_client):
    ctx = build_context(settings, broker=RQBroker(redis_client), session_factory=session_factory)
    yield ctx


def pr_request(number: int = 7, sha: str = HEAD, debounce: float = 0) -> deployments.DeploymentRequest:
    return deployments.DeploymentRequest(service="probe", environment="pull_request", requested_by="github:octocat",
                                      origin="webhook", tag=sha, sha=sha, pull_request=number,
                                      source_repo="acme/probe", debounce_seconds=debounce)


def accept(db_session, worker_ctx, number: int = 7, sha: str = HEAD, debounce: float = 0) -> deployments.Accepted:
    ctx = deployments.Context.from_settings(worker_ctx.settings, None)  # recorded, not queued: the test runs it
    return deployments.request_deployment(db_session, worker_ctx.manifests.current(),
                                       pr_request(number, sha, debounce), ctx)


def rows(db_session) -> list[OutboxRow]:
    db_session.expire_all()
    return list(db_session.scalars(select(OutboxRow).order_by(OutboxRow.id)))


def settle(db_session, action_id: int, state: ActionState = ActionState.SUCCEEDED) -> None:
    """Run and finish an action as a worker does: action and deployment change in one transaction."""
    action = db_session.get(Action, action_id)
    transition_action(action, ActionState.RUNNING)
    outbox.commit(db_session)
    transition_action(action, state)
    deployment = db_session.get(Deployment, action.deployment_id)
    transition(deployment, DeploymentState.RUNNING if state is ActionState.SUCCEEDED else DeploymentState.FAILURE)
    outbox.commit(db_session)


def settle_running(db_session, action_id: int, state: ActionState) -> None:
    """Finish a running action as a worker does."""
    action = db_session.get(Action, action_id)
    transition_action(action, state)
    deployment = db_session.get(Deployment, action.deployment_id)
    transition(deployment, DeploymentState.RUNNING if state is ActionState.SUCCEEDED else DeploymentState.FAILURE)
    outbox.commit(db_session)


def make_due(db_session) -> None:
    """Move every waiting row's time to now, as if the coalescing delay or a backoff had passed."""
    db_session.execute(update(OutboxRow).where(OutboxRow.state == O.PENDING)
                       .values(due_at=db_now(db_session) - timedelta(seconds=1)))
    db_session.commit()


def deliver_due(db_session, worker_ctx) -> list[str | None]:
    """What the scheduler and the workers do: every due row's job, once."""
    make_due(db_session)
    return [outbox_jobs.deliver_outbox_row(row_id, ctx=worker_ctx)
            for row_id in outbox_jobs.due_rows(db_session, db_now(db_session))]


def test_an_accepted_pull_request_deploy_writes_its_github_effects_in_the_same_transaction(db_session, worker_ctx):
    accepted = accept(db_session, worker_ctx)
    found = {(row.kind, row.action_id) for row in rows(db_session)}
    assert found == {("comment", None), ("deployment", accepted.action_id),
                     ("deployment_status", accepted.action_id), ("commit_status", accepted.action_id)}
    [deployment] = [row for row in rows(db_session) if row.kind == "deployment"]
    assert deployment.payload == {"ref": HEAD, "environment": "probe-pr-7", "transient": True}
    assert all(row.state is O.PENDING and row.repository == "acme/probe" for row in rows(db_session))


def test_a_rolled_back_state_change_leaves_no_row(db_session, worker_ctx):
    db_session.add(Deployment(name="probe-pr-9", service="probe", environment="pull_request", type="swarm",
                              state=DeploymentState.RUNNING, source_repo="acme/probe", pull_request=9,
                              app_overrides={}, deployment_overrides={}, links=[]))
    db_session.commit()
    deployment = db_session.scalars(select(Deployment)).one()
    transition(deployment, DeploymentState.FAILURE)
    outbox.commit(db_session)
    assert [row.kind for row in rows(db_session)] == ["comment"]
    make_due(db_session)  # the comment row is not waiting any more: a new change would add one
    db_session.execute(update(OutboxRow).values(state=O.DELIVERED))
    db_session.commit()
    transition(db_session.get(Deployment, deployment.id), DeploymentState.RUNNING)
    db_session.flush()
    db_session.rollback()
    outbox.commit(db_session)  # the rolled-back change is not taken by the next commit
    assert len(rows(db_session)) == 1


def test_a_state_change_committed_without_the_outbox_fails_the_tests_guard(db_session, worker_ctx):
    accepted = accept(db_session, worker_ctx)
    transition_action(db_session.get(Action, accepted.action_id), ActionState.RUNNING)
    with pytest.raises(AssertionError, match="GitHub would never hear of it"):
        db_session.commit()
    db_session.rollback()


def test_many_changes_while_a_row_waits_add_no_rows_but_every_state_is_a_deployment_status(db_session, worker_ctx):
    first = accept(db_session, worker_ctx)
    settle(db_session, first.action_id)
    second = accept(db_session, worker_ctx, sha="2" * 40)
    settle(db_session, second.action_id)
    kinds = [(row.kind, row.action_id) for row in rows(db_session)]
    # One comment row for the whole pull request; one Deployment and one commit status row per action,
    # however often each changed; one Deployment status per state each action reached.
    assert [kind for kind, _ in kinds].count("comment") == 1
    for action in (first.action_id, second.action_id):
        assert kinds.count(("deployment", action)) == 1 and kinds.count(("commit_status", action)) == 1
        assert [row.payload["state"] for row in rows(db_session)
                if (row.kind, row.action_id) == ("deployment_status", action)] == ["queued", "in_progress", "success"]


def test_rows_are_sent_through_pygithub_to_githubs_api_description(db_session, worker_ctx, github_mock):
    worker_ctx.github = token_client(github_mock.url)
    accepted = accept(db_session, worker_ctx)
    settle(db_session, accepted.action_id)
    results = deliver_due(db_session, worker_ctx)
    # The comment, the Deployment, its three statuses and the commit status.
    assert results.count("delivered") == 6, results
    by_kind = {row.kind: row for row in rows(db_session)}
    assert by_kind["deployment"].result == {"github_deployment": 1}  # the id in the example Prism answers
    assert by_kind["deployment_status"].result == {"state": "success"}
    assert by_kind["commit_status"].result == {"state": "success"}
    record = db_session.scalars(select(PullRequestRecord)).one()
    assert record.comment_id is not None and record.comment_digest
    # Nothing left to send, and the same state is not sent again.
    assert deliver_due(db_session, worker_ctx) == []
    outbox.request_sticky_comment(db_session.connection(), "acme/probe", 7)
    db_session.commit()
    assert deliver_due(db_session, worker_ctx) == ["skipped"]
    assert rows(db_session)[-1].result["skipped"] == "the comment says this already"


def test_without_credentials_rows_are_skipped_with_the_reason(db_session, worker_ctx):
    worker_ctx.github = None
    accept(db_session, worker_ctx)
    assert set(deliver_due(db_session, worker_ctx)) == {"skipped"}
    assert {row.result["skipped"] for row in rows(db_session)} == {"no GitHub credentials are set"}


def test_github_answering_502_delays_every_row_and_loses_none(db_session, worker_ctx, github_mock, work):
    with FlakyProxy(github_mock.url) as proxy:
        worker_ctx.github = token_client(proxy.url)
        proxy.down = True
        accepted = accept(db_session, worker_ctx)
        settle(db_session, accepted.action_id)
        archived = accept(db_session, worker_ctx, number=8)
        settle(db_session, archived.action_id, ActionState.FAILED)
        expected = len(rows(db_session))
        for _ in range(3):
            deliver_due(db_session, worker_ctx)
        assert proxy.refused >= expected and proxy.forwarded == []
        waiting = rows(db_session)
        assert all(row.state is O.PENDING for row in waiting)
        # Each failed try pushed its row back further: 5 s, then 10 s, then 20 s.
        assert {row.attempts for row in waiting if row.kind == "comment"} == {3}
        assert all("502" in row.last_error for row in waiting if row.kind == "comment")
        proxy.down = False
        scheduler = Scheduler(worker_ctx)
        for _ in range(8):  # the scheduler queues what is due; an RQ worker sends it
            make_due(db_session)
            report = TickReport()
            scheduler.steps["sweep_outbox"](report, db_now(db_session))
            if not report.outbox:
                break
            work()
        final = rows(db_session)
        assert [(row.kind, row.state, row.last_error, row.result) for row in final
                if row.state is not O.DELIVERED] == []
        assert len(final) == expected
        counts = proxy.counts()
        # Each create that had failed first looks for what its unanswered tries might have made (once per
        # try, so at least once each)...
        looked = {key: counts.pop(key) for key in list(counts) if key.startswith("GET ")}
        assert set(looked) == {"GET /repos/acme/probe/deployments", "GET /repos/acme/probe/issues/{n}/comments"}
        assert all(count >= 2 for count in looked.values()), looked
        # ...and everything is sent exactly once: two comments, two Deployments, one status and one commit
        # status per action.
        assert counts == {
            "POST /repos/acme/probe/deployments": 2,
            "POST /repos/acme/probe/deployments/{n}/statuses": 6,
            "POST /repos/acme/probe/issues/{n}/comments": 2,
            "POST /repos/acme/probe/statuses/{sha}": 2,
        }, counts
        statuses = [body["state"] for method, path, body in proxy.forwarded if path.endswith("/statuses")
                    and "deployments" in path]
        assert sorted(statuses) == ["failure", "in_progress", "in_progress", "queued", "queued", "success"]


def deployment_statuses(proxy) -> list[tuple[str, str]]:
    """The Deployment statuses GitHub was sent, in order: (Deployment path, state)."""
    return [(path.rsplit("/", 1)[0], body["state"]) for method, path, body in proxy.forwarded
            if method == "POST" and path.endswith("/statuses") and "/deployments/" in path]


def test_githubs_deployment_sees_queued_then_in_progress_then_success(db_session, worker_ctx, github_mock):
    with FlakyProxy(github_mock.url) as proxy:
        worker_ctx.github = token_client(proxy.url)
        accepted = accept(db_session, worker_ctx)
        deliver_due(db_session, worker_ctx)
        action = db_session.get(Action, accepted.action_id)
        transition_action(action, ActionState.RUNNING)  # what a worker's claim does
        outbox.commit(db_session)
        deliver_due(db_session, worker_ctx)
        settle_running(db_session, accepted.action_id, ActionState.SUCCEEDED)
        deliver_due(db_session, worker_ctx)
        assert [state for _, state in deployment_statuses(proxy)] == ["queued", "in_progress", "success"]


def test_githubs_deployment_sees_every_state_in_order_even_when_sent_late(db_session, worker_ctx, github_mock):
    with FlakyProxy(github_mock.url) as proxy:
        worker_ctx.github = token_client(proxy.url)
        accepted = accept(db_session, worker_ctx)
        settle(db_session, accepted.action_id, ActionState.FAILED)  # all before anything was sent
        # Sent newest first, each try of an earlier state's row waits for it: the order holds.
        for _ in range(4):
            make_due(db_session)
            for row_id in reversed(outbox_jobs.due_rows(db_session, db_now(db_session))):
                outbox_jobs.deliver_outbox_row(row_id, ctx=worker_ctx)
        assert [state for _, state in deployment_statuses(proxy)] == ["queued", "in_progress", "failure"]


def test_a_superseded_updates_deployment_becomes_inactive(db_session, worker_ctx, github_mock):
    with FlakyProxy(github_mock.url) as proxy:
        worker_ctx.github = token_client(proxy.url)
        first = accept(db_session, worker_ctx)
        settle(db_session, first.action_id)
        older = accept(db_session, worker_ctx, sha="2" * 40)
        deliver_due(db_session, worker_ctx)  # GitHub hears of the queued update...
        newer = accept(db_session, worker_ctx, sha="3" * 40)  # ...which a newer push replaces
        assert db_session.get(Action, older.action_id).state is ActionState.SUPERSEDED
        deliver_due(db_session, worker_ctx)
        by_action = {(row.kind, row.action_id, row.payload.get("state")): row.state for row in rows(db_session)}
        assert by_action[("deployment_status", older.action_id, "inactive")] is O.DELIVERED
        # After the first action's three: the older one queued, then inactive; the newer one queued (Prism
        # answers every create with the same Deployment id, so the rows tell which status was whose).
        assert sorted(state for _, state in deployment_statuses(proxy)[3:]) == ["inactive", "queued", "queued"]
        assert by_action[("deployment_status", newer.action_id, "queued")] is O.DELIVERED


def test_a_retried_comment_looks_for_the_one_an_unanswered_try_posted(db_session, worker_ctx, github_mock):
    worker_ctx.github = token_client(github_mock.url)
    outbox.request_sticky_comment(db_session.connection(), "acme/probe", 3)
    db_session.commit()
    assert len(rows(db_session)) == 1
    db_session.execute(update(OutboxRow).values(attempts=1))  # one try went out; its answer never came
    db_session.commit()
    assert deliver_due(db_session, worker_ctx) == ["delivered"]
    record = db_session.scalars(select(PullRequestRecord)).one()
    # Prism's example comments do not carry the marker: the list was read, then the comment posted.
    assert record.comment_id is not None
    assert rows(db_session)[0].attempts == 2


def test_the_outbox_api_lists_rows_for_admins_only(client, db_session, worker_ctx):
    from bot.services.tokens import Scopes, create_token

    accept(db_session, worker_ctx)
    admin = create_token(db_session, "admin-test", Scopes(admin=True))
    reader = create_token(db_session, "reader-test", Scopes())
    db_session.commit()
    answer = client.get("/api/v1/outbox", headers={"Authorization": f"Bearer {admin}"})
    assert answer.status_code == 200
    assert {row["kind"] for row in answer.json["outbox"]} == {"comment", "deployment", "deployment_status",
                                                              "commit_status"}
    assert all(row["state"] == "pending" for row in answer.json["outbox"])
    refused = client.get("/api/v1/outbox", headers={"Authorization": f"Bearer {reader}"})
    assert refused.status_code == 403
    bad = client.get("/api/v1/outbox?state=lost", headers={"Authorization": f"Bearer {admin}"})
    assert bad.status_code == 400 and "'lost'" in bad.json["error"]


def test_a_validation_status_is_sent_to_the_pushed_commit(db_session, worker_ctx, github_mock):
    worker_ctx.github = token_client(github_mock.url)
    outbox.add(db_session, key=f"validation:acme/deployments@{HEAD}", kind="commit_status_validation",
               repository="acme/deployments", payload={"sha": HEAD, "state": "failure", "context": "sami/validate",
                                                       "description": "1 manifest error: services/a/sami.yaml:3: x",
                                                       "target_url": "https://sami.example.test/api/v1/services"})
    # Recorded once however often the push is delivered.
    outbox.add(db_session, key=f"validation:acme/deployments@{HEAD}", kind="commit_status_validation",
               repository="acme/deployments", payload={})
    db_session.commit()
    assert deliver_due(db_session, worker_ctx) == ["delivered"]
    assert rows(db_session)[0].result == {"state": "failure"}


def test_rows_sent_long_ago_are_forgotten_and_failed_ones_kept(db_session, worker_ctx):
    worker_ctx.github = None
    accept(db_session, worker_ctx)
    deliver_due(db_session, worker_ctx)  # all skipped: no credentials
    kept = rows(db_session)[0]
    db_session.execute(update(OutboxRow).where(OutboxRow.id == kept.id).values(state=O.FAILED))
    db_session.commit()
    later = db_now(db_session) + outbox_jobs.KEEP_SENT + timedelta(minutes=1)
    assert outbox_jobs.prune(db_session, db_now(db_session)) == 0
    assert outbox_jobs.prune(db_session, later) == 3
    assert [row.id for row in rows(db_session)] == [kept.id]


def test_an_update_superseded_before_it_ran_makes_no_github_deployment(db_session, worker_ctx, github_mock):
    worker_ctx.github = token_client(github_mock.url)
    first = accept(db_session, worker_ctx)
    settle(db_session, first.action_id)
    deliver_due(db_session, worker_ctx)
    older = accept(db_session, worker_ctx, sha="2" * 40)
    newer = accept(db_session, worker_ctx, sha="3" * 40)  # supersedes the queued older update
    assert db_session.get(Action, older.action_id).state is ActionState.SUPERSEDED
    deliver_due(db_session, worker_ctx)
    by_action = {(row.kind, row.action_id): row for row in rows(db_session)}
    assert by_action[("deployment", older.action_id)].result == {
        "skipped": "the action was superseded before it started"}
    assert by_action[("deployment_status", older.action_id)].result == {
        "skipped": "its GitHub Deployment could not be created"}
    assert by_action[("commit_status", older.action_id)].result == {"skipped": "the action never ran"}
    assert by_action[("deployment", newer.action_id)].state is O.DELIVERED


def add_validation_status(db_session) -> OutboxRow:
    """A one-off row that makes one request: the deployments repo commit's validation status."""
    outbox.add(db_session, key=f"validation:acme/deployments@{HEAD}", kind="commit_status_validation",
               repository="acme/deployments", payload={"sha": HEAD, "state": "success", "context": "sami/validate",
                                                       "description": "manifests valid"})
    db_session.commit()
    return rows(db_session)[0]


REFUSED = {
    "422": Reply(422, {"message": "Validation Failed", "errors": [{"resource": "Status", "code": "custom"}]}),
    "404": Reply(404, {"message": "Not Found"}),
    "403 without rate-limit headers": Reply(403, {"message": "Resource not accessible by integration"}),
}


@pytest.mark.parametrize("answer", REFUSED)
def test_a_request_github_refuses_fails_its_row_after_one_try(db_session, worker_ctx, token_fake, answer):
    status_path = f"/repos/acme/deployments/statuses/{HEAD}"
    token_fake.on("POST", status_path, REFUSED[answer])
    worker_ctx.github = token_client(token_fake.url)
    add_validation_status(db_session)
    assert deliver_due(db_session, worker_ctx) == ["failed"]
    [row] = rows(db_session)
    assert (row.state, row.attempts, row.delivered_at) == (O.FAILED, 1, None)
    reply = REFUSED[answer]
    assert f"GitHub answered {reply.status}: {reply.body['message']}" in row.last_error
    # Sending it again would be refused again: it is not tried again.
    assert deliver_due(db_session, worker_ctx) == []
    assert len(token_fake.calls("POST", status_path)) == 1


BUSY = {
    "429": Reply(429, {"message": "Too Many Requests"}),
    "500": Reply(500, {"message": "Server Error"}),
    "502": Reply(502, {"message": "Server Error"}),
    "503": Reply(503, {"message": "Service Unavailable"}),
    "403 with the rate limit used up": Reply(403, {"message": "API rate limit exceeded"},
                                             {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "0"}),
}


@pytest.mark.parametrize("answer", BUSY)
def test_a_request_github_could_not_take_now_is_tried_again_later(db_session, worker_ctx, token_fake, answer):
    status_path = f"/repos/acme/deployments/statuses/{HEAD}"
    token_fake.on("POST", status_path, BUSY[answer], Reply(201, {"id": 1, "state": "success"}))
    worker_ctx.github = token_client(token_fake.url)
    add_validation_status(db_session)
    tried_at = db_now(db_session)
    [job] = outbox_jobs.due_rows(db_session, tried_at)
    assert outbox_jobs.deliver_outbox_row(job, ctx=worker_ctx) == "pending"
    [row] = rows(db_session)
    assert (row.state, row.attempts) == (O.PENDING, 1)
    assert row.due_at >= tried_at + timedelta(seconds=outbox_jobs.FIRST_BACKOFF)
    assert ("rate limit is used up" if "rate limit" in answer else f"GitHub answered {BUSY[answer].status}") \
        in row.last_error
    assert outbox_jobs.due_rows(db_session, db_now(db_session)) == []  # not before its time
    assert deliver_due(db_session, worker_ctx) == ["delivered"]
    assert len(token_fake.calls("POST", status_path)) == 2


def test_a_failed_try_whose_newer_row_waits_is_skipped_not_put_back(db_session, worker_ctx, github_mock):
    outbox.request_sticky_comment(db_session.connection(), "acme/probe", 3)
    db_session.commit()
    [older] = rows(db_session)
    # Its first worker died while sending it; meanwhile the pull request changed again.
    db_session.execute(update(OutboxRow).where(OutboxRow.id == older.id).values(
        state=O.DELIVERING, attempts=1,
        claimed_at=db_now(db_session) - outbox_jobs.STALE_DELIVERING - timedelta(seconds=1)))
    outbox.request_sticky_comment(db_session.connection(), "acme/probe", 3)
    db_session.commit()
    [newer] = [row for row in rows(db_session) if row.id != older.id]
    with FlakyProxy(github_mock.url) as proxy:
        worker_ctx.github = token_client(proxy.url)
        proxy.down = True
        # Retried on its own it would wait beside the newer row, which the index of waiting rows refuses.
        assert outbox_jobs.deliver_outbox_row(older.id, ctx=worker_ctx) == "skipped"
        assert proxy.refused == 1
        by_id = {row.id: row for row in rows(db_session)}
        assert by_id[older.id].state is O.SKIPPED
        assert by_id[older.id].result == {"skipped": "a newer row sends the latest state"}
        assert by_id[newer.id].state is O.PENDING
        proxy.down = False
        assert deliver_due(db_session, worker_ctx) == ["delivered"]
    assert [method for method, _, _ in proxy.forwarded].count("POST") == 1


@pytest.fixture
def own_worker_ctx(test_config, own_database_url, redis_client):
    """A worker context on a database of the test's own, for jobs running at once in threads with
    connections of their own, as two workers' jobs do."""
    engine = db.make_engine(own_database_url)
    ctx = build_context(settings_from_mapping({**test_config, "database_url": own_database_url}),
                        broker=RQBroker(redis_client),
                        session_factory=sessionmaker(bind=engine, expire_on_commit=False))
    yield ctx
    engine.dispose()


@pytest.mark.parametrize("answered_first", ["the stale try", "the new try"])
def test_a_try_whose_claim_went_stale_leaves_the_row_to_the_new_claim(own_worker_ctx, token_fake, answered_first):
    ctx = own_worker_ctx
    ctx.github = token_client(token_fake.url)
    stale_answer, new_answer = threading.Event(), threading.Event()
    token_fake.on("POST", f"/repos/acme/deployments/statuses/{HEAD}",
                  Reply(422, {"message": "Validation Failed"}, held_until=stale_answer),
                  Reply(201, {"id": 2, "state": "success"}, held_until=new_answer))
    with ctx.session() as session:
        row_id = add_validation_status(session).id
    returned: dict[str, object] = {}

    def job(name: str) -> threading.Thread:
        def run() -> None:
            try:
                returned[name] = outbox_jobs.deliver_outbox_row(row_id, ctx=ctx)
            except Exception as exc:  # reported by the assertions below
                returned[name] = exc
        thread = threading.Thread(target=run)
        thread.start()
        return thread

    def row() -> OutboxRow:
        with ctx.session() as session:
            return session.get(OutboxRow, row_id)

    jobs = {"the stale try": job("the stale try")}
    try:
        assert token_fake.wait_for_requests(1)
        # GitHub takes so long to answer that the claim is taken for a dead worker's, and claimed again.
        with ctx.session() as session:
            session.execute(update(OutboxRow).where(OutboxRow.id == row_id).values(
                claimed_at=row().claimed_at - outbox_jobs.STALE_DELIVERING - timedelta(seconds=1)))
            session.commit()
        jobs["the new try"] = job("the new try")
        assert token_fake.wait_for_requests(2)
        new_claim = row().claimed_at
        answers = {"the stale try": stale_answer, "the new try": new_answer}
        answers[answered_first].set()
        jobs[answered_first].join()
        if answered_first == "the stale try":
            assert (row().state, row().claimed_at, row().last_error) == (O.DELIVERING, new_claim, None)
        else:
            assert row().state is O.DELIVERED
    finally:
        stale_answer.set()
        new_answer.set()
        for thread in jobs.values():
            thread.join()
    final = row()
    assert (final.state, final.attempts, final.last_error, final.result) == (O.DELIVERED, 2, None,
                                                                            {"state": "success"})
    # The stale job's answer was not its to write: it reports nothing.
    assert returned == {"the stale try": None, "the new try": "delivered"}


def test_an_update_waiting_for_newer_pushes_shows_on_github_only_once_it_may_start(db_session, worker_ctx,
                                                                                 github_mock):
    with FlakyProxy(github_mock.url) as proxy:
        worker_ctx.github = token_client(proxy.url)
        first = accept(db_session, worker_ctx)
        settle(db_session, first.action_id)
        deliver_due(db_session, worker_ctx)
        sent = len(proxy.forwarded)
        older = accept(db_session, worker_ctx, sha="2" * 40, debounce=60)
        # However often the outbox is sent while the update waits, GitHub hears nothing of it.
        for _ in range(2):
            deliver_due(db_session, worker_ctx)
        waiting = {row.kind: row.state for row in rows(db_session) if row.action_id == older.action_id}
        assert waiting == {"deployment": O.PENDING, "deployment_status": O.PENDING, "commit_status": O.PENDING}
        assert [path for _, path, _ in proxy.forwarded[sent:] if "/deployments" in path or "/statuses/" in path] == []

        # A newer push replaces it: it never shows on GitHub.
        newer = accept(db_session, worker_ctx, sha="3" * 40, debounce=60)
        assert db_session.get(Action, older.action_id).state is ActionState.SUPERSEDED
        deliver_due(db_session, worker_ctx)
        by_action = {(row.kind, row.action_id): row for row in rows(db_session)}
        assert by_action[("deployment", older.action_id)].result == {
            "skipped": "the action was superseded before it started"}
        assert by_action[("commit_status", older.action_id)].result == {"skipped": "the action never ran"}
        assert by_action[("deployment_status", older.action_id)].state is O.SKIPPED
        assert by_action[("deployment", newer.action_id)].state is O.PENDING

        # The newer one's time comes and it runs: its Deployment and statuses are sent, for its commit only.
        db_session.execute(update(Action).where(Action.id == newer.action_id)
                           .values(retry_at=db_now(db_session) - timedelta(seconds=1)))
        db_session.commit()
        settle(db_session, newer.action_id)
        for _ in range(2):
            deliver_due(db_session, worker_ctx)
        by_action = {(row.kind, row.action_id): row for row in rows(db_session)}
        assert by_action[("deployment", newer.action_id)].state is O.DELIVERED
        assert by_action[("deployment_status", newer.action_id)].result == {"state": "success"}
        assert by_action[("commit_status", newer.action_id)].result == {"state": "success"}
        shown = [(path, body.get("ref")) for _, path, body in proxy.forwarded[sent:]
                 if path.endswith("/deployments") or "/statuses/" in path]
        assert shown == [("/repos/acme/probe/deployments", "3" * 40), (f"/repos/acme/probe/statuses/{'3' * 40}", None)]


def test_a_drift_change_refreshes_the_sticky_comment_which_shows_a_drift_badge(db_session, worker_ctx, github_mock):
    worker_ctx.github = token_client(github_mock.url)
    accepted = accept(db_session, worker_ctx)
    settle(db_session, accepted.action_id)
    deliver_due(db_session, worker_ctx)
    assert not [row for row in rows(db_session) if row.state is O.PENDING]
    deployment = db_session.scalars(select(Deployment)).one()
    gone = [{"component": None, "field": "present", "deployed": "1 component(s)", "running": "nothing"}]
    assert note_running(deployment, {"components": []}, gone)
    outbox.commit(db_session)
    assert [row.kind for row in rows(db_session) if row.state is O.PENDING] == ["comment"]
    record = db_session.scalars(select(PullRequestRecord)).one()
    body = senders.render_comment(db_session, "acme/probe", 7, record,
                                  senders.Sender(worker_ctx.github, "https://sami.example.test"), db_now(db_session))
    assert "🟢 Running · 🟣 Drift: the deployment: nothing \\(deployed 1 component\\(s\\)\\)" in body
    assert deliver_due(db_session, worker_ctx) == ["delivered"]
    # The same verdict again changes nothing, so no row; in sync again refreshes the comment.
    assert not note_running(deployment, {"components": []}, gone)
    outbox.commit(db_session)
    assert not [row for row in rows(db_session) if row.state is O.PENDING]
    assert note_running(deployment, {"components": [{"name": "app"}]}, [])
    outbox.commit(db_session)
    assert [row.kind for row in rows(db_session) if row.state is O.PENDING] == ["comment"]
    assert "Drift" not in senders.render_comment(db_session, "acme/probe", 7, record,
                                                 senders.Sender(worker_ctx.github, "https://x.test"),
                                                 db_now(db_session))
