"""Pull requests from forks: never deployed on their own; a writer's `/sami deploy` approves the head
commit, and only that one. The pull request is read from Prism (GitHub's example pull request comes
from octocat/Hello-World, so into acme/probe it is a fork); the writer's permission is Prism's
example answer (admin)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import select

from bot import outbox
from bot.core.models import Action, PullRequestRecord
from bot.github import router, senders
from tests.github.conftest import token_client
from tests.github.test_conversation import comment_payload
from tests.github.test_handlers import pr_event, sha
from tests.pipeline import conftest as pipeline

probe_repo, record, settings, test_config = pipeline.probe_repo, pipeline.record, pipeline.settings, \
    pipeline.test_config
worker_ctx, services_ctx, work = pipeline.worker_ctx, pipeline.services_ctx, pipeline.work
REPOSITORY, NUMBER, PRISM_HEAD = "acme/probe", 1347, "6dcb09b5b57875f334f61aebed695e2e4193db5e"


def comment(body: str) -> router.Event:
    payload = comment_payload(body)
    payload["repository"]["full_name"] = REPOSITORY
    return router.Event(name="issue_comment", action="created", delivery_id=str(uuid.uuid4()), payload=payload)


def sticky(db_session, worker_ctx) -> str:
    found = outbox.pull_request_record(db_session, REPOSITORY, NUMBER)
    return senders.render_comment(db_session, REPOSITORY, NUMBER, found, senders.Sender(None, "https://sami.test"),
                                 datetime.now(UTC))


def test_a_fork_waits_for_a_writers_approval_of_each_commit(db_session, dispatch, worker_ctx, github_mock):
    worker_ctx.github = token_client(github_mock.url)
    opened = pr_event("opened", number=NUMBER, head=PRISM_HEAD, fork_of="octocat/Hello-World")
    assert dispatch(opened) == (f"held probe-pr-{NUMBER}: fork (octocat/Hello-World) at {PRISM_HEAD[:7]} waits "
                                "for a writer's /sami deploy")
    assert "⏸️ **Waiting for approval**" in sticky(db_session, worker_ctx)

    assert dispatch(comment("/sami deploy")) == f"created probe-pr-{NUMBER} at {PRISM_HEAD[:7]}"
    found = db_session.scalars(select(PullRequestRecord)).one()
    assert (found.approved_sha, found.approved_by, found.fork) == (PRISM_HEAD, "Codertocat", True)
    assert "Waiting for approval" not in sticky(db_session, worker_ctx)
    assert len(db_session.scalars(select(Action)).all()) == 1

    # A new push is not approved: the environment stays at the approved commit, and the comment says so.
    pushed = pr_event("synchronize", number=NUMBER, head=sha(9), fork_of="octocat/Hello-World")
    assert dispatch(pushed) == (f"held probe-pr-{NUMBER}: fork (octocat/Hello-World) at {sha(9)[:7]} waits for a "
                                "writer's /sami deploy")
    assert len(db_session.scalars(select(Action)).all()) == 1
    text = sticky(db_session, worker_ctx)
    assert "⏸️ **Waiting for approval**" in text and f"commit `{sha(9)[:7]}` only" in text
