"""Git sources: mirror, ref resolution, extracted trees, memo, and credentials handling."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
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
)
from bot.manifests import store as manifest_store
from bot.manifests.store import ManifestStore

from .conftest import EXAMPLES, git


def test_load_from_bare_repo_by_branch_tag_and_sha(git_source: dict[str, Any], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    bare, first = git_source["bare"], git_source["first"]
    by_default = load_deployments_repo(bare, cache_dir=cache)
    assert by_default.ok and by_default.sha == first
    assert by_default.root == cache / "trees" / first
    assert (by_default.root / "services/web/swarm/stage/sami.yaml").is_file()
    assert by_default.find("web", "stage") is not None
    assert load_deployments_repo(bare, ref="main", cache_dir=cache).sha == first
    assert load_deployments_repo(bare, ref="v1", cache_dir=cache).sha == first
    assert load_deployments_repo(bare, ref=first[:10], cache_dir=cache).sha == first


def test_file_url_and_new_commits_are_fetched(git_source: dict[str, Any], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    work, bare = git_source["work"], git_source["bare"]
    url = f"file://{bare}"
    assert load_deployments_repo(url, ref="main", cache_dir=cache).ok
    (work / "services/web/swarm/stage/sami.yaml").write_text("version: v2\n")
    git("commit", "--quiet", "-am", "break web", cwd=work)
    git("push", "--quiet", str(bare), "main", cwd=work)
    second = git("rev-parse", "HEAD", cwd=work)
    repo = load_deployments_repo(url, ref="main", cache_dir=cache)
    assert repo.sha == second
    assert not repo.ok and "services/web/swarm/stage/sami.yaml" in {e.path for e in repo.errors}


def test_second_load_of_a_sha_is_memoised(
    git_source: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    first = git_source["first"]
    repo = load_deployments_repo(git_source["bare"], ref=first, cache_dir=cache)

    def no_git(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("git must not run for a memoised sha")

    monkeypatch.setattr(gitsource.subprocess, "run", no_git)
    monkeypatch.setattr(gitsource.subprocess, "Popen", no_git)
    assert load_deployments_repo(git_source["bare"], ref=first, cache_dir=cache) is repo


def test_extracted_tree_is_reused_across_memo_clears(git_source: dict[str, Any], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = git_source["first"]
    repo = load_deployments_repo(git_source["bare"], ref=first, cache_dir=cache)
    marker = repo.root / "marker"
    marker.write_text("kept")
    clear_memo()
    again = load_deployments_repo(git_source["bare"], ref=first, cache_dir=cache)
    assert again is not repo and again.root == repo.root and marker.exists()
    clear_memo()
    assert prune_trees(cache, keep=0, min_age=0) == [first]
    assert not repo.root.exists()


def test_unknown_ref_and_bad_refs(git_source: dict[str, Any], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(DeploymentsRepoError, match="ref 'nope' not found"):
        load_deployments_repo(git_source["bare"], ref="nope", cache_dir=cache)
    with pytest.raises(DeploymentsRepoError, match="not a valid git ref"):
        load_deployments_repo(git_source["bare"], ref="--upload-pack=evil", cache_dir=cache)
    with pytest.raises(DeploymentsRepoError, match="git failed"):
        load_deployments_repo(f"file://{tmp_path}/missing.git", cache_dir=cache)


def test_password_in_url_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DeploymentsRepoError, match="contains a user name or token"):
        load_deployments_repo("https://user:s3cret@example.test/d.git", cache_dir=tmp_path)


def test_token_travels_in_the_environment_only(
    git_source: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[list[str], dict[str, str]]] = []
    real_run, real_popen = subprocess.run, subprocess.Popen

    def run(argv: list[str], **kwargs: Any) -> Any:
        calls.append((list(argv), dict(kwargs.get("env") or {})))
        return real_run(argv, **kwargs)

    def popen(argv: list[str], **kwargs: Any) -> Any:
        calls.append((list(argv), dict(kwargs.get("env") or {})))
        return real_popen(argv, **kwargs)

    monkeypatch.setattr(gitsource.subprocess, "run", run)
    monkeypatch.setattr(gitsource.subprocess, "Popen", popen)
    token = "ghs_supersecrettoken"
    repo = load_deployments_repo(
        git_source["bare"], cache_dir=tmp_path / "cache", git_credentials=GitCredentials(token)
    )
    assert repo.ok
    git_calls = [(argv, env) for argv, env in calls if argv[0] == "git"]
    assert git_calls
    for argv, env in git_calls:
        assert not any(token in arg for arg in argv)
        assert "--config-env=http.extraHeader=SAMI_GIT_HTTP_AUTH_HEADER" in argv
        assert env["SAMI_GIT_HTTP_AUTH_HEADER"].startswith("Authorization: Basic ")
        assert env["GIT_TERMINAL_PROMPT"] == "0"
    config = (tmp_path / "cache" / "mirrors").glob("*.git/config")
    assert all(token not in path.read_text() for path in config)
    assert token not in repr(GitCredentials(token))


def test_working_copy_is_a_folder_unless_a_ref_is_given(git_source: dict[str, Any], tmp_path: Path) -> None:
    work = git_source["work"]
    assert load_deployments_repo(work).sha is None
    assert load_deployments_repo(work, ref="main", cache_dir=tmp_path / "c").sha == git_source["first"]
    with pytest.raises(DeploymentsRepoError, match="is a folder"):
        load_deployments_repo(tmp_path, ref="main")


# --- the store the web and the workers read manifests through ------------------------------


class _SlowReads:
    """Stands in for load_deployments_repo: each read waits for `release`, and is counted."""

    def __init__(self, repo: Any) -> None:
        self.repo = repo
        self.release = threading.Event()
        self.entered = threading.Event()
        self.calls = 0
        self.running = 0
        self.most = 0
        self.lock = threading.Lock()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            self.calls += 1
            self.running += 1
            self.most = max(self.most, self.running)
        self.entered.set()
        try:
            assert self.release.wait(20)
            return self.repo
        finally:
            with self.lock:
                self.running -= 1


def _in_thread(call: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(call()), daemon=True)
    thread.start()
    return thread, out


@pytest.mark.timeout(60)
def test_readers_get_the_last_good_read_while_one_fetch_runs(
    git_source: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ManifestStore(str(git_source["bare"]), "main", tmp_path / "cache")
    first = store.current()
    newer = object()
    slow = _SlowReads(newer)
    monkeypatch.setattr(manifest_store, "load_deployments_repo", slow)
    store._loaded_at -= store.GIT_TTL + 1  # stale: the next reader starts a fetch
    fetching, fetched = _in_thread(store.current)
    assert slow.entered.wait(10)
    readers = [_in_thread(store.current) for _ in range(4)]
    for thread, _ in readers:
        thread.join(2)
    try:
        assert not any(thread.is_alive() for thread, _ in readers), "readers waited behind the fetch"
        assert all(out == [first] for _, out in readers)
        assert fetching.is_alive()
    finally:
        slow.release.set()
    fetching.join(10)
    assert fetched == [newer] and store.current() is newer
    assert (slow.calls, slow.most) == (1, 1)


@pytest.mark.timeout(60)
def test_a_refresh_waits_for_a_read_that_began_after_it_asked(
    git_source: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ManifestStore(str(git_source["bare"]), "main", tmp_path / "cache")
    store.current()
    slow = _SlowReads(object())
    monkeypatch.setattr(manifest_store, "load_deployments_repo", slow)
    first_refresh, _ = _in_thread(lambda: store.current(refresh=True))
    assert slow.entered.wait(10)
    second_refresh, out = _in_thread(lambda: store.current(refresh=True))
    time.sleep(0.2)
    assert second_refresh.is_alive(), "a refresh asked during an older read waits for a read of its own"
    slow.release.set()
    first_refresh.join(10)
    second_refresh.join(10)
    assert out == [slow.repo] and (slow.calls, slow.most) == (2, 1)


def test_a_working_copy_with_a_ref_is_fetched_at_the_git_interval(
    git_source: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[str | None] = []
    real = manifest_store.load_deployments_repo

    def counted(source: Any, **kwargs: Any) -> Any:
        reads.append(kwargs.get("ref"))
        return real(source, **kwargs)

    monkeypatch.setattr(manifest_store, "load_deployments_repo", counted)
    store = ManifestStore(str(git_source["work"]), "main", tmp_path / "cache")
    assert store.is_git
    assert store.current().sha == git_source["first"]
    store._loaded_at -= 3  # older than the folder interval, well within the git one
    store.current()
    assert reads == ["main"]


def test_at_reads_the_commit_asked_for_from_a_working_copy(git_source: dict[str, Any], tmp_path: Path) -> None:
    work, first = git_source["work"], git_source["first"]
    (work / "services/web/swarm/stage/sami.yaml").write_text("version: v2\n")
    git("commit", "--quiet", "-am", "break web", cwd=work)
    second = git("rev-parse", "HEAD", cwd=work)
    for ref in ("main", None):
        store = ManifestStore(str(work), ref, tmp_path / f"cache-{ref}")
        at_first = store.at(first)
        assert at_first.sha == first and at_first.ok and at_first.find("web", "stage") is not None
        at_second = store.at(second)
        assert at_second.sha == second and at_second.find("web", "stage") is None
    with pytest.raises(DeploymentsRepoError, match="not found"):
        store.at("0" * 40)


def test_at_a_commit_of_a_plain_folder_is_a_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "deployments"
    shutil.copytree(EXAMPLES, folder)
    store = ManifestStore(str(folder), None, tmp_path / "cache")
    assert store.at(None).ok and not store.is_git
    with pytest.raises(DeploymentsRepoError, match=f"cannot read commit {'a' * 40} .* plain folder"):
        store.at("a" * 40)
