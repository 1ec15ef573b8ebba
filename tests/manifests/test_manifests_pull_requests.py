"""The pull request fields of a manifest: pr_tag (a template of the head commit's tag) and pr_forks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bot.core import naming
from bot.manifests import load_deployments_repo
from bot.manifests.loader import pr_tag_template_problem
from bot.manifests.model import tag_safe_branch
from manifests_schema import load_schema

SHA = "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d"
PR = "repository: acme/web\npr_deploy: true\n"


def manifest(add_manifest: Callable[..., Path], repo_dir: Path, extra: str):
    add_manifest(environment="pull_request", extra=PR + extra)
    repo = load_deployments_repo(repo_dir)
    assert repo.ok, [str(e) for e in repo.errors]
    return repo.find("web", "pull_request")


def test_defaults_are_the_full_sha_and_no_forks(add_manifest: Callable[..., Path], repo_dir: Path) -> None:
    found = manifest(add_manifest, repo_dir, "")
    assert (found.pr_tag, found.pr_forks) == ("{sha}", False)
    assert found.render_pr_tag(sha=SHA, number=3, branch="main") == SHA
    assert found.to_dict()["pr_tag"] == "{sha}" and found.to_dict()["pr_forks"] is False
    schema = load_schema()["properties"]
    assert schema["pr_tag"]["default"] == "{sha}" and schema["pr_forks"]["default"] is False


def test_a_template_with_every_placeholder(add_manifest: Callable[..., Path], repo_dir: Path) -> None:
    found = manifest(add_manifest, repo_dir, 'pr_tag: "pr-{number}-{branch}-{short_sha}"\npr_forks: true\n')
    assert found.pr_forks is True
    tag = found.render_pr_tag(sha=SHA, number=42, branch="feature/Login page")
    assert tag == "pr-42-feature-Login-page-1a2b3c4"
    assert naming.check_tag(tag) == tag


@pytest.mark.parametrize(("branch", "text"), [
    ("main", "main"),
    ("feature/x", "feature-x"),
    ("-dash.start", "dash.start"),
    (".hidden", "hidden"),
    ("ünïcode//twice", "n-code-twice"),
    ("///", "branch"),
    ("a" * 300, "a" * 63),
])
def test_branch_names_become_tag_text(branch: str, text: str) -> None:
    assert tag_safe_branch(branch) == text


@pytest.mark.parametrize("branch", ["-", "..", "x" * 255, "refs/heads/feature/😀", "a b\tc\nd", "_x", "9"])
def test_every_template_that_loads_renders_a_valid_tag(branch: str) -> None:
    for template in ("{sha}", "{branch}", "{branch}-{sha}", "v.{number}_{short_sha}", "{branch}{branch}"):
        assert pr_tag_template_problem(template) is None, template
        filled = template.format(sha=SHA, short_sha=SHA[:7], number=2**31 - 1, branch=tag_safe_branch(branch))
        assert naming.check_tag(filled) == filled


@pytest.mark.parametrize(("template", "problem"), [
    ("{sha", "unbalanced"),
    ("{}", "unknown placeholder {}"),
    ("{0}", "unknown placeholder {0}"),
    ("{sha:.7}", "without ':' or '!' options"),
    ("{sha!r}", "without ':' or '!' options"),
    ("pr {sha}", "' ' cannot be part of an image tag"),
    (".{sha}", "cannot start with '.' or '-'"),
    ("x" * 89 + "{sha}", "can give a tag of 129 characters"),
])
def test_templates_that_could_give_a_bad_tag(template: str, problem: str) -> None:
    assert problem in (pr_tag_template_problem(template) or "")
