"""Helpers for the control script tests: call scripts with the contract's argv, recording
stand-ins for clients that have no real counterpart here, waiting for convergence, and a bounded
loop of HTTP requests that records every answer while a change runs."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "control_scripts"
EXAMPLES = REPO / "examples" / "deployments" / "services"
TYPES = ("swarm", "cron", "compose", "k8s", "static_file")
OPERATIONS = (
    "create",
    "update",
    "archive",
    "unarchive",
    "check",
    "archive_check",
    "cleanup",
    "config_check",
    "info",
    "notifications",
)


def contract_args(
    name: str,
    *,
    tag: str = "",
    manifest_dir: str | os.PathLike = "",
    service: str = "web",
    environment: str = "stage",
    namespace: str = "sami",
    app_config: dict[str, str] | None = None,
    deployment_config: dict[str, str] | None = None,
) -> list[str]:
    """The argv the bot's executor passes (SPEC section 4)."""
    args = [
        "--project-name",
        "sami",
        "--base-domain",
        "example.test",
        "--namespace",
        namespace,
        "--name",
        name,
        "--service",
        service,
        "--environment",
        environment,
        "--tag",
        tag,
        "--manifest-dir",
        str(manifest_dir),
    ]
    for key, value in (app_config or {}).items():
        args += ["--application-config", f"{key}={value}"]
    for key, value in (deployment_config or {}).items():
        args += ["--deployment-config", f"{key}={value}"]
    return args


def run_script(
    kind: str, op: str, args: list[str], env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SCRIPTS / kind / op), *args],
        env=env if env is not None else dict(os.environ),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def wait_for(
    probe: Callable[[], subprocess.CompletedProcess],
    want: int = 0,
    timeout: float = 60,
    interval: float = 0.5,
) -> subprocess.CompletedProcess:
    """Call `probe` until it exits with `want`; return the last result either way."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result.returncode == want or time.monotonic() > deadline:
            return result
        time.sleep(interval)


def wait_for_one_container(docker_output: Callable[..., str], service: str, timeout: float = 120) -> bool:
    """Wait until the Swarm service has one container left (an update's old task gone); True when it has."""
    label = f"label=com.docker.swarm.service.name={service}"
    result = wait_for(lambda: subprocess.CompletedProcess(
        [], 0 if len(docker_output("ps", "-q", "--filter", label).split()) == 1 else 1), timeout=timeout)
    return result.returncode == 0


def prepare_manifest(
    source: Path, dest: Path, image_path: tuple[str, ...] | None = None, image: str | None = None
) -> Path:
    """Copy a manifest folder like the bot does, writing `image` at `image_path` of the
    first YAML file that has it (the oob update-image step)."""
    import yaml

    shutil.copytree(source, dest)
    if image_path and image:
        for candidate in sorted(dest.glob("*.yml")):
            data = yaml.safe_load(candidate.read_text())
            node = data
            for key in image_path[:-1]:
                node = node.get(key, {}) if isinstance(node, dict) else {}
            if isinstance(node, dict) and image_path[-1] in node:
                node[image_path[-1]] = image
                candidate.write_text(yaml.safe_dump(data, sort_keys=False))
                break
    return dest


STAND_IN = """#!{python}
# Recording stand-in for {tool}: appends its argv (and any -f values file it was given) as
# one JSON line to $STANDIN_LOG, then answers from $STANDIN_RESPONSES (JSON: list of
# [argv prefix, stdout, exit code]) or prints nothing and exits 0.
import json, os, sys

argv = sys.argv[1:]
files = {{}}
for flag, value in zip(argv, argv[1:]):
    if flag == "-f" and os.path.isfile(value):
        with open(value) as handle:
            files[value] = handle.read()
record = {{"tool": {tool!r}, "argv": argv, "files": files}}
with open(os.environ["STANDIN_LOG"], "a") as log:
    log.write(json.dumps(record) + "\\n")
path = os.environ.get("STANDIN_RESPONSES")
if path and os.path.exists(path):
    with open(path) as handle:
        for prefix, stdout, code in json.load(handle):
            if argv[: len(prefix)] == prefix:
                sys.stdout.write(stdout)
                sys.exit(code)
"""


class RecordingStandIns:
    """Executables named like real clients that only record how they were called."""

    def __init__(self, root: Path, tools: tuple[str, ...]):
        self.bin = root / "stand-in-bin"
        self.bin.mkdir()
        self.log = root / "calls.jsonl"
        self.responses_path = root / "responses.json"
        self.paths: dict[str, str] = {}
        for tool in tools:
            path = self.bin / tool
            path.write_text(STAND_IN.format(python=sys.executable, tool=tool))
            path.chmod(0o755)
            self.paths[tool] = str(path)

    def respond(self, responses: list[tuple[list[str], str, int]]) -> None:
        self.responses_path.write_text(json.dumps(responses))

    def calls(self, tool: str | None = None) -> list[dict]:
        if not self.log.exists():
            return []
        records = [json.loads(line) for line in self.log.read_text().splitlines()]
        return [r for r in records if tool is None or r["tool"] == tool]

    def reset(self) -> None:
        self.log.unlink(missing_ok=True)

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            STANDIN_LOG=str(self.log),
            STANDIN_RESPONSES=str(self.responses_path),
            DOCKER=self.paths.get("docker", "docker"),
            HELM=self.paths.get("helm", "helm"),
            KUBECTL=self.paths.get("kubectl", "kubectl"),
        )
        if "docker-compose" in self.paths:
            env["COMPOSE"] = self.paths["docker-compose"]
        if extra:
            env.update(extra)
        return env


