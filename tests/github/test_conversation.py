"""`/sami` comments end to end: GitHub's example issue_comment payload (made a pull request comment),
signed and posted to the webhook, processed by an RQ worker, the action run by the probe control
scripts, and every answer sent through the outbox with PyGithub to Prism serving GitHub's API
description (behind a proxy that counts what reached it). Permission answers Prism cannot vary (it
always says admin) come from the recording fake GitHub."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
import yaml
from sqlalchemy import select, update

from bot.core.models import Action, Delivery, Deployment, OutboxRow, OutboxState
from bot.core.states import ActionState, DeploymentState
from bot.github import router
from bot.github.comment import MARKER
from bot.services import deployments
from tests.github.conftest import token_client
from tests.github.webhook_fixtures import post, queued_jobs
from tests.pipeline import conftest as pipeline
from tests.support import github_payloads
from tests.support.github_mock import FakeGitHub, FlakyProxy, Reply
from workers.lease import db_now
from workers.scheduler import Scheduler, TickReport

probe_repo, record, settings = pipeline.probe_repo, pipeline.record, pipeline.settings
worker_ctx, services_ctx, work = pipeline.worker_ctx, pipeline.services_ctx, pipeline.work
# Prism answers with GitHub's example pull request: octocat/Hello-World #1347 at this head commit.
REPOSITORY, NUMBER, HEAD = "octocat/Hello-World", 1347, "6dcb09b5b57875f334f61aebed695e2e4193db5e"


@pytest.fixture
def test_config(test_config, probe_repo, tmp_path):
    for environment in ("stage", "pull_request"):
        path = probe_repo / f"services/probe/swarm/{environment}/sami.yaml"
        path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), "repository": REPOSITORY},
                                       sort_keys=False))
    return {**test_config, "deployments_repo": str(probe_repo), "static_root": str(tmp_path / "sites"),
            "base_domain": "example.test", "public_url": "https://sami.example.test"}


def comment_payload(body: str, *, login: str = "Codertocat", user_type: str = "User", on_pull_request: bool = True,
                    action: str = "created") -> dict[str, Any]:
    """GitHub's example ``issue_comment`` delivery, on pull request #1347 of octocat/Hello-World."""
    payload = github_payloads.example("issue_comment", action)
    payload["repository"]["full_name"] = REPOSITORY
    payload["issue"]["number"] = NUMBER
    if on_pull_request:
        payload["issue"]["pull_request"] = {
            "url": f"https://api.github.com/repos/{REPOSITORY}/pulls/{NUMBER}",
            "html_url": f"https://github.com/{REPOSITORY}/pull/{NUMBER}",
            "diff_url": f"https://github.com/{REPOSITORY}/pull/{NUMBER}.diff",
            "patch_url": f"https://github.com/{REPOSITORY}/pull/{NUMBER}.patch", "merged_at": None}
    payload["comment"]["body"] = body
    payload["comment"]["user"] = {**payload["comment"]["user"], "login": login, "type": user_type}
    payload["sender"] = {**payload["sender"], "login": login, "type": user_type}
    return payload


def send_outbox(db_session, worker_ctx, work) -> None:
    """The scheduler queues the due rows (the coalescing delay passed), an RQ worker sends them."""
    scheduler = Scheduler(worker_ctx)
    for _ in range(5):
        db_session.execute(update(OutboxRow).where(OutboxRow.state == OutboxState.PENDING)
                           .values(due_at=db_now(db_session) - timedelta(seconds=1)))
        db_session.commit()
        report = TickReport()
        scheduler.steps["sweep_outbox"](report, db_now(db_session))
        if not report.outbox:
            return
        work()


def outcome(db_session, delivery: str) -> str:
    db_session.expire_all()
    return db_session.scalars(select(Delivery.outcome).where(Delivery.delivery_id == delivery)).one()


def sent(proxy: FlakyProxy, method: str, suffix: str) -> list[Any]:
    return [body for m, path, body in proxy.forwarded if m == method and path.endswith(suffix)]


