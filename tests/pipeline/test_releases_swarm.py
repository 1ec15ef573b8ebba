"""Blue-green releases of a two-component environment on a real single-node Swarm.

Each colour of production runs its own api and web (busybox httpd on the node's network, on the ports
``blue_green.colours`` gives each colour). The stable entry is made by the swarm set's ``switch``: the
first switch starts a router (haproxy from Debian's packages) named after the entry with the blue
colour live; the next one points it at green through haproxy's runtime API while a loop of requests
reads the entry: no request fails, every answer before the switch is blue's and every one after it is
green's. The rollback does the same the other way, and once keep_previous has passed the colour rolled
back from is archived while the entry keeps serving the live one.
"""

from __future__ import annotations

import http.client
import socket
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from bot.core.models import Deployment, Release
from bot.core.states import DeploymentState
from bot.services import deployments, releases
from tests.control_scripts.helpers import AFTER_CHANGE, LOOP_REQUESTS, RequestLoop
from tests.pipeline.test_environment_seed_swarm import Folder
from tests.support import images
from tests.support.docker import DockerSwarm
from workers.scheduler import Scheduler, TickReport

pytestmark = [pytest.mark.swarm, pytest.mark.slow]
S = DeploymentState
WHO = {"requested_by": "token:release-manager", "origin": "cli"}
KEEP_PREVIOUS = 60
STACK = """\
version: "3.8"
services:
  app:
    image: local/{service}:latest
    stop_grace_period: 5s
    command:
      - sh
      - -c
      - |
        mkdir -p /www
        echo "{service} $$TAG" > /www/index.html
        exec httpd -f -p "127.0.0.1:$$PORT" -h /www
    environment:
      PORT: "${{PORT}}"
      TAG: "${{TAG}}"
    networks: [hostnet]
    deploy:
      replicas: 1
networks:
  hostnet: {{external: true, name: host}}
"""


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def write_repo(root: Path, ports: dict[str, int]) -> Path:
    for service in ("api", "web"):
        folder = root / "services" / service / "swarm" / "production"
        folder.mkdir(parents=True)
        (folder / "stack.yml").write_text(STACK.format(service=service))
        deployment = {"port": 1}  # every colour has its own (below)
        if service == "web":
            deployment.update({"entry-port": ports["entry"], "entry-bind": "127.0.0.1",
                               "router-image": "local/router:1", "switch-timeout": 60})
        (folder / "sami.yaml").write_text(yaml.safe_dump({
            "version": "v1beta", "service_name": service, "type": "swarm", "files": ["stack.yml"],
            "oob": {"update-image": {"file": "stack.yml", "path": "services.app.image"}}, "image": f"local/{service}",
            "url": "http://{name}.example.test", "timeout": "3m", "status_timeout": "60s",
            **({"depends_on": ["api"]} if service == "web" else {}),
            "overrides": {"deployment": deployment},
        }, sort_keys=False))
    (root / "environments").mkdir()
    (root / "environments" / "production.yaml").write_text(yaml.safe_dump({
        "version": "v1beta", "components": ["api", "web"],
        "blue_green": {"entry": "web", "keep_previous": f"{KEEP_PREVIOUS}s",
                       "colours": {colour: {service: {"port": ports[f"{service}-{colour}"]}
                                            for service in ("api", "web")} for colour in ("blue", "green")}},
    }, sort_keys=False))
    return root


@pytest.fixture
def swarm(swarm_session: DockerSwarm, monkeypatch) -> DockerSwarm:
    reason = images.unavailable_reason()
    if reason:
        pytest.skip(reason)
    for key, value in swarm_session.env().items():
        if key.startswith("DOCKER"):
            monkeypatch.setenv(key, value)
    if swarm_session.run("image", "inspect", "local/router:1", check=False).returncode != 0:
        images.router_image(swarm_session, "local/router:1")
    for service in ("api", "web"):
        for tag in ("v1", "v2"):
            swarm_session.retag(f"local/{service}:{tag}")
    return swarm_session


@pytest.fixture
def ports() -> dict[str, int]:
    names = ["entry", "api-blue", "web-blue", "api-green", "web-green"]
    return dict(zip(names, free_ports(len(names)), strict=True))


@pytest.fixture
def release_repo(swarm, tmp_path, worker_ctx, ports) -> Folder:
    worker_ctx.manifests = Folder(write_repo(tmp_path / "swarm-release", ports))
    return worker_ctx.manifests


def get(port: int) -> str:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/")
        answer = connection.getresponse()
        return answer.read().decode().strip() if answer.status == 200 else f"HTTP {answer.status}"
    finally:
        connection.close()


def release_row(db_session, release_id: int) -> Release:
    db_session.expire_all()
    return db_session.get(Release, release_id)


