"""A private, real Docker daemon in swarm mode for tests.

`start_swarm()` starts dockerd on its own socket, data root, exec root and pidfile inside a
temporary folder (no iptables, no default bridge, vfs storage, so it coexists with anything
else on the machine), waits for it, runs `docker swarm init`, and builds `local/busybox:1`
from the host's static busybox with `docker import` (no registry is needed). `stop_swarm()`
removes services, stops the daemon and its containerd by pid, unmounts and deletes the
folder.

Pytest use: `from tests.support.docker import swarm_session` in a conftest or test module
makes the session-scoped `swarm_session` fixture available; it yields a `DockerSwarm`.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

DOCKER_CLIENT = "/usr/bin/docker"
DOCKERD_CANDIDATES = ("/usr/sbin/dockerd", "/usr/bin/dockerd")
BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")
BASE_IMAGE = "local/busybox:1"


def find_dockerd() -> str | None:
    for candidate in DOCKERD_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def find_busybox() -> str | None:
    for candidate in BUSYBOX_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def unavailable_reason() -> str | None:
    """Why a private swarm cannot start here, or None when it can."""
    if os.geteuid() != 0:
        return "a private dockerd needs root"
    if find_dockerd() is None:
        return "dockerd is not installed (apt-get install docker.io)"
    if not os.access(DOCKER_CLIENT, os.X_OK):
        return f"{DOCKER_CLIENT} is not installed (apt-get install docker.io)"
    if find_busybox() is None:
        return "busybox is not installed (apt-get install busybox-static)"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _free_port_in(low: int, high: int, kind: int) -> int:
    """A free port in [low, high] (the swarm data path port must be below 49152)."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randint(low, high)
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {low}-{high}")


