"""The environments API: whole-environment operations, clones, snapshots and diffs under
``/api/v1/environments`` (and ``/api/v1/snapshots``). Deciding belongs to bot.services.environments
and bot.services.snapshots; this module checks tokens and shapes, and answers."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from bot.core.errors import Invalid, NotFound
from bot.services import environments, releases, snapshots
from bot.web import shared
from bot.web.api import check_query, requester, require, token_required
from bot.web.bodies import body_field, json_object
from bot.web.database import get_session

bp = Blueprint("environments_api", __name__)
bp.before_request(check_query)

# The scope each operation needs on every component of the environment.
SCOPES = {"deploy": "deploy", "archive": "archive", "restore": "restore", "cleanup": "cleanup"}


def _environment(name: str, scope: str = "read") -> environments.Environment:
    """The environment, after checking that the token may ``scope`` every one of its components."""
    env = environments.environment(get_session(), shared.manifests().current(), name)
    for component in env.components:
        require(scope, component.service, name)
    return env


@bp.get("/api/v1/environments")
@token_required
def list_environments():
    """The environments of the deployments repo and those Sami cloned, with their components."""
    require("read")
    session = get_session()
    repo = shared.manifests().current()
    names = sorted({m.environment for m in repo.manifests if m.environment != "pull_request"} | set(repo.topologies)
                   | set(environments.cloned_names(session)))
    found = []
    for name in names:
        try:
            env = environments.environment(session, repo, name)
        except (Invalid, NotFound) as exc:
            found.append({"name": name, "template": None, "components": [], "problem": str(exc)})
            continue
        found.append({"name": name, "template": env.template,
                      "components": [c.service for c in env.components], "problem": None})
    return jsonify(environments=found)


@bp.get("/api/v1/environments/<name>")
@token_required
def show_environment(name: str):
    """Its components in deploy order with state, version and endpoint, and its last run."""
    _environment(name)
    return jsonify(environments.status(get_session(), shared.manifests().current(), name))


@bp.post("/api/v1/environments/<name>/<any(deploy, archive, restore, cleanup):operation>")
@token_required
def operate(name: str, operation: str):
    """Start a whole-environment run: 202 with the run (its first components are queued)."""
    body = json_object() if request.content_length else {}
    known = {"deploy": {"versions", "snapshot", "force"}, "cleanup": {"delete_data"}}.get(operation, set())
    unknown = sorted(set(body) - known)
    if unknown:
        raise Invalid(f"unknown field(s) {', '.join(unknown)} (known: {', '.join(sorted(known)) or 'none'})")
    versions = body_field(body, "versions", dict) or {}
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in versions.items()):
        raise Invalid("'versions' must be an object of SERVICE: tag (or image)")
    snapshot = body_field(body, "snapshot", str)
    delete_data = bool(body_field(body, "delete_data", bool))
    force = bool(body_field(body, "force", bool))
    if snapshot and versions:
        raise Invalid("give 'versions' or 'snapshot', not both")
    _environment(name, SCOPES[operation])
    session, repo = get_session(), shared.manifests().current()
    who = dict(requested_by=requester(), origin="api")
    if snapshot:
        run = snapshots.deploy(session, repo, name, snapshot, shared.services_context(), force=force, **who)
    else:
        run = environments.start_run(session, repo, name, operation, shared.services_context(),
                                     versions=versions, delete_data=delete_data, force=force, **who)
    return jsonify(environments.run_view(run)), 202


@bp.post("/api/v1/environments/<name>/unpin")
@token_required
def unpin(name: str):
    """Unpin every pinned component (a snapshot deploy pinned them): 200 with the deployments unpinned."""
    _environment(name, "deploy")
    unpinned = environments.unpin(get_session(), shared.manifests().current(), name, requested_by=requester())
    return jsonify(environment=name, unpinned=unpinned)


@bp.post("/api/v1/environments/<name>/clone")
@token_required
def clone(name: str):
    """Clone the environment as a whole under a new name: 202 with the run and what each component's data is."""
    body = json_object()
    unknown = sorted(set(body) - {"name"})
    if unknown:
        raise Invalid(f"unknown field(s) {', '.join(unknown)} (known: name)")
    new_name = body_field(body, "name", str, required=True)
    env = _environment(name)
    for component in env.components:
        require("deploy", component.service, new_name)
    cloned = environments.clone(get_session(), shared.manifests().current(), name, new_name,
                                shared.services_context(), requested_by=requester(), origin="api")
    return jsonify(environment=cloned.environment, data=cloned.data, run=environments.run_view(cloned.run)), 202


@bp.get("/api/v1/environments/<name>/runs/<int:run_id>")
@token_required
def show_run(name: str, run_id: int):
    """One run of the environment, component by component."""
    _environment(name)
    run = environments.get_run(get_session(), run_id)
    if run.environment != name:
        raise NotFound(f"no run {run_id} of environment {name!r}")
    return jsonify(environments.run_view(run))


