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


TCP_MIGRATE_REQ = Path("/proc/sys/net/ipv4/tcp_migrate_req")


@pytest.fixture
def queued_connections_migrate():
    """What a node needs for a start-first update to drop no request: when the old task's listener closes,
    the connections the kernel has queued for it but it has not accepted yet go to the new task's listener
    of the same SO_REUSEPORT group (Linux 5.14+) instead of being reset. The tests' Swarm runs in this
    machine's network namespace: set for the test, put back after."""
    before = TCP_MIGRATE_REQ.read_text()
    TCP_MIGRATE_REQ.write_text("1\n")
    try:
        yield
    finally:
        TCP_MIGRATE_REQ.write_text(before)
