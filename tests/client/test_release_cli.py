"""`sami env release`, `rollback` and `releases` against a real `sami serve` (the embedded default) with
the built-in static_file scripts: a release deployed into the idle colour, refused to a token that is not
a release approver, switched by one that is, then rolled back, with the exit status of each."""

from __future__ import annotations

import json
import os

import pytest

from tests.client.conftest import Server
from tests.pipeline.test_releases_static_file import write_release_repo
from tests.support.sami_server import SamiServer, sami, sami_env
from tests.support.servers import free_port


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("release-cli")
    repo = write_release_repo(tmp / "repo")
    (tmp / "sites").mkdir()
    port = free_port()
    env = sami_env(SAMI_INSTANCE_DIR=str(tmp / "instance"), SAMI_DEPLOYMENTS_REPO=str(repo),
                   SAMI_STATIC_ROOT=str(tmp / "sites"), SAMI_BASE_DOMAIN=f"127.0.0.1:{port}",
                   SAMI_PUBLIC_URL=f"http://127.0.0.1:{port}", SAMI_LOG_LEVEL="warning")
    sami("db", "upgrade", env=env)
    manager = sami("token", "create", "release-manager", "--admin", env=env).stdout.strip()
    ci = sami("token", "create", "ci", "--action", "read", "--action", "deploy", env=env).stdout.strip()
    (tmp / "home").mkdir()
    with SamiServer(env, tmp / "serve.log", port=port) as running:
        server = Server(running.url, manager, ci, env, tmp / "home")
        server.sites = tmp / "sites"
        yield server


def ok(result, code=0):
    assert result.returncode == code, (result.stdout, result.stderr)
    return result


def test_a_release_from_the_command_line(server):
    prepared = ok(server.run("env", "release", "production", "--version", "site=v1", "--wait", token="reader"))
    assert "nothing -> blue, awaiting release" in prepared.stdout
    shown = ok(server.run("env", "releases", "production", token="reader")).stdout
    assert "awaiting release: token:release-manager, alice may release it" in shown
    assert "idle: blue (production-blue, v1)" in shown

    refused = server.run("env", "release", "production", "--switch", token="reader")
    assert refused.returncode == 3 and "token:ci may not release 'production'" in refused.stderr
    nothing = server.run("env", "rollback", "production")
    assert nothing.returncode == 2 and "no previous colour" in nothing.stderr
    live = ok(server.run("env", "release", "production", "--switch", "--wait"))
    assert "nothing -> blue, live (by token:release-manager)" in live.stdout
    assert os.readlink(server.sites / "site-production" / "current") == str(
        server.sites / "site-production-blue" / "current")

    ok(server.run("env", "release", "production", "--version", "site=v2", "--wait"))
    ok(server.run("env", "release", "production", "--switch", "--wait"))
    rolled = ok(server.run("env", "rollback", "production", "--wait"))
    assert "rollback" in rolled.stdout and "green -> blue, live" in rolled.stdout
    history = json.loads(ok(server.run("env", "releases", "production", "--json")).stdout)
    assert [(r["kind"], r["from_colour"], r["to_colour"], r["state"]) for r in history["releases"]] == [
        ("rollback", "green", "blue", "live"), ("release", "blue", "green", "replaced"),
        ("release", None, "blue", "replaced")]
    assert history["live"]["colour"] == "blue" and history["previous"]["colour"] == "green"
    # The rollback pinned both colours: the history says by whom and how to unpin, until unpinned.
    shown = ok(server.run("env", "releases", "production", token="reader")).stdout
    assert "pinned by token:release-manager at " in shown
    rollback_id = history["releases"][0]["id"]
    assert f"(rollback {rollback_id} of production from green to blue): colour deploys and pushes are refused " \
           "until sami env unpin production or a release is switched live" in shown, shown
    ok(server.run("env", "unpin", "production"))
    assert "pinned by" not in ok(server.run("env", "releases", "production", token="reader")).stdout