@dataclass
class DockerSwarm:
    """A running private dockerd in swarm mode."""

    root: Path
    host: str
    process: subprocess.Popen
    docker: str = DOCKER_CLIENT
    base_image: str = BASE_IMAGE
    log_path: Path = field(default_factory=Path)

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for docker clients (and control scripts) talking to this daemon."""
        env = dict(os.environ)
        env["DOCKER_HOST"] = self.host
        env["DOCKER"] = self.docker
        env["DOCKER_CONFIG"] = str(self.root / "client-config")
        if extra:
            env.update(extra)
        return env

    def run(
        self, *args: str, check: bool = True, timeout: float = 120, input: bytes | None = None
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            [self.docker, *args],
            env=self.env(),
            capture_output=True,
            check=check,
            timeout=timeout,
            input=input,
        )

    def output(self, *args: str) -> str:
        return self.run(*args).stdout.decode()

    def retag(self, new: str, source: str | None = None) -> str:
        """Tag the base image (or `source`) as `new`, simulating a newly built version."""
        self.run("tag", source or self.base_image, new)
        return new


def _wait_for_daemon(swarm: DockerSwarm, deadline: float) -> None:
    last = ""
    while time.monotonic() < deadline:
        if swarm.process.poll() is not None:
            raise RuntimeError(f"dockerd exited with {swarm.process.returncode}:\n{_tail(swarm.log_path)}")
        result = swarm.run("info", "--format", "{{.ServerVersion}}", check=False, timeout=10)
        if result.returncode == 0:
            return
        last = result.stderr.decode(errors="replace")
        time.sleep(0.2)
    raise RuntimeError(f"dockerd did not answer in time: {last}\n{_tail(swarm.log_path)}")


def _tail(path: Path, lines: int = 30) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def build_busybox_image(swarm: DockerSwarm, tag: str = BASE_IMAGE) -> None:
    """Import a root filesystem made of the host's static busybox and its applets."""
    busybox = find_busybox()
    assert busybox is not None
    rootfs = swarm.root / "rootfs"
    for sub in ("bin", "tmp", "www", "data", "etc"):
        (rootfs / sub).mkdir(parents=True, exist_ok=True)
    (rootfs / "tmp").chmod(0o1777)
    shutil.copy2(busybox, rootfs / "bin" / "busybox")
    applets = subprocess.run([busybox, "--list"], capture_output=True, check=True, text=True).stdout.split()
    for applet in applets:
        link = rootfs / "bin" / applet
        if not link.exists():
            link.symlink_to("busybox")
    (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/:/bin/sh\n")
    (rootfs / "etc" / "group").write_text("root:x:0:\n")
    tar = subprocess.run(["tar", "-C", str(rootfs), "-c", "."], capture_output=True, check=True)
    swarm.run("import", "--change", 'CMD ["sh"]', "-", tag, input=tar.stdout)
    shutil.rmtree(rootfs)


def start_swarm(base_dir: str | os.PathLike | None = None, timeout: float = 60) -> DockerSwarm:
    """Start a private dockerd, init a single-node swarm and build the base image."""
    reason = unavailable_reason()
    if reason:
        raise RuntimeError(reason)
    # Unix socket paths are limited to ~108 bytes: keep the folder short.
    root = Path(tempfile.mkdtemp(prefix="sami-docker-", dir=base_dir or "/tmp"))
    (root / "client-config").mkdir()
    sock = root / "docker.sock"
    log_path = root / "dockerd.log"
    dockerd = find_dockerd()
    assert dockerd is not None
    cmd = [
        dockerd,
        "--host",
        f"unix://{sock}",
        "--data-root",
        str(root / "data"),
        "--exec-root",
        str(root / "exec"),
        "--pidfile",
        str(root / "dockerd.pid"),
        "--iptables=false",
        "--ip-masq=false",
        "--bridge=none",
        "--storage-driver=vfs",
    ]
    log = open(log_path, "wb")  # noqa: SIM115 - closed in stop_swarm
    process = subprocess.Popen(
        cmd,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()
    swarm = DockerSwarm(root=root, host=f"unix://{sock}", process=process, log_path=log_path)
    try:
        _wait_for_daemon(swarm, time.monotonic() + timeout)
        # Own ports, so it can run beside another swarm on the same machine.
        listen = f"127.0.0.1:{_free_port_in(20000, 32000, socket.SOCK_STREAM)}"
        data_port = _free_port_in(20000, 32000, socket.SOCK_DGRAM)
        init = swarm.run(
            "swarm",
            "init",
            "--advertise-addr",
            listen,
            "--listen-addr",
            listen,
            "--data-path-port",
            str(data_port),
            check=False,
        )
        if init.returncode != 0:
            raise RuntimeError(f"docker swarm init failed: {init.stderr.decode(errors='replace')}")
        build_busybox_image(swarm)
    except BaseException:
        stop_swarm(swarm)
        raise
    return swarm


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _processes_using(root: Path) -> list[int]:
    """Pids whose command line names our private folder (containerd and its shims)."""
    marker = str(root).encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if marker in Path(f"/proc/{entry}/cmdline").read_bytes():
                pids.append(int(entry))
    return pids


def _kill(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def stop_swarm(swarm: DockerSwarm) -> None:
    """Stop the daemon and everything it started, by pid; remove its folder."""
    if swarm.process.poll() is None:
        with contextlib.suppress(Exception):
            services = swarm.output("service", "ls", "-q").split()
            if services:
                swarm.run("service", "rm", *services, check=False, timeout=30)
        children = _descendants(swarm.process.pid)
        swarm.process.terminate()
        try:
            swarm.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            swarm.process.kill()
            swarm.process.wait(timeout=10)
        _kill(children, signal.SIGTERM)
    leftovers = _processes_using(swarm.root)
    _kill(leftovers, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while leftovers and time.monotonic() < deadline:
        leftovers = [pid for pid in leftovers if Path(f"/proc/{pid}").exists()]
        time.sleep(0.1)
    _kill(leftovers, signal.SIGKILL)
    _unmount_under(swarm.root)
    shutil.rmtree(swarm.root, ignore_errors=True)


def _unmount_under(root: Path) -> None:
    prefix = str(root) + "/"
    with contextlib.suppress(OSError):
        mounts = [
            line.split()[1].encode().decode("unicode_escape")
            for line in Path("/proc/self/mounts").read_text().splitlines()
        ]
        for mount in sorted((m for m in mounts if m.startswith(prefix)), reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True, check=False)


@pytest.fixture(scope="session")
def swarm_session():
    """A real single-node Docker Swarm for the whole test session (skipped only when the
    machine cannot run one: not root, or docker.io / busybox-static not installed)."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"Docker Swarm tests need a private dockerd: {reason}")
    swarm = start_swarm()
    try:
        yield swarm
    finally:
        stop_swarm(swarm)