def test_a_writers_deploy_is_acknowledged_run_and_reported(client, db_session, worker_ctx, work, github_mock):
    with FlakyProxy(github_mock.url) as proxy:
        worker_ctx.github = token_client(proxy.url)
        assert post(client, "issue_comment", comment_payload("Looks good.\n/sami deploy"),
                    delivery="c-1").status_code == 202
        # The delivery's job: permission read (Prism: admin), eyes, the pull request read, the action queued.
        from workers.deliveries import process_delivery

        row_id = db_session.scalars(select(Delivery.id).where(Delivery.delivery_id == "c-1")).one()
        assert process_delivery(row_id, ctx=worker_ctx) == "processed"
        assert outcome(db_session, "c-1") == f"created probe-pr-{NUMBER} at {HEAD[:7]}"
        send_outbox(db_session, worker_ctx, work)  # also runs the queued action: the worker takes both
        deployment = db_session.scalars(select(Deployment).where(Deployment.name == f"probe-pr-{NUMBER}")).one()
        assert deployment.state is DeploymentState.RUNNING, deployment.status_message
        [action] = db_session.scalars(select(Action).where(Action.deployment_id == deployment.id)).all()
        assert (action.state, action.delivery_id, action.requested_by) == (ActionState.SUCCEEDED, "c-1",
                                                                           "github:Codertocat")
        send_outbox(db_session, worker_ctx, work)

    assert [body["content"] for body in sent(proxy, "POST", "/reactions")] == ["eyes", "rocket"]
    comments = sent(proxy, "POST", f"/issues/{NUMBER}/comments") + sent(proxy, "PATCH", "/comments/1")
    # Once per settled state at most: Creating (or already Running), then Running.
    assert 1 <= len(comments) <= 2
    final = comments[-1]["body"]
    assert final.startswith(MARKER)
    assert "🟢 Running" in final and f"https://probe-pr-{NUMBER}.example.test" in final
    assert f"https://sami.example.test/deployments/probe-pr-{NUMBER}" in final
    assert "/sami deploy" in final and "Codertocat" in final
    [deployment_body] = sent(proxy, "POST", "/deployments")
    assert deployment_body["environment"] == f"probe-pr-{NUMBER}" and deployment_body["ref"] == HEAD
    assert deployment_body["transient_environment"] is True
    statuses = sent(proxy, "POST", "/deployments/1/statuses")
    assert statuses[-1]["state"] == "success"
    assert statuses[-1]["environment_url"] == f"https://probe-pr-{NUMBER}.example.test"
    assert statuses[-1]["log_url"].startswith(f"https://sami.example.test/deployments/probe-pr-{NUMBER}")
    assert all(len(s["description"]) <= 140 for s in statuses)
    commit_statuses = sent(proxy, "POST", f"/statuses/{HEAD}")
    assert commit_statuses[-1]["context"] == "sami/probe" and commit_statuses[-1]["state"] == "success"
    assert db_session.scalars(select(OutboxRow.state).where(OutboxRow.state != OutboxState.DELIVERED)
                              .where(OutboxRow.state != OutboxState.SKIPPED)).all() == []


class RecordingFakePermissions(FakeGitHub):
    """The recording fake GitHub answering a reader's permission, which Prism's single example (admin)
    cannot express; it also takes the reply and the reaction the refusal sends."""

    def __init__(self, permission: str):
        super().__init__()
        self.on("GET", f"/repos/{REPOSITORY}/collaborators/Reader/permission",
                Reply(200, {"permission": permission, "role_name": permission, "user": {"login": "Reader"}}))
        self.on("POST", f"/repos/{REPOSITORY}/issues/{NUMBER}/comments", Reply(201, {"id": 900, "body": ""}))
        self.on("PATCH", f"/repos/{REPOSITORY}/issues/comments/900", Reply(200, {"id": 900, "body": ""}))
        self.on("POST", f"/repos/{REPOSITORY}/issues/comments/492700400/reactions",
                Reply(201, {"id": 1, "content": "confused"}))


