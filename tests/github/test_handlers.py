"""Pull request events end to end: GitHub's own example payloads (moved to acme/probe) through
the worker's router, with the context the delivery job builds, then the real queue and a worker
running the probe control scripts of tests/pipeline."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY
from rq.job import Job
from rq.registry import ScheduledJobRegistry
from sqlalchemy import select, update

from bot.core.db import db_now
from bot.core.models import Action, Deployment
from bot.core.states import ActionState, DeploymentState
from bot.github import router
from bot.github.routes import make_router
from bot.services import deployments
from bot.services.tokens import Scopes, create_token
from tests.pipeline import conftest as pipeline
from tests.pipeline.conftest import read_record
from tests.support import github_payloads
from workers.context import ContextWorker
from workers.queue import ACTIONS_QUEUE, CHECKS_QUEUE
from workers.scheduler import Scheduler, TickReport

# The pipeline's fixtures: the probe deployments repo, a worker context, a burst worker.
probe_repo, record, settings, test_config = pipeline.probe_repo, pipeline.record, pipeline.settings, \
    pipeline.test_config
worker_ctx, services_ctx, work = pipeline.worker_ctx, pipeline.services_ctx, pipeline.work

S = DeploymentState
REPOSITORY = "acme/probe"


def sha(n: int) -> str:
    """A distinct commit sha per n (distinct in its first 7 digits too)."""
    return hashlib.sha256(str(n).encode()).hexdigest()[:40]


def pr_event(action: str, number: int = 5, head: str | None = None, *, labels: tuple[str, ...] | None = None,
             label: str | None = None, fork_of: str | None = None, merged: bool = False) -> router.Event:
    """GitHub's example delivery of ``pull_request.<action>``, moved to acme/probe pull request ``number``."""
    payload: dict[str, Any] = github_payloads.example("pull_request", action)
    payload["number"] = number
    payload["repository"]["full_name"] = REPOSITORY
    pr = payload["pull_request"]
    pr["number"] = number
    pr["base"]["repo"]["full_name"] = REPOSITORY
    pr["head"]["repo"]["full_name"] = fork_of or REPOSITORY
    pr["head"]["sha"] = head or sha(1)
    pr["updated_at"] = datetime.now(UTC).isoformat()
    if merged:
        pr["merged"] = True
    if labels is not None:
        pr["labels"] = [{**pr["labels"][0], "name": name} if pr["labels"] else {"name": name} for name in labels]
    if label is not None:
        payload["label"]["name"] = label
    return router.Event(name="pull_request", action=action, delivery_id=str(uuid.uuid4()), payload=payload)


@pytest.fixture
def dispatch(db_session, worker_ctx, services_ctx):
    """Dispatch an event with the HandlerContext the delivery job builds."""

    def run(event: router.Event) -> str:
        ctx = router.HandlerContext(session=db_session, manifests=worker_ctx.manifests, services=services_ctx,
                                    settings=worker_ctx.settings, github=None)
        return worker_ctx.router.dispatch(event, ctx).text

    return run


def deployment(db_session, name="probe-pr-5") -> Deployment | None:
    db_session.expire_all()
    return db_session.scalars(select(Deployment).where(Deployment.name == name)).first()


def actions(db_session, name="probe-pr-5") -> list[Action]:
    db_session.expire_all()
    return list(db_session.scalars(select(Action).join(Deployment).where(Deployment.name == name)
                                   .order_by(Action.id)))


def runs(record) -> list[str]:
    """The create/update/unarchive/archive script runs the probe recorded."""
    return [line for line in read_record(record) if line.split()[0] in ("create", "update", "unarchive", "archive")]


def set_pr_deploy(probe_repo, worker_ctx, **fields) -> None:
    path = probe_repo / "services/probe/swarm/pull_request/sami.yaml"
    data = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**data, **fields}, sort_keys=False))
    worker_ctx.manifests.current(refresh=True)


