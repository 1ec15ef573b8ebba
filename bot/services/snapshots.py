"""Snapshots of environments (templates): every component's image and tag, its own overrides (secret
names, never values), the deploy order and the deployments-repo commit; and the diff of two
environments or snapshots."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime

import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.core.errors import Conflict, Invalid, NotFound
from bot.core.models import EnvironmentSnapshot
from bot.manifests import DeploymentsRepo
from bot.services import environments

SNAPSHOT_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}\Z")
SNAPSHOT_PREFIX = "snapshot:"
COMPARED = ("tag", "image", "app_overrides", "deployment_overrides", "secrets")


def check_name(name: str) -> str:
    if not isinstance(name, str) or not SNAPSHOT_NAME_RE.match(name):
        raise Invalid(f"{name!r} is not a snapshot name (lowercase letters, digits, '.', '_' and '-', starting "
                      f"with a letter or digit, at most 100 characters)")
    return name


def create(session: Session, repo: DeploymentsRepo, environment: str, *, name: str | None = None,
           created_by: str) -> EnvironmentSnapshot:
    """Record what every component of ``environment`` runs now, and commit."""
    env = environments.environment(session, repo, environment)
    running = environments.versions_of(session, env)
    missing = [c.service for c in env.components if c.service not in running]
    if missing:
        raise Invalid(f"cannot snapshot {environment!r}: {', '.join(missing)} not deployed there")
    now = datetime.now(UTC)
    name = check_name(name or f"{environment}-{now:%Y%m%d-%H%M%S}")
    if session.scalars(select(EnvironmentSnapshot.id).where(EnvironmentSnapshot.name == name)).first() is not None:
        raise Conflict(f"snapshot {name!r} exists already; choose another name")
    components = []
    for component in env.components:
        entry = dict(running[component.service])
        entry.pop("state", None)
        components.append(entry)
    snapshot = EnvironmentSnapshot(name=name, environment=environment, manifest_sha=repo.sha,
                                   components=components, created_by=created_by[:255], created_at=now)
    session.add(snapshot)
    session.commit()
    return snapshot


def get(session: Session, name: str) -> EnvironmentSnapshot:
    snapshot = session.scalars(select(EnvironmentSnapshot).where(EnvironmentSnapshot.name == name)).first()
    if snapshot is None:
        raise NotFound(f"no snapshot named {name!r} (list them: sami env snapshot --list)")
    return snapshot


def listing(session: Session, environment: str | None = None) -> list[EnvironmentSnapshot]:
    query = select(EnvironmentSnapshot).order_by(EnvironmentSnapshot.id.desc())
    if environment:
        query = query.where(EnvironmentSnapshot.environment == environment)
    return list(session.scalars(query.limit(500)))


def view(snapshot: EnvironmentSnapshot) -> dict:
    return {"name": snapshot.name, "environment": snapshot.environment, "manifest_sha": snapshot.manifest_sha,
            "created_by": snapshot.created_by,
            "created_at": None if snapshot.created_at is None else snapshot.created_at.isoformat(),
            "components": [dict(c) for c in snapshot.components]}


def export_yaml(snapshot: EnvironmentSnapshot) -> str:
    """The snapshot as a YAML document (secret names only: no values are ever recorded)."""
    return yaml.safe_dump({"snapshot": view(snapshot)}, sort_keys=False)


def deploy(session: Session, repo: DeploymentsRepo, environment: str, name: str, ctx, *, requested_by: str,
           origin: str, force: bool = False):
    """Deploy exactly snapshot ``name`` to ``environment``: each component's version and overrides (``force``:
    internal third-party services may shrink). It is the environment's rollback: every component is pinned
    there (see bot.services.pins)."""
    snapshot = get(session, name)
    by_service = {c["service"]: c for c in snapshot.components}
    return environments.start_run(session, repo, environment, "deploy", ctx, requested_by=requested_by,
                                  origin=origin, snapshot=by_service, snapshot_id=snapshot.id, force=force,
                                  pin_reason=f"environment {environment} rolled back to snapshot {name}")


def side(session: Session, repo: DeploymentsRepo, which: str) -> tuple[str, dict[str, dict]]:
    """One side of a diff: ``snapshot:NAME`` or an environment's name, as its components by service."""
    if which.startswith(SNAPSHOT_PREFIX):
        snapshot = get(session, which[len(SNAPSHOT_PREFIX):])
        return which, {c["service"]: c for c in snapshot.components}
    return which, environments.versions_of(session, environment_side(session, repo, which))


def environment_side(session: Session, repo: DeploymentsRepo, name: str) -> environments.Environment:
    """The environment a diff names; when there is none but a snapshot has that name, the answer says
    how to name the snapshot."""
    try:
        return environments.environment(session, repo, name)
    except NotFound as exc:
        if session.scalars(select(EnvironmentSnapshot.id).where(EnvironmentSnapshot.name == name)).first():
            raise NotFound(f"{exc.message}; for the snapshot named {name!r}, give {SNAPSHOT_PREFIX}{name}") from None
        raise


def diff(session: Session, repo: DeploymentsRepo, left: str, right: str) -> dict:
    """Versions and overrides that differ between two environments or snapshots, and the components
    only one side has. Secrets appear by name only."""
    left_name, a = side(session, repo, left)
    right_name, b = side(session, repo, right)
    changed = []
    for service in sorted(set(a) & set(b)):
        fields = {}
        for key in COMPARED:
            x, y = _compared(a[service], key), _compared(b[service], key)
            if x != y:
                fields[key] = {"left": x, "right": y}
        if fields:
            changed.append({"service": service, "changes": fields})
    return {"left": left_name, "right": right_name, "only_left": sorted(set(a) - set(b)),
            "only_right": sorted(set(b) - set(a)), "changed": changed,
            "same": sorted(s for s in set(a) & set(b) if s not in {c["service"] for c in changed})}


def _compared(component: Mapping, key: str):
    value = component.get(key)
    if isinstance(value, dict):
        return dict(sorted(value.items()))
    if isinstance(value, list):
        return sorted(value)
    return value
