"""Fixtures for the manifests layer: small deployments repos written into tmp_path."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from bot.manifests import clear_memo

FIXTURES = Path(__file__).parent / "fixtures"
REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT / "examples" / "deployments"

STACK = """\
version: "3.8"
services:
  web:
    image: local/web:latest
  worker:
    image: local/web:latest
"""

VALID = """\
version: v1beta
service_name: {service}
type: {type}
image: local/{service}
url: "http://{{name}}.{{base_domain}}"
files: [stack.yml]
oob:
  update-image:
    file: stack.yml
    path: services.web.image
"""


def write_manifest_dir(root: Path, rel_dir: str, text: str, name: str = "sami.yaml", stack: bool = True) -> Path:
    """Write a manifest (and a stack.yml next to it) under root; return the manifest path."""
    folder = root / rel_dir
    folder.mkdir(parents=True, exist_ok=True)
    if stack:
        (folder / "stack.yml").write_text(STACK)
    path = folder / name
    path.write_text(text)
    return path


@pytest.fixture(autouse=True)
def _fresh_memo() -> None:
    clear_memo()


@pytest.fixture
def repo_dir(tmp_path: Path) -> Path:
    """An empty deployments repo with services/ and a control scripts folder."""
    root = tmp_path / "deployments"
    (root / "services").mkdir(parents=True)
    scripts = root / "scripts" / "web"
    scripts.mkdir(parents=True)
    (scripts / "create").write_text("#!/bin/sh\nexit 0\n")
    return root


@pytest.fixture
def add_manifest(repo_dir: Path) -> Callable[..., Path]:
    """Write a valid manifest for service/type/environment, optionally with extra YAML."""

    def add(
        service: str = "web",
        type_: str = "swarm",
        environment: str = "stage",
        extra: str = "",
        name: str = "sami.yaml",
    ) -> Path:
        text = VALID.format(service=service, type=type_) + extra
        return write_manifest_dir(repo_dir, f"services/{service}/{type_}/{environment}", text, name=name)

    return add


def git(*args: str, cwd: Path) -> str:
    """Run git in a test repository (argv list), returning stdout."""
    result = subprocess.run(
        ["git", "-c", "user.name=Test", "-c", "user.email=test@example.test", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


@pytest.fixture
def git_source(tmp_path: Path) -> dict[str, object]:
    """A bare git repository whose main branch holds a copy of the example tree."""
    work = tmp_path / "work"
    shutil.copytree(EXAMPLES, work)
    git("init", "--quiet", "--initial-branch=main", cwd=work)
    git("add", "-A", cwd=work)
    git("commit", "--quiet", "-m", "initial", cwd=work)
    first = git("rev-parse", "HEAD", cwd=work)
    git("tag", "v1", cwd=work)
    bare = tmp_path / "deployments.git"
    subprocess.run(["git", "clone", "--quiet", "--bare", str(work), str(bare)], check=True, capture_output=True)
    return {"work": work, "bare": bare, "first": first}
