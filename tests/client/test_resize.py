"""Resizing an internal third-party service through a real `sami serve` (the embedded default) and the
`sami` command: growing goes through, shrinking is refused (409, exit status 2, naming both sizes)
unless forced, and only a forced shrink gives the update script `--force`. The service's control
scripts are a recording set: each call appends its operation, SAMI_SIZE and argv to a file."""

from __future__ import annotations

import contextlib
import json
import stat
from pathlib import Path

import yaml

from tests.client.conftest import Server
from tests.support.sami_server import SamiServer, sami, sami_env
from tests.support.servers import free_port

OPERATIONS = ("create", "update", "archive", "unarchive", "check", "archive_check", "cleanup", "config_check",
              "info")
RECORDING = """#!/bin/sh
# Records the call: its operation, the size it was given, and its arguments.
echo "$(basename "$0") size=$SAMI_SIZE $*" >> "$RECORD_FILE"
case "$(basename "$0")" in info) echo "endpoint,cache.internal:6379" ;; esac
exit 0
"""


def manifest_path(root: Path) -> Path:
    return root / "services" / "cache" / "swarm" / "demo" / "sami.yaml"


def set_size(root: Path, size: int) -> None:
    path = manifest_path(root)
    manifest = yaml.safe_load(path.read_text())
    manifest["size"] = size
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))


class Deployments:
    """A deployments repo of one internal third-party service, and a `sami serve` over it per manifest size:
    a server reads its folder once it is up, so each size gets a server of its own (the same database)."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.root = tmp / "repo"
        self.record = tmp / "calls"
        scripts = self.root / "scripts" / "recording"
        scripts.mkdir(parents=True)
        for operation in OPERATIONS:
            path = scripts / operation
            path.write_text(RECORDING.replace("$RECORD_FILE", str(self.record)))
            path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        manifest_path(self.root).parent.mkdir(parents=True)
        manifest_path(self.root).write_text(yaml.safe_dump({
            "version": "v1beta", "service_name": "cache", "type": "swarm", "kind": "third_party",
            "mode": "internal", "size": 1, "image": "local/redis", "control_scripts": "scripts/recording",
            "status_timeout": "10s",
        }, sort_keys=False))
        self.env = sami_env(SAMI_INSTANCE_DIR=str(tmp / "instance"), SAMI_DEPLOYMENTS_REPO=str(self.root),
                            SAMI_LOG_LEVEL="warning")
        sami("db", "upgrade", env=self.env)
        self.admin = sami("token", "create", "resize-admin", "--admin", env=self.env).stdout.strip()
        (tmp / "home").mkdir()

    @contextlib.contextmanager
    def serving(self, size: int):
        set_size(self.root, size)
        port = free_port()
        env = {**self.env, "SAMI_BASE_DOMAIN": f"127.0.0.1:{port}", "SAMI_PUBLIC_URL": f"http://127.0.0.1:{port}"}
        with SamiServer(env, self.tmp / "serve.log", port=port) as running:
            yield Server(running.url, self.admin, self.admin, env, self.tmp / "home")

    def calls(self, operation: str) -> list[str]:
        lines = self.record.read_text().splitlines() if self.record.exists() else []
        return [line for line in lines if line.split()[0] == operation]


def ok(result, code=0):
    assert result.returncode == code, (result.stdout, result.stderr)
    return result


def test_shrinking_is_refused_unless_forced(tmp_path):
    repo = Deployments(tmp_path)
    with repo.serving(3) as server:
        ok(server.run("request", "cache", "demo", "--tag", "7", "--wait"))
    assert [c.split()[1] for c in repo.calls("create")] == ["size=3"]

    with repo.serving(4) as server:  # growing needs nothing
        ok(server.run("update", "cache-demo", "--wait"))
    (grown,) = repo.calls("update")
    assert grown.startswith("update size=4 ") and "--force" not in grown

    with repo.serving(2) as server:
        # Shrinking is refused before anything runs: 409, exit status 2, both sizes named.
        refused = ok(server.run("update", "cache-demo", "--wait"), code=2)
        assert "resize of cache-demo from 4 to 2 members refused" in refused.stderr
        assert "--force" in refused.stderr
        assert len(repo.calls("update")) == 1, "a refused shrink runs no script"
        assert server.api("/api/v1/deployments/cache-demo")["deployment"]["state"] == "Running"
        # Forced, the update script gets --force.
        ok(server.run("update", "cache-demo", "--force", "--wait"))
        forced = repo.calls("update")[-1]
        assert forced.startswith("update size=2 ") and forced.split()[-1] == "--force"
        # The next update at the same size is an ordinary one again.
        ok(server.run("update", "cache-demo", "--tag", "7b", "--wait"))
        assert "--force" not in repo.calls("update")[-1]

    with repo.serving(1) as server:  # a whole-environment deploy: the component fails, naming both sizes
        before = len(repo.calls("update"))
        failed = json.loads(ok(server.run("env", "deploy", "demo", "--wait", "--json"), code=1).stdout)
        (component,) = failed["components"]
        assert component["status"] == "failed"
        assert "resize of cache-demo from 2 to 1 members refused" in component["message"]
        assert len(repo.calls("update")) == before
        forced = json.loads(ok(server.run("env", "deploy", "demo", "--force", "--wait", "--json")).stdout)
        assert forced["state"] == "succeeded"
        last = repo.calls("update")[-1]
        assert last.startswith("update size=1 ") and last.split()[-1] == "--force"