# Requests of one loop at least, and at least this many after the change it watches has returned.
LOOP_REQUESTS = 2000
AFTER_CHANGE = 300
# The most requests one loop makes, whatever happens (the loop is bounded).
LOOP_LIMIT = 50_000


@dataclass
class RequestLoop:
    """Sequential GETs of http://127.0.0.1:port/ (a new connection each), every answer recorded in order:
    the body, or "failed: <error>". It runs until it has made `LOOP_REQUESTS` requests and `AFTER_CHANGE`
    more after `change_done()` (or `LOOP_LIMIT` in all)."""

    port: int
    answers: list[str] = field(default_factory=list)
    started_change_at: int | None = None
    finished_change_at: int | None = None
    _warm: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _get(self) -> str:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request("GET", "/")
            response = connection.getresponse()
            body = response.read().decode(errors="replace").strip()
            return body if response.status == 200 else f"failed: HTTP {response.status} {body[:80]}"
        except (OSError, http.client.HTTPException) as exc:
            return f"failed: {exc!r}"
        finally:
            connection.close()

    def _run(self) -> None:
        while len(self.answers) < LOOP_LIMIT:
            self.answers.append(self._get())
            if len(self.answers) >= AFTER_CHANGE:
                self._warm.set()
            done = self.finished_change_at
            if done is not None and len(self.answers) >= max(LOOP_REQUESTS, done + AFTER_CHANGE):
                return

    def __enter__(self) -> RequestLoop:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._warm.wait(timeout=120), f"the loop made only {len(self.answers)} requests"
        return self

    def change(self, action: Callable[[], subprocess.CompletedProcess]) -> subprocess.CompletedProcess:
        """Run `action` while the loop runs, marking where in the answers it started and returned."""
        self.started_change_at = len(self.answers)
        try:
            return action()
        finally:
            self.finished_change_at = len(self.answers)

    def __exit__(self, *exc: object) -> None:
        if self.finished_change_at is None:
            self.finished_change_at = len(self.answers)
        assert self._thread is not None
        self._thread.join(timeout=600)
        assert not self._thread.is_alive(), "the request loop did not end"

    def failures(self) -> list[str]:
        return [answer for answer in self.answers if answer.startswith("failed")]
