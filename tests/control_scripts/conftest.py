"""Fixtures of the control script tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.control_scripts.helpers import RecordingStandIns
from tests.support import images
from tests.support.docker import DockerSwarm


@pytest.fixture
def stand_ins(tmp_path: Path) -> RecordingStandIns:
    return RecordingStandIns(tmp_path, ("docker", "docker-compose", "helm", "kubectl"))


@pytest.fixture(scope="session")
def router_image(swarm_session: DockerSwarm) -> str:
    """haproxy from Debian's packages with the router's entrypoint (scripts/images/router), as
    local/router:1 and local/router:2 (the same image: a new version to update to)."""
    reason = images.unavailable_reason()
    if reason:
        pytest.skip(reason)
    images.router_image(swarm_session, "local/router:1")
    swarm_session.run("tag", "local/router:1", "local/router:2")
    return "local/router"
