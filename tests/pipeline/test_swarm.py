"""The example repo's swarm service through the whole pipeline on a real single-node Swarm:
request -> queue -> worker -> built-in swarm scripts -> Running, and on through its states."""

from __future__ import annotations

import shutil
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.core.models import Deployment
from bot.core.states import DeploymentState
from bot.services import deployments
from tests.support.docker import DockerSwarm, free_port

pytestmark = [pytest.mark.swarm, pytest.mark.slow]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "deployments"
S = DeploymentState


@pytest.fixture
def port():
    return free_port()


@pytest.fixture
def example_repo(tmp_path):
    """The example deployments repo, with web's link pointing at the node (no DNS here)."""
    repo = tmp_path / "example-deployments"
    shutil.copytree(EXAMPLES, repo)
    manifest = repo / "services/web/swarm/stage/sami.yaml"
    lines = [line for line in manifest.read_text().splitlines() if not line.startswith("url:")]
    manifest.write_text("\n".join(lines) + '\nurl: "http://{base_domain}"\n')
    return repo


@pytest.fixture
def test_config(test_config, example_repo, port):
    return {**test_config, "deployments_repo": str(example_repo), "base_domain": f"127.0.0.1:{port}"}


@pytest.fixture
def swarm(swarm_session: DockerSwarm, monkeypatch) -> DockerSwarm:
    for key, value in swarm_session.env().items():
        if key.startswith("DOCKER"):
            monkeypatch.setenv(key, value)
    return swarm_session


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def state(db_session) -> Deployment:
    db_session.expire_all()
    return db_session.scalars(select(Deployment).where(Deployment.name == "web-stage")).one()


def test_swarm_service_through_every_state(swarm, db_session, worker_ctx, services_ctx, work, port):
    swarm.retag("local/web:tag-a")
    swarm.retag("local/web:tag-b")
    repo = worker_ctx.manifests.current()

    def deploy(tag):
        req = deployments.DeploymentRequest(service="web", environment="stage", tag=tag, requested_by="test",
                                         origin="cli", deployment_overrides={"port": str(port)})
        return deployments.request_deployment(db_session, repo, req, services_ctx)

    who = {"requested_by": "test", "origin": "cli"}
    try:
        deploy("tag-a")
        work()
        d = state(db_session)
        assert d.state is S.RUNNING, d.status_message
        assert "<h1>web tag-a</h1>" in get(f"http://127.0.0.1:{port}/")

        deploy("tag-b")
        work()
        assert state(db_session).state is S.RUNNING
        assert "<h1>web tag-b</h1>" in get(f"http://127.0.0.1:{port}/")
        images = swarm.output("service", "ls", "--filter", "label=com.docker.stack.namespace=web-stage",
                              "--format", "{{.Image}}").split()
        assert sorted(images) == ["local/web:tag-b", "local/web:tag-b"]

        deployments.archive_deployment(db_session, repo, "web-stage", services_ctx, **who)
        work()
        assert state(db_session).state is S.ARCHIVED
        replicas = swarm.output("service", "ls", "--filter", "label=com.docker.stack.namespace=web-stage",
                                "--format", "{{.Replicas}}").split()
        assert replicas == ["0/0", "0/0"]

        deployments.restore_deployment(db_session, repo, "web-stage", services_ctx, **who)
        work()
        assert state(db_session).state is S.RUNNING
        assert "<h1>web tag-b</h1>" in get(f"http://127.0.0.1:{port}/")

        deployments.archive_deployment(db_session, repo, "web-stage", services_ctx, **who)
        work()
        assert state(db_session).state is S.ARCHIVED, [(a.id, a.kind, a.state, a.log[-300:])
                                                       for a in state(db_session).actions[-2:]]
        deployments.cleanup_deployment(db_session, repo, "web-stage", services_ctx, **who)
        work()
        assert state(db_session).state is S.REMOVED
        assert "web-stage" not in swarm.output("stack", "ls", "--format", "{{.Name}}").split()
        assert swarm.output("volume", "ls", "-q", "--filter", "label=com.docker.stack.namespace=web-stage") == ""
    finally:
        swarm.run("stack", "rm", "web-stage", check=False)