def test_a_readers_archive_is_refused_with_the_reason_and_queues_nothing(client, db_session, worker_ctx, work,
                                                                       redis_client):
    with RecordingFakePermissions("read") as fake:
        worker_ctx.github = token_client(fake.url)
        assert post(client, "issue_comment", comment_payload("/sami archive", login="Reader"),
                    delivery="c-2").status_code == 202
        work()
        why = f"Reader has read permission on {REPOSITORY}; changing environments needs write, maintain or admin"
        assert outcome(db_session, "c-2") == f"refused: {why}"
        assert db_session.scalars(select(Action)).all() == [] and queued_jobs(redis_client) == []
        send_outbox(db_session, worker_ctx, work)
        replies = [r.body["body"] for r in fake.calls("POST", f"/repos/{REPOSITORY}/issues/{NUMBER}/comments")]
        assert any(f"Sami refused `/sami archive`: {why}." in body for body in replies), replies
        assert any(body.startswith(MARKER) and "refused" in body for body in replies), replies
        assert [r.body for r in fake.calls("POST", f"/repos/{REPOSITORY}/issues/comments/492700400/reactions")] == [
            {"content": "confused"}]
        assert len(fake.calls("GET", f"/repos/{REPOSITORY}/collaborators/Reader/permission")) == 1


@pytest.fixture
def dispatch(db_session, worker_ctx, services_ctx):
    def run(payload: dict[str, Any]) -> str:
        ctx = router.HandlerContext(session=db_session, manifests=worker_ctx.manifests, services=services_ctx,
                                    settings=worker_ctx.settings, github=worker_ctx.github)
        event = router.Event(name="issue_comment", action=payload["action"], delivery_id=str(uuid.uuid4()),
                             payload=payload)
        return worker_ctx.router.dispatch(event, ctx).text

    return run


@pytest.mark.parametrize(("payload", "expected"), [
    (comment_payload("/sami deploy", action="edited"), "ignored: Sami does not act on issue_comment.edited"),
    (comment_payload("/sami deploy", user_type="Bot", login="sami[bot]"), "ignored: a comment by a bot"),
    (comment_payload(MARKER + "\n/sami deploy"), "ignored: a comment by a bot"),
    (comment_payload("/sami deploy", on_pull_request=False), "ignored: a comment on an issue, not on a pull request"),
    (comment_payload("Nice work!"), "ignored: no /sami command in the comment"),
])
def test_comments_that_trigger_nothing(dispatch, db_session, payload, expected):
    assert dispatch(payload) == expected
    assert db_session.scalars(select(OutboxRow)).all() == []


def test_an_unreadable_command_is_answered_and_runs_nothing(dispatch, db_session):
    assert dispatch(comment_payload("/sami deploy\n/sami deplyo")) == (
        "refused: unknown command 'deplyo': did you mean `/sami deploy`? (`/sami help` explains them)")
    rows = db_session.scalars(select(OutboxRow).order_by(OutboxRow.id)).all()
    assert [row.kind for row in rows] == ["reply", "reaction"]
    assert "line 2: unknown command 'deplyo'" in rows[0].payload["body"]
    assert db_session.scalars(select(Action)).all() == []


def test_help_is_a_reply_naming_the_services(dispatch, db_session, worker_ctx, github_mock):
    worker_ctx.github = token_client(github_mock.url)
    assert dispatch(comment_payload("/sami help")) == "help sent"
    [reply] = db_session.scalars(select(OutboxRow).where(OutboxRow.kind == "reply")).all()
    assert "`/sami deploy [service…]`" in reply.payload["body"] and "Services: `probe`." in reply.payload["body"]