def test_opened_synchronize_closed_reopened(db_session, dispatch, work, record):
    opened = pr_event("opened")
    assert dispatch(opened) == f"created probe-pr-5 at {sha(1)[:7]}"
    work()
    d = deployment(db_session)
    assert d.state is S.RUNNING, d.status_message
    assert (d.tag, d.image, d.sha, d.pull_request, d.source_repo) == (sha(1), f"local/probe:{sha(1)}", sha(1), 5,
                                                                       REPOSITORY)
    created = actions(db_session)[0]
    assert (created.kind, created.origin, created.requested_by, created.delivery_id) == (
        "create", "webhook", "github:Codertocat", opened.delivery_id)
    assert runs(record) == [f"create probe-pr-5 {sha(1)}"]

    # A redelivery (same event, new delivery id) and the same head again do nothing.
    assert dispatch(pr_event("opened")) == f"unchanged probe-pr-5: already at {sha(1)[:7]}"
    assert dispatch(pr_event("synchronize")) == f"unchanged probe-pr-5: already at {sha(1)[:7]}"
    assert len(actions(db_session)) == 1

    assert dispatch(pr_event("synchronize", head=sha(2))) == f"updated probe-pr-5 to {sha(2)[:7]}"
    work()
    assert (deployment(db_session).state, deployment(db_session).tag) == (S.RUNNING, sha(2))

    assert dispatch(pr_event("closed", head=sha(2))) == "archived probe-pr-5 (closed)"
    work()
    assert deployment(db_session).state is S.ARCHIVED
    assert dispatch(pr_event("closed", head=sha(2))) == "unchanged probe-pr-5: already Archived"

    assert dispatch(pr_event("reopened", head=sha(2))) == f"restored probe-pr-5 at {sha(2)[:7]}"
    work()
    d = deployment(db_session)
    assert (d.state, d.tag) == (S.RUNNING, sha(2))
    assert runs(record) == [f"create probe-pr-5 {sha(1)}", f"update probe-pr-5 {sha(2)}",
                            "archive probe-pr-5 " + sha(2), f"unarchive probe-pr-5 {sha(2)}"]

    assert dispatch(pr_event("closed", head=sha(2), merged=True)) == "archived probe-pr-5 (merged)"
    work()
    assert deployment(db_session).state is S.ARCHIVED


def test_three_quick_pushes_run_at_most_two_scripts(db_session, dispatch, work, record):
    assert dispatch(pr_event("opened", head=sha(1))).startswith("created probe-pr-5")
    for n in (2, 3, 4):
        assert dispatch(pr_event("synchronize", head=sha(n))) == f"updated probe-pr-5 to {sha(n)[:7]}"
    work()
    d = deployment(db_session)
    assert (d.state, d.tag, d.sha) == (S.RUNNING, sha(4), sha(4))
    assert [(a.kind, a.config["tag"], a.state) for a in actions(db_session)] == [
        ("create", sha(1), ActionState.SUCCEEDED),
        ("update", sha(2), ActionState.SUPERSEDED),
        ("update", sha(3), ActionState.SUPERSEDED),
        ("update", sha(4), ActionState.SUCCEEDED),
    ]
    assert runs(record) == [f"create probe-pr-5 {sha(1)}", f"update probe-pr-5 {sha(4)}"]
    # After the work: one more push is one more run.
    dispatch(pr_event("synchronize", head=sha(5)))
    dispatch(pr_event("synchronize", head=sha(6)))
    work()
    assert runs(record)[2:] == [f"update probe-pr-5 {sha(6)}"]


def test_label_mode(db_session, dispatch, work, record, probe_repo, worker_ctx):
    set_pr_deploy(probe_repo, worker_ctx, pr_deploy="label", deploy_label="preview", pr_tag="pr-{number}-{short_sha}")
    tag = f"pr-5-{sha(1)[:7]}"
    assert dispatch(pr_event("opened", labels=())) == "skipped probe: not labeled preview"
    assert deployment(db_session) is None
    # The examples' label is "bug": it deploys nothing.
    assert dispatch(pr_event("labeled", labels=("bug",))) == "ignored: label 'bug' deploys nothing in acme/probe"
    # GitHub's labeled example lists only "bug": the event's own label counts.
    assert dispatch(pr_event("labeled", labels=("bug",), label="preview")) == f"created probe-pr-5 at {sha(1)[:7]}"
    work()
    assert (deployment(db_session).state, deployment(db_session).tag) == (S.RUNNING, tag)
    # GitHub's unlabeled example still lists the removed label: the event's label wins again.
    assert dispatch(pr_event("unlabeled", labels=("preview",), label="preview")) == \
        "archived probe-pr-5 (not labeled preview)"
    work()
    assert deployment(db_session).state is S.ARCHIVED
    assert dispatch(pr_event("labeled", labels=(), label="preview")) == f"restored probe-pr-5 at {sha(1)[:7]}"
    work()
    assert deployment(db_session).state is S.RUNNING
    assert runs(record) == [f"create probe-pr-5 {tag}", f"archive probe-pr-5 {tag}", f"unarchive probe-pr-5 {tag}"]


