"""`sami env` against a real `sami serve` (the embedded default): a two-component environment of
probe services deployed, snapshotted, changed, diffed, deployed back from its snapshot, cloned, and
taken down, with the exit status of each."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.client.conftest import Server
from tests.pipeline.environment_repo import Service, write_environment_repo
from tests.support.sami_server import SamiServer, sami, sami_env
from tests.support.servers import free_port


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("env-cli")
    repo = write_environment_repo(tmp / "repo", tmp / "record", {"db": Service(third_party=True), "web": Service()},
                                  environments=("demo",))
    port = free_port()
    env = sami_env(SAMI_INSTANCE_DIR=str(tmp / "instance"), SAMI_DEPLOYMENTS_REPO=str(repo),
                   SAMI_BASE_DOMAIN=f"127.0.0.1:{port}", SAMI_PUBLIC_URL=f"http://127.0.0.1:{port}",
                   SAMI_LOG_LEVEL="warning")
    sami("db", "upgrade", env=env)
    admin = sami("token", "create", "env-admin", "--admin", env=env).stdout.strip()
    reader = sami("token", "create", "env-reader", "--action", "read", env=env).stdout.strip()
    (tmp / "home").mkdir()
    with SamiServer(env, tmp / "serve.log", port=port) as running:
        yield Server(running.url, admin, reader, env, tmp / "home")


def ok(result, code=0):
    assert result.returncode == code, (result.stdout, result.stderr)
    return result


def test_a_whole_environment_from_the_command_line(server):
    deployed = ok(server.run("env", "deploy", "demo", "--version", "db=16", "--version", "web=v1", "--wait"))
    assert "deploy run" in deployed.stdout and "succeeded" in deployed.stdout
    # While it waits, each component's change is said as it comes: db before web, which waits for it.
    progress = [line for line in deployed.stdout.splitlines() if line.startswith(("db-demo: ", "web-demo: "))]
    assert any(line.startswith("db-demo: succeeded (action ") for line in progress), deployed.stdout
    assert progress[-1].startswith("web-demo: succeeded (action "), deployed.stdout
    assert progress.index(next(line for line in progress if line.startswith("db-demo: succeeded"))) < len(progress) - 1
    status = json.loads(ok(server.run("env", "status", "demo", "--json")).stdout)
    assert [(c["deployment"], c["state"], c["tag"]) for c in status["components"]] == [
        ("db-demo", "Running", "16"), ("web-demo", "Running", "v1")]
    table = ok(server.run("env", "status", "demo")).stdout
    assert "WAVE" in table and "web-demo" in table and "last run: deploy" in table
    # Waves count from 1, as on the page.
    assert [line.split()[0] for line in table.splitlines() if "-demo" in line] == ["1", "1"], table

    ok(server.run("env", "snapshot", "demo", "--name", "good"))
    assert "good" in ok(server.run("env", "snapshot", "demo", "--list")).stdout
    exported = yaml.safe_load(ok(server.run("env", "snapshot", "--export", "good")).stdout)
    assert {c["service"]: c["tag"] for c in exported["snapshot"]["components"]} == {"db": "16", "web": "v1"}

    ok(server.run("env", "deploy", "demo", "--version", "web=v2", "--wait"))
    differs = ok(server.run("env", "diff", "snapshot:good", "demo"), code=1)
    assert "web" in differs.stdout and "v1" in differs.stdout and "v2" in differs.stdout
    ok(server.run("env", "deploy", "demo", "--from-snapshot", "good", "--wait"))
    assert "alike" in ok(server.run("env", "diff", "demo", "snapshot:good")).stdout
    # Deploying a snapshot rolled the environment back: every component is pinned, and a deploy is refused.
    assert ok(server.run("env", "status", "demo")).stdout.count("PINNED Running") == 2
    refused = server.run("env", "deploy", "demo", "--version", "web=v3")
    assert refused.returncode == 2 and "sami env unpin demo, or sami unpin db-demo && sami unpin web-demo" \
        in refused.stderr, refused.stderr
    assert ok(server.run("env", "unpin", "demo")).stdout.startswith("unpinned db-demo, web-demo: ")
    assert "PINNED" not in ok(server.run("env", "status", "demo")).stdout
    assert server.run("env", "unpin", "demo").returncode == 2  # none is pinned

    cloned = ok(server.run("env", "clone", "demo", "demo-2", "--wait"))
    assert "db: empty (provisioned fresh, no data copied)" in cloned.stdout and "succeeded" in cloned.stdout
    assert "web: application" in cloned.stdout and "DATA" in cloned.stdout
    clone_status = json.loads(ok(server.run("env", "status", "demo-2", "--json")).stdout)
    assert {c["service"]: c["data"] for c in clone_status["components"]} == {"db": "empty", "web": None}
    assert "DATA" in ok(server.run("env", "status", "demo-2")).stdout
    assert "DATA" not in ok(server.run("env", "status", "demo")).stdout, "an ordinary environment has no data column"
    assert "alike" in ok(server.run("env", "diff", "demo", "demo-2")).stdout
    for operation in ("archive", "restore", "archive"):
        ok(server.run("env", operation, "demo-2", "--wait"))
    # A cleanup cannot be undone: without a terminal to type the name on, it needs --yes.
    unconfirmed = server.run("env", "cleanup", "demo-2", "--wait")
    assert unconfirmed.returncode == 2 and "give --yes" in unconfirmed.stderr
    ok(server.run("env", "cleanup", "demo-2", "--yes", "--wait"))
    gone = json.loads(ok(server.run("env", "status", "demo-2", "--json")).stdout)
    assert {c["state"] for c in gone["components"]} == {None}


def test_refusals_have_their_exit_codes(server):
    assert server.run("env", "status", "nowhere").returncode == 4
    refused = server.run("env", "deploy", "demo", "--version", "web=v3", token="reader")
    assert refused.returncode == 3 and "may not deploy" in refused.stderr
    assert server.run("env", "deploy", "demo", "--version", "web", "--wait").returncode == 2
    assert server.run("env", "diff", "snapshot:a", "snapshot:b").returncode == 2
    # A snapshot's name given as a side of a diff: the answer says how to name it.
    ok(server.run("env", "snapshot", "demo", "--name", "named-like-this"))
    bare = server.run("env", "diff", "named-like-this", "demo")
    assert bare.returncode == 4 and "give snapshot:named-like-this" in bare.stderr, bare.stderr
