"""timeout and status_timeout: a manifest that sets none leaves the bot's settings in charge."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from bot.core.config import load_settings
from bot.manifests import load_deployments_repo
from workers.executor import Executor, Target, prepare_manifest_dir

from .conftest import VALID, write_manifest_dir


def _repo(root: Path, extra: str = ""):
    scripts = root / "scripts/web"
    scripts.mkdir(parents=True)
    (scripts / "create").write_text("#!/bin/sh\nsleep 5\n")
    (scripts / "create").chmod(0o755)
    text = VALID.format(service="web", type="swarm") + "control_scripts: scripts/web\n" + extra
    write_manifest_dir(root, "services/web/swarm/stage", text)
    repo = load_deployments_repo(root)
    assert repo.ok, [str(e) for e in repo.errors]
    manifest = repo.find("web", "stage")
    assert manifest is not None
    return repo, manifest


def test_absent_timeouts_are_none(tmp_path: Path) -> None:
    _, manifest = _repo(tmp_path / "deployments")
    assert (manifest.timeout, manifest.status_timeout) == (None, None)
    assert manifest.to_dict()["timeout"] is None and manifest.to_dict()["status_timeout"] is None


def test_timeouts_set_in_the_manifest_are_kept(tmp_path: Path) -> None:
    _, manifest = _repo(tmp_path / "deployments", "timeout: 90s\nstatus_timeout: 2m\n")
    assert (manifest.timeout, manifest.status_timeout) == (90, 120)


@pytest.mark.parametrize(("extra", "settings_timeout", "limit"), [("", "1", 1), ("timeout: 1s\n", "600", 1)])
def test_the_script_timeout_comes_from_the_manifest_else_from_the_bot(
    tmp_path: Path, extra: str, settings_timeout: str, limit: int
) -> None:
    repo, manifest = _repo(tmp_path / "deployments", extra)
    settings = load_settings({"SAMI_SCRIPT_TIMEOUT": settings_timeout, "SAMI_INSTANCE_DIR": str(tmp_path / "i")})
    target = Target(name="web-stage", service="web", environment="stage", tag="v1", image=None,
                    app_overrides={}, deployment_overrides={}, url=None, manifest=manifest)
    manifest_dir = prepare_manifest_dir(repo, manifest, None, tmp_path / "run")
    started = time.monotonic()
    result = Executor(settings, environ={"PATH": os.environ["PATH"]}).run("create", repo, target, manifest_dir)
    assert result.timed_out
    assert time.monotonic() - started < limit + 3