@bp.get("/api/v1/environments/<name>/diff")
@token_required
def diff(name: str):
    """What differs between this environment and ``?with=`` (another environment, or snapshot:NAME)."""
    other = request.args.get("with")
    if not other:
        raise Invalid("give the other side: ?with=ENVIRONMENT or ?with=snapshot:NAME")
    session, repo = get_session(), shared.manifests().current()
    # The left side is always an environment (the route's); the right may be a snapshot.
    for which in (name, *(() if other.startswith(snapshots.SNAPSHOT_PREFIX) else (other,))):
        for component in snapshots.environment_side(session, repo, which).components:
            require("read", component.service, which)
    if other.startswith(snapshots.SNAPSHOT_PREFIX):
        snapshot = snapshots.get(session, other[len(snapshots.SNAPSHOT_PREFIX):])
        for component in snapshot.components:
            require("read", component["service"], snapshot.environment)
    return jsonify(snapshots.diff(session, repo, name, other))


@bp.get("/api/v1/environments/<name>/snapshots")
@token_required
def list_snapshots(name: str):
    """The environment's snapshots, newest first."""
    _environment(name)
    return jsonify(snapshots=[snapshots.view(s) for s in snapshots.listing(get_session(), name)])


@bp.post("/api/v1/environments/<name>/snapshots")
@token_required
def create_snapshot(name: str):
    """Record every component's version, overrides (secret names only) and deploy order as a snapshot."""
    body = json_object() if request.content_length else {}
    unknown = sorted(set(body) - {"name"})
    if unknown:
        raise Invalid(f"unknown field(s) {', '.join(unknown)} (known: name)")
    _environment(name, "deploy")
    snapshot = snapshots.create(get_session(), shared.manifests().current(), name, name=body_field(body, "name", str),
                                created_by=requester())
    return jsonify(snapshots.view(snapshot)), 201


def _snapshot(snapshot_name: str):
    snapshot = snapshots.get(get_session(), snapshot_name)
    for component in snapshot.components:
        require("read", component["service"], snapshot.environment)
    return snapshot


@bp.get("/api/v1/snapshots/<snapshot_name>")
@token_required
def show_snapshot(snapshot_name: str):
    return jsonify(snapshots.view(_snapshot(snapshot_name)))


@bp.get("/api/v1/snapshots/<snapshot_name>/export")
@token_required
def export_snapshot(snapshot_name: str):
    """The snapshot as YAML."""
    return Response(snapshots.export_yaml(_snapshot(snapshot_name)), mimetype="application/yaml")


# --- blue-green releases (bot.services.releases decides) -------------------------------------------

@bp.get("/api/v1/environments/<name>/releases")
@token_required
def list_releases(name: str):
    """Live and idle colour, what awaits release and who may release it, and the releases, newest first."""
    _environment(name)
    session, repo = get_session(), shared.manifests().current()
    found = releases.status(session, repo, name, shared.services_context())
    found["releases"] = releases.history_view(session, name)
    return jsonify(found)


@bp.post("/api/v1/environments/<name>/release")
@token_required
def release(name: str):
    """Deploy a release into the idle colour for QA (``snapshot`` or ``versions``; neither: what the live
    colour runs): 202 with the release, which awaits release once its run has succeeded."""
    body = json_object() if request.content_length else {}
    unknown = sorted(set(body) - {"versions", "snapshot"})
    if unknown:
        raise Invalid(f"unknown field(s) {', '.join(unknown)} (known: snapshot, versions)")
    versions = body_field(body, "versions", dict) or {}
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in versions.items()):
        raise Invalid("'versions' must be an object of SERVICE: tag (or image)")
    _environment(name, "deploy")
    found = releases.prepare(get_session(), shared.manifests().current(), name, shared.services_context(),
                             versions=versions, snapshot=body_field(body, "snapshot", str),
                             requested_by=requester(), origin="api")
    return jsonify(releases.view(found)), 202


@bp.post("/api/v1/environments/<name>/release/switch")
@token_required
def switch(name: str):
    """Switch the entry to the colour awaiting release (release_approvers only): 202 with the release,
    live once the entry's switch script has run."""
    _environment(name, "deploy")
    found = releases.switch(get_session(), shared.manifests().current(), name, shared.services_context(),
                            requested_by=requester(), origin="api")
    return jsonify(releases.view(found)), 202


@bp.post("/api/v1/environments/<name>/rollback")
@token_required
def rollback(name: str):
    """Switch the entry back to the previous colour at once (release_approvers only): 202 with the rollback."""
    _environment(name, "deploy")
    found = releases.rollback(get_session(), shared.manifests().current(), name, shared.services_context(),
                              requested_by=requester(), origin="api")
    return jsonify(releases.view(found)), 202


@bp.get("/api/v1/environments/<name>/releases/<int:release_id>")
@token_required
def show_release(name: str, release_id: int):
    _environment(name)
    session = get_session()
    found = releases.get(session, release_id)
    if found.environment != name:
        raise NotFound(f"no release {release_id} of environment {name!r}")
    return jsonify(releases.shown(session, found))
