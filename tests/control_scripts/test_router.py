"""The built-in router set (the entry of blue-green releases) against a real single-node Docker Swarm.

Two backends (busybox httpd answering "blue" and "green") run on the host's network; the router
(haproxy from Debian's packages, scripts/images/router) is created pointing at blue. A bounded loop
of HTTP requests over loopback goes through the router's port while `switch` runs: no request
fails, and the answers are all of the old colour, then all of the new one.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.control_scripts.helpers import (
    AFTER_CHANGE,
    LOOP_REQUESTS,
    RequestLoop,
    contract_args,
    run_script,
    wait_for,
    wait_for_one_container,
)
from tests.support.docker import DockerSwarm, free_port

pytestmark = pytest.mark.swarm

def _assert_switched(loop: RequestLoop, old: str, new: str) -> None:
    answers = loop.answers
    assert len(answers) >= LOOP_REQUESTS
    assert loop.failures() == [], f"{len(loop.failures())} of {len(answers)} requests failed"
    assert set(answers) == {old, new}, set(answers)
    first_new = answers.index(new)
    assert answers[:first_new] == [old] * first_new, "every answer before the switch comes from the old colour"
    assert answers[first_new:] == [new] * (len(answers) - first_new), "no answer of the old colour after the new one"
    assert loop.started_change_at is not None and loop.finished_change_at is not None
    assert first_new >= loop.started_change_at, "the new colour answered before the switch began"
    assert first_new <= loop.finished_change_at, "the new colour answers once the switch returns"
    assert len(answers) - loop.finished_change_at >= AFTER_CHANGE


def _report(stdout: str) -> list[dict]:
    lines = [line for line in stdout.splitlines() if line.startswith('{"running"')]
    assert lines, stdout
    return json.loads(lines[-1])["running"]


def _backend(swarm: DockerSwarm, name: str, colour: str, port: int) -> None:
    script = f"mkdir -p /www && echo {colour} > /www/index.html && exec httpd -f -p 127.0.0.1:{port} -h /www"
    swarm.run("service", "create", "--quiet", "--name", name, "--network", "host", "--stop-grace-period", "5s",
              swarm.base_image, "sh", "-c", script, timeout=180)


@pytest.mark.timeout(1200)  # the first test builds the router's root filesystem (once per machine)
def test_switch_blue_green_and_back_drops_no_request(swarm_session: DockerSwarm, router_image: str,
                                                     tmp_path: Path, queued_connections_migrate) -> None:
    swarm = swarm_session
    name = "shop-entry"
    port, blue_port, green_port = free_port(), free_port(), free_port()
    blue, green = f"127.0.0.1:{blue_port}", f"127.0.0.1:{green_port}"
    config = {"port": str(port), "bind": "127.0.0.1", "colour": "blue", "backend": blue}
    env = swarm.env({"SAMI_IMAGE": f"{router_image}:1"})

    def run(op: str, *extra: str, tag: str = "1", **more: str) -> subprocess.CompletedProcess:
        args = contract_args(name, tag=tag, manifest_dir=tmp_path, service="entry",
                             deployment_config={**config, **more})
        return run_script("router", op, [*args, *extra], env=dict(env, SAMI_IMAGE=f"{router_image}:{tag}"))

    def switch(colour: str, backend: str) -> subprocess.CompletedProcess:
        return run("switch", "--colour", colour, "--backend", backend)

    try:
        _backend(swarm, "shop-blue", "blue", blue_port)
        _backend(swarm, "shop-green", "green", green_port)
        assert run("config_check").returncode == 0
        missing = run("config_check", backend="")
        assert missing.returncode == 64 and "backend is missing" in missing.stdout
        created = run("create")
        assert created.returncode == 0, created.stderr
        healthy = wait_for(lambda: run("check"), timeout=180)
        assert healthy.returncode == 0, healthy.stderr
        assert _report(healthy.stdout) == [{"name": f"{name}_router", "image": f"{router_image}:1", "replicas": 1,
                                            "running": 1, "colour": "blue", "backend": blue}]
        assert run("info").stdout == f"entry,http://127.0.0.1:{port}/\n"

        # Refused before anything is asked: exit 64, nothing changes.
        assert switch("red", green).returncode == 64
        assert switch("green", "127.0.0.1;reboot:80").returncode == 64
        assert run_script("router", "switch", contract_args("Bad_Name"), env=env).returncode == 64
        # A backend that does not answer is refused and the live one keeps serving.
        dead = switch("green", f"127.0.0.1:{free_port()}")
        assert dead.returncode == 1
        assert "does not answer from the router" in dead.stderr and f"blue {blue} stays live" in dead.stderr

        with RequestLoop(port) as loop:
            to_green = loop.change(lambda: switch("green", green))
        assert to_green.returncode == 0, to_green.stderr
        assert to_green.stdout == f"live: green {green} (was blue {blue})\n"
        _assert_switched(loop, "blue", "green")
        checked = run("check")
        assert checked.returncode == 0, checked.stderr
        assert _report(checked.stdout)[0]["colour"] == "green" and _report(checked.stdout)[0]["backend"] == green

        # Rollback: the same loop, the same result.
        with RequestLoop(port) as loop:
            to_blue = loop.change(lambda: switch("blue", blue))
        assert to_blue.returncode == 0, to_blue.stderr
        _assert_switched(loop, "green", "blue")

        # An update of the router itself starts the new task first and stops the old one softly; the new
        # one starts on the recorded live colour (blue again, here after a switch to green).
        assert switch("green", green).returncode == 0
        def update() -> subprocess.CompletedProcess:
            assert run("update", tag="2").returncode == 0
            converged = wait_for(lambda: run("check", tag="2"), timeout=180)
            assert wait_for_one_container(swarm.output, f"{name}_router"), "the old router is still there"
            return converged

        with RequestLoop(port) as loop:
            updated = loop.change(update)
        assert updated.returncode == 0, updated.stderr
        assert loop.failures() == [], f"{len(loop.failures())} of {len(loop.answers)} requests failed"
        assert set(loop.answers) == {"green"}
        assert _report(updated.stdout)[0]["image"] == f"{router_image}:2"
        assert _report(updated.stdout)[0]["colour"] == "green"
    finally:
        run("cleanup")
        swarm.run("service", "rm", "shop-blue", "shop-green", check=False)
    assert swarm.output("service", "ls", "-q", "--filter", f"label=com.docker.stack.namespace={name}") == ""


def _wait_for_writer(fifo: Path, timeout: float = 60) -> bytes:
    """Read one line from a FIFO once something writes to it (bounded: fails after `timeout`)."""
    import os
    import select
    import time

    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        deadline = time.monotonic() + timeout
        data = b""
        while not data.endswith(b"\n") and time.monotonic() < deadline:
            readable, _, _ = select.select([fd], [], [], 0.5)
            if readable:
                chunk = os.read(fd, 64)
                if not chunk:  # no writer yet (or it closed): wait for one
                    time.sleep(0.05)
                data += chunk
        return data
    finally:
        os.close(fd)


def _write_to_reader(fifo: Path, data: bytes, timeout: float = 60) -> bool:
    """Write to a FIFO once something has it open for reading (bounded); True when written."""
    import os
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: no reader yet
            time.sleep(0.05)
            continue
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        return True
    return False


@pytest.mark.timeout(600)
def test_a_request_in_flight_finishes_on_the_former_backend(swarm_session: DockerSwarm, router_image: str,
                                                            tmp_path: Path) -> None:
    """A request that blue is answering when the router switches to green is answered by blue, whole."""
    import http.client
    import os
    import threading

    swarm = swarm_session
    name = "slow-entry"
    port, blue_port, green_port = free_port(), free_port(), free_port()
    gate = tmp_path / "gate"
    gate.mkdir()
    os.mkfifo(gate / "started")
    os.mkfifo(gate / "release")
    # /cgi-bin/slow says it started, then answers only once the test releases it.
    cgi = ("mkdir -p /www/cgi-bin && echo blue > /www/index.html && "
           "printf '#!/bin/sh\\necho started > /gate/started\\nread line < /gate/release\\n"
           "printf \"Content-Type: text/plain\\\\r\\\\n\\\\r\\\\nblue, slowly\\\\n\"\\n' > /www/cgi-bin/slow && "
           f"chmod +x /www/cgi-bin/slow && exec httpd -f -p 127.0.0.1:{blue_port} -h /www")
    swarm.run("service", "create", "--quiet", "--name", "slow-blue", "--network", "host",
              "--mount", f"type=bind,src={gate},dst=/gate", swarm.base_image, "sh", "-c", cgi, timeout=180)
    _backend(swarm, "slow-green", "green", green_port)
    config = {"port": str(port), "bind": "127.0.0.1", "colour": "blue", "backend": f"127.0.0.1:{blue_port}"}
    args = contract_args(name, tag="1", manifest_dir=tmp_path, service="entry", deployment_config=config)
    env = swarm.env({"SAMI_IMAGE": f"{router_image}:1"})
    answer: dict[str, object] = {}

    def slow_request() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            connection.request("GET", "/cgi-bin/slow")
            response = connection.getresponse()
            answer.update(status=response.status, body=response.read().decode())
        except (OSError, http.client.HTTPException) as exc:
            answer.update(error=repr(exc))
        finally:
            connection.close()

    try:
        assert run_script("router", "create", args, env=env).returncode == 0
        assert wait_for(lambda: run_script("router", "check", args, env=env), timeout=180).returncode == 0
        in_flight = threading.Thread(target=slow_request, daemon=True)
        in_flight.start()
        assert _wait_for_writer(gate / "started") == b"started\n", "the slow request did not reach blue"
        switched = run_script("router", "switch", [*args, "--colour", "green", "--backend",
                                                   f"127.0.0.1:{green_port}"], env=env)
        assert switched.returncode == 0, switched.stderr
        probe = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            probe.request("GET", "/")
            assert probe.getresponse().read() == b"green\n", "new requests go to green"
        finally:
            probe.close()
        assert _write_to_reader(gate / "release", b"go\n"), "the slow request was no longer waiting"
        in_flight.join(timeout=60)
        assert not in_flight.is_alive()
        assert answer == {"status": 200, "body": "blue, slowly\n"}
    finally:
        run_script("router", "cleanup", args, env=env)
        swarm.run("service", "rm", "slow-blue", "slow-green", check=False)