def test_a_writer_rolls_back_archives_and_restores_from_comments(dispatch, db_session, worker_ctx, work, github_mock):
    from tests.github.test_handlers import pr_event

    worker_ctx.github = token_client(github_mock.url)
    assert dispatch(comment_payload("/sami deploy probe")) == f"created probe-pr-{NUMBER} at {HEAD[:7]}"
    work()
    pushed = pr_event("synchronize", number=NUMBER, head="2" * 40)
    pushed.payload["repository"]["full_name"] = REPOSITORY
    pushed.payload["pull_request"]["base"]["repo"]["full_name"] = REPOSITORY
    pushed.payload["pull_request"]["head"]["repo"]["full_name"] = REPOSITORY
    handler_ctx = router.HandlerContext(
        session=db_session, manifests=worker_ctx.manifests, settings=worker_ctx.settings, github=worker_ctx.github,
        services=deployments.Context.from_settings(worker_ctx.settings, worker_ctx.broker))
    assert worker_ctx.router.dispatch(pushed, handler_ctx).text == f"updated probe-pr-{NUMBER} to 2222222"
    work()

    def deployment() -> Deployment:
        db_session.expire_all()
        return db_session.scalars(select(Deployment).where(Deployment.name == f"probe-pr-{NUMBER}")).one()

    assert deployment().tag == "2" * 40
    answer = dispatch(comment_payload("/sami rollback probe"))
    assert answer.startswith(f"rollback of probe-pr-{NUMBER} queued (action ")
    # The rollback belongs to the comment's delivery, so its reaction settles (🚀 or 😕) when it ends.
    rollback = db_session.get(Action, int(answer.rsplit(" ", 1)[1].rstrip(")")))
    assert rollback.delivery_id is not None and rollback.config["rollback_to"]
    work()
    assert (deployment().state, deployment().tag) == (DeploymentState.RUNNING, HEAD)
    assert dispatch(comment_payload("/sami archive")).startswith(f"archive of probe-pr-{NUMBER} queued")
    work()
    assert deployment().state is DeploymentState.ARCHIVED
    assert dispatch(comment_payload("/sami restore")).startswith(f"restore of probe-pr-{NUMBER} queued")
    work()
    assert deployment().state is DeploymentState.RUNNING
    # An archive while an update is queued is answered with why, not queued. A writer's update deploys over the
    # rollback's pin, and says it unpinned it.
    assert dispatch(comment_payload("/sami update")) == f"updated probe-pr-{NUMBER} again at {HEAD[:7]}, unpinned"
    assert "failed" in dispatch(comment_payload("/sami archive"))
    kinds = [a.kind for a in db_session.scalars(select(Action).order_by(Action.id))]
    # A rollback is an update back to the earlier config (its tag is checked above).
    assert kinds == ["create", "update", "update", "archive", "restore", "update"]


def test_a_rollback_from_a_comment_holds_off_pushes_until_sami_unpin(dispatch, db_session, worker_ctx, work,
                                                                     github_mock):
    from tests.github.test_handlers import pr_event

    worker_ctx.github = token_client(github_mock.url)
    handler_ctx = router.HandlerContext(
        session=db_session, manifests=worker_ctx.manifests, settings=worker_ctx.settings, github=worker_ctx.github,
        services=deployments.Context.from_settings(worker_ctx.settings, worker_ctx.broker))

    def push(head: str) -> str:
        pushed = pr_event("synchronize", number=NUMBER, head=head)
        for where in (pushed.payload["repository"], pushed.payload["pull_request"]["base"]["repo"],
                      pushed.payload["pull_request"]["head"]["repo"]):
            where["full_name"] = REPOSITORY
        return worker_ctx.router.dispatch(pushed, handler_ctx).text

    def deployment() -> Deployment:
        db_session.expire_all()
        return db_session.scalars(select(Deployment).where(Deployment.name == f"probe-pr-{NUMBER}")).one()

    assert dispatch(comment_payload("/sami deploy probe")) == f"created probe-pr-{NUMBER} at {HEAD[:7]}"
    work()
    assert push("2" * 40) == f"updated probe-pr-{NUMBER} to 2222222"
    work()
    assert dispatch(comment_payload("/sami rollback probe")).startswith(f"rollback of probe-pr-{NUMBER} queued")
    work()
    assert (deployment().tag, deployment().pinned_by) == (HEAD, "github:Codertocat")

    # The next push is refused, saying who pinned it and how to unpin; it stays at the rolled-back commit.
    refused = push("3" * 40)
    assert refused.startswith(f"refused deployment 'probe-pr-{NUMBER}' is pinned by github:Codertocat at "), refused
    assert f"sami unpin probe-pr-{NUMBER}" in refused and "comment /sami unpin" in refused
    assert deployment().tag == HEAD

    # Only writers may unpin (the same permission as any command that changes an environment).
    assert dispatch(comment_payload("/sami unpin probe")) == f"unpinned probe-pr-{NUMBER}: pushes deploy it again"
    assert deployment().pinned_by is None
    assert dispatch(comment_payload("/sami unpin")) == f"unchanged probe-pr-{NUMBER}: not pinned"
    assert push("3" * 40) == f"updated probe-pr-{NUMBER} to 3333333"
