"""An action whose deployments-repo commit cannot be read waits and is tried again, then fails;
with the probe deployments repo as a real git source and commits that are not (yet) in it."""

from __future__ import annotations

import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from bot.core.models import Action, Deployment
from bot.core.states import ActionState, DeploymentState
from bot.services import deployments
from workers.scheduler import Scheduler, TickReport

S = DeploymentState


def git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=Test", "-c", "user.email=test@example.test", *args],
                          cwd=folder, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def test_config(test_config, probe_repo):
    """The probe deployments repo as a git source, followed at branch main."""
    git(probe_repo, "init", "--quiet", "--initial-branch=main")
    git(probe_repo, "add", "-A")
    git(probe_repo, "commit", "--quiet", "-m", "initial")
    return {**test_config, "deployments_ref": "main"}


@pytest.fixture
def elsewhere(probe_repo, tmp_path):
    """A clone with a commit the deployments repo does not have (pushed later, or never)."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(probe_repo), str(clone)], check=True, capture_output=True)
    (clone / "README").write_text("a change not pushed yet\n")
    git(clone, "add", "-A")
    git(clone, "commit", "--quiet", "-m", "not pushed")
    return clone, git(clone, "rev-parse", "HEAD")


def accepted_at(db_session, worker_ctx, services_ctx, sha: str) -> int:
    """A create accepted with the manifests of commit ``sha`` (as after a push Sami has not read)."""
    req = deployments.DeploymentRequest(service="probe", environment="stage", tag="v1", requested_by="test",
                                     origin="cli")
    action_id = deployments.request_deployment(db_session, worker_ctx.manifests.current(), req, services_ctx).action_id
    config = {**db_session.get(Action, action_id).config, "manifest_sha": sha}
    db_session.execute(update(Action).where(Action.id == action_id).values(config=config))
    db_session.commit()
    return action_id


def action(db_session, action_id) -> Action:
    db_session.expire_all()
    return db_session.get(Action, action_id)


def state(db_session) -> DeploymentState:
    db_session.expire_all()
    return db_session.scalars(select(Deployment.state)).one()


def sweep_when_due(worker_ctx, db_session, action_id) -> list[int]:
    """The scheduler's sweep at the action's retry time (and a moment before it: nothing)."""
    due = action(db_session, action_id).retry_at
    early, report = TickReport(), TickReport()
    Scheduler(worker_ctx).steps["sweep"](early, due - timedelta(seconds=5))
    assert early.queued == []
    time.sleep(0.2)
    Scheduler(worker_ctx).steps["sweep"](report, due + timedelta(seconds=5))
    return report.queued


def test_a_commit_that_cannot_be_read_is_retried_then_fails_the_action(db_session, worker_ctx, services_ctx,
                                                                        work, elsewhere, monkeypatch):
    monkeypatch.setattr("workers.jobs.REPO_RETRY_DELAYS", (0.1, 0.1))
    _, missing = elsewhere
    action_id = accepted_at(db_session, worker_ctx, services_ctx, missing)
    work()
    a = action(db_session, action_id)
    assert a.state is ActionState.QUEUED and a.attempts == 1 and a.retry_at is not None
    assert "could not be read" in a.log and "try 1 of 3" in a.log
    assert state(db_session) is S.CREATE_PENDING
    for _ in range(2):
        assert sweep_when_due(worker_ctx, db_session, action_id) == [action_id]
        work()
    a = action(db_session, action_id)
    assert a.state is ActionState.FAILED and a.attempts == 2
    assert "could not be read after 3 tries" in a.error
    assert state(db_session) is S.FAILURE


def test_an_action_runs_once_its_commit_arrives(db_session, worker_ctx, services_ctx, work, elsewhere,
                                                probe_repo, monkeypatch):
    monkeypatch.setattr("workers.jobs.REPO_RETRY_DELAYS", (0.1,))
    clone, pushed_later = elsewhere
    action_id = accepted_at(db_session, worker_ctx, services_ctx, pushed_later)
    work()
    assert action(db_session, action_id).attempts == 1
    git(probe_repo, "fetch", "--quiet", str(clone), "main")  # the commit reaches the deployments repo
    assert sweep_when_due(worker_ctx, db_session, action_id) == [action_id]
    work()
    assert action(db_session, action_id).state is ActionState.SUCCEEDED
    assert state(db_session) is S.RUNNING
