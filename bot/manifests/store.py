"""Where the web, services and workers get the deployments repo's manifests from."""

from __future__ import annotations

import logging
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
            try:
                repo = load_deployments_repo(self.source, ref=self.ref, cache_dir=self.cache_dir,
                                             git_credentials=self.credentials, targets=self.targets)
            except DeploymentsRepoError as exc:
                if current is None:
                    raise
                log.warning("re-reading the deployments repo failed (%s); using the last good read", exc)
                repo = current
            with self._state:
                self._current, self._loaded_at, self._read_started = repo, time.monotonic(), started
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
