"""A single manifest may say blue_green: its environment (no environment file) is then released
blue-green with that service as the entry, through the same releases as an environment file's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from bot.core.errors import Conflict
from bot.core.models import Deployment, Release
from bot.services import deployments, environments, releases
from bot.services.deployments import DeploymentRequest
from bot.services.tokens import Scopes, create_token

WHO = {"requested_by": "token:release-manager", "origin": "cli"}


@pytest.fixture
def test_config(test_config, tmp_path):
    folder = tmp_path / "manifest-release" / "services" / "site" / "static_file" / "production"
    (folder / "site").mkdir(parents=True)
    (folder / "site" / "index.html").write_text("<h1>site</h1>\n")
    (folder / "sami.yaml").write_text(yaml.safe_dump({
        "version": "v1beta", "service_name": "site", "type": "static_file", "files": ["site"],
        "status_timeout": "20s", "url": "http://{name}.example.test",
        "blue_green": {"keep_previous": "1h", "release_approvers": ["token:release-manager"]}}, sort_keys=False))
    return {**test_config, "deployments_repo": str(tmp_path / "manifest-release")}


def state(db_session, release_id: int) -> str:
    db_session.expire_all()
    return db_session.get(Release, release_id).state


def test_a_manifests_own_blue_green_releases_its_environment(db_session, worker_ctx, services_ctx, work, settings):
    repo = worker_ctx.manifests.current()
    assert repo.errors == () and repo.environment_files == {}
    first = releases.prepare(db_session, repo, "production", services_ctx, versions={"site": "v1"}, **WHO)
    work()
    assert state(db_session, first.id) == "awaiting"
    releases.switch(db_session, repo, "production", services_ctx, **WHO)
    work()
    assert state(db_session, first.id) == "live"
    root = Path(settings.static_root)
    assert os.readlink(root / "site-production" / "current") == str(root / "site-production-blue" / "current")
    status = releases.status(db_session, repo, "production")
    assert status["entry"] == "site" and status["release_approvers"] == ["token:release-manager"]
    second = releases.prepare(db_session, repo, "production", services_ctx, versions={"site": "v2"}, **WHO)
    work()
    assert (second.to_colour, state(db_session, second.id)) == ("green", "awaiting")
    releases.switch(db_session, repo, "production", services_ctx, **WHO)
    work()
    assert os.readlink(root / "site-production" / "current") == str(root / "site-production-green" / "current")


def test_nothing_is_deployed_under_a_blue_green_environments_own_name(db_session, worker_ctx, services_ctx, app):
    """Its name is its stable entry's (site-production): a CI request or a whole-environment deploy of
    it is refused, saying how to release; its colours deploy as usual."""
    repo = worker_ctx.manifests.current()
    request = DeploymentRequest(service="site", environment="production", tag="v1", **WHO)
    with pytest.raises(Conflict, match=r"environment 'production' is released blue-green: .* site-production is its "
                                       r"stable entry; deploy a release into the idle colour \(sami env release "
                                       r"production --version site=TAG"):
        deployments.request_deployment(db_session, repo, request, services_ctx)
    with pytest.raises(Conflict, match="released blue-green"):
        environments.start_run(db_session, repo, "production", "deploy", services_ctx, versions={"site": "v1"},
                               **WHO)
    assert db_session.scalars(select(Deployment)).all() == []
    token = create_token(db_session, "ci", Scopes(services=("*",), environments=("*",), actions=("read", "deploy")))
    db_session.commit()
    answer = app.test_client().post("/deployment_request", json={"service": "site", "environment": "production",
                                                                 "tag": "v1"},
                                    headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 409 and "released blue-green" in answer.json["error"]
