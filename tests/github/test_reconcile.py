"""Reconciliation of pull request environments against GitHub, on the real database and queue with
the probe deployments repo: Prism for the happy path, the recording fake for failures."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from bot.core.models import Action, Deployment
from bot.core.states import DeploymentState
from bot.github.client import Deadline
from bot.github.reconcile import reconcile_pull_requests, reconciled_repositories
from bot.services import history, pins
from tests.github.conftest import token_client
from tests.pipeline import conftest as pipeline
from tests.support.github_mock import Reply
from workers.lease import db_now
from workers.scheduler import Scheduler, TickReport

# The pipeline's fixtures: the probe deployments repo, a worker context on the test database and Redis.
record, probe_repo, test_config = pipeline.record, pipeline.probe_repo, pipeline.test_config
settings, worker_ctx, services_ctx, work = pipeline.settings, pipeline.worker_ctx, pipeline.services_ctx, pipeline.work

S = DeploymentState
PULLS = "/repos/acme/probe/pulls"


def pr(number: int, state: str = "open", sha: str | None = None) -> dict:
    """A pull request of acme/probe as the REST API answers it (only what Sami reads is filled)."""
    repo = {"full_name": "acme/probe"}
    return {"number": number, "state": state, "merged": False, "labels": [], "user": {"login": "dev"},
            "head": {"sha": sha or f"{number:x}".rjust(40, "a"), "ref": f"feature-{number}", "repo": repo},
            "base": {"ref": "main", "repo": repo}}


def reconcile(worker_ctx, services_ctx, github):
    return reconcile_pull_requests(worker_ctx.session, worker_ctx.manifests.current(), github, services_ctx,
                                   worker_ctx.settings)


def states(db_session) -> dict[str, DeploymentState]:
    db_session.expire_all()
    return dict(db_session.execute(select(Deployment.name, Deployment.state)
                                   .where(Deployment.pull_request.is_not(None))).all())


def action_count(db_session) -> int:
    return db_session.scalar(select(func.count()).select_from(Action))


@pytest.fixture
def github(token_fake):
    return token_client(token_fake.url)


@pytest.fixture
def two_running(db_session, worker_ctx, services_ctx, work, token_fake, github):
    """probe-pr-3 and probe-pr-4 Running, made by a first round."""
    token_fake.on("GET", PULLS, Reply(200, [pr(4), pr(3)]))
    first = reconcile(worker_ctx, services_ctx, github)
    assert sorted(first.done) == [f"created probe-pr-3 at {pr(3)['head']['sha'][:7]}",
                                  f"created probe-pr-4 at {pr(4)['head']['sha'][:7]}"]
    assert first.repositories == ["acme/probe"] and first.errors == []
    work()
    assert states(db_session) == {"probe-pr-3": S.RUNNING, "probe-pr-4": S.RUNNING}
    token_fake.requests.clear()


def test_open_pull_requests_get_environments_through_githubs_description(db_session, worker_ctx, services_ctx,
                                                                         work, github_mock, probe_repo):
    # Prism's examples are octocat/Hello-World's pull request 1347.
    for path in probe_repo.glob("services/probe/swarm/*/sami.yaml"):
        path.write_text(path.read_text().replace("acme/probe", "octocat/Hello-World"))
    repo = worker_ctx.manifests.current(refresh=True)
    report = reconcile_pull_requests(worker_ctx.session, repo, token_client(github_mock.url), services_ctx,
                                     worker_ctx.settings)
    assert report.repositories == ["octocat/Hello-World"] and report.errors == [] and report.skipped == {}
    assert report.done == ["created probe-pr-1347 at 6dcb09b"]
    work()
    assert states(db_session) == {"probe-pr-1347": S.RUNNING}
    # A second round finds it right and changes nothing.
    again = reconcile_pull_requests(worker_ctx.session, repo, token_client(github_mock.url), services_ctx,
                                    worker_ctx.settings)
    assert again.done == [] and again.repositories == ["octocat/Hello-World"]


def test_a_closed_pull_request_is_archived_on_githubs_word_about_it(db_session, worker_ctx, services_ctx, work,
                                                                    token_fake, github, two_running):
    token_fake.on("GET", PULLS, Reply(200, [pr(4)]))
    token_fake.on("GET", PULLS + "/3", Reply(200, pr(3, "closed")))
    report = reconcile(worker_ctx, services_ctx, github)
    assert report.done == ["archived probe-pr-3 (closed)"]
    assert [r.path for r in token_fake.requests] == [PULLS, PULLS + "/3"]
    work()
    assert states(db_session) == {"probe-pr-3": S.ARCHIVED, "probe-pr-4": S.RUNNING}
    # Archived is not live: the next round does not even ask about it.
    token_fake.requests.clear()
    assert reconcile(worker_ctx, services_ctx, github).done == []
    assert [r.path for r in token_fake.requests] == [PULLS]


def test_a_new_head_commit_missed_by_webhooks_is_deployed(db_session, worker_ctx, services_ctx, work, token_fake,
                                                          github, two_running):
    token_fake.on("GET", PULLS, Reply(200, [pr(4), pr(3, sha="b" * 40)]))
    report = reconcile(worker_ctx, services_ctx, github)
    assert report.done == ["updated probe-pr-3 to bbbbbbb"]
    work()
    db_session.expire_all()
    assert db_session.scalars(select(Deployment.tag).where(Deployment.name == "probe-pr-3")).one() == "b" * 40


def test_an_error_on_page_two_archives_nothing(db_session, worker_ctx, services_ctx, token_fake, github,
                                               two_running):
    # Page 1 lacks pull request 3; page 2, which might hold it, fails.
    token_fake.on("GET", PULLS, Reply(200, [pr(4)], {"Link": '<{url}/repos/acme/probe/pulls?page=2>; rel="next"'}))
    token_fake.on("GET", PULLS + "?page=2", Reply(500, {"message": "Server Error"}))
    token_fake.on("GET", PULLS + "/3", Reply(200, pr(3, "closed")))
    actions = action_count(db_session)
    report = reconcile(worker_ctx, services_ctx, github)
    assert report.skipped == {"acme/probe": "GET /repos/acme/probe/pulls: GitHub answered 500: Server Error"}
    assert report.repositories == [] and report.done == []
    assert token_fake.calls("GET", PULLS + "/3") == []
    assert states(db_session) == {"probe-pr-3": S.RUNNING, "probe-pr-4": S.RUNNING}
    assert action_count(db_session) == actions


def test_a_rate_limited_listing_archives_nothing_and_says_when_to_come_back(db_session, worker_ctx, services_ctx,
                                                                             token_fake, github, two_running):
    token_fake.on("GET", PULLS, Reply(403, {"message": "You have exceeded a secondary rate limit."},
                                      {"Retry-After": "120"}))
    actions = action_count(db_session)
    report = reconcile(worker_ctx, services_ctx, github)
    assert report.retry_after == 120
    assert report.skipped["acme/probe"].startswith("rate limited")
    assert states(db_session) == {"probe-pr-3": S.RUNNING, "probe-pr-4": S.RUNNING}
    assert action_count(db_session) == actions


def test_an_empty_list_still_archives_only_what_github_says_is_closed(db_session, worker_ctx, services_ctx,
                                                                      token_fake, github, two_running):
    token_fake.on("GET", PULLS, Reply(200, []))
    token_fake.on("GET", PULLS + "/3", Reply(502, {"message": "Bad Gateway"}))
    token_fake.on("GET", PULLS + "/4", Reply(200, pr(4)))  # open after all: the listing was stale
    report = reconcile(worker_ctx, services_ctx, github)
    assert report.errors == ["acme/probe#3: GET /repos/acme/probe/pulls/3: GitHub answered 502: Bad Gateway"]
    assert report.done == []
    assert states(db_session) == {"probe-pr-3": S.RUNNING, "probe-pr-4": S.RUNNING}


def test_a_round_past_its_deadline_stops_and_archives_nothing(db_session, worker_ctx, services_ctx, token_fake,
                                                             github, two_running):
    # The round's clock ticks once per request GitHub receives: the deadline passes after the listing.
    token_fake.on("GET", PULLS, Reply(200, []))
    token_fake.on("GET", PULLS + "/3", Reply(200, pr(3, "closed")))
    token_fake.on("GET", PULLS + "/4", Reply(200, pr(4, "closed")))
    actions = action_count(db_session)
    with github.deadline(Deadline.after(1, clock=lambda: len(token_fake.requests))):
        report = reconcile(worker_ctx, services_ctx, github)
    assert [r.path for r in token_fake.requests] == [PULLS]
    assert report.skipped == {"acme/probe": "left for the next round: this round's deadline passed"}
    assert report.repositories == [] and report.done == []
    assert states(db_session) == {"probe-pr-3": S.RUNNING, "probe-pr-4": S.RUNNING}
    assert action_count(db_session) == actions
    # Outside the block the client has no deadline: the next round finishes the work.
    assert reconcile(worker_ctx, services_ctx, github).done == ["archived probe-pr-3 (closed)",
                                                               "archived probe-pr-4 (closed)"]


def test_a_deadline_before_the_listing_is_no_empty_list(db_session, worker_ctx, services_ctx, token_fake, github,
                                                        two_running):
    token_fake.on("GET", PULLS, Reply(200, []))
    with github.deadline(Deadline.after(0)):
        report = reconcile(worker_ctx, services_ctx, github)
    assert token_fake.requests == []
    assert report.skipped == {"acme/probe": "left for the next round: this round's deadline passed"}
    assert states(db_session) == {"probe-pr-3": S.RUNNING, "probe-pr-4": S.RUNNING}


def test_a_304_keeps_the_cached_list(db_session, worker_ctx, services_ctx, token_fake, github, two_running):
    token_fake.on("GET", PULLS, Reply(200, [pr(4), pr(3)], {"ETag": '"open-v1"'}), Reply(304, None))
    actions = action_count(db_session)
    assert reconcile(worker_ctx, services_ctx, github).done == []
    report = reconcile(worker_ctx, services_ctx, github)
    assert report.repositories == ["acme/probe"] and report.done == [] and report.errors == []
    assert [r.headers.get("if-none-match") for r in token_fake.requests] == [None, '"open-v1"']
    assert states(db_session) == {"probe-pr-3": S.RUNNING, "probe-pr-4": S.RUNNING}
    assert action_count(db_session) == actions


def test_repositories_outside_the_allowlist_are_not_asked_about(worker_ctx, services_ctx, token_fake, github):
    elsewhere = replace(worker_ctx.settings, github_repositories=("other/*",))
    repo = worker_ctx.manifests.current()
    assert reconciled_repositories(repo, elsewhere) == []
    assert reconciled_repositories(repo, worker_ctx.settings) == ["acme/probe"]
    report = reconcile_pull_requests(worker_ctx.session, repo, github, services_ctx, elsewhere)
    assert report.repositories == [] and token_fake.requests == []


def test_the_scheduler_queues_a_round_every_few_minutes_and_a_rate_limit_holds_it_back(db_session, worker_ctx,
                                                                                         work, token_fake, github):
    scheduler = Scheduler(worker_ctx)
    now = db_now(db_session)
    every = timedelta(seconds=worker_ctx.settings.reconcile_interval)
    scheduler.steps["reconcile"](report := TickReport(), now)  # no client: nothing to do
    assert report.rounds == []
    worker_ctx.github = github
    token_fake.on("GET", PULLS, Reply(200, [pr(5)]),
                  Reply(429, {"message": "slow down"}, {"Retry-After": "900"}), Reply(200, [pr(5)]))
    scheduler.steps["reconcile"](report, now)
    assert report.rounds == ["reconcile"] and token_fake.requests == []  # queued, not run by the scheduler
    work()
    assert states(db_session) == {"probe-pr-5": S.RUNNING}
    scheduler.steps["reconcile"](report, now + every - timedelta(seconds=1))
    work()
    assert len(token_fake.requests) == 1
    scheduler.steps["reconcile"](report, now + every)  # rate limited: come back in 900 s
    work()
    scheduler.steps["reconcile"](report, now + every * 2)  # queued, and held back by the worker
    work()
    assert len(token_fake.requests) == 2 and report.rounds == ["reconcile"] * 3
    # The client itself sends nothing before GitHub's time either; this test's clock is the database's.
    worker_ctx.github = token_client(token_fake.url)
    scheduler.steps["reconcile"](report, now + every + timedelta(seconds=900))
    work()
    assert len(token_fake.requests) == 3


def test_a_pinned_environment_is_left_alone_quietly_round_after_round(db_session, worker_ctx, services_ctx, work,
                                                                      token_fake, github, two_running, caplog):
    token_fake.on("GET", PULLS, Reply(200, [pr(4), pr(3, sha="b" * 40)]))
    assert reconcile(worker_ctx, services_ctx, github).done == ["updated probe-pr-3 to bbbbbbb"]
    work()
    history.rollback_deployment(db_session, worker_ctx.manifests.current(), "probe-pr-3", services_ctx,
                                requested_by="alice", origin="cli")
    work()
    db_session.expire_all()
    pinned = db_session.scalars(select(Deployment).where(Deployment.name == "probe-pr-3")).one()
    assert (pinned.pinned_by, pinned.sha) == ("alice", pr(3)["head"]["sha"])

    # The pull request's head moves on (a push whose webhook was missed, or refused): every round finds it pinned.
    token_fake.on("GET", PULLS, Reply(200, [pr(4), pr(3, sha="c" * 40)]))
    actions = action_count(db_session)
    caplog.set_level(logging.DEBUG)
    caplog.clear()
    for _ in range(3):
        report = reconcile(worker_ctx, services_ctx, github)
        assert report.done == [] and report.errors == []
    assert action_count(db_session) == actions
    said = [r for r in caplog.records if "probe-pr-3" in r.getMessage()]
    assert [r for r in said if "refused" in r.getMessage() or r.levelno > logging.DEBUG] == []
    assert len(said) == 3 and all("pinned by alice" in r.getMessage() for r in said)  # one debug line a round
    db_session.expire_all()
    assert db_session.scalars(select(Deployment.sha).where(Deployment.name == "probe-pr-3")).one() \
        == pr(3)["head"]["sha"]

    # Unpinned, the next round moves it to the head.
    pins.unpin(db_session, "probe-pr-3", requested_by="alice")
    assert reconcile(worker_ctx, services_ctx, github).done == ["updated probe-pr-3 to ccccccc"]
