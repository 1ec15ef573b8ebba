"""Deployed vs requested vs running with the built-in static_file scripts on a real folder: a release
switched by hand or removed is drift (not a Failure), `reconcile` and `on_drift: reconcile` put the
deployed release back, and a failed update leaves the last good config deployed (restore returns to it)."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from bot.core.errors import Conflict
from bot.core.models import Action, Deployment
from bot.core.states import ActionState, DeploymentState
from bot.services import deployments, drift, history
from workers.checks import ON_DRIFT_BY
from workers.scheduler import Scheduler, TickReport

S = DeploymentState
WHO = {"requested_by": "test", "origin": "cli"}


@pytest.fixture
def static_repo(tmp_path) -> Path:
    """A deployments repo with the docs site in stage (drift reported) and in auto (drift reconciled)."""
    root = tmp_path / "static-deployments"
    for environment, extra in (("stage", {}), ("auto", {"on_drift": "reconcile"})):
        folder = root / "services" / "docs" / "static_file" / environment
        (folder / "site").mkdir(parents=True)
        (folder / "site" / "index.html").write_text("<h1>docs</h1>\n")
        manifest = {"version": "v1beta", "service_name": "docs", "type": "static_file", "files": ["site"],
                    "status_timeout": "20s", "allowed_overrides": {"deployment": ["source"]}, **extra}
        (folder / "sami.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    return root


@pytest.fixture
def test_config(test_config, static_repo):
    return {**test_config, "deployments_repo": str(static_repo)}


def deployment(db_session, name: str) -> Deployment:
    db_session.expire_all()
    return db_session.scalars(select(Deployment).where(Deployment.name == name)).one()


def deploy(db_session, worker_ctx, services_ctx, work, environment: str, tag: str, **overrides) -> Deployment:
    req = deployments.DeploymentRequest(service="docs", environment=environment, tag=tag,
                                        deployment_overrides=overrides, **WHO)
    deployments.request_deployment(db_session, worker_ctx.manifests.current(), req, services_ctx)
    work()
    return deployment(db_session, f"docs-{environment}")


def served_tag(base: Path) -> str:
    return os.readlink(base / "current").removeprefix("releases/").rsplit("@", 1)[0]


def switch_by_hand(base: Path, tag: str) -> None:
    """What someone on the host might do: point `current` at another kept release."""
    release = next(p.name for p in (base / "releases").iterdir() if p.name.rsplit("@", 1)[0] == tag)
    os.symlink(f"releases/{release}", base / "current.by-hand")
    os.replace(base / "current.by-hand", base / "current")


def periodic_check(db_session, worker_ctx, work, name: str) -> TickReport:
    now = deployment(db_session, name).checked_at + timedelta(seconds=worker_ctx.settings.check_interval + 1)
    report = TickReport()
    Scheduler(worker_ctx).steps["checks"](report, now)
    work()
    return report


def test_a_release_switched_by_hand_is_drift_and_reconcile_puts_the_deployed_one_back(
        db_session, worker_ctx, services_ctx, work, settings):
    base = Path(settings.static_root) / "docs-stage"
    deploy(db_session, worker_ctx, services_ctx, work, "stage", "v1")
    d = deploy(db_session, worker_ctx, services_ctx, work, "stage", "v2")
    assert d.state is S.RUNNING and d.drift == []
    assert d.running["components"] == [{"name": "current", "image": None, "tag": "v2", "replicas": None,
                                        "running": None, "env": {}}]

    switch_by_hand(base, "v1")
    assert periodic_check(db_session, worker_ctx, work, "docs-stage").checks == [d.id]
    d = deployment(db_session, "docs-stage")
    assert d.state is S.RUNNING and d.failure_reason is None, d.status_message  # drift, not tag mismatch
    assert d.drift == [{"component": "current", "field": "tag", "deployed": "v2", "running": "v1"}]
    assert drift.drift_view(d)["summary"] == "current: tag v1 (deployed v2)"

    accepted = history.reconcile_deployment(db_session, worker_ctx.manifests.current(), "docs-stage", services_ctx,
                                            **WHO)
    work()
    action = db_session.get(Action, accepted.action_id)
    assert action.state is ActionState.SUCCEEDED and action.config["tag"] == "v2"
    assert served_tag(base) == "v2"
    d = deployment(db_session, "docs-stage")
    assert d.state is S.RUNNING and d.drift == []

    # The release removed by hand: nothing is served, which is drift too.
    (base / "current").unlink()
    periodic_check(db_session, worker_ctx, work, "docs-stage")
    d = deployment(db_session, "docs-stage")
    assert d.state is S.RUNNING
    assert d.drift == [{"component": None, "field": "present", "deployed": "1 component(s)", "running": "nothing"}]


def test_on_drift_reconcile_puts_the_deployed_release_back_from_the_check(db_session, worker_ctx, services_ctx,
                                                                           work, settings):
    base = Path(settings.static_root) / "docs-auto"
    deploy(db_session, worker_ctx, services_ctx, work, "auto", "v1")
    d = deploy(db_session, worker_ctx, services_ctx, work, "auto", "v2")
    switch_by_hand(base, "v1")
    periodic_check(db_session, worker_ctx, work, "docs-auto")
    assert served_tag(base) == "v2"
    d = deployment(db_session, "docs-auto")
    assert d.state is S.RUNNING and d.drift == []
    last = db_session.scalars(select(Action).where(Action.deployment_id == d.id).order_by(Action.id.desc())).first()
    assert last.requested_by == ON_DRIFT_BY and last.origin == "schedule" and last.kind == "update"
    assert last.state is ActionState.SUCCEEDED and last.config["reconcile_of"] is not None


def test_a_failed_update_leaves_the_last_good_config_deployed_and_restore_returns_to_it(
        db_session, worker_ctx, services_ctx, work, settings):
    base = Path(settings.static_root) / "docs-stage"
    good = deploy(db_session, worker_ctx, services_ctx, work, "stage", "v1")
    d = deploy(db_session, worker_ctx, services_ctx, work, "stage", "v2", source="missing")
    assert d.state is S.FAILURE  # config_check refused the missing bundle: nothing was switched
    views = drift.config_views(db_session, d)
    assert views["requested"]["tag"] == "v2" and views["requested"]["state"] == "failed"
    assert views["requested"]["overrides"]["deployment"] == {"source": "missing"}
    assert views["deployed"]["tag"] == "v1" and views["deployed"]["state"] == "succeeded"
    assert views["deployed"]["overrides"]["deployment"] == {}
    assert served_tag(base) == "v1"
    assert good.drift == []

    repo = worker_ctx.manifests.current()
    deployments.archive_deployment(db_session, repo, "docs-stage", services_ctx, **WHO)
    work()
    assert deployment(db_session, "docs-stage").state is S.ARCHIVED
    accepted = deployments.restore_deployment(db_session, repo, "docs-stage", services_ctx, **WHO)
    work()
    restore = db_session.get(Action, accepted.action_id)
    assert restore.config["tag"] == "v1" and restore.config["deployment_overrides"] == {}
    d = deployment(db_session, "docs-stage")
    assert d.state is S.RUNNING and d.tag == "v1" and d.deployment_overrides == {}
    assert served_tag(base) == "v1"
    assert drift.config_views(db_session, d)["deployed"]["action_id"] == restore.id


def test_reconcile_needs_a_deployed_config_and_a_settled_deployment(db_session, worker_ctx, services_ctx, work):
    repo = worker_ctx.manifests.current()
    d = deploy(db_session, worker_ctx, services_ctx, work, "stage", "v1", source="missing")
    assert d.state is S.FAILURE
    with pytest.raises(Conflict, match="no deployed config"):
        history.reconcile_deployment(db_session, repo, "docs-stage", services_ctx, **WHO)
    db_session.rollback()
    deploy(db_session, worker_ctx, services_ctx, work, "stage", "v1", source=None)
    deployments.archive_deployment(db_session, repo, "docs-stage", services_ctx, **WHO)
    with pytest.raises(Conflict, match="ArchivePending"):
        history.reconcile_deployment(db_session, repo, "docs-stage", services_ctx, **WHO)


def test_checks_of_a_script_set_with_check_batch_go_in_one_call(db_session, worker_ctx, services_ctx, work,
                                                                  settings):
    deploy(db_session, worker_ctx, services_ctx, work, "stage", "v1")
    deploy(db_session, worker_ctx, services_ctx, work, "stage", "v2")
    deploy(db_session, worker_ctx, services_ctx, work, "auto", "v1")
    stage, auto = deployment(db_session, "docs-stage"), deployment(db_session, "docs-auto")
    switch_by_hand(Path(settings.static_root) / "docs-stage", "v1")
    now = max(stage.checked_at, auto.checked_at) + timedelta(seconds=worker_ctx.settings.check_interval + 1)
    report = TickReport()
    Scheduler(worker_ctx).steps["checks"](report, now)
    assert [sorted(batch) for batch in report.check_batches] == [sorted([stage.id, auto.id])]  # one call
    assert sorted(report.checks) == sorted([stage.id, auto.id])
    work()
    before = auto.checked_at
    stage, auto = deployment(db_session, "docs-stage"), deployment(db_session, "docs-auto")
    assert stage.drift == [{"component": "current", "field": "tag", "deployed": "v2", "running": "v1"}]
    assert stage.state is S.RUNNING
    assert auto.drift == [] and auto.state is S.RUNNING and auto.checked_at > before
