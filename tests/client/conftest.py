"""A real `sami serve` (the embedded default) for the client commands, and a way to run them.

The deployments repo is a copy of examples/deployments (the docs static site deploys for real)
plus the probe service, whose control scripts fail or take their time as a request's
deployment overrides say, and one broken manifest for `sami services` to report.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.pipeline.probe_scripts import write_probe_repo
from tests.support.sami_server import ROOT, SamiServer, sami, sami_env
from tests.support.servers import free_port

BROKEN_MANIFEST = "services/broken/static_file/stage/sami.yaml"
LONG_LINK = "dashboard of the whole stack"


@dataclass
class Server:
    url: str
    admin: str  # an admin token
    reader: str  # a token that may only read the docs service
    env: dict[str, str]  # the server's environment (for `sami token create`)
    home: Path  # a folder for client config files

    def client_env(self, token: str | None = None, url: str | None = None, **extra: str) -> dict[str, str]:
        """An environment for the client: no SAMI_* of the server's, its own config folder."""
        env = sami_env(**{"XDG_CONFIG_HOME": str(self.home / "config"), **extra})
        env["SAMI_URL"] = url or self.url
        if token is not None:
            env["SAMI_TOKEN"] = token
        return env

    def run(self, *args: str, token: str | None = "admin", url: str | None = None, timeout: float = 120,  # noqa: S107
            stdin: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run `sami ARGS` as a client; never raises on its exit status."""
        token = {"admin": self.admin, "reader": self.reader}.get(token, token) if token else None
        return subprocess.run([sys.executable, "-m", "bot.cli", *args], env=env or self.client_env(token, url),
                              capture_output=True, text=True, timeout=timeout, input=stdin, cwd=ROOT)

    def api(self, path: str) -> dict:
        request = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {self.admin}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())


def deployments_repo(root: Path) -> Path:
    shutil.copytree(ROOT / "examples" / "deployments", root)
    write_probe_repo(root, root.parent / "probe-record", timeout="60s", status_timeout="10s")
    # a third link, with a name longer than `sami info`'s labels
    info = root / "scripts" / "probe" / "info"
    links = 'echo "logs,https://logs.example.test/$name"'
    assert links in info.read_text()
    info.write_text(info.read_text().replace(links, f'{links}; echo "{LONG_LINK},https://grafana.example.test/d/$name"'))
    broken = root / BROKEN_MANIFEST
    broken.parent.mkdir(parents=True)
    broken.write_text("version: v1beta\nservice_name: broken\ntype: static_file\nurl: 42\n")
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("client")
    port = free_port()
    env = sami_env(SAMI_INSTANCE_DIR=str(tmp / "instance"), SAMI_DEPLOYMENTS_REPO=str(deployments_repo(tmp / "repo")),
                   SAMI_BASE_DOMAIN=f"127.0.0.1:{port}", SAMI_PUBLIC_URL=f"http://127.0.0.1:{port}",
                   SAMI_LOG_LEVEL="warning")
    sami("db", "upgrade", env=env)
    admin = sami("token", "create", "ci-admin", "--admin", env=env).stdout.strip()
    reader = sami("token", "create", "docs-reader", "--action", "read", "--service", "docs", env=env).stdout.strip()
    (tmp / "home").mkdir()
    with SamiServer(env, tmp / "serve.log", port=port) as running:
        yield Server(running.url, admin, reader, env, tmp / "home")