def test_forks_wait_for_approval_unless_allowed(db_session, dispatch, work, probe_repo, worker_ctx):
    event = pr_event("opened", fork_of="someone/probe")
    assert dispatch(event) == (f"held probe-pr-5: fork (someone/probe) at {sha(1)[:7]} waits for a writer's "
                               "/sami deploy")
    assert deployment(db_session) is None
    set_pr_deploy(probe_repo, worker_ctx, pr_forks=True)
    assert dispatch(event) == f"created probe-pr-5 at {sha(1)[:7]}"
    work()
    assert deployment(db_session).state is S.RUNNING


def test_environments_idle_past_their_ttl_are_archived(db_session, dispatch, work, record, probe_repo, worker_ctx,
                                                        services_ctx):
    set_pr_deploy(probe_repo, worker_ctx, ttl="1h")
    dispatch(pr_event("opened", number=5))
    dispatch(pr_event("opened", number=6))
    deployments.request_deployment(db_session, worker_ctx.manifests.current(), deployments.DeploymentRequest(
        service="probe", environment="stage", tag="v1", requested_by="test", origin="cli"), services_ctx)
    work()
    # pull request 6 moved on half an hour ago; stage has no ttl.
    dispatch(pr_event("synchronize", number=6, head=sha(2)))
    work()
    db_session.execute(update(Action).where(Action.id.in_([a.id for a in actions(db_session, "probe-pr-6")][-1:]))
                       .values(created_at=datetime.now(UTC) + timedelta(minutes=30)))
    db_session.commit()

    def expire(now: datetime) -> TickReport:
        report = TickReport()
        Scheduler(worker_ctx).steps["expire"](report, now)
        return report

    assert expire(datetime.now(UTC) + timedelta(minutes=59)).expired == []
    assert expire(datetime.now(UTC) + timedelta(minutes=61)).expired == ["probe-pr-5"]
    archive = actions(db_session)[-1]
    assert (archive.kind, archive.requested_by, archive.origin) == ("archive", "schedule:ttl", "schedule")
    work()
    assert expire(datetime.now(UTC) + timedelta(minutes=61)).expired == []  # archived already
    assert expire(datetime.now(UTC) + timedelta(minutes=91)).expired == ["probe-pr-6"]
    work()
    assert [deployment(db_session, name).state for name in ("probe-pr-5", "probe-pr-6", "probe-stage")] == [
        S.ARCHIVED, S.ARCHIVED, S.RUNNING]
    # An idle environment comes back with the pull request's next commit.
    assert dispatch(pr_event("synchronize", number=5, head=sha(3))) == (
        f"restored and updated probe-pr-5 to {sha(3)[:7]}")
    work()
    assert (deployment(db_session).state, deployment(db_session).tag) == (S.RUNNING, sha(3))


def test_what_does_not_concern_sami_is_ignored_with_a_reason(db_session, dispatch):
    original = github_payloads.example("pull_request", "opened")
    event = router.Event("pull_request", "opened", "d-1", original)
    assert dispatch(event) == "ignored: no service deploys pull requests of Codertocat/Hello-World"
    assert dispatch(router.Event("pull_request", "assigned", "d-2", original)) == \
        "ignored: Sami does not act on pull_request.assigned"
    broken = pr_event("opened")
    broken.payload["pull_request"]["head"]["sha"] = "main"
    assert dispatch(broken) == ("ignored: the payload is not as GitHub sends it (pull_request.head.sha: 'main' is not "
                                "a commit sha (40 hex digits))")
    assert deployment(db_session) is None


def test_the_allowlist_applies_to_events(db_session, dispatch, worker_ctx, monkeypatch):
    monkeypatch.setattr(worker_ctx, "settings", replace(worker_ctx.settings, github_repositories=("acme/web",)))
    assert dispatch(pr_event("opened")) == "ignored: acme/probe is not in SAMI_GITHUB_REPOSITORIES"
    assert deployment(db_session) is None


def test_every_pull_request_action_sami_handles_is_routed():
    routes = make_router().routes
    routed = {action for (event, action) in routes if event == "pull_request"}
    assert routed == {"opened", "reopened", "synchronize", "closed", "labeled", "unlabeled"}
    for handler in routes.values():
        if handler.__module__ == "bot.github.handlers":
            assert handler.__doc__ and "\n" not in handler.__doc__.strip(), handler.__name__


