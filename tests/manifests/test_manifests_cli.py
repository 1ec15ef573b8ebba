"""`sami validate` through click's CliRunner."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from bot.manifests import ManifestError
from bot.manifests.cli import github_annotation, validate

from .conftest import EXAMPLES


def test_valid_tree_exits_zero_with_a_summary() -> None:
    result = CliRunner().invoke(validate, [str(EXAMPLES)])
    assert result.exit_code == 0, result.output
    assert result.output == "10 manifests and 1 environment file valid\n"


def test_invalid_tree_lists_every_error_and_exits_one(add_manifest: Callable[..., Path], repo_dir: Path) -> None:
    add_manifest(extra="zigzag: 1\nttl: soon\n")
    result = CliRunner().invoke(validate, [str(repo_dir)])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0].startswith("services/web/swarm/stage/sami.yaml:11:1: unknown key 'zigzag'")
    assert lines[1].startswith("services/web/swarm/stage/sami.yaml:12:6: ttl: 'soon'")
    assert lines[2] == "2 problems found; 0 valid manifests"


def test_json_output(add_manifest: Callable[..., Path], repo_dir: Path) -> None:
    add_manifest("web")
    add_manifest("api", extra="zigzag: 1\n")
    result = CliRunner().invoke(validate, [str(repo_dir), "--format", "json"])
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["ok"] is False
    assert [m["service_name"] for m in report["manifests"]] == ["web"]
    assert report["errors"] == [
        {
            "path": "services/api/swarm/stage/sami.yaml",
            "line": 11,
            "column": 1,
            "field": "zigzag",
            "message": report["errors"][0]["message"],
        }
    ]


def test_github_format(add_manifest: Callable[..., Path], repo_dir: Path) -> None:
    add_manifest(extra="zigzag: 1\n")
    result = CliRunner().invoke(validate, [str(repo_dir), "--format", "github", "--relative-to", "deploy/"])
    assert result.exit_code == 1
    first = result.output.splitlines()[0]
    assert first.startswith(
        "::error file=deploy/services/web/swarm/stage/sami.yaml,line=11,col=1,title=zigzag::unknown key 'zigzag'"
    )


def test_github_annotation_escaping() -> None:
    error = ManifestError("a,b:c%.yaml", 3, 4, "x", "50% bad\r\nnext: line, here")
    assert github_annotation(error) == (
        "::error file=a%2Cb%3Ac%25.yaml,line=3,col=4,title=x::50%25 bad%0D%0Anext: line, here"
    )
    assert github_annotation(ManifestError("f", None, None, "", "m")) == "::error file=f::m"


def test_unreadable_source_exits_two(tmp_path: Path) -> None:
    result = CliRunner().invoke(validate, [str(tmp_path / "missing")])
    assert result.exit_code == 2
    assert "no such folder" in result.output


def test_ref_on_a_git_source(git_source: dict[str, Any], tmp_path: Path) -> None:
    result = CliRunner().invoke(
        validate,
        [str(git_source["bare"]), "--ref", "v1", "--cache-dir", str(tmp_path / "c")],
    )
    assert result.exit_code == 0, result.output
    assert result.output == "10 manifests and 1 environment file valid\n"
