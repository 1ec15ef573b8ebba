"""Pushes to the deployments repo: GitHub's example push payload (moved to acme/deployments) through
the worker's router, against the probe deployments repo as a git repository whose origin is
github.com/acme/deployments, then the real queue and a worker running the probe scripts."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from bot.core.models import Action, Delivery, Deployment
from bot.core.states import ActionState, DeploymentState
from bot.github import pushes, router
from bot.manifests import load_deployments_repo
from bot.services import deployments, history, pins
from tests.github import webhook_fixtures
from tests.pipeline import conftest as pipeline
from tests.pipeline.conftest import read_record
from tests.support import github_payloads
from workers import deliveries as delivery_jobs

S = DeploymentState
ORIGIN = "https://github.com/acme/deployments.git"

probe_repo, record, settings = pipeline.probe_repo, pipeline.record, pipeline.settings
worker_ctx, services_ctx, work = pipeline.worker_ctx, pipeline.services_ctx, pipeline.work


def git(folder: Path, *args: str) -> str:
    result = subprocess.run(["git", "-c", "user.name=Test", "-c", "user.email=test@example.test", *args],
                            cwd=folder, capture_output=True, text=True, check=True)
    return result.stdout.strip()


def commit(folder: Path, message: str = "change") -> str:
    git(folder, "add", "-A")
    git(folder, "commit", "--quiet", "--allow-empty", "-m", message)
    return git(folder, "rev-parse", "HEAD")


@pytest.fixture
def test_config(test_config, probe_repo, tmp_path):
    """The probe deployments repo as a git repository (branch main) cloned from acme/deployments."""
    git(probe_repo, "init", "--quiet", "--initial-branch=main")
    git(probe_repo, "remote", "add", "origin", ORIGIN)
    commit(probe_repo, "initial")
    return {**test_config, "deployments_repo": str(probe_repo), "deployments_ref": "main",
            "static_root": str(tmp_path / "sites"), "base_domain": "example.test"}


def push_event(before: str, after: str, *, ref: str = "refs/heads/main", index: int = 4,
               repository: str | None = "acme/deployments") -> router.Event:
    """GitHub's example push of a branch, moved to ``repository`` (None: left as GitHub's example)."""
    payload: dict[str, Any] = github_payloads.example("push", index=index)
    payload.update(ref=ref, before=before, after=after, created=False, deleted=False)
    if repository is not None:
        repo = payload["repository"]
        owner, name = repository.split("/")
        repo.update(full_name=repository, name=name, default_branch="main", master_branch="main",
                    html_url=f"https://github.com/{repository}", url=f"https://github.com/{repository}",
                    clone_url=f"https://github.com/{repository}.git", git_url=f"git://github.com/{repository}.git",
                    ssh_url=f"git@github.com:{repository}.git", svn_url=f"https://github.com/{repository}")
        repo["owner"]["login"] = repo["owner"]["name"] = owner
    return router.Event(name="push", action=None, delivery_id=str(uuid.uuid4()), payload=payload)


@pytest.fixture
def dispatch(db_session, worker_ctx, services_ctx):
    def run(event: router.Event) -> str:
        ctx = router.HandlerContext(session=db_session, manifests=worker_ctx.manifests, services=services_ctx,
                                    settings=worker_ctx.settings)
        return worker_ctx.router.dispatch(event, ctx).text

    return run


@pytest.fixture
def deployed(db_session, worker_ctx, services_ctx, work, probe_repo):
    """probe-stage at v1 and probe-pr-3 at pr3, both Running, deployed from the first commit."""
    repo = worker_ctx.manifests.current(refresh=True)
    for environment, tag, pr in (("stage", "v1", None), ("pull_request", "pr3", 3)):
        deployments.request_deployment(db_session, repo, deployments.DeploymentRequest(
            service="probe", environment=environment, tag=tag, pull_request=pr, sha="f" * 40, requested_by="test",
            origin="cli"), services_ctx)
    work()
    assert {d.name: d.state for d in deployment_rows(db_session)} == {"probe-pr-3": S.RUNNING, "probe-stage": S.RUNNING}
    return repo.sha


def deployment_rows(db_session) -> list[Deployment]:
    db_session.expire_all()
    return list(db_session.scalars(select(Deployment).order_by(Deployment.name)))


def updates(db_session) -> list[Action]:
    db_session.expire_all()
    return list(db_session.scalars(select(Action).where(Action.kind == "update").order_by(Action.id)))


def edit(path: Path, change) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_a_push_updates_the_deployments_whose_folder_changed(db_session, dispatch, work, probe_repo, deployed,
                                                             record):
    first = deployed
    edit(probe_repo / "services/probe/swarm/stage/stack.yml", lambda d: d["services"]["app"].update(labels=["x"]))
    second = commit(probe_repo)
    event = push_event(first, second)
    assert dispatch(event) == f"deployments repo at {second[:7]}: updated probe-stage; 1 unchanged"
    (update,) = updates(db_session)
    assert (update.config["manifest_sha"], update.config["tag"], update.state) == (second, "v1", ActionState.QUEUED)
    assert (update.requested_by, update.origin, update.delivery_id) == ("github:Codertocat", "webhook",
                                                                        event.delivery_id)
    work()
    stage = deployment_rows(db_session)[1]
    assert (stage.state, stage.tag, stage.manifest_sha, stage.sha) == (S.RUNNING, "v1", second, "f" * 40)
    assert "update probe-stage v1" in read_record(record)

    # GitHub redelivers the push: nothing is left to do.
    assert dispatch(push_event(first, second)) == (
        f"deployments repo at {second[:7]}: no deployment's manifest folder changed (2 unchanged)")

    # A push that changes no service folder updates nothing.
    (probe_repo / "README.md").write_text("the probe deployments repo\n")
    third = commit(probe_repo)
    assert dispatch(push_event(second, third)) == (
        f"deployments repo at {third[:7]}: no deployment's manifest folder changed (2 unchanged)")

    # The control scripts both environments use: both are updated, each keeping its tag.
    check = probe_repo / "scripts/probe/check"
    check.write_text(check.read_text() + "# changed\n")
    fourth = commit(probe_repo)
    assert dispatch(push_event(third, fourth)) == (
        f"deployments repo at {fourth[:7]}: updated probe-pr-3, probe-stage; 0 unchanged")
    work()
    pr3 = deployment_rows(db_session)[0]
    assert (pr3.state, pr3.tag, pr3.pull_request, pr3.manifest_sha) == (S.RUNNING, "pr3", 3, fourth)
    assert [line for line in read_record(record) if line.startswith("update")] == [
        "update probe-stage v1", "update probe-pr-3 pr3", "update probe-stage v1"]


def test_a_missed_push_is_caught_up_by_the_next(db_session, dispatch, probe_repo, deployed):
    edit(probe_repo / "services/probe/swarm/pull_request/sami.yaml", lambda d: d.update(timeout="90s"))
    missed = commit(probe_repo)
    (probe_repo / "README.md").write_text("docs\n")
    latest = commit(probe_repo)
    # The push event names only missed..latest, which changes no folder; probe-pr-3 was deployed
    # from the first commit, and its folder differs from that one.
    assert dispatch(push_event(missed, latest)) == f"deployments repo at {latest[:7]}: updated probe-pr-3; 1 unchanged"


def test_invalid_manifests_deploy_nothing(db_session, dispatch, probe_repo, deployed):
    edit(probe_repo / "services/probe/swarm/pull_request/sami.yaml", lambda d: d.update(timeout="90s"))
    edit(probe_repo / "services/probe/swarm/stage/sami.yaml", lambda d: d.update(timout="90s", pr_tag="{sha7}"))
    bad = commit(probe_repo)
    outcome = dispatch(push_event(deployed, bad))
    assert outcome.startswith(f"refused deployments repo at {bad[:7]}: 2 manifest errors, nothing deployed: "
                              "services/probe/swarm/stage/sami.yaml:")
    assert "unknown key 'timout'; did you mean 'timeout'?" in outcome and "{sha7}" in outcome
    assert updates(db_session) == []
    # The pushed commit gets a failing commit status naming the first error with its file and line.
    from bot.core.models import OutboxRow

    [status] = db_session.scalars(select(OutboxRow).where(OutboxRow.kind == "commit_status_validation")).all()
    assert (status.payload["sha"], status.payload["state"], status.payload["context"]) == (bad, "failure",
                                                                                           "sami/validate")
    assert status.payload["description"].startswith("2 manifest errors, nothing deployed: "
                                                    "services/probe/swarm/stage/sami.yaml:")
    assert len(status.payload["description"]) <= 140


def test_pushes_sami_does_not_follow_are_ignored(db_session, dispatch, probe_repo, deployed):
    edit(probe_repo / "services/probe/swarm/stage/stack.yml", lambda d: d["services"]["app"].update(labels=["x"]))
    after = commit(probe_repo)
    assert dispatch(push_event(deployed, after, ref="refs/heads/feature")) == (
        "ignored: refs/heads/feature is not the deployments repo's branch main")
    tag = push_event(deployed, after, index=0)
    tag.payload["ref"] = "refs/tags/simple-tag"
    assert dispatch(tag) == "ignored: refs/tags/simple-tag is not the deployments repo's branch main"
    deleted = push_event(deployed, "0" * 40)
    deleted.payload["deleted"] = True
    assert dispatch(deleted) == "ignored: the push deleted refs/heads/main"
    assert dispatch(push_event(deployed, after, repository=None)) == (
        "ignored: Codertocat/Hello-World is not the deployments repo (application pushes deploy nothing; CI "
        "requests deploys)")
    assert dispatch(push_event(deployed, after, repository="acme/web")).startswith(
        "ignored: acme/web is not the deployments repo")
    assert updates(db_session) == []


def test_a_commit_that_cannot_be_read_is_retried(db_session, dispatch, deployed):
    with pytest.raises(router.Retry, match="could not be read at 1234567"):
        dispatch(push_event(deployed, "1234567" + "0" * 33))


def test_a_folder_without_a_remote_follows_no_pushes(dispatch, worker_ctx, monkeypatch, tmp_path):
    from dataclasses import replace

    monkeypatch.setattr(worker_ctx, "settings", replace(worker_ctx.settings, deployments_repo=str(tmp_path)))
    assert dispatch(push_event("a" * 40, "b" * 40)) == ("ignored: push to acme/deployments; the deployments repo is "
                                                        "a folder without a remote, so pushes are not followed")


# --- which repository, which folders ------------------------------------------------------------

@pytest.mark.parametrize(("url", "key"), [
    ("https://github.com/acme/deployments.git", "github.com/acme/deployments"),
    ("https://github.com/Acme/Deployments", "github.com/acme/deployments"),
    ("https://github.com/acme/deployments/", "github.com/acme/deployments"),
    ("https://github.com:443/acme/deployments.git", "github.com/acme/deployments"),
    ("https://ghe.example.test:8443/acme/deployments.git", "ghe.example.test:8443/acme/deployments"),
    ("git@github.com:acme/deployments.git", "github.com/acme/deployments"),
    ("ssh://git@github.com/acme/deployments.git", "github.com/acme/deployments"),
    ("ssh://git@github.com:22/acme/deployments.git", "github.com/acme/deployments"),
    ("git://github.com/acme/deployments.git", "github.com/acme/deployments"),
    ("/srv/deployments", None),
    ("file:///srv/deployments.git", None),
    ("https://github.com/", None),
])
def test_repository_keys(url, key):
    assert pushes.repository_key(url) == key


def test_the_deployments_repo_is_known_by_its_url_or_a_clone_of_it(tmp_path):
    repository = push_event("a" * 40, "b" * 40).payload["repository"]
    assert pushes.is_deployments_repo(repository, "git@github.com:acme/deployments.git")
    assert pushes.is_deployments_repo(repository, "https://github.com/ACME/deployments")
    assert not pushes.is_deployments_repo(repository, "https://github.com/acme/deployments-old.git")
    assert not pushes.is_deployments_repo(repository, "https://ghe.example.test/acme/deployments.git")
    clone = tmp_path / "clone"
    clone.mkdir()
    git(clone, "init", "--quiet")
    assert not pushes.is_deployments_repo(repository, str(clone))  # no origin
    git(clone, "remote", "add", "origin", "git@github.com:acme/deployments.git")
    assert pushes.is_deployments_repo(repository, str(clone))
    assert pushes.is_deployments_repo(repository, f"file://{clone}")
    assert not pushes.is_deployments_repo(repository, str(tmp_path / "missing"))


def test_tracked_branch():
    assert pushes.tracked_branch("", {"default_branch": "trunk"}) == "trunk"
    assert pushes.tracked_branch("release", {"default_branch": "trunk"}) == "release"
    assert pushes.tracked_branch("refs/heads/release", {"default_branch": "trunk"}) == "release"


def test_folder_digests_see_every_change_of_a_deployments_folder(probe_repo):
    def digests() -> dict[str, str]:
        repo = load_deployments_repo(probe_repo)
        return {m.environment: pushes.folder_digest(repo, m) for m in repo.manifests}

    before = digests()
    assert before == digests() and before["stage"] != before["pull_request"]
    (probe_repo / "README.md").write_text("outside every folder\n")
    assert digests() == before
    stage = probe_repo / "services/probe/swarm/stage"
    changes = [
        lambda: (stage / "extra.txt").write_text("new file\n"),
        lambda: (stage / "extra.txt").write_text("new content\n"),
        lambda: os.chmod(stage / "extra.txt", 0o700),
        lambda: (stage / "sub").mkdir(),
        lambda: os.symlink("../stack.yml", stage / "sub" / "link.yml"),
        lambda: (probe_repo / "scripts/probe/info").write_text("#!/bin/sh\n"),
    ]
    seen = {before["stage"]}
    for change in changes:
        change()
        now = digests()
        assert now["stage"] not in seen
        seen.add(now["stage"])
    assert digests()["pull_request"] != before["pull_request"]  # the shared control scripts changed


def test_a_refresh_keeps_the_deployments_image(db_session, worker_ctx, services_ctx, probe_repo):
    digest = "sha256:" + "ab" * 32
    repo = worker_ctx.manifests.current(refresh=True)
    deployments.request_deployment(db_session, repo, deployments.DeploymentRequest(
        service="probe", environment="stage", image=f"local/probe@{digest}", requested_by="test", origin="cli",
        app_overrides={"LOG_LEVEL": "debug"}), services_ctx)
    accepted = deployments.refresh_deployment(db_session, repo, "probe-stage", services_ctx, requested_by="github:x",
                                           origin="webhook", delivery_id="d-1")
    assert accepted.kind == "update"
    stage = deployment_rows(db_session)[0]
    assert (stage.image, stage.tag, stage.app_overrides) == (f"local/probe@{digest}", "ab" * 6, {"LOG_LEVEL": "debug"})
    # The manifest names another image: the deployment's tag goes with it.
    edit(probe_repo / "services/probe/swarm/stage/sami.yaml", lambda d: d.update(image="local/renamed"))
    commit(probe_repo)
    deployments.refresh_deployment(db_session, worker_ctx.manifests.current(refresh=True), "probe-stage", services_ctx,
                                requested_by="github:x", origin="webhook")
    stage = deployment_rows(db_session)[0]
    assert (stage.image, stage.tag, stage.app_overrides) == ("local/renamed:" + "ab" * 6, "ab" * 6,
                                                             {"LOG_LEVEL": "debug"})
    assert [a.config["image"] for a in updates(db_session)] == [f"local/probe@{digest}", "local/renamed:" + "ab" * 6]


def test_a_push_leaves_a_pinned_deployment_and_updates_the_others(db_session, worker_ctx, services_ctx, work,
                                                                  client, probe_repo, deployed, record):
    """A signed push delivery, recorded by the webhook endpoint and processed by the delivery job: the
    deployment a rollback pinned is refused and named so; the other one the push changes is updated."""
    repo = worker_ctx.manifests.current()
    deployments.request_deployment(db_session, repo, deployments.DeploymentRequest(
        service="probe", environment="stage", tag="v2", requested_by="test", origin="cli"), services_ctx)
    work()
    history.rollback_deployment(db_session, repo, "probe-stage", services_ctx, requested_by="token:ops",
                                origin="api")
    work()
    stage = deployment_rows(db_session)[1]
    assert (stage.tag, stage.pinned_by) == ("v1", "token:ops")

    # The control scripts both deployments use change.
    check = probe_repo / "scripts/probe/check"
    check.write_text(check.read_text() + "# changed\n")
    after = commit(probe_repo)
    payload = push_event(deployed, after).payload
    answer = webhook_fixtures.post(client, "push", payload)
    assert answer.status_code == 202, answer.json
    row_id = db_session.scalars(select(Delivery.id).where(Delivery.delivery_id == answer.json["delivery"])).one()
    assert delivery_jobs.process_delivery(row_id, ctx=worker_ctx) == "processed"
    db_session.expire_all()
    delivery = db_session.get(Delivery, row_id)
    assert delivery.outcome.startswith(f"deployments repo at {after[:7]}: updated probe-pr-3; 0 unchanged; "
                                       f"refused probe-stage: pinned by token:ops at ")
    assert delivery.outcome.endswith(", unpin with sami unpin probe-stage")
    assert [a.config["manifest_sha"] for a in updates(db_session) if a.state is ActionState.QUEUED] == [after]
    work()
    pr3, stage = deployment_rows(db_session)
    assert (pr3.manifest_sha, pr3.state) == (after, S.RUNNING)
    assert stage.tag == "v1" and stage.manifest_sha != after
    # The deliveries page shows the push as refused, not as a green "processed".
    page = client.get("/deliveries").get_data(as_text=True)
    assert "processed: refused (see the outcome)" in page

    # Once unpinned, the next push catches the deployment up (its own tree differs from the pushed one).
    pins.unpin(db_session, "probe-stage", requested_by="token:ops")
    (probe_repo / "README.md").write_text("docs\n")
    latest = commit(probe_repo)
    assert dispatch_push(db_session, worker_ctx, services_ctx, push_event(after, latest)) == (
        f"deployments repo at {latest[:7]}: updated probe-stage; 1 unchanged")


def dispatch_push(db_session, worker_ctx, services_ctx, event: router.Event) -> str:
    ctx = router.HandlerContext(session=db_session, manifests=worker_ctx.manifests, services=services_ctx,
                                settings=worker_ctx.settings)
    return worker_ctx.router.dispatch(event, ctx).text
