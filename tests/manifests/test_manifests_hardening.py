"""Hostile or ambiguous trees: merge-key bombs, colliding names, override text, symlinks in folders."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bot.manifests import (
    DeploymentsRepoError,
    GitCredentials,
    clear_memo,
    gitsource,
    load_deployments_repo,
    prune_trees,
    yamlsafe,
)

from .conftest import STACK, VALID, write_manifest_dir

STAGE = "services/web/swarm/stage/sami.yaml"


def _merge_bomb(levels: int = 8, fanout: int = 10) -> str:
    lines = ["x0: &a0 {}"]
    for i in range(1, levels + 1):
        refs = ", ".join([f"*a{i - 1}"] * fanout)
        lines.append(f"x{i}: &a{i} {{<<: [{refs}]}}")
    return "\n".join(lines) + "\n"


# --- 1. merge keys count against the value budget ----------------------------------------


def test_merge_key_bomb_in_a_manifest_is_stopped_fast(repo_dir: Path) -> None:
    folder = repo_dir / "services/web/swarm/stage"
    folder.mkdir(parents=True)
    (folder / "stack.yml").write_text(STACK)
    bomb = _merge_bomb()
    assert len(bomb) < 600
    (folder / "sami.yaml").write_text(bomb)
    started = time.process_time()
    (error,) = load_deployments_repo(repo_dir).errors
    assert time.process_time() - started < 0.5
    assert error.path == STAGE
    assert "more than 10000 values once aliases are expanded" in error.message
    assert error.line is not None and error.column is not None


def test_merge_sources_count_for_depth() -> None:
    lines = ["x0: &a0 {k: v}"]
    for i in range(1, 80):
        lines.append(f"x{i}: &a{i} {{<<: *a{i - 1}}}")
    with pytest.raises(yamlsafe.ReadError, match="nested more than 64 levels"):
        yamlsafe.load_document("\n".join(lines) + "\n")


def test_ordinary_merges_still_work() -> None:
    document = yamlsafe.load_document("a: &a {x: 1, y: 2}\nb: &b {y: 3}\nc: {<<: [*b, *a], z: 4}\n")
    assert document.data["c"] == {"z": 4, "y": 3, "x": 1}


# --- 2. the oob file is walked under a budget too ----------------------------------------


def test_merge_key_bomb_in_the_oob_file_is_stopped_fast(repo_dir: Path) -> None:
    text = VALID.format(service="web", type="swarm").replace("services.web.image", "x8.nope.image")
    path = write_manifest_dir(repo_dir, "services/web/swarm/stage", text)
    (path.parent / "stack.yml").write_text(_merge_bomb())
    started = time.process_time()
    (error,) = load_deployments_repo(repo_dir).errors
    assert time.process_time() - started < 0.5
    assert (error.path, error.line, error.column, error.field) == (STAGE, 10, 11, "oob.update-image.path")
    assert "no key 'nope' under x8" in error.message


def test_merge_keys_in_the_oob_file_are_followed(repo_dir: Path) -> None:
    text = VALID.format(service="web", type="swarm").replace("services.web.image", "x8.image")
    path = write_manifest_dir(repo_dir, "services/web/swarm/stage", text)
    (path.parent / "stack.yml").write_text(_merge_bomb().replace("{}", "{image: local/web}", 1))
    assert load_deployments_repo(repo_dir).ok


# --- 3. deployment names are unique across the tree --------------------------------------


def test_two_manifests_giving_the_same_deployment_name(add_manifest: Callable[..., Path], repo_dir: Path) -> None:
    add_manifest("a", "static_file", "b-c")
    add_manifest("a-b", "static_file", "c")
    repo = load_deployments_repo(repo_dir)
    assert [(e.path, e.line, e.column, e.field) for e in repo.errors] == [
        ("services/a-b/static_file/c/sami.yaml", 2, 15, "service_name"),
        ("services/a/static_file/b-c/sami.yaml", 2, 15, "service_name"),
    ]
    first, second = repo.errors
    assert "deployment name 'a-b-c' is also the name of services/a/static_file/b-c/sami.yaml" in first.message
    assert "deployment name 'a-b-c' is also the name of services/a-b/static_file/c/sami.yaml" in second.message
    assert repo.manifests == ()


def test_a_name_colliding_with_pull_request_previews(add_manifest: Callable[..., Path], repo_dir: Path) -> None:
    add_manifest("a", "swarm", "b-pr-3")
    add_manifest("a-b", "swarm", "pull_request")
    add_manifest("a-b", "swarm", "stage")
    repo = load_deployments_repo(repo_dir)
    assert [(e.path, e.field) for e in repo.errors] == [
        ("services/a-b/swarm/pull_request/sami.yaml", "service_name"),
        ("services/a/swarm/b-pr-3/sami.yaml", "service_name"),
    ]
    assert "pull request deployments 'a-b-pr-<n>'" in repo.errors[0].message
    assert "services/a/swarm/b-pr-3/sami.yaml" in repo.errors[0].message
    assert "services/a-b/swarm/pull_request/sami.yaml" in repo.errors[1].message
    assert [m.path for m in repo.manifests] == ["services/a-b/swarm/stage/sami.yaml"]


def test_environment_folders_named_like_previews_are_reserved(
    add_manifest: Callable[..., Path], repo_dir: Path
) -> None:
    add_manifest("web", "swarm", "pr-1")
    (error,) = load_deployments_repo(repo_dir).errors
    assert (error.path, error.line, error.column) == ("services/web/swarm/pr-1/sami.yaml", 1, 1)
    assert "environment folder 'pr-1' is reserved for pull request deployments" in error.message


# --- 6. names the targets accept ---------------------------------------------------------


@pytest.mark.parametrize("environment", ["stage-", "qa--1", "a-"])
def test_environment_folders_must_be_dns_labels(
    add_manifest: Callable[..., Path], repo_dir: Path, environment: str
) -> None:
    add_manifest("web", "swarm", environment)
    (error,) = load_deployments_repo(repo_dir).errors
    assert (error.line, error.column) == (1, 1)
    assert f"environment folder {environment!r} is not a valid environment name" in error.message


def test_k8s_release_names_fit_in_53(add_manifest: Callable[..., Path], repo_dir: Path) -> None:
    service = "s" * 40
    add_manifest(service, "k8s", "production-eu")  # 54 characters
    add_manifest(service, "swarm", "production-e")  # 53: fine for swarm
    repo = load_deployments_repo(repo_dir)
    (error,) = repo.errors
    assert (error.path, error.line, error.column, error.field) == (
        f"services/{service}/k8s/production-eu/sami.yaml",
        2,
        15,
        "service_name",
    )
    assert "is 54 characters long" in error.message and "k8s" in error.message and "53" in error.message


# --- 5. override values keep their text --------------------------------------------------


def test_override_values_are_kept_as_written(repo_dir: Path) -> None:
    text = VALID.format(service="web", type="swarm") + (
        "overrides:\n"
        "  app: {ZIP: 01234, NODE_VERSION: 18.10, FEATURE: on, N: 1_000, Q: 'no', B: true, T: 2024-01-01}\n"
        "  deployment:\n"
        "    <<: &base {port: 0o17, ratio: .5}\n"
        "    sexagesimal: 1:30\n"
    )
    write_manifest_dir(repo_dir, "services/web/swarm/stage", text)
    repo = load_deployments_repo(repo_dir)
    assert repo.ok, [str(e) for e in repo.errors]
    manifest = repo.find("web", "stage")
    assert manifest is not None
    assert dict(manifest.app_overrides) == {
        "ZIP": "01234",
        "NODE_VERSION": "18.10",
        "FEATURE": "on",
        "N": "1_000",
        "Q": "no",
        "B": "true",
        "T": "2024-01-01",
    }
    assert dict(manifest.deployment_overrides) == {"sexagesimal": "1:30", "port": "0o17", "ratio": ".5"}


def test_null_override_is_still_an_error(repo_dir: Path) -> None:
    text = VALID.format(service="web", type="swarm") + "overrides:\n  app:\n    EMPTY:\n"
    write_manifest_dir(repo_dir, "services/web/swarm/stage", text)
    (error,) = load_deployments_repo(repo_dir).errors
    assert (error.line, error.field) == (13, "overrides.app.EMPTY")


def test_huge_numbers_are_text_or_located_errors(repo_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    huge = "0x" + "f" * 5000
    text = VALID.format(service="web", type="swarm") + f"overrides:\n  app: {{BIG: {huge}}}\ntimeout: {huge}\n"
    write_manifest_dir(repo_dir, "services/web/swarm/stage", text)
    (error,) = load_deployments_repo(repo_dir).errors
    assert (error.line, error.column, error.field) == (13, 10, "timeout")
    assert "could not be checked" not in error.message
    assert not [r for r in caplog.records if r.exc_info]
    text = VALID.format(service="web", type="swarm") + f"overrides:\n  app: {{BIG: {huge}}}\n"
    write_manifest_dir(repo_dir, "services/web/swarm/stage", text)
    manifest = load_deployments_repo(repo_dir).find("web", "stage")
    assert manifest is not None and manifest.app_overrides["BIG"] == huge


# --- 7. symlinks inside folders named by files and control_scripts -----------------------


def test_symlink_inside_a_files_folder_pointing_outside(repo_dir: Path) -> None:
    text = VALID.format(service="web", type="swarm").replace("[stack.yml]", "[stack.yml, site]")
    path = write_manifest_dir(repo_dir, "services/web/swarm/stage", text)
    (path.parent / "site/css").mkdir(parents=True)
    (path.parent / "site/index.html").write_text("hi")
    (path.parent / "site/css/leak.txt").symlink_to("/etc/passwd")
    (error,) = load_deployments_repo(repo_dir).errors
    assert (error.path, error.line, error.column, error.field) == (STAGE, 6, 20, "files[1]")
    assert error.message.startswith("files[1]: 'site/css/leak.txt' is a symlink to '/etc/passwd', which leaves the "
                                    "deployments repo")


def test_symlinked_folder_inside_files_is_walked(repo_dir: Path, tmp_path: Path) -> None:
    (repo_dir / "shared").mkdir()
    (repo_dir / "shared/leak").symlink_to(tmp_path)
    text = VALID.format(service="web", type="swarm").replace("[stack.yml]", "[stack.yml, site]")
    path = write_manifest_dir(repo_dir, "services/web/swarm/stage", text)
    (path.parent / "site").mkdir()
    (path.parent / "site/shared").symlink_to("../../../../../shared")
    (path.parent / "site/loop").symlink_to(".")
    loop, leak = load_deployments_repo(repo_dir).errors
    assert leak.field == loop.field == "files[1]"
    assert "'site/loop' is a symlink to '.', a folder that contains it (a loop)" in loop.message
    assert f"'site/shared/leak' is a symlink to {str(tmp_path)!r}, which leaves the deployments repo" in leak.message


def test_symlinks_inside_the_repo_are_fine_in_folders(repo_dir: Path) -> None:
    text = VALID.format(service="web", type="swarm").replace("[stack.yml]", "[stack.yml, site]")
    path = write_manifest_dir(repo_dir, "services/web/swarm/stage", text)
    (path.parent / "site").mkdir()
    (path.parent / "site/stack.yml").symlink_to("../stack.yml")
    assert load_deployments_repo(repo_dir).ok


def test_symlink_inside_control_scripts_pointing_outside(repo_dir: Path) -> None:
    (repo_dir / "scripts/web/check").symlink_to("/bin/sh")
    text = VALID.format(service="web", type="swarm") + "control_scripts: scripts/web\n"
    write_manifest_dir(repo_dir, "services/web/swarm/stage", text)
    (error,) = load_deployments_repo(repo_dir).errors
    assert (error.line, error.column, error.field) == (11, 18, "control_scripts")
    assert "'scripts/web/check' is a symlink to '/bin/sh', which leaves the deployments repo" in error.message


def test_huge_manifest_folder_is_refused(repo_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.manifests import loader

    monkeypatch.setattr(loader, "MAX_FOLDER_ENTRIES", 20)
    text = VALID.format(service="web", type="swarm").replace("[stack.yml]", "[stack.yml, site]")
    path = write_manifest_dir(repo_dir, "services/web/swarm/stage", text)
    (path.parent / "site").mkdir()
    for index in range(25):
        (path.parent / f"site/{index}.html").write_text("x")
    (error,) = load_deployments_repo(repo_dir).errors
    assert (error.path, error.line, error.field) == ("services/web/swarm/stage", None, "")
    assert error.message.startswith("holds more than 20 entries")


# --- 9. nothing in a service folder leads out of the repo ---------------------------------

DOCS = "services/docs/static_file/stage"
STATIC = """\
version: v1beta
service_name: docs
type: static_file
"""


def _static_site(repo_dir: Path, files: str = "") -> Path:
    """A static_file manifest folder with site/index.html; returns the folder."""
    folder = repo_dir / DOCS
    (folder / "site").mkdir(parents=True)
    (folder / "site/index.html").write_text("hello")
    (folder / "sami.yaml").write_text(STATIC + files)
    return folder


def _folder_errors(repo_dir: Path) -> list[tuple[str, str]]:
    repo = load_deployments_repo(repo_dir)
    assert repo.find("docs", "stage") is None, "a refused folder leaves no usable manifest"
    return [(e.path, e.message) for e in repo.errors]


def test_an_unlisted_symlink_to_a_host_file_is_refused(repo_dir: Path) -> None:
    folder = _static_site(repo_dir)
    (folder / "leak.txt").symlink_to("/etc/passwd")
    ((path, message),) = _folder_errors(repo_dir)
    assert path == f"{DOCS}/leak.txt"
    assert message.startswith("is a symlink to '/etc/passwd'")
    assert "leaves the deployments repo" in message


def test_a_bundle_folder_linked_out_of_the_repo_is_refused(repo_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    folder = repo_dir / DOCS
    folder.mkdir(parents=True)
    (folder / "sami.yaml").write_text(STATIC)
    (folder / "site").symlink_to("../../../../../outside")  # no files key names it
    ((path, message),) = _folder_errors(repo_dir)
    assert path == f"{DOCS}/site"
    assert "is a symlink to '../../../../../outside'" in message and "leaves the deployments repo" in message


def test_an_unlisted_linked_folder_a_source_override_could_pick_is_refused(repo_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "outside").mkdir()
    folder = _static_site(repo_dir, "files: [site]\nallowed_overrides:\n  deployment: [source]\n")
    (folder / "other").symlink_to(tmp_path / "outside")
    ((path, message),) = _folder_errors(repo_dir)
    assert path == f"{DOCS}/other"
    assert "is a symlink to" in message and "leaves the deployments repo" in message


def test_absolute_symlinks_are_refused_even_into_the_repo(repo_dir: Path) -> None:
    folder = _static_site(repo_dir)
    (folder / "site/again.html").symlink_to(folder / "site/index.html")
    ((path, message),) = _folder_errors(repo_dir)
    assert path == f"{DOCS}/site/again.html"
    assert "absolute symlink" in message and "relative" in message


def test_links_into_git_metadata_are_refused(repo_dir: Path) -> None:
    (repo_dir / ".git").mkdir()
    (repo_dir / ".git/config").write_text("[remote]\n")
    folder = _static_site(repo_dir)
    (folder / "site/config").symlink_to("../../../../../.git/config")
    ((path, message),) = _folder_errors(repo_dir)
    assert path == f"{DOCS}/site/config"
    assert ".git" in message


@pytest.mark.parametrize(
    ("links", "bad", "words"),
    [
        ({"site/self": "self"}, "site/self", "symlink loop"),
        ({"site/a": "b", "site/b": "a"}, "site/a", "symlink loop"),
        ({"site/up": ".."}, "site/up", "a folder that contains it"),
        ({"site/top": "../../../../.."}, "site/top", "a folder that contains it"),
        ({"site/dangling": "nowhere.html"}, "site/dangling", "broken symlink"),
    ],
)
def test_symlink_loops_and_broken_links_are_refused(
    repo_dir: Path, links: dict[str, str], bad: str, words: str
) -> None:
    folder = _static_site(repo_dir)
    for name, target in links.items():
        (folder / name).symlink_to(target)
    errors = _folder_errors(repo_dir)
    assert (f"{DOCS}/{bad}", words) in [(path, words) for path, message in errors if words in message], errors


def test_two_folders_linking_to_each_other_are_a_loop(repo_dir: Path) -> None:
    folder = _static_site(repo_dir)
    (folder / "one").mkdir()
    (folder / "two").mkdir()
    (folder / "one/to-two").symlink_to("../two")
    (folder / "two/to-one").symlink_to("../one")
    errors = _folder_errors(repo_dir)
    assert errors and all("a folder that contains it" in message for _, message in errors), errors


def test_a_named_pipe_is_refused(repo_dir: Path) -> None:
    folder = _static_site(repo_dir)
    os.mkfifo(folder / "site/pipe")
    ((path, message),) = _folder_errors(repo_dir)
    assert path == f"{DOCS}/site/pipe"
    assert message.startswith("is a named pipe (FIFO)")


def test_a_device_node_is_refused(repo_dir: Path) -> None:
    import stat

    folder = _static_site(repo_dir)
    try:
        os.mknod(folder / "site/null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("creating device nodes is not permitted here")
    ((path, message),) = _folder_errors(repo_dir)
    assert path == f"{DOCS}/site/null"
    assert message.startswith("is a character device")


def test_a_socket_is_refused(repo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    folder = _static_site(repo_dir)
    monkeypatch.chdir(folder / "site")  # unix socket paths are short: bind a relative name
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind("sock")
        ((path, message),) = _folder_errors(repo_dir)
    assert path == f"{DOCS}/site/sock"
    assert message.startswith("is a socket")


def test_a_special_file_named_by_files_is_reported_at_that_field(repo_dir: Path) -> None:
    folder = _static_site(repo_dir, "files: [site]\n")
    os.mkfifo(folder / "site/pipe")
    (error,) = load_deployments_repo(repo_dir).errors
    assert (error.path, error.line, error.column, error.field) == (f"{DOCS}/sami.yaml", 4, 9, "files[0]")
    assert error.message.startswith("files[0]: 'site/pipe' is a named pipe (FIFO)")


def test_links_within_the_repo_are_fine_anywhere_in_the_folder(repo_dir: Path) -> None:
    (repo_dir / "shared/assets").mkdir(parents=True)
    (repo_dir / "shared/assets/logo.svg").write_text("<svg/>")
    folder = _static_site(repo_dir)
    (folder / "site/latest.html").symlink_to("index.html")
    (folder / "site/assets").symlink_to("../../../../../shared/assets")
    (folder / "site/again").symlink_to("assets")
    repo = load_deployments_repo(repo_dir)
    assert repo.ok, [str(e) for e in repo.errors]


def test_sami_validate_names_the_file(repo_dir: Path) -> None:
    from click.testing import CliRunner

    from bot.manifests.cli import validate

    folder = _static_site(repo_dir)
    (folder / "leak.txt").symlink_to("/etc/passwd")
    result = CliRunner().invoke(validate, [str(repo_dir)])
    assert result.exit_code == 1
    assert result.output.splitlines()[0].startswith(f"{DOCS}/leak.txt: is a symlink to '/etc/passwd'")


# --- 4. credentials never travel in URLs --------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["https://ghp_x@example.test/d.git", "http://user:pw@example.test/d.git", "https://@example.test/d.git"],
)
def test_userinfo_in_http_urls_is_refused(url: str, tmp_path: Path) -> None:
    with pytest.raises(DeploymentsRepoError, match="user name or token") as caught:
        load_deployments_repo(url, cache_dir=tmp_path)
    assert "ghp_x" not in str(caught.value) and "pw" not in str(caught.value)
    assert "git_credentials" in str(caught.value)
    assert not (tmp_path / "mirrors").exists()


def test_ssh_user_is_fine_but_not_a_password(tmp_path: Path) -> None:
    with pytest.raises(DeploymentsRepoError, match="user name or token"):
        gitsource.GitMirror("ssh://git:pw@example.test/d.git", tmp_path)
    gitsource.GitMirror("git@github.com:acme/deployments.git", tmp_path)
    gitsource.GitMirror("ssh://git@github.com/acme/deployments.git", tmp_path)


def test_credentials_over_plain_http_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DeploymentsRepoError, match="plain http"):
        load_deployments_repo("http://example.test/d.git", cache_dir=tmp_path, git_credentials="t0ken")
    with pytest.raises(DeploymentsRepoError, match="plain http"):
        gitsource.GitMirror("http://127.0.0.1:8080/d.git", tmp_path, GitCredentials("t0ken"))
    # Without credentials, http is fine; with them, https is.
    gitsource.GitMirror("http://example.test/d.git", tmp_path)
    gitsource.GitMirror("https://example.test/d.git", tmp_path, GitCredentials("t0ken"))


def test_git_errors_are_scrubbed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    credentials = GitCredentials("s3cr3t-token")
    header = credentials.header().split()[-1]
    mirror = gitsource.GitMirror("https://example.test/d.git", tmp_path, credentials)
    noise = (
        "fatal: unable to access 'https://x-access-token:s3cr3t-token@example.test/d.git/': denied\n"
        f"auth {header} https://someone@example.test/other"
    )

    class Result:
        returncode = 128
        stdout = ""
        stderr = noise

    monkeypatch.setattr(gitsource.subprocess, "run", lambda *a, **k: Result())
    with pytest.raises(DeploymentsRepoError) as caught:
        mirror.git("fetch")
    message = str(caught.value)
    assert "s3cr3t-token" not in message and header not in message and "someone@" not in message
    assert "x-access-token" not in message
    assert mirror._scrub(noise.replace("\n", " ")).count("***") >= 2


# --- 8. pruning does not remove trees in use ----------------------------------------------


def test_prune_keeps_memoised_and_recent_trees(git_source: dict[str, Any], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = git_source["first"]
    repo = load_deployments_repo(git_source["bare"], ref=first, cache_dir=cache)
    # Memoised in this process: kept whatever its age.
    old = time.time() - 3600
    os.utime(repo.root, (old, old))
    assert prune_trees(cache, keep=0) == []
    clear_memo()
    # Used recently: kept.
    load_deployments_repo(git_source["bare"], ref=first, cache_dir=cache)
    clear_memo()
    assert prune_trees(cache, keep=0) == []
    assert prune_trees(cache, keep=0, min_age=0) == [first]
    assert not repo.root.exists()
    # Gone from disk: the next load extracts it again.
    assert load_deployments_repo(git_source["bare"], ref=first, cache_dir=cache).ok


def test_memo_hit_marks_the_tree_as_used(git_source: dict[str, Any], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = git_source["first"]
    repo = load_deployments_repo(git_source["bare"], ref=first, cache_dir=cache)
    old = time.time() - 3600
    os.utime(repo.root, (old, old))
    assert load_deployments_repo(git_source["bare"], ref=first, cache_dir=cache) is repo
    assert repo.root.stat().st_mtime > old + 3000
