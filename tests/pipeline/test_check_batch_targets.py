"""check_batch with several Sami targets: the periodic checks of one script set go in one call per
target, each with that target's settings. Two static roots (the default target's and an edge
target's), the docs site deployed on each with the built-in static_file scripts: both stay Running
and in sync after a round of batched checks, and a release switched by hand on the edge root is
drift there only."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from bot.core.models import Deployment
from bot.core.states import DeploymentState
from bot.services import deployments
from workers.scheduler import Scheduler, TickReport

S = DeploymentState
WHO = {"requested_by": "test", "origin": "cli"}


@pytest.fixture
def roots(tmp_path) -> dict[str, Path]:
    return {"local": tmp_path / "local-sites", "edge": tmp_path / "edge-sites"}


@pytest.fixture
def test_config(test_config, tmp_path, roots):
    repo = tmp_path / "deployments"
    for environment in ("stage", "edge"):
        folder = repo / "services" / "docs" / "static_file" / environment
        (folder / "site").mkdir(parents=True)
        (folder / "site" / "index.html").write_text(f"<h1>docs in {environment}</h1>\n")
        (folder / "sami.yaml").write_text(yaml.safe_dump({
            "version": "v1beta", "service_name": "docs", "type": "static_file", "files": ["site"],
            "status_timeout": "20s"}, sort_keys=False))
    (repo / "environments").mkdir()
    (repo / "environments" / "edge.yaml").write_text("version: v1beta\ntarget: edge\n")
    for root in roots.values():
        root.mkdir()
    targets = tmp_path / "targets.yaml"
    targets.write_text(yaml.safe_dump({"default": "local", "targets": {
        name: {"static_root": str(root)} for name, root in roots.items()}}))
    return {**test_config, "deployments_repo": str(repo), "targets_file": str(targets),
            "static_root": str(roots["local"])}


def deployment(db_session, name: str) -> Deployment:
    db_session.expire_all()
    return db_session.scalars(select(Deployment).where(Deployment.name == name)).one()


def test_batched_checks_run_on_each_deployments_own_target(db_session, worker_ctx, services_ctx, work, roots):
    for environment in ("stage", "edge"):
        request = deployments.DeploymentRequest(service="docs", environment=environment, tag="v1", **WHO)
        deployments.request_deployment(db_session, worker_ctx.manifests.current(), request, services_ctx)
        work()
        request = deployments.DeploymentRequest(service="docs", environment=environment, tag="v2", **WHO)
        deployments.request_deployment(db_session, worker_ctx.manifests.current(), request, services_ctx)
        work()
    # Each site is on its own target's root, and nowhere else.
    assert (roots["local"] / "docs-stage" / "current").is_symlink() and not (roots["local"] / "docs-edge").exists()
    assert (roots["edge"] / "docs-edge" / "current").is_symlink() and not (roots["edge"] / "docs-stage").exists()
    # Someone points the edge site back at v1 by hand.
    edge_site = roots["edge"] / "docs-edge"
    v1 = next(p.name for p in (edge_site / "releases").iterdir() if p.name.rsplit("@", 1)[0] == "v1")
    os.symlink(f"releases/{v1}", edge_site / "current.by-hand")
    os.replace(edge_site / "current.by-hand", edge_site / "current")

    stage, edge = deployment(db_session, "docs-stage"), deployment(db_session, "docs-edge")
    now = max(stage.checked_at, edge.checked_at) + timedelta(seconds=worker_ctx.settings.check_interval + 1)
    report = TickReport()
    Scheduler(worker_ctx).steps["checks"](report, now)
    assert sorted(report.checks) == sorted([stage.id, edge.id]) and report.check_batches
    work()
    checked_before = {stage.name: stage.checked_at, edge.name: edge.checked_at}
    stage, edge = deployment(db_session, "docs-stage"), deployment(db_session, "docs-edge")
    assert stage.checked_at > checked_before["docs-stage"] and edge.checked_at > checked_before["docs-edge"]
    # Checked where they run: stage in sync, edge drifted (not "not deployed", as on the other root).
    assert stage.state is S.RUNNING and stage.drift == [], (stage.state, stage.status_message, stage.drift)
    assert edge.state is S.RUNNING, (edge.state, edge.status_message)
    assert edge.drift == [{"component": "current", "field": "tag", "deployed": "v2", "running": "v1"}]