def deploy_idle(db_session, repo, services_ctx, work, tag: str) -> Release:
    release = releases.prepare(db_session, repo, "production", services_ctx,
                               versions={"api": tag, "web": tag}, **WHO)
    work()
    release = release_row(db_session, release.id)
    assert release.state == "awaiting", release.message
    return release


def assert_switched(loop: RequestLoop, old: str, new: str) -> None:
    answers = loop.answers
    assert len(answers) >= LOOP_REQUESTS
    assert loop.failures() == [], f"{len(loop.failures())} of {len(answers)} requests failed: {loop.failures()[:3]}"
    assert set(answers) == {old, new}, set(answers)
    first_new = answers.index(new)
    assert answers[:first_new] == [old] * first_new, "every answer before the switch comes from the old colour"
    assert answers[first_new:] == [new] * (len(answers) - first_new), "no answer of the old colour after the new one"
    assert loop.started_change_at <= first_new <= loop.finished_change_at
    assert len(answers) - loop.finished_change_at >= AFTER_CHANGE


@pytest.mark.timeout(1500)  # the router's image is built from Debian's packages once per machine
def test_a_swarm_environment_is_released_blue_green_through_a_router_with_no_failed_request(
        swarm, release_repo, db_session, services_ctx, worker_ctx, work, ports):
    repo = release_repo.current()
    entry = "web-production"
    stacks = [entry] + [f"{s}-production-{c}" for s in ("api", "web") for c in ("blue", "green")]
    try:
        first = deploy_idle(db_session, repo, services_ctx, work, "v1")
        assert first.to_colour == "blue"
        # Each colour's components run with the deployment config its colour gives them.
        blue_web = db_session.scalars(select(Deployment).where(Deployment.name == "web-production-blue")).one()
        config = deployments.deployed_action(db_session, blue_web.id).config
        assert config["deployment_overrides"]["port"] == str(ports["web-blue"])
        assert get(ports["web-blue"]) == "web v1" and get(ports["api-blue"]) == "api v1"

        releases.switch(db_session, repo, "production", services_ctx, **WHO)
        work()
        live = release_row(db_session, first.id)
        assert live.state == "live", live.message
        assert live.message == f"{entry} -> blue (127.0.0.1:{ports['web-blue']})"
        # The first switch started the entry's router (haproxy on the node's network) with blue live.
        image = swarm.output("service", "inspect", f"{entry}_router", "--format",
                             "{{.Spec.TaskTemplate.ContainerSpec.Image}}").strip()
        assert image.startswith("local/router:1")
        assert get(ports["entry"]) == "web v1"

        second = deploy_idle(db_session, repo, services_ctx, work, "v2")
        assert (second.from_colour, second.to_colour) == ("blue", "green")
        assert get(ports["web-green"]) == "web v2" and get(ports["api-green"]) == "api v2"
        assert get(ports["entry"]) == "web v1", "QA's colour is not live before the switch"

        def switch_now():
            releases.switch(db_session, repo, "production", services_ctx, **WHO)
            work()

        with RequestLoop(ports["entry"]) as loop:
            loop.change(switch_now)
        assert_switched(loop, "web v1", "web v2")
        assert release_row(db_session, second.id).state == "live"
        assert release_row(db_session, first.id).state == "replaced"

        def roll_back():
            rolled_back.append(releases.rollback(db_session, repo, "production", services_ctx, **WHO))
            work()

        rolled_back: list[Release] = []
        with RequestLoop(ports["entry"]) as loop:
            loop.change(roll_back)
        assert_switched(loop, "web v2", "web v1")
        rolled = release_row(db_session, rolled_back[0].id)
        assert (rolled.kind, rolled.state, rolled.from_colour, rolled.to_colour) == ("rollback", "live", "green",
                                                                                       "blue")

        # keep_previous after the rollback, green (rolled back from) is archived; the entry serves blue.
        step = Scheduler(worker_ctx).steps["releases"]
        report = TickReport()
        step(report, rolled.switched_at + timedelta(seconds=KEEP_PREVIOUS + 1))
        assert report.releases_archived == [rolled.id]
        work()
        db_session.expire_all()
        states = {d.name: d.state for d in db_session.scalars(select(Deployment).where(
            Deployment.environment.in_(["production-blue", "production-green"])))}
        assert states == {"api-production-blue": S.RUNNING, "web-production-blue": S.RUNNING,
                          "api-production-green": S.ARCHIVED, "web-production-green": S.ARCHIVED}
        replicas = swarm.output("service", "inspect", "web-production-green_app",
                                "--format", "{{.Spec.Mode.Replicated.Replicas}}").strip()
        assert replicas == "0"
        assert get(ports["entry"]) == "web v1"
    finally:
        for stack in stacks:
            swarm.run("stack", "rm", stack, check=False)
