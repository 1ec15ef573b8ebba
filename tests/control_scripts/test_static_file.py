"""static_file scripts for real in a temporary served folder."""

from __future__ import annotations

import http.server
import os
import tarfile
import threading
from functools import partial
from pathlib import Path

import pytest

from tests.control_scripts.helpers import EXAMPLES, contract_args, run_script

SITE = EXAMPLES / "docs" / "static_file" / "stage"


@pytest.fixture
def static_root(tmp_path: Path) -> Path:
    root = tmp_path / "served"
    root.mkdir()
    return root


def _env(root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAMI_")}
    env["SAMI_STATIC_ROOT"] = str(root)
    env.update(extra)
    return env


def _run(op: str, root: Path, tag: str, manifest: Path = SITE, name: str = "docs-stage", **kw):
    args = contract_args(name, tag=tag, manifest_dir=manifest, service="docs", **kw)
    return run_script("static_file", op, args, env=_env(root))


def test_deploy_switches_atomically_and_keeps_last_three(static_root: Path):
    base = static_root / "docs-stage"
    for tag in ("v1", "v2", "v3", "v4", "v5"):
        result = _run("create" if tag == "v1" else "update", static_root, tag)
        assert result.returncode == 0, result.stderr
        assert os.readlink(base / "current") == f"releases/{tag}"
        assert (base / "current" / "index.html").read_text().startswith("<!doctype html>")
        assert _run("check", static_root, tag).returncode == 0
    assert sorted(p.name for p in (base / "releases").iterdir()) == ["v3", "v4", "v5"]
    assert [p.name for p in base.iterdir() if p.name.startswith(".")] == []
    # asked about an older tag: tag mismatch
    assert _run("check", static_root, "v4").returncode == 3
    # the release folder is readable by a web server running as another user
    assert (base / "releases" / "v5").stat().st_mode & 0o005 == 0o005


def test_redeploying_the_same_tag_replaces_its_release(static_root: Path, tmp_path: Path):
    manifest = tmp_path / "manifest"
    (manifest / "site").mkdir(parents=True)
    (manifest / "site" / "index.html").write_text("one")
    assert _run("create", static_root, "v1", manifest).returncode == 0
    (manifest / "site" / "index.html").write_text("two")
    assert _run("update", static_root, "v1", manifest).returncode == 0
    assert (static_root / "docs-stage" / "current" / "index.html").read_text() == "two"


def test_archive_unarchive_cleanup(static_root: Path):
    base = static_root / "docs-stage"
    assert _run("create", static_root, "v1").returncode == 0
    assert _run("archive_check", static_root, "v1").returncode != 0
    assert _run("archive", static_root, "v1").returncode == 0
    assert not (base / "current").exists()
    assert os.readlink(base / "archived") == "releases/v1"
    assert _run("archive_check", static_root, "v1").returncode == 0
    assert _run("check", static_root, "v1").returncode == 1
    assert _run("archive", static_root, "v1").returncode == 0  # idempotent
    assert _run("unarchive", static_root, "v1").returncode == 0
    assert os.readlink(base / "current") == "releases/v1"
    assert not (base / "archived").exists()
    assert _run("check", static_root, "v1").returncode == 0
    assert _run("cleanup", static_root, "v1").returncode == 0
    assert not base.exists()
    assert static_root.exists()
    assert _run("cleanup", static_root, "v1").returncode == 0  # idempotent


def test_unarchive_without_archive_deploys(static_root: Path):
    assert _run("unarchive", static_root, "v7").returncode == 0
    assert os.readlink(static_root / "docs-stage" / "current") == "releases/v7"


def test_tarball_source_and_health_url(static_root: Path, tmp_path: Path):
    manifest = tmp_path / "manifest"
    manifest.mkdir()
    with tarfile.open(manifest / "bundle.tar.gz", "w:gz") as tar:
        tar.add(SITE / "site", arcname=".")
    result = _run("create", static_root, "v1", manifest, deployment_config={"source": "bundle.tar.gz"})
    assert result.returncode == 0, result.stderr
    served = static_root / "docs-stage" / "current"
    assert (served / "healthz").read_text() == "ok\n"

    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))

    class Quiet(http.server.ThreadingHTTPServer):
        pass

    server = Quiet(("127.0.0.1", 0), handler)
    handler.keywords["directory"] = str(served)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        args = contract_args("docs-stage", tag="v1", manifest_dir=manifest, service="docs")
        ok = _env(static_root, SAMI_HEALTH_URL=f"http://127.0.0.1:{port}/healthz", SAMI_HEALTH_TIMEOUT="5")
        assert run_script("static_file", "check", args, env=ok).returncode == 0
        bad = _env(static_root, SAMI_HEALTH_URL=f"http://127.0.0.1:{port}/missing", SAMI_HEALTH_TIMEOUT="5")
        assert run_script("static_file", "check", args, env=bad).returncode == 1
    finally:
        server.shutdown()
        server.server_close()


def test_deployments_are_separate(static_root: Path):
    assert _run("create", static_root, "v1", name="docs-pr-1").returncode == 0
    assert _run("create", static_root, "v2", name="docs-pr-2").returncode == 0
    assert _run("cleanup", static_root, "v1", name="docs-pr-1").returncode == 0
    assert not (static_root / "docs-pr-1").exists()
    assert _run("check", static_root, "v2", name="docs-pr-2").returncode == 0