def test_a_pull_request_closed_while_it_deploys_is_archived_once_that_settles(db_session, dispatch, work):
    dispatch(pr_event("opened"))
    assert deployment(db_session).state is S.CREATE_PENDING
    # Closed before the create has run: nothing can be archived yet, so the delivery asks to be
    # tried again (the delivery job records "retrying" and the sweep brings it back).
    closed = pr_event("closed")
    with pytest.raises(router.Retry) as retry:
        dispatch(closed)
    assert "waiting probe-pr-5" in str(retry.value) and retry.value.after_seconds > 0
    assert deployment(db_session).state is S.CREATE_PENDING
    work()
    assert deployment(db_session).state is S.RUNNING
    # The same delivery, tried again: now it archives.
    assert dispatch(closed).startswith("archived probe-pr-5")
    work()
    assert deployment(db_session).state is S.ARCHIVED


# --- pushes close together: an update waits for newer pushes -------------------------------------

WINDOW = 60


@pytest.fixture
def window(worker_ctx, monkeypatch) -> int:
    """SAMI_PR_DEBOUNCE_SECONDS of a minute; tests move the clocks past it instead of waiting."""
    monkeypatch.setattr(worker_ctx, "settings", replace(worker_ctx.settings, pr_debounce_seconds=WINDOW))
    return WINDOW


def window_ends(db_session, redis_client=None) -> list[int]:
    """The waiting actions' time comes: their start is moved to a moment ago on the database's clock
    and, with ``redis_client``, on RQ's schedule; returns their ids."""
    now = db_now(db_session)
    waiting = list(db_session.scalars(select(Action.id).where(Action.state == ActionState.QUEUED,
                                                              Action.retry_at > now)))
    db_session.execute(update(Action).where(Action.id.in_(waiting)).values(retry_at=now - timedelta(seconds=1)))
    db_session.commit()
    if redis_client is not None:
        registry = ScheduledJobRegistry(ACTIONS_QUEUE, connection=redis_client)
        for action_id in waiting:
            registry.schedule(Job.fetch(str(action_id), connection=redis_client),
                              datetime.now(UTC) - timedelta(seconds=1))
    return waiting


@pytest.fixture
def work_when_due(redis_client, work, worker_ctx):
    """A worker with RQ's scheduler, as `sami worker` runs: jobs whose time came are queued, then run."""

    def run() -> None:
        ContextWorker([ACTIONS_QUEUE, CHECKS_QUEUE], connection=redis_client, context=worker_ctx).work(
            burst=True, with_scheduler=True, logging_level="WARNING")
        work()  # fails the test if a job raised

    return run


def test_pushes_within_the_window_cost_the_create_and_one_update(db_session, dispatch, work, work_when_due, record,
                                                                  window, redis_client):
    # A worker that runs each job as soon as it is queued: work() after the deliveries.
    assert dispatch(pr_event("opened", head=sha(1))) == f"created probe-pr-5 at {sha(1)[:7]}"
    assert dispatch(pr_event("synchronize", head=sha(2))) == f"updated probe-pr-5 to {sha(2)[:7]}"
    work()
    for n in (3, 4, 5, 6):
        assert dispatch(pr_event("synchronize", head=sha(n))) == f"updated probe-pr-5 to {sha(n)[:7]}"
        work()
    # The create ran; each push replaced the update before it, which had not started.
    assert runs(record) == [f"create probe-pr-5 {sha(1)}"]
    updates = [a for a in actions(db_session) if a.kind == "update"]
    assert [a.state for a in updates] == [ActionState.SUPERSEDED] * 4 + [ActionState.QUEUED]
    # They wait until the end of the window the first push opened (a series cannot put it off).
    first = updates[0]
    assert timedelta(seconds=WINDOW - 10) < first.retry_at - first.created_at <= timedelta(seconds=WINDOW + 1)
    assert {a.retry_at for a in updates} == {first.retry_at}
    assert deployment(db_session).state is S.UPDATE_PENDING

    assert window_ends(db_session, redis_client) == [updates[-1].id]
    work_when_due()
    d = deployment(db_session)
    assert (d.state, d.tag, d.sha) == (S.RUNNING, sha(6), sha(6))
    assert runs(record) == [f"create probe-pr-5 {sha(1)}", f"update probe-pr-5 {sha(6)}"]


