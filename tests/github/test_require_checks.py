"""require_checks: a pull request's deploy waits until its head commit's checks are green, read through
the API whenever a pull request or check event arrives. Green comes from Prism (GitHub's examples:
a neutral check run and successful statuses); red and running checks, which Prism's examples cannot
express, from the recording fake GitHub."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
import yaml
from sqlalchemy import select

from bot import outbox
from bot.core.models import Action, Deployment, OutboxRow, PullRequestRecord
from bot.core.states import DeploymentState
from bot.github import checks, router, senders
from tests.github.conftest import token_client
from tests.github.test_handlers import pr_event, sha
from tests.pipeline import conftest as pipeline
from tests.support import github_payloads
from tests.support.github_mock import FakeGitHub, Reply

probe_repo, record, settings = pipeline.probe_repo, pipeline.record, pipeline.settings
worker_ctx, services_ctx, work = pipeline.worker_ctx, pipeline.services_ctx, pipeline.work
REPOSITORY = "acme/probe"


@pytest.fixture
def test_config(test_config, probe_repo, tmp_path):
    path = probe_repo / "services/probe/swarm/pull_request/sami.yaml"
    path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), "require_checks": True}, sort_keys=False))
    return {**test_config, "deployments_repo": str(probe_repo), "static_root": str(tmp_path / "sites"),
            "base_domain": "example.test", "public_url": "https://sami.example.test"}


def run(name, conclusion=None):
    return {"id": 1, "name": name, "status": "completed" if conclusion else "in_progress", "conclusion": conclusion}


@pytest.mark.parametrize(("runs", "statuses", "state", "summary"), [
    ([run("build", "success"), run("lint", "neutral")], [{"context": "ci/jenkins", "state": "success"}], "success",
     "3 passed"),
    ([run("build", "success"), run("test")], [], "pending", "1 running: test"),
    ([run("build", "failure"), run("test")], [], "failure", "build: failure"),
    ([], [{"context": "ci/jenkins", "state": "error"}], "failure", "ci/jenkins: error"),
    # Sami's own statuses are not checks of the code; with nothing else, CI has not reported yet.
    ([], [{"context": "sami/probe", "state": "failure"}], "pending", "no checks reported yet"),
    ([], [], "pending", "no checks reported yet"),
])
def test_the_verdict_on_a_commits_checks(runs, statuses, state, summary):
    assert checks.verdict(runs, statuses) == checks.Verdict(state, summary)


class RecordingFakeChecks(FakeGitHub):
    """The recording fake GitHub answering check runs that are red or still running, which Prism's single
    example (a neutral run) cannot express, and the pull request read after a check event."""

    def answer(self, head: str, *runs_: dict) -> None:
        self.on("GET", f"/repos/{REPOSITORY}/commits/{head}/check-runs",
                Reply(200, {"total_count": len(runs_), "check_runs": list(runs_)}))
        self.on("GET", f"/repos/{REPOSITORY}/commits/{head}/status", Reply(200, {"state": "pending", "statuses": []}))

    def pull_request(self, number: int, head: str) -> None:
        payload = pr_event("synchronize", number=number, head=head).payload["pull_request"]
        self.on("GET", f"/repos/{REPOSITORY}/pulls/{number}", Reply(200, payload))


def check_suite(head: str) -> router.Event:
    payload = github_payloads.example("check_suite", "completed")
    payload["repository"]["full_name"] = REPOSITORY
    payload["check_suite"]["head_sha"] = head
    return router.Event(name="check_suite", action="completed", delivery_id=str(uuid.uuid4()), payload=payload)


def sticky_text(db_session, worker_ctx, number: int = 5) -> str:
    record_ = outbox.pull_request_record(db_session, REPOSITORY, number)
    return senders.render_comment(db_session, REPOSITORY, number, record_,
                                 senders.Sender(None, worker_ctx.settings.public_url), datetime.now(UTC))


def actions(db_session) -> list[Action]:
    db_session.expire_all()
    return list(db_session.scalars(select(Action)))


def test_red_then_running_then_green_checks(db_session, dispatch, worker_ctx, work):
    with RecordingFakeChecks() as fake:
        worker_ctx.github = token_client(fake.url)
        fake.answer(sha(1), run("build", "failure"), run("lint", "success"))
        assert dispatch(pr_event("opened", head=sha(1))) == (
            f"refused probe-pr-5: CI failed at {sha(1)[:7]} (build: failure); nothing is deployed until the checks "
            "pass")
        assert actions(db_session) == []
        assert "🔴 **CI failed** at commit" in sticky_text(db_session, worker_ctx)

        # CI runs again (a re-run): the check event is only a cue, the checks are read again.
        fake.answer(sha(1), run("build"), run("lint", "success"))
        fake.pull_request(5, sha(1))
        assert dispatch(check_suite(sha(1))) == f"held probe-pr-5: waiting for CI at {sha(1)[:7]} (1 running: build)"
        assert actions(db_session) == []
        text = sticky_text(db_session, worker_ctx)
        assert "| probe | ⏳ Waiting for CI |" in text and "CI failed" not in text

        fake.answer(sha(1), run("build", "success"), run("lint", "success"))
        assert dispatch(check_suite(sha(1))) == f"created probe-pr-5 at {sha(1)[:7]}"
        work()
        deployment = db_session.scalars(select(Deployment).where(Deployment.name == "probe-pr-5")).one()
        assert deployment.state is DeploymentState.RUNNING
        assert "Waiting for CI" not in sticky_text(db_session, worker_ctx)
        # The check runs were read once per decision (three), never taken from the events.
        assert len(fake.calls("GET", f"/repos/{REPOSITORY}/commits/{sha(1)}/check-runs")) == 3


def test_a_newer_push_replaces_the_wait(db_session, dispatch, worker_ctx):
    with RecordingFakeChecks() as fake:
        worker_ctx.github = token_client(fake.url)
        fake.answer(sha(1), run("build"))
        assert dispatch(pr_event("opened", head=sha(1))).startswith("held probe-pr-5: waiting for CI")
        fake.answer(sha(2), run("build"))
        assert dispatch(pr_event("synchronize", head=sha(2))).startswith(f"held probe-pr-5: waiting for CI at "
                                                                         f"{sha(2)[:7]}")
        # The older commit's checks finishing deploys nothing: nobody waits for them any more.
        fake.answer(sha(1), run("build", "success"))
        assert dispatch(check_suite(sha(1))) == f"ignored: no pull request waits for the checks of {sha(1)[:7]}"
        record_ = db_session.scalars(select(PullRequestRecord)).one()
        assert (record_.head_sha, record_.checks["sha"], record_.checks["state"]) == (sha(2), sha(2), "pending")
        assert actions(db_session) == []


def test_green_checks_from_githubs_examples_deploy(db_session, dispatch, worker_ctx, github_mock):
    worker_ctx.github = token_client(github_mock.url)
    assert dispatch(pr_event("opened", head=sha(1))) == f"created probe-pr-5 at {sha(1)[:7]}"


def test_sami_s_own_statuses_trigger_nothing(dispatch):
    payload = github_payloads.example("status")
    payload["repository"]["full_name"] = REPOSITORY
    payload["context"] = "sami/probe"
    event = router.Event(name="status", action=None, delivery_id=str(uuid.uuid4()), payload=payload)
    assert dispatch(event) == "ignored: Sami's own commit status"


def comment_event(body: str, comment_id: int, number: int = 5) -> router.Event:
    """GitHub's example ``issue_comment`` delivery, made a writer's comment on pull request #5 of acme/probe."""
    payload = github_payloads.example("issue_comment", "created")
    payload["repository"]["full_name"] = REPOSITORY
    payload["issue"]["number"] = number
    payload["issue"]["pull_request"] = {"url": f"https://api.github.com/repos/{REPOSITORY}/pulls/{number}"}
    payload["comment"]["body"] = body
    payload["comment"]["id"] = comment_id
    return router.Event(name="issue_comment", action="created", delivery_id=str(uuid.uuid4()), payload=payload)


