"""Pushes to the deployments repo: which repository it is, and which deployments a push changes.

A push names its repository by URLs (clone, ssh, web); the configured deployments repo is a URL
or a local git repository (whose ``origin`` remote says where it comes from). Both are reduced
to ``host/owner/name`` to be compared. A deployment is changed by a push when the content of its
manifest's folder, or of its control_scripts folder, differs between the tree it was last
deployed with and the pushed one; a pinned one (a rollback pinned it) is left as it is and named
as refused.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.core.errors import SamiError
from bot.core.models import Deployment
from bot.core.states import DeploymentState
from bot.manifests import DeploymentsRepo, DeploymentsRepoError, Manifest, ManifestError
from bot.manifests.store import ManifestStore
from bot.services import deployments, pins

log = logging.getLogger(__name__)
S = DeploymentState

ZERO_SHA = "0" * 40
_SCP_RE = re.compile(r"^(?:[^@/]+@)?(?P<host>[^:/]+):(?P<path>(?!/).+)$")
_DEFAULT_PORTS = {"https": 443, "http": 80}


def repository_key(url: str) -> str | None:
    """``host/owner/name`` (lowercase, no ``.git``) for a git URL or web address; None for other text."""
    url = url.strip()
    if "://" in url:
        parts = urlsplit(url)
        if parts.scheme in ("file", "") or not parts.hostname:
            return None
        host = parts.hostname
        if parts.port and parts.scheme in _DEFAULT_PORTS and parts.port != _DEFAULT_PORTS[parts.scheme]:
            host += f":{parts.port}"
        path = parts.path
    else:
        match = _SCP_RE.match(url)
        if not match:
            return None
        host, path = match["host"], match["path"]
    path = path.strip("/").removesuffix(".git").strip("/")
    return f"{host}/{path}".lower() if path else None


def _origin_url(folder: str) -> str | None:
    """The ``origin`` remote of a local git repository (working copy or bare), if it has one."""
    if not os.path.isdir(folder):
        return None
    try:
        result = subprocess.run(["git", "-C", folder, "config", "--get", "remote.origin.url"],
                                capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None


def deployments_repo_key(source: str) -> str | None:
    """The ``host/owner/name`` of the configured deployments repo (a URL, or a clone of one)."""
    key = repository_key(source)
    if key is not None:
        return key
    folder = source.removeprefix("file://")
    origin = _origin_url(folder)
    return repository_key(origin) if origin else None


def is_deployments_repo(repository: Mapping[str, Any], source: str) -> bool:
    """Whether a webhook's ``repository`` object is the deployments repo Sami reads from ``source``."""
    wanted = deployments_repo_key(source)
    if wanted is None:
        return False
    for field in ("clone_url", "ssh_url", "html_url", "git_url", "url"):
        value = repository.get(field)
        if isinstance(value, str) and repository_key(value) == wanted:
            return True
    return False


def tracked_branch(deployments_ref: str, repository: Mapping[str, Any]) -> str | None:
    """The branch Sami follows: SAMI_DEPLOYMENTS_REF when it names one, else the default branch."""
    if deployments_ref:
        return deployments_ref.removeprefix("refs/heads/")
    return repository.get("default_branch") or repository.get("master_branch")


def folder_digest(repo: DeploymentsRepo, manifest: Manifest) -> str:
    """A digest of what a run of ``manifest`` gets from ``repo``: its folder and its control scripts."""
    digest = hashlib.sha256()
    for rel in (manifest.directory, manifest.control_scripts):
        if rel is None:
            continue
        digest.update(f"\0folder {rel}\0".encode())
        _digest_tree(digest, Path(repo.root), rel)
    return digest.hexdigest()


def _digest_tree(digest: Any, root: Path, rel: str) -> None:
    base = root / rel
    for folder, dirs, files in os.walk(base, followlinks=False):
        dirs.sort()
        for name in sorted(files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]):
            path = os.path.join(folder, name)
            inner = os.path.relpath(path, base)
            if os.path.islink(path):
                digest.update(f"\0link {inner} {os.readlink(path)}\0".encode())
                continue
            mode = os.stat(path).st_mode
            content = hashlib.sha256()
            with open(path, "rb") as handle:
                for chunk in iter(lambda h=handle: h.read(1 << 16), b""):
                    content.update(chunk)
            digest.update(f"\0file {inner} {'x' if mode & 0o111 else '-'} {content.hexdigest()}\0".encode())
        for name in dirs:
            if not os.path.islink(os.path.join(folder, name)):
                digest.update(f"\0dir {os.path.relpath(os.path.join(folder, name), base)}\0".encode())


