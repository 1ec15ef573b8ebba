"""Deployments repos from git: a bare mirror per source, one extracted tree per commit.

Layout of the cache folder::

    mirrors/<hash of source>.git    bare clone, fetched when a ref must be resolved
    mirrors/<hash of source>.lock   serialises fetches of that mirror across processes
    trees/<sha>/                    the commit's files (git archive | tar), never modified

git runs with argv lists only. An https token is handed to git through the environment
(``--config-env=http.extraHeader=<variable name>``), so it never appears in a URL, in argv,
in the mirror's config or in logs.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

GIT_TIMEOUT = 300
# prune_trees keeps trees used within this many seconds.
PRUNE_MIN_AGE = 15 * 60
_AUTH_ENV = "SAMI_GIT_HTTP_AUTH_HEADER"
_SHA_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_REF_RE = re.compile(r"[A-Za-z0-9._/+@-]+")
_SCP_RE = re.compile(r"^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:(?!//)")
_ALLOWED_PROTOCOLS = "file:git:http:https:ssh"


class DeploymentsRepoError(Exception):
    """The deployments repo could not be read at all (missing folder, clone or ref failed)."""


@dataclass(frozen=True)
class GitCredentials:
    """An https token for git; sent as HTTP basic auth (GitHub: x-access-token:<token>)."""

    token: str = field(repr=False)
    username: str = "x-access-token"

    def header(self) -> str:
        """The Authorization header value git sends."""
        raw = f"{self.username}:{self.token}".encode()
        return "Authorization: Basic " + base64.b64encode(raw).decode("ascii")


def is_git_url(source: str) -> bool:
    """True for URLs git understands as remote (https, http, ssh, git, file, user@host:path)."""
    return source.startswith(("https://", "http://", "ssh://", "git://", "file://")) or bool(_SCP_RE.match(source))


def describe_source(source: str) -> str:
    """The source as it may be logged: user and password removed from URLs."""
    if "://" not in source:
        return source
    parts = urlsplit(source)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return parts._replace(netloc=host).geturl()


# user[:password]@ in any URL git may print (clone, fetch and http errors quote the remote).
_USERINFO_RE = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s'\"]*@")


def _check_source(source: str, credentials: GitCredentials | None = None) -> None:
    if source.startswith("-"):
        raise DeploymentsRepoError(f"not a git source: {describe_source(source)!r}")
    if "://" in source and urlsplit(source).password is not None:
        raise DeploymentsRepoError(
            "the git URL contains a user name or token with a password; remove them from the URL "
            "and pass credentials with git_credentials instead"
        )
    if not source.lower().startswith(("http://", "https://")):
        return  # a user in ssh sources (git@host:path, ssh://git@host/...) is a login, not a secret
    parts = urlsplit(source)
    if "@" in parts.netloc:
        # Git would keep the URL, token included, in the mirror's config and print it in errors.
        raise DeploymentsRepoError(
            "the git URL contains a user name or token (user@host); remove it from the URL "
            "and pass credentials with git_credentials instead"
        )
    if credentials is not None and parts.scheme.lower() == "http":
        raise DeploymentsRepoError(
            f"refusing to send git credentials over plain http to {describe_source(source)}; use https"
        )


def _check_ref(ref: str) -> None:
    if not _REF_RE.fullmatch(ref) or ref.startswith("-") or ".." in ref:
        raise DeploymentsRepoError(f"not a valid git ref: {ref!r}")


class GitMirror:
    """A bare mirror of one git source inside a cache folder."""

    def __init__(self, source: str, cache_dir: Path, credentials: GitCredentials | str | None = None) -> None:
        if isinstance(credentials, str):
            credentials = GitCredentials(credentials)
        _check_source(source, credentials)
        self.source = source
        self.cache_dir = cache_dir
        self.credentials = credentials
        key = hashlib.sha256(source.encode()).hexdigest()[:24]
        self.path = cache_dir / "mirrors" / f"{key}.git"
        self.lock_path = cache_dir / "mirrors" / f"{key}.lock"

    # -- running git ------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "GIT_TERMINAL_PROMPT": "0",
                "GIT_ASKPASS": "",
                "SSH_ASKPASS": "",
                "GIT_ALLOW_PROTOCOL": _ALLOWED_PROTOCOLS,
                "LC_ALL": "C",
            }
        )
        env.pop(_AUTH_ENV, None)
        if self.credentials is not None:
            env[_AUTH_ENV] = self.credentials.header()
        return env

    def _argv(self, *args: str) -> list[str]:
        argv = ["git"]
        if self.credentials is not None:
            argv.append(f"--config-env=http.extraHeader={_AUTH_ENV}")
        return [*argv, *args]

    def git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run one git command against the mirror; raise DeploymentsRepoError on failure."""
        argv = self._argv("--git-dir", str(self.path), *args)
        return self._run(argv, check=check)

    def _run(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        try:
            result = subprocess.run(
                argv,
                env=self._env(),
                capture_output=True,
                text=True,
                timeout=GIT_TIMEOUT,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise DeploymentsRepoError(
                f"git {argv[1]} timed out after {GIT_TIMEOUT}s for {describe_source(self.source)}"
            ) from None
        if check and result.returncode != 0:
            raise DeploymentsRepoError(f"git failed for {describe_source(self.source)}: {self._scrub(result.stderr)}")
        return result

    def _scrub(self, text: str) -> str:
        """The last line of git's stderr, without credentials (token, auth header, URL userinfo)."""
        text = text.strip().splitlines()[-1] if text.strip() else "no output"
        if self.credentials is not None:
            encoded = self.credentials.header().rsplit(" ", 1)[-1]
            for secret in (encoded, self.credentials.token):
                if secret:
                    text = text.replace(secret, "***")
        return _USERINFO_RE.sub(r"\1***@", text)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the mirror's lock (between processes) for a clone or fetch."""
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # -- operations -------------------------------------------------------------------

    def ensure(self) -> bool:
        """Clone the mirror if missing; return True when a clone happened (already fresh)."""
        if (self.path / "HEAD").exists():
            return False
        with self.locked():
            if (self.path / "HEAD").exists():
                return False
            tmp = Path(tempfile.mkdtemp(prefix=".clone-", dir=self.path.parent))
            try:
                log.info("cloning deployments repo %s", describe_source(self.source))
                self._run(self._argv("clone", "--bare", "--quiet", "--", self.source, str(tmp / "m")))
                os.replace(tmp / "m", self.path)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return True

    def fetch(self) -> None:
        """Bring branches and tags up to date with the source."""
        with self.locked():
            self.git(
                "fetch",
                "--prune",
                "--quiet",
                "origin",
                "+refs/heads/*:refs/heads/*",
                "+refs/tags/*:refs/tags/*",
            )

    def has_commit(self, sha: str) -> bool:
        """True when the mirror holds this commit."""
        return self.git("cat-file", "-e", f"{sha}^{{commit}}", check=False).returncode == 0

    def _rev_parse(self, name: str) -> str | None:
        result = self.git("rev-parse", "--verify", "--quiet", f"{name}^{{commit}}", check=False)
        return result.stdout.strip() if result.returncode == 0 else None

    def resolve(self, ref: str | None) -> str:
        """Resolve a branch, tag or sha (None: the default branch) to a commit sha."""
        if ref is not None:
            _check_ref(ref)
        fresh = self.ensure()
        if ref is not None and _SHA_RE.fullmatch(ref) and self.has_commit(ref):
            return ref
        if not fresh:
            self.fetch()
        names = ["HEAD"] if ref is None else [f"refs/heads/{ref}", f"refs/tags/{ref}", ref]
        for name in names:
            sha = self._rev_parse(name)
            if sha:
                return sha
        if ref is not None and _SHA_RE.fullmatch(ref):
            # A commit no branch or tag reaches (e.g. a pull request head): ask for it.
            with self.locked():
                self.git("fetch", "--quiet", "origin", ref, check=False)
            if self.has_commit(ref):
                return ref
        raise DeploymentsRepoError(f"ref {ref or 'HEAD'!r} not found in {describe_source(self.source)}")

    def tree(self, sha: str) -> Path:
        """The folder holding the commit's files, extracting it once."""
        if not _SHA_RE.fullmatch(sha):
            raise DeploymentsRepoError(f"not a commit sha: {sha!r}")
        trees = self.cache_dir / "trees"
        final = trees / sha
        if touch_tree(final):
            return final
        trees.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{sha[:12]}-", dir=trees))
        archive: subprocess.Popen[bytes] | None = None
        try:
            archive = subprocess.Popen(
                self._argv("--git-dir", str(self.path), "archive", "--format=tar", sha),
                env=self._env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
            )
            if archive.stdout is None:  # pragma: no cover - stdout=PIPE always sets it
                raise DeploymentsRepoError("git archive produced no output")
            tar = subprocess.run(
                ["tar", "-x", "--no-same-owner", "--no-same-permissions", "-C", str(tmp), "-f", "-"],
                stdin=archive.stdout,
                capture_output=True,
                timeout=GIT_TIMEOUT,
                check=False,
            )
            archive.stdout.close()
            archive_err = archive.stderr.read().decode(errors="replace") if archive.stderr else ""
            if archive.wait(timeout=GIT_TIMEOUT) != 0 or tar.returncode != 0:
                detail = archive_err or tar.stderr.decode(errors="replace")
                raise DeploymentsRepoError(
                    f"could not extract {sha} of {describe_source(self.source)}: {self._scrub(detail)}"
                )
            try:
                os.rename(tmp, final)
            except OSError:
                if not final.is_dir():  # another process did not win the race: a real error
                    raise
            touch_tree(final)
        finally:
            if archive is not None and archive.stderr:
                archive.stderr.close()
            if archive is not None and archive.poll() is None:
                archive.kill()
                archive.wait()
            shutil.rmtree(tmp, ignore_errors=True)
        return final


def touch_tree(path: Path) -> bool:
    """Mark an extracted tree as just used (prune_trees keeps it for min_age); False if gone."""
    with _trees_lock(path.parent):
        if not path.is_dir():
            return False
        try:
            os.utime(path)
        except OSError:
            return False
        return True


@contextmanager
def _trees_lock(trees: Path) -> Iterator[None]:
    # Serialises "is the tree there, mark it used" against "is it old, take it away", between
    # threads (each holds its own open file) and processes.
    trees.mkdir(parents=True, exist_ok=True)
    with open(trees / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def prune_trees(
    cache_dir: str | os.PathLike[str],
    keep: int = 5,
    *,
    min_age: float = PRUNE_MIN_AGE,
    protect: Iterable[str] = (),
) -> list[str]:
    """Remove extracted trees, keeping the `keep` most recently used; return the removed shas.

    A tree's last use is its folder's mtime, set when it is extracted and every time it is
    loaded (GitMirror.tree, or an answer from the in-process memo). Also kept, whatever
    `keep` says: trees used less than `min_age` seconds ago and the shas in `protect`.
    A tree is first renamed away under the trees lock, then deleted, so a reader either
    marked it as used before (and it is kept) or finds it gone and extracts it again.
    """
    trees = Path(cache_dir) / "trees"
    if not trees.is_dir():
        return []
    protected = set(protect)
    removed = []
    with _trees_lock(trees):
        extracted = []
        for path in trees.iterdir():
            if path.is_dir() and not path.is_symlink() and _SHA_RE.fullmatch(path.name):
                try:
                    extracted.append((path.stat().st_mtime, path))
                except OSError:
                    continue
        extracted.sort(key=lambda item: item[0], reverse=True)
        now = time.time()
        doomed = []
        for mtime, path in extracted[max(keep, 0) :]:
            if path.name in protected or now - mtime < min_age:
                continue
            target = trees / f".pruned-{path.name}-{os.getpid()}-{threading.get_ident()}"
            try:
                os.rename(path, target)
            except OSError:
                continue
            doomed.append(target)
            removed.append(path.name)
        # Left behind by a pruning process that stopped before deleting them.
        doomed.extend(p for p in trees.glob(".pruned-*") if p not in doomed)
    for target in doomed:
        shutil.rmtree(target, ignore_errors=True)
    return removed