def test_a_deploy_command_waits_for_green_checks_too(db_session, dispatch, worker_ctx, monkeypatch):
    with RecordingFakeChecks() as fake:
        worker_ctx.github = token_client(fake.url)
        login = github_payloads.example("issue_comment", "created")["comment"]["user"]["login"]
        fake.on("GET", f"/repos/{REPOSITORY}/collaborators/{login}/permission",
                Reply(200, {"permission": "write", "user": {"login": login}}))
        fake.pull_request(5, sha(1))
        fake.answer(sha(1), run("build", "failure"))
        assert dispatch(comment_event("/sami deploy", 1)) == (
            f"refused probe-pr-5: CI failed at {sha(1)[:7]} (build: failure); nothing is deployed until the checks "
            "pass")
        assert actions(db_session) == []

        fake.answer(sha(1), run("build"))
        assert dispatch(comment_event("/sami deploy", 2)) == (
            f"held probe-pr-5: waiting for CI at {sha(1)[:7]} (1 running: build); it deploys when they pass")
        assert actions(db_session) == []
        assert "| probe | ⏳ Waiting for CI |" in sticky_text(db_session, worker_ctx)
        # The held command keeps its 👀: no final reaction until something runs.
        reactions = db_session.scalars(select(OutboxRow.payload).where(OutboxRow.kind == "reaction")
                                       .order_by(OutboxRow.id))
        assert [(r["comment_id"], r["content"]) for r in reactions] == [(1, "eyes"), (1, "confused"), (2, "eyes")]

        fake.answer(sha(1), run("build", "success"))
        assert dispatch(check_suite(sha(1))) == f"created probe-pr-5 at {sha(1)[:7]}"
