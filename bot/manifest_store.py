"""Where the web, services and workers get the deployments repo's manifests from."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from bot.config import Settings
from bot.manifests import DeploymentsRepo, DeploymentsRepoError, GitCredentials, load_deployments_repo

log = logging.getLogger(__name__)


class ManifestStore:
    """Loads the configured deployments repo, at its branch head or at a given commit sha."""

    # How often the configured ref is re-read: a local folder is cheap to re-read; a git source
    # means a fetch, so it is refreshed less often (and at once with ``refresh=True``).
    LOCAL_TTL = 2.0
    GIT_TTL = 60.0

    def __init__(self, source: str, ref: str | None, cache_dir: str | Path, token: str | None = None):
        self.source = source
        self.ref = ref or None
        self.cache_dir = Path(cache_dir)
        # An https token for a private deployments repo; git gets it through its environment.
        self.credentials = GitCredentials(token) if token else None
        self._lock = threading.Lock()
        self._current: DeploymentsRepo | None = None
        self._loaded_at = 0.0

    @classmethod
    def from_settings(cls, settings: Settings) -> ManifestStore:
        return cls(settings.deployments_repo, settings.deployments_ref,
                   Path(settings.instance_dir) / "deployments-cache", settings.deployments_token)

    @property
    def is_git(self) -> bool:
        return not Path(self.source).is_dir() or (Path(self.source) / "HEAD").is_file()

    def current(self, refresh: bool = False) -> DeploymentsRepo:
        """The manifests at the configured ref (re-read when stale or when ``refresh``).

        If re-reading fails (the git host is down), the last good read is kept and served;
        with none, DeploymentsRepoError is raised (the API answers 503).
        """
        with self._lock:
            ttl = self.GIT_TTL if self.is_git else self.LOCAL_TTL
            fresh = time.monotonic() - self._loaded_at < ttl
            if self._current is None or refresh or not fresh:
                try:
                    self._current = load_deployments_repo(self.source, ref=self.ref, cache_dir=self.cache_dir,
                                                          git_credentials=self.credentials)
                except DeploymentsRepoError as exc:
                    if self._current is None:
                        raise
                    log.warning("re-reading the deployments repo failed (%s); using the last good read", exc)
                self._loaded_at = time.monotonic()
            return self._current

    def at(self, sha: str | None) -> DeploymentsRepo:
        """The manifests at commit ``sha`` (the current ones for a plain folder or no sha)."""
        if not sha or not self.is_git:
            return self.current()
        return load_deployments_repo(self.source, ref=sha, cache_dir=self.cache_dir,
                                     git_credentials=self.credentials)
