"""sync_pull_request decides per service from the pull request and the environment's state; the
services it calls (ensure_deployed, ensure_archived) decide by the state machine. Table tests on
the real database, no queue (the services record actions; nothing runs them here)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from bot.core.config import Settings
from bot.core.models import Action, Deployment
from bot.core.states import ActionState, DeploymentState
from bot.github.pulls import PayloadError, PullRequest, repository_allowed, sync_pull_request
from bot.manifests import DeploymentsRepo, load_deployments_repo
from bot.services import deployments
from tests.support import github_payloads

S = DeploymentState
OLD = "0" * 39 + "1"
HEAD = "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d"
SHORT = HEAD[:7]


def write_repo(root: Path) -> DeploymentsRepo:
    """web (every pull request), api (label mode), docs (forks too), gated (require_checks), all of
    acme/web except docs; web also has a stage environment."""
    def manifest(service: str, environment: str, **fields) -> None:
        folder = root / "services" / service / "swarm" / environment
        folder.mkdir(parents=True)
        (folder / "stack.yml").write_text("version: '3.8'\nservices: {app: {image: x}}\n")
        data = {"version": "v1beta", "service_name": service, "type": "swarm", "image": f"local/{service}",
                "files": ["stack.yml"], "repository": "acme/web", **fields}
        (folder / "sami.yaml").write_text(yaml.safe_dump(data))

    manifest("web", "pull_request", pr_deploy=True)
    manifest("web", "stage")
    manifest("api", "pull_request", pr_deploy="label", deploy_label="preview", pr_tag="pr-{number}-{short_sha}")
    manifest("docs", "pull_request", pr_deploy=True, pr_forks=True, repository="acme/docs")
    manifest("gated", "pull_request", pr_deploy=True, require_checks=True, repository="acme/gated")
    manifest("other", "pull_request", pr_deploy=False, repository="acme/other")
    repo = load_deployments_repo(root)
    assert repo.ok, [str(e) for e in repo.errors]
    return repo


@pytest.fixture
def repo(tmp_path) -> DeploymentsRepo:
    return write_repo(tmp_path / "deployments")


@pytest.fixture
def ctx() -> deployments.Context:
    return deployments.Context("sami", "example.test", "sami", broker=None)


def pull(repository="acme/web", number=7, state="open", merged=False, sha=HEAD, labels=(), fork=False) -> PullRequest:
    return PullRequest(repository=repository, number=number, state=state, merged=merged, head_sha=sha,
                       head_ref="feature/x", head_repository="someone/web" if fork else repository, fork=fork,
                       labels=frozenset(labels), author="octocat", updated_at=datetime.now(UTC))


def sync(db_session, repo, ctx, pr, origin="webhook", patterns=()) -> list[str]:
    """The lines of what sync_pull_request did, one per environment."""
    done = sync_pull_request(db_session, repo, pr, ctx, requested_by="github:octocat", origin=origin,
                             delivery_id="delivery-1", settings=Settings(github_repositories=patterns))
    return [step.text for step in done]


def existing(db_session, name: str, state: DeploymentState, sha: str = HEAD, tag: str | None = None) -> Deployment:
    """A deployment that went through the pipeline before: its row and one finished action."""
    service = name.split("-pr-")[0]
    deployment = Deployment(name=name, service=service, environment="pull_request", type="swarm", state=state,
                            tag=tag or (f"pr-7-{sha[:7]}" if service == "api" else sha), sha=sha, pull_request=7,
                            app_overrides={}, deployment_overrides={}, links=[],
                            archived_at=datetime.now(UTC) if state is S.ARCHIVED else None)
    db_session.add(deployment)
    db_session.flush()
    db_session.add(Action(deployment_id=deployment.id, kind="create", state=ActionState.SUCCEEDED,
                          requested_by="test", origin="cli", config={}))
    db_session.commit()
    return deployment


def state_of(db_session, name: str) -> DeploymentState | None:
    db_session.expire_all()
    row = db_session.scalars(select(Deployment).where(Deployment.name == name)).first()
    return row.state if row else None


def actions(db_session, name: str) -> list[Action]:
    db_session.expire_all()
    return list(db_session.scalars(select(Action).join(Deployment).where(Deployment.name == name)
                                   .where(Action.requested_by != "test").order_by(Action.id)))


def line_of(done: list[str], service: str) -> str:
    found = [line for line in done if f" {service}-pr-" in f" {line}" or f" {service}:" in line]
    assert len(found) == 1, done
    return found[0]


# --- the decision table ------------------------------------------------------------------------

# (service, state before or None, deployed sha, pull request changes, origin,
#  outcome, state after, action kinds recorded)
TABLE = [
    # open and wanted
    ("web", None, None, {}, "webhook", f"created web-pr-7 at {SHORT}", S.CREATE_PENDING, ["create"]),
    ("web", S.RUNNING, HEAD, {}, "webhook", f"unchanged web-pr-7: already at {SHORT}", S.RUNNING, []),
    ("web", S.FAILURE, HEAD, {}, "webhook", f"unchanged web-pr-7: already at {SHORT} (Failure)", S.FAILURE, []),
    ("web", S.RUNNING, OLD, {}, "webhook", f"updated web-pr-7 to {SHORT}", S.UPDATE_PENDING, ["update"]),
    ("web", S.FAILURE, OLD, {}, "webhook", f"updated web-pr-7 to {SHORT}", S.UPDATE_PENDING, ["update"]),
    ("web", S.CREATE_PENDING, OLD, {}, "webhook", f"updated web-pr-7 to {SHORT}", S.UPDATE_PENDING, ["update"]),
    ("web", S.UPDATE_PENDING, HEAD, {}, "reconcile", f"unchanged web-pr-7: already at {SHORT}", S.UPDATE_PENDING,
     []),
    ("web", S.ARCHIVED, HEAD, {}, "webhook", f"restored web-pr-7 at {SHORT}", S.CREATE_PENDING, ["restore"]),
    ("web", S.ARCHIVED, OLD, {}, "webhook", f"restored and updated web-pr-7 to {SHORT}", S.UPDATE_PENDING,
     ["restore", "update"]),
    ("web", S.ARCHIVED, OLD, {}, "reconcile", f"restored and updated web-pr-7 to {SHORT}", S.UPDATE_PENDING,
     ["restore", "update"]),
    ("web", S.ARCHIVED, HEAD, {}, "reconcile", f"unchanged web-pr-7: archived at {SHORT}; a new commit brings it "
     "back", S.ARCHIVED, []),
    ("web", S.REMOVED, HEAD, {}, "webhook", f"created web-pr-7 at {SHORT}", S.CREATE_PENDING, ["create"]),
    ("web", S.REMOVED, HEAD, {}, "reconcile", f"unchanged web-pr-7: removed at {SHORT}; a new commit brings it "
     "back", S.REMOVED, []),
    ("web", S.REMOVED, OLD, {}, "reconcile", f"created web-pr-7 at {SHORT}", S.CREATE_PENDING, ["create"]),
    ("web", S.ARCHIVE_PENDING, OLD, {}, "webhook", "unchanged web-pr-7: is ArchivePending; it can be deployed again "
     "once that settles", S.ARCHIVE_PENDING, []),
    ("web", S.CLEANUP_PENDING, OLD, {}, "webhook", "unchanged web-pr-7: is CleanupPending; it can be deployed again "
     "once that settles", S.CLEANUP_PENDING, []),
    ("web", S.CLEANUP_FAILED, OLD, {}, "webhook", "unchanged web-pr-7: its cleanup failed; an admin must delete the "
     "record first (sami delete web-pr-7)", S.CLEANUP_FAILED, []),
    # closed
    ("web", S.RUNNING, HEAD, {"state": "closed"}, "webhook", "archived web-pr-7 (closed)", S.ARCHIVE_PENDING,
     ["archive"]),
    ("web", S.FAILURE, OLD, {"state": "closed", "merged": True}, "webhook", "archived web-pr-7 (merged)",
     S.ARCHIVE_PENDING, ["archive"]),
    ("web", None, None, {"state": "closed"}, "webhook", "skipped web: closed", None, []),
    ("web", S.REMOVED, HEAD, {"state": "closed"}, "webhook", "skipped web: closed", S.REMOVED, []),
    ("web", S.ARCHIVED, HEAD, {"state": "closed"}, "webhook", "unchanged web-pr-7: already Archived", S.ARCHIVED, []),
    ("web", S.ARCHIVE_PENDING, HEAD, {"state": "closed"}, "reconcile", "unchanged web-pr-7: already ArchivePending",
     S.ARCHIVE_PENDING, []),
    ("web", S.CREATE_PENDING, HEAD, {"state": "closed"}, "webhook", "waiting web-pr-7: is CreatePending; it can be "
     "archived once that settles", S.CREATE_PENDING, []),
    # label mode
    ("api", None, None, {}, "webhook", "skipped api: not labeled preview", None, []),
    ("api", None, None, {"labels": {"preview"}}, "webhook", f"created api-pr-7 at {SHORT}", S.CREATE_PENDING,
     ["create"]),
    ("api", S.RUNNING, HEAD, {"labels": {"preview", "bug"}}, "webhook", f"unchanged api-pr-7: already at {SHORT}",
     S.RUNNING, []),
    ("api", S.RUNNING, HEAD, {"labels": {"bug"}}, "webhook", "archived api-pr-7 (not labeled preview)",
     S.ARCHIVE_PENDING, ["archive"]),
    # forks
    # (a fork waits for a writer's approval of its head commit; what runs already is left as it is)
    ("web", None, None, {"fork": True}, "webhook", f"held web-pr-7: fork (someone/web) at {SHORT} waits for a "
     "writer's /sami deploy", None, []),
    ("web", S.RUNNING, OLD, {"fork": True}, "reconcile", f"held web-pr-7: fork (someone/web) at {SHORT} waits for a "
     "writer's /sami deploy", S.RUNNING, []),
    ("web", S.RUNNING, HEAD, {"fork": True, "state": "closed"}, "webhook", "archived web-pr-7 (closed)",
     S.ARCHIVE_PENDING, ["archive"]),
    ("docs", None, None, {"fork": True, "repository": "acme/docs"}, "webhook", f"created docs-pr-7 at {SHORT}",
     S.CREATE_PENDING, ["create"]),
    # require_checks: not deployed until check results are read (here without GitHub credentials: never)
    ("gated", None, None, {"repository": "acme/gated"}, "webhook", "held gated-pr-7: require_checks is set and Sami "
     "has no GitHub credentials to read the checks", None, []),
    ("gated", S.RUNNING, HEAD, {"repository": "acme/gated", "state": "closed"}, "webhook",
     "archived gated-pr-7 (closed)", S.ARCHIVE_PENDING, ["archive"]),
]


@pytest.mark.parametrize(("service", "before", "sha", "changes", "origin", "outcome", "after", "kinds"), TABLE,
                         ids=[f"{row[0]}-{row[1]}-{row[4]}-{sorted(row[3])}-{i}" for i, row in enumerate(TABLE)])
def test_decisions(db_session, repo, ctx, service, before, sha, changes, origin, outcome, after, kinds):
    name = f"{service}-pr-7"
    if before is not None:
        existing(db_session, name, before, sha)
    done = sync(db_session, repo, ctx, pull(**changes), origin=origin)
    assert line_of(done, service) == outcome
    assert state_of(db_session, name) is after
    recorded = actions(db_session, name)
    assert [a.kind for a in recorded] == kinds
    for action in recorded:
        assert (action.requested_by, action.origin, action.delivery_id) == ("github:octocat", origin, "delivery-1")
        assert action.state is ActionState.QUEUED


def test_a_writers_approval_deploys_a_fork_at_that_commit_only(db_session, repo, ctx):
    from bot.outbox import pull_request_record

    record = pull_request_record(db_session, "acme/web", 7)
    record.approved_sha = HEAD
    db_session.commit()
    assert line_of(sync(db_session, repo, ctx, pull(fork=True)), "web") == f"created web-pr-7 at {SHORT}"
    newer = "f" * 40
    assert line_of(sync(db_session, repo, ctx, pull(fork=True, sha=newer)), "web") == (
        "held web-pr-7: fork (someone/web) at fffffff waits for a writer's /sami deploy")
    assert [a.kind for a in actions(db_session, "web-pr-7")] == ["create"]
    record = pull_request_record(db_session, "acme/web", 7)
    assert (record.head_sha, record.fork, record.approved_sha) == (newer, True, HEAD)


def test_the_head_commit_gives_the_tag_image_ref_and_source(db_session, repo, ctx):
    done = sync(db_session, repo, ctx, pull(labels={"preview"}))
    assert done == [f"created api-pr-7 at {SHORT}", f"created web-pr-7 at {SHORT}"]
    api = db_session.scalars(select(Deployment).where(Deployment.name == "api-pr-7")).one()
    assert (api.tag, api.image, api.sha, api.ref, api.source_repo, api.pull_request) == (
        f"pr-7-{SHORT}", f"local/api:pr-7-{SHORT}", HEAD, "feature/x", "acme/web", 7)
    web = db_session.scalars(select(Deployment).where(Deployment.name == "web-pr-7")).one()
    assert (web.tag, web.image) == (HEAD, f"local/web:{HEAD}")
    config = actions(db_session, "web-pr-7")[0].config
    assert (config["tag"], config["sha"], config["pull_request"]) == (HEAD, HEAD, 7)


def test_the_same_event_twice_does_nothing_the_second_time(db_session, repo, ctx):
    first = sync(db_session, repo, ctx, pull(labels={"preview"}))
    second = sync(db_session, repo, ctx, pull(labels={"preview"}))
    assert first == [f"created api-pr-7 at {SHORT}", f"created web-pr-7 at {SHORT}"]
    assert second == [f"unchanged api-pr-7: already at {SHORT}", f"unchanged web-pr-7: already at {SHORT}"]
    assert len(actions(db_session, "web-pr-7")) == 1
    closed = pull(state="closed")
    existing_state = state_of(db_session, "web-pr-7")
    assert sync(db_session, repo, ctx, closed)[1] == "waiting web-pr-7: is CreatePending; it can be archived once " \
                                                      "that settles"
    assert state_of(db_session, "web-pr-7") is existing_state


def test_newer_head_commits_supersede_queued_updates(db_session, repo, ctx):
    existing(db_session, "web-pr-7", S.RUNNING, OLD)
    shas = [f"{n:040x}" for n in (0xA1, 0xA2, 0xA3)]
    for sha in shas:
        assert line_of(sync(db_session, repo, ctx, pull(sha=sha)), "web") == f"updated web-pr-7 to {sha[:7]}"
    states = [(a.config["tag"], a.state) for a in actions(db_session, "web-pr-7")]
    assert states == [(shas[0], ActionState.SUPERSEDED), (shas[1], ActionState.SUPERSEDED),
                      (shas[2], ActionState.QUEUED)]


def test_repository_names_match_whatever_their_case(db_session, repo, ctx):
    assert sync(db_session, repo, ctx, pull(repository="ACME/Web"))[1] == f"created web-pr-7 at {SHORT}"


def test_repositories_without_a_deploying_service_get_nothing(db_session, repo, ctx):
    assert sync(db_session, repo, ctx, pull(repository="acme/unknown")) == []
    assert sync(db_session, repo, ctx, pull(repository="acme/other")) == []  # pr_deploy: false
    assert db_session.scalars(select(Deployment)).all() == []


@pytest.mark.parametrize(("patterns", "allowed"), [
    ((), True),
    (("acme/web",), True),
    (("Acme/*",), True),
    (("other/web", "acme/*"), True),
    (("acme/web-api",), False),
    (("other/*",), False),
])
def test_the_allowlist_comes_first(db_session, repo, ctx, patterns, allowed):
    done = sync(db_session, repo, ctx, pull(), patterns=patterns)
    if allowed:
        assert f"created web-pr-7 at {SHORT}" in done
    else:
        assert done == ["ignored: acme/web is not in SAMI_GITHUB_REPOSITORIES"]
        assert db_session.scalars(select(Deployment)).all() == []


def test_without_an_allowlist_the_manifests_repositories_are_allowed(repo):
    assert repository_allowed("Acme/Web", (), repo)
    assert repository_allowed("acme/other", (), repo)  # named by a manifest, even without pr_deploy
    assert not repository_allowed("acme/nothing", (), repo)
    assert repository_allowed("acme/nothing", ("acme/*",), repo)


def test_one_service_failing_does_not_stop_the_others(db_session, repo, ctx):
    # A deployment of another service holds web-pr-7's name: web fails, api still goes ahead.
    db_session.add(Deployment(name="web-pr-7", service="web-pr", environment="7", type="swarm", state=S.RUNNING,
                              app_overrides={}, deployment_overrides={}, links=[]))
    db_session.commit()
    done = sync(db_session, repo, ctx, pull(labels={"preview"}))
    assert done[0] == f"created api-pr-7 at {SHORT}"
    assert done[1].startswith("failed web-pr-7: deployment name 'web-pr-7' is taken by service 'web-pr'")


# --- reading pull requests ---------------------------------------------------------------------

def test_a_real_webhook_pull_request():
    payload = github_payloads.example("pull_request", "opened")
    pr = PullRequest.from_payload(payload["pull_request"], payload["repository"]["full_name"])
    assert (pr.repository, pr.number, pr.state, pr.merged) == ("Codertocat/Hello-World", 2, "open", False)
    assert (pr.head_sha, pr.head_ref) == ("ec26c3e57ca3a959ca5aad62de7213c562f8c821", "changes")
    assert (pr.head_repository, pr.fork, pr.author) == ("Codertocat/Hello-World", False, "Codertocat")
    assert pr.labels == frozenset() and pr.updated_at == datetime(2019, 5, 15, 15, 20, 33, tzinfo=UTC)
    labeled = github_payloads.example("pull_request", "labeled")["pull_request"]
    assert PullRequest.from_payload(labeled).labels == {"bug"}
    closed = github_payloads.example("pull_request", "closed")["pull_request"]
    assert PullRequest.from_payload(closed).state == "closed"


def test_forks_are_told_by_the_head_repository():
    pr = github_payloads.example("pull_request", "opened")["pull_request"]
    pr["head"]["repo"]["full_name"] = "someone/Hello-World"
    assert PullRequest.from_payload(pr).fork is True
    pr["head"]["repo"]["full_name"] = "codertocat/hello-world"
    assert PullRequest.from_payload(pr).fork is False
    pr["head"]["repo"] = None  # the fork was deleted
    found = PullRequest.from_payload(pr)
    assert (found.fork, found.head_repository) == (True, None)


@pytest.mark.parametrize(("change", "problem"), [
    (lambda pr: pr.pop("number"), "no 'number'"),
    (lambda pr: pr.update(number=True), "not a positive whole number"),
    (lambda pr: pr.update(number=0), "not a positive whole number"),
    (lambda pr: pr.update(state="draft"), "neither open nor closed"),
    (lambda pr: pr["head"].update(sha="not-a-sha"), "is not a commit sha"),
    (lambda pr: pr["head"].update(sha="EC26C3E57CA3A959CA5AAD62DE7213C562F8C821"), "is not a commit sha"),
    (lambda pr: pr.pop("head"), "no 'head'"),
])
def test_unreadable_pull_requests_are_refused(change, problem):
    pr = github_payloads.example("pull_request", "opened")["pull_request"]
    change(pr)
    with pytest.raises(PayloadError, match=problem):
        PullRequest.from_payload(pr)


def test_with_label_adds_and_removes():
    pr = pull(labels={"bug"})
    assert pr.with_label("preview", True).labels == {"bug", "preview"}
    assert pr.with_label("bug", False).labels == frozenset()
    assert replace(pr, labels=frozenset()) == pr.with_label("bug", False)
