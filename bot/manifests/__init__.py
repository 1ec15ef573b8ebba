"""Manifests layer: read a deployments repo (folder or git commit) into validated manifests.

Public API::

    repo = load_deployments_repo("examples/deployments")
    repo.ok, repo.errors, repo.find("web", "stage"), repo.services()
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from pathlib import Path

import cachetools

from . import gitsource
from .gitsource import PRUNE_MIN_AGE, DeploymentsRepoError, GitCredentials, GitMirror, is_git_url, touch_tree
from .loader import (
    MANIFEST_NAMES,
    MAX_MANIFEST_BYTES,
    is_valid_environment,
    load_tree,
    parse_duration,
)
from .model import (
    URL_PLACEHOLDERS,
    DeploymentsRepo,
    ExternalCheck,
    Health,
    ImageUpdate,
    Manifest,
    ManifestError,
    PrDeploy,
    ServiceType,
)
from .topology import Kind, ThirdPartyMode, Topology

__all__ = [
    "MANIFEST_NAMES",
    "MAX_MANIFEST_BYTES",
    "URL_PLACEHOLDERS",
    "DeploymentsRepo",
    "DeploymentsRepoError",
    "ExternalCheck",
    "GitCredentials",
    "Health",
    "ImageUpdate",
    "Kind",
    "Manifest",
    "ManifestError",
    "PrDeploy",
    "ServiceType",
    "ThirdPartyMode",
    "Topology",
    "clear_memo",
    "default_cache_dir",
    "is_git_source",
    "is_valid_environment",
    "load_deployments_repo",
    "parse_duration",
    "prune_trees",
]

_MEMO_SIZE = 8
# Trees loaded from git, by (source, sha, cache folder): a sha's tree never changes, so the process
# keeps the last few (least recently used go first).
# The known target names are part of the key: they decide which environment files are valid.
_MemoKey = tuple[str, str, str, tuple[str, ...] | None]
_memo: cachetools.LRUCache[_MemoKey, DeploymentsRepo] = cachetools.LRUCache(_MEMO_SIZE)
_memo_lock = threading.Lock()


def default_cache_dir() -> Path:
    """Where git sources are mirrored when no cache_dir is given (per user)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sami" / "deployments"


def clear_memo() -> None:
    """Forget the in-process results of earlier git loads."""
    with _memo_lock:
        _memo.clear()


def prune_trees(
    cache_dir: str | os.PathLike[str] | None = None,
    keep: int = 5,
    *,
    min_age: float = PRUNE_MIN_AGE,
) -> list[str]:
    """Delete extracted commit trees of cache_dir (default: default_cache_dir()); return their shas.

    Kept: the `keep` most recently used trees, every tree used in the last `min_age` seconds
    (extracted, loaded, or answered from this process's memo), and every tree this process
    still holds in its memo. Safe to call while other threads or processes load trees.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache_key = str(cache.resolve())
    with _memo_lock:
        held = [sha for (_, sha, key, _targets) in _memo if key == cache_key]
    return gitsource.prune_trees(cache, keep, min_age=min_age, protect=held)


def is_git_source(source: str | os.PathLike[str], ref: str | None) -> bool:
    """True when load_deployments_repo reads source through git (a URL, a bare repo, or a ref)."""
    source = os.fspath(source)
    if is_git_url(source):
        return True
    path = Path(source)
    if source.endswith(".git") and path.is_dir():
        return True
    if (path / "HEAD").is_file() and (path / "objects").is_dir():
        return True  # a bare repository, whatever its name
    # A local working copy is read as a folder unless a ref asks for one of its commits.
    return ref is not None and ((path / ".git").exists() or (path / "HEAD").is_file())


def load_deployments_repo(
    source: str | os.PathLike[str],
    *,
    ref: str | None = None,
    cache_dir: os.PathLike[str] | str | None = None,
    git_credentials: GitCredentials | str | None = None,
    targets: Iterable[str] | None = None,
) -> DeploymentsRepo:
    """Load and validate a deployments repo from a local folder or a git source.

    A folder is read as it is on disk (ref must be None unless it is a git working copy).
    A git source (URL, or a local repository with ref) is mirrored into cache_dir, ref is
    resolved to a commit, and that commit's tree is loaded; a commit already loaded by this
    process is answered from memory. Raises DeploymentsRepoError when the source cannot be
    read at all; problems in manifests are in the result's errors. ``targets`` are the target
    names environment files may name (None: not checked, e.g. `sami validate` without settings).
    """
    known = None if targets is None else tuple(sorted(set(targets)))
    text = os.fspath(source)
    if not is_git_source(text, ref):
        path = Path(text)
        if ref is not None:
            raise DeploymentsRepoError(f"{text} is a folder, not a git repository; drop --ref")
        if not path.is_dir():
            raise DeploymentsRepoError(f"{text}: no such folder")
        return load_tree(path, targets=known)

    if not is_git_url(text):
        text = str(Path(text).resolve())
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    mirror = GitMirror(text, cache, git_credentials)
    cache_key = str(cache.resolve())
    if ref is not None and len(ref) in (40, 64):
        # A full sha names the same tree forever: no need to ask git anything.
        cached = _memo_get((text, ref, cache_key, known))
        if cached is not None:
            return cached
    sha = mirror.resolve(ref)
    key = (text, sha, cache_key, known)
    cached = _memo_get(key)
    if cached is not None:
        return cached
    repo = load_tree(mirror.tree(sha), sha=sha, targets=known)
    with _memo_lock:
        _memo[key] = repo
    return repo


def _memo_get(key: _MemoKey) -> DeploymentsRepo | None:
    with _memo_lock:
        repo = _memo.get(key)
        if repo is None:
            return None
        if not touch_tree(repo.root):  # the extracted tree was pruned meanwhile
            del _memo[key]
            return None
        return repo