def test_a_push_after_the_window_waits_a_window_of_its_own(db_session, dispatch, work, work_when_due, record,
                                                           window, redis_client):
    dispatch(pr_event("opened", head=sha(1)))
    work()
    dispatch(pr_event("synchronize", head=sha(2)))
    work()
    window_ends(db_session, redis_client)
    work_when_due()
    assert runs(record) == [f"create probe-pr-5 {sha(1)}", f"update probe-pr-5 {sha(2)}"]

    pushed_at = db_now(db_session)
    assert dispatch(pr_event("synchronize", head=sha(3))) == f"updated probe-pr-5 to {sha(3)[:7]}"
    work()
    latest = actions(db_session)[-1]
    assert latest.state is ActionState.QUEUED
    assert latest.retry_at >= pushed_at + timedelta(seconds=WINDOW - 1)
    assert len(runs(record)) == 2
    window_ends(db_session, redis_client)
    work_when_due()
    d = deployment(db_session)
    assert (d.state, d.tag) == (S.RUNNING, sha(3))
    assert runs(record)[2:] == [f"update probe-pr-5 {sha(3)}"]


def test_a_ci_request_is_not_delayed_and_replaces_a_waiting_push(db_session, dispatch, work, record, window,
                                                                 client):
    token = create_token(db_session, "ci", Scopes(services=("probe",), environments=("pull_request",),
                                                  actions=("deploy",)))
    db_session.commit()
    dispatch(pr_event("opened", head=sha(1)))
    work()
    dispatch(pr_event("synchronize", head=sha(2)))
    work()
    assert runs(record) == [f"create probe-pr-5 {sha(1)}"]

    response = client.post("/deployment_request", headers={"Authorization": f"Bearer {token}"},
                           data=json.dumps({"service": "probe", "environment": "pull_request", "tag": "built-2",
                                            "pull_request": 5}), content_type="application/json")
    assert response.status_code == 202, response.json
    work()  # no time passes
    assert runs(record) == [f"create probe-pr-5 {sha(1)}", "update probe-pr-5 built-2"]
    pushed, requested = actions(db_session)[-2:]
    assert (pushed.state, requested.state, requested.retry_at) == (ActionState.SUPERSEDED, ActionState.SUCCEEDED,
                                                                   None)
    assert deployment(db_session).state is S.RUNNING


def test_the_sweep_starts_a_waiting_update_that_no_scheduler_queued(db_session, dispatch, work, record, window,
                                                                     worker_ctx):
    dispatch(pr_event("opened", head=sha(1)))
    work()
    dispatch(pr_event("synchronize", head=sha(2)))
    work()
    waiting = actions(db_session)[-1]

    def sweep() -> list[int]:
        report = TickReport()
        # A few seconds on: the sweep leaves actions accepted a moment ago to their own jobs.
        Scheduler(worker_ctx).steps["sweep"](report, db_now(db_session) + timedelta(seconds=5))
        return report.queued

    assert sweep() == []  # not due yet
    # Its time comes, but nothing moves its job from RQ's schedule (no worker runs RQ's scheduler).
    window_ends(db_session)
    assert sweep() == [waiting.id]
    work()
    assert runs(record) == [f"create probe-pr-5 {sha(1)}", f"update probe-pr-5 {sha(2)}"]
    assert deployment(db_session).state is S.RUNNING


def test_an_update_waits_for_a_worker_from_the_end_of_its_window(db_session, dispatch, work, work_when_due, window,
                                                                 redis_client):
    def quick_starts() -> float:  # updates that waited for a worker 30 s or less
        return REGISTRY.get_sample_value("sami_action_queue_wait_seconds_bucket", {"kind": "update", "le": "30.0"}) or 0

    dispatch(pr_event("opened", head=sha(1)))
    work()
    dispatch(pr_event("synchronize", head=sha(2)))
    work()
    waiting = actions(db_session)[-1]
    # Accepted an hour ago; its window ends now, and a worker starts it at once.
    db_session.execute(update(Action).where(Action.id == waiting.id)
                       .values(created_at=db_now(db_session) - timedelta(hours=1)))
    db_session.commit()
    window_ends(db_session, redis_client)
    before = quick_starts()
    work_when_due()
    assert actions(db_session)[-1].state is ActionState.SUCCEEDED
    assert quick_starts() == before + 1


def test_a_waiting_update_is_scheduled_no_earlier_than_its_time(db_session, dispatch, work, window, redis_client):
    dispatch(pr_event("opened", head=sha(1)))
    work()
    dispatch(pr_event("synchronize", head=sha(2)))
    waiting = actions(db_session)[-1]
    # RQ's schedule counts whole seconds: a job queued within the second before its time would find
    # its action not due yet, and leave it to the sweep.
    scheduled = ScheduledJobRegistry(ACTIONS_QUEUE, connection=redis_client).get_scheduled_time(str(waiting.id))
    assert waiting.retry_at <= scheduled <= waiting.retry_at + timedelta(seconds=2)
