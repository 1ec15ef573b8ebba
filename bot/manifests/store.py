"""Where the web, services and workers get the deployments repo's manifests from."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from pathlib import Path

from bot.core.config import Settings
from bot.manifests import (
    DeploymentsRepo,
    DeploymentsRepoError,
    GitCredentials,
    is_git_source,
    load_deployments_repo,
)

log = logging.getLogger(__name__)


# A change within this many seconds of a fingerprint may share its timestamps with the state the
# fingerprint saw (file times are coarse): such a fingerprint is not trusted (git's "racy" rule).
RACY_SECONDS = 2.0


def folder_fingerprint(root: str | os.PathLike[str]) -> bytes | None:
    """A digest of every entry under a folder (name, type, size, modification and change times).

    Re-reading a folder's manifests parses and validates every file; stat-ing them is a small
    part of that, so the store re-reads a folder only when this digest changed. Any edit, new,
    removed or renamed file or folder changes it (also through a symlink, which is followed);
    ``.git`` is skipped (a working copy read as a folder is read as it is on disk). None when an
    entry was modified less than RACY_SECONDS ago: the next read must not be skipped on its account.
    """
    digest = hashlib.blake2b(digest_size=16)
    newest = 0
    pending = [os.fspath(root)]
    while pending:
        folder = pending.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            digest.update(f"!{folder}:{exc.errno}\n".encode(errors="surrogateescape"))
            continue
        for entry in entries:
            if entry.name == ".git":
                continue
            try:
                info = entry.stat()
                is_dir = entry.is_dir()
            except OSError:  # a dangling symlink: its own entry still counts
                info, is_dir = entry.stat(follow_symlinks=False), False
            newest = max(newest, info.st_mtime_ns)
            digest.update(f"{entry.path}\0{is_dir}\0{info.st_size}\0{info.st_mtime_ns}\0{info.st_ctime_ns}\0"
                          f"{info.st_ino}\n".encode(errors="surrogateescape"))
            if is_dir and not entry.is_symlink():
                pending.append(entry.path)
    if time.time_ns() - newest < RACY_SECONDS * 1e9:
        return None
    return digest.digest()


class ManifestStore:
    """Loads the configured deployments repo, at its branch head or at a given commit sha."""

    # How often the configured ref is re-read: a local folder is cheap to re-read; a git source
    # means a fetch, so it is refreshed less often (and at once with ``refresh=True``).
    LOCAL_TTL = 2.0
    GIT_TTL = 60.0

    def __init__(self, source: str, ref: str | None, cache_dir: str | Path, token: str | None = None,
                 targets: tuple[str, ...] | None = None):
        self.source = source
        # The target names environment files may use (None: not checked).
        self.targets = targets
        self.ref = ref or None
        self.cache_dir = Path(cache_dir)
        # An https token for a private deployments repo; git gets it through its environment.
        self.credentials = GitCredentials(token) if token else None
        # _state guards the fields below for an instant; _reading is held through a whole read
        # (a git fetch may take minutes), so that only one read runs at a time.
        self._state = threading.Lock()
        self._reading = threading.Lock()
        self._current: DeploymentsRepo | None = None
        self._loaded_at = 0.0  # when the last read ended (served until it is older than the TTL)
        self._read_started = float("-inf")  # when the read that gave _current began
        self._fingerprint: bytes | None = None  # of the folder _current was read from (folders only)

    @classmethod
    def from_settings(cls, settings: Settings) -> ManifestStore:
        return cls(settings.deployments_repo, settings.deployments_ref,
                   Path(settings.instance_dir) / "deployments-cache", settings.deployments_token,
                   targets=settings.target_names)

    @property
    def is_git(self) -> bool:
        """True when the configured source is read through git (a URL, a bare repo, or a ref)."""
        return is_git_source(self.source, self.ref)

    def _has_commits(self) -> bool:
        # A working copy read as a folder still holds commits that at(sha) can read.
        return is_git_source(self.source, "HEAD")

    def current(self, refresh: bool = False) -> DeploymentsRepo:
        """The manifests at the configured ref (re-read when stale or when ``refresh``).

        One read runs at a time. While it runs, other callers get the last good read at once
        rather than waiting for the fetch; only the first read, and a caller asking for
        ``refresh``, wait (the latter for a read that began after it asked). If re-reading
        fails (the git host is down), the last good read is kept and served; with none,
        DeploymentsRepoError is raised (the API answers 503).
        """
        asked = time.monotonic()
        ttl = self.GIT_TTL if self.is_git else self.LOCAL_TTL
        with self._state:
            current, loaded_at = self._current, self._loaded_at
        if current is not None and not refresh:
            if asked - loaded_at < ttl:
                return current
            if not self._reading.acquire(blocking=False):
                return current  # someone is reading already: serve the last good read meanwhile
        else:
            self._reading.acquire()
        try:
            with self._state:
                current = self._current
                if current is not None and (
                    self._read_started >= asked if refresh else time.monotonic() - self._loaded_at < ttl
                ):
                    return current  # read by another caller while this one waited
            started = time.monotonic()
            fingerprint = None if self.is_git else folder_fingerprint(self.source)
            if current is not None and fingerprint is not None and fingerprint == self._fingerprint:
                repo = current  # nothing under the folder changed since the last read
            else:
                try:
                    repo = load_deployments_repo(self.source, ref=self.ref, cache_dir=self.cache_dir,
                                                 git_credentials=self.credentials, targets=self.targets)
                except DeploymentsRepoError as exc:
                    if current is None:
                        raise
                    log.warning("re-reading the deployments repo failed (%s); using the last good read", exc)
                    repo, fingerprint = current, self._fingerprint
            with self._state:
                self._current, self._loaded_at, self._read_started = repo, time.monotonic(), started
                self._fingerprint = fingerprint
            return repo
        finally:
            self._reading.release()

    def at(self, sha: str | None) -> DeploymentsRepo:
        """The manifests at commit ``sha``; the current ones when ``sha`` is None.

        Raises DeploymentsRepoError when the commit cannot be read, e.g. the source is a plain
        folder (which has no commits) or no longer holds it.
        """
        if not sha:
            return self.current()
        if not self._has_commits():
            raise DeploymentsRepoError(
                f"cannot read commit {sha} of the deployments repo: {self.source} is a plain folder without "
                "git history; deploy again to use the folder as it is now"
            )
        return load_deployments_repo(self.source, ref=sha, cache_dir=self.cache_dir,
                                     git_credentials=self.credentials, targets=self.targets)