@dataclass(frozen=True)
class PushResult:
    """What a push to the deployments repo did: the errors that stopped it, or the updates it asked."""

    sha: str
    errors: tuple[ManifestError, ...] = ()
    updated: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()  # "name: why"
    unchanged: int = 0
    without_manifest: tuple[str, ...] = ()
    # Deployments the push would have updated but a rollback pinned: "name: pinned by X at ... (why)".
    refused: tuple[str, ...] = ()


# Deployments a push may update: the live ones, and those a create or update is on its way to.
UPDATABLE = (S.RUNNING, S.FAILURE, S.CREATE_PENDING, S.UPDATE_PENDING)


def update_changed_deployments(session: Session, store: ManifestStore, before: str, after: str,
                               ctx: deployments.Context, *, requested_by: str, origin: str,
                               delivery_id: str | None = None) -> PushResult:
    """Read the manifests at ``after``; unless they have errors, update every deployment whose folder
    differs from the tree it was last deployed with (``before``'s when that tree is unknown).

    Comparing with each deployment's own tree makes a missed push harmless (the next one catches
    up) and a repeated one a no-op. Raises DeploymentsRepoError when ``after`` cannot be read.
    """
    repo = store.at(after)
    if repo.errors:
        return PushResult(after, errors=repo.errors)
    if store.is_git:
        try:
            store.current(refresh=True)  # requests from now on see the pushed manifests
        except DeploymentsRepoError as exc:
            log.warning("re-reading the deployments repo after a push failed: %s", exc)
    rows = session.execute(select(Deployment.name, Deployment.service, Deployment.environment,
                                  Deployment.manifest_sha, Deployment.pinned_by)
                           .where(Deployment.state.in_(UPDATABLE)).order_by(Deployment.name)).all()
    trees: dict[str, DeploymentsRepo | None] = {after: repo}

    def tree(sha: str | None) -> DeploymentsRepo | None:
        if not sha or sha == ZERO_SHA:
            return None
        if sha not in trees:
            try:
                trees[sha] = store.at(sha)
            except DeploymentsRepoError as exc:
                log.info("deployments repo commit %s cannot be read (%s); comparing with the push's", sha, exc)
                trees[sha] = None
        return trees[sha]

    updated, failed, missing, refused, unchanged = [], [], [], [], 0
    released_pins: dict[str, list[Deployment]] = {}
    for name, service, environment, manifest_sha, pinned_by in rows:
        manifest = repo.find(service, environment)
        if manifest is None:
            missing.append(name)
            continue
        if manifest_sha == after:
            unchanged += 1
            continue
        old_repo = tree(manifest_sha) or tree(before)
        old = old_repo.find(service, environment) if old_repo is not None else None
        if old is not None and old.directory == manifest.directory and \
                folder_digest(old_repo, old) == folder_digest(repo, manifest):
            unchanged += 1
            continue
        if pinned_by is not None:
            # A rollback pinned it: the push leaves it at the rolled-back version (the others move on).
            deployment = session.scalars(select(Deployment).where(Deployment.name == name)).one()
            refused.append(f"{name}: {pins.words(deployment)}, unpin with sami unpin {name}")
            continue
        if environment not in released_pins:
            released_pins[environment] = pins.release_pins(session, repo, environment)
        if released_pins[environment]:
            # A rollback of its environment's blue-green release pinned the environment: left as it is too.
            refused.append(f"{name}: environment {environment} is {pins.words(released_pins[environment][0])}, "
                           f"unpin with sami env unpin {pins.blue_green_of(repo, environment) or environment}")
            continue
        try:
            deployments.refresh_deployment(session, repo, name, ctx, requested_by=requested_by, origin=origin,
                                        delivery_id=delivery_id)
            updated.append(name)
        except SamiError as exc:  # e.g. the new manifest no longer allows its image
            session.rollback()
            failed.append(f"{name}: {exc}")
    return PushResult(after, updated=tuple(updated), failed=tuple(failed), unchanged=unchanged,
                      without_manifest=tuple(missing), refused=tuple(refused))
