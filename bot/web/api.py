"""The HTTP API: CI's ``/deployment_request`` and ``/api/v1`` for the CLI and the page.

The web layer verifies, validates and answers; deciding and queueing belong to bot.services.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Mapping

from flask import Blueprint, current_app, g, jsonify, request
from sqlalchemy import select
from sqlalchemy.orm import selectinload, undefer

from bot import outbox
from bot.core import naming
from bot.core.errors import Invalid
from bot.core.models import Action, ActionStep, Deployment, OutboxRow
from bot.services import actions, deployments, drift, history, pins, queries
from bot.services.tokens import Scopes, TokenError, authenticate
from bot.web import openapi, shared
from bot.web.bodies import body_field, json_object
from bot.web.database import get_session
from bot.web.errors import Forbidden, Unauthorized

log = logging.getLogger(__name__)
bp = Blueprint("api", __name__)
SHA_RE = re.compile(r"^[0-9a-f]{7,64}\Z")
REPOSITORY_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}\Z")


# Control characters (NUL above all: PostgreSQL refuses it in text) have no place in a query value.
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


@bp.before_request
def check_query():
    """400 for a query parameter the OpenAPI document does not declare for this operation (a typo
    such as ?servce= would otherwise be ignored silently), or a value its schema there refuses."""
    if request.url_rule is None:
        return
    declared = openapi.query_parameters(request.method, openapi.path_of(request.url_rule.rule, request.view_args))
    if declared is None:
        return
    unknown = sorted(set(request.args) - set(declared))
    if unknown:
        known = f"known: {', '.join(sorted(declared))}" if declared else "it takes none"
        raise Invalid(f"unknown query parameter(s) {', '.join(map(repr, unknown))} ({known})")
    for name, values in request.args.lists():
        if any(CONTROL_RE.search(value) for value in values):
            raise Invalid(f"query parameter {name!r} contains control characters")
        problem = openapi.query_problem(name, declared[name], values)
        if problem:
            raise Invalid(problem)


def token_required(view):
    """Authenticate the bearer token into ``g.token`` (401 without a valid one)."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value:
            raise Unauthorized("missing token: send 'Authorization: Bearer <token>' (create one with "
                               "sami token create)")
        session = get_session()
        try:
            g.token = authenticate(session, value.strip())
        except TokenError as exc:
            raise Unauthorized(str(exc)) from None
        # last_used_at moves on at most once a minute (bot.services.tokens): only then is there
        # something to commit, kept even if the request then fails; otherwise the request goes on in
        # the transaction its token was read in, without a commit of nothing on the way.
        if session.dirty:
            session.commit()
        return view(*args, **kwargs)

    return wrapper


def require(action: str, service: str | None = None, environment: str | None = None) -> None:
    """403 unless the request's token may do ``action`` on ``service`` in ``environment``."""
    scopes = Scopes.from_dict(g.token.scopes)
    if not scopes.allows(action, service, environment):
        where = f" on {service or '*'}/{environment or '*'}" if service or environment else ""
        raise Forbidden(f"token {g.token.name!r} may not {action}{where} (its scopes: {scopes.describe()})")


def _scopes() -> Scopes:
    return Scopes.from_dict(g.token.scopes)


def _knows(acting: str | None = None):
    """Whether the request's token may know of a deployment of (service, environment): it may read
    it, or do ``acting`` to it (a deploy-only token may cancel its updates). What it may not know of
    is answered as if it did not exist, so that no answer confirms a deployment out of its scope."""
    scopes = _scopes()
    return lambda service, environment: (scopes.allows("read", service, environment)
                                         or (acting is not None and scopes.allows(acting, service, environment)))


def _deployment(session, name: str, acting: str | None = None) -> Deployment:
    """The deployment ``name``, or 404 as for a missing one when the token may not know of it."""
    deployment = deployments.get_deployment(session, name)
    if not _knows(acting)(deployment.service, deployment.environment):
        raise deployments.unknown_deployment(name)
    return deployment


def _action(session, action_id: int, acting=None, options=()) -> Action:
    """The action ``action_id``, or 404 as for a missing one when the token may not know of its
    deployment. ``acting`` is the scope the request needs, or a function of the action giving it."""
    action = session.get(Action, action_id, options=list(options))
    if action is not None:
        scope = acting(action) if callable(acting) else acting
        if _knows(scope)(action.deployment.service, action.deployment.environment):
            return action
    raise deployments.unknown_action(action_id)


def requester() -> str:
    return f"token:{g.token.name}"


def _status_url(action_id: int) -> str:
    return f"{current_app.config['SAMI'].public_url.rstrip('/')}/api/v1/actions/{action_id}"


def _accepted(result: deployments.Accepted):
    extra = {"rollback_to": result.rollback_to} if result.rollback_to is not None else {}
    return jsonify(deployment=result.deployment, action_id=result.action_id, kind=result.kind,
                   state=result.state, status_url=_status_url(result.action_id), **extra), 202


def deployment_request_from_body(body: Mapping, requested_by: str, origin: str) -> deployments.DeploymentRequest:
    """Validate a request body's shape into a DeploymentRequest (meaning is checked by services)."""
    known = {"service", "environment", "tag", "image", "ref", "sha", "pull_request", "overrides", "repository",
             "unpin", "force"}
    unknown = sorted(set(body) - known)
    if unknown:
        raise Invalid(f"unknown field(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    overrides = body_field(body, "overrides", dict) or {}
    unknown = sorted(set(overrides) - {"app", "deployment"})
    if unknown:
        raise Invalid("'overrides' takes 'app' and 'deployment' objects")
    app_overrides = overrides.get("app") or {}
    deployment_overrides = overrides.get("deployment") or {}
    if not isinstance(app_overrides, dict) or not isinstance(deployment_overrides, dict):
        raise Invalid("'overrides.app' and 'overrides.deployment' must be objects of KEY: value")
    sha = body_field(body, "sha", str)
    if sha is not None and not SHA_RE.match(sha):
        raise Invalid("'sha' must be a commit sha (7 to 64 hex digits)")
    ref = body_field(body, "ref", str)
    if ref is not None:
        try:
            naming.check_ref(ref)
        except naming.InvalidName as exc:
            raise Invalid(str(exc)) from None
    pull_request = body.get("pull_request")
    if pull_request is not None and (not isinstance(pull_request, int) or isinstance(pull_request, bool)
                                     or not 1 <= pull_request <= deployments.MAX_PULL_REQUEST):
        raise Invalid(f"'pull_request' must be a whole number from 1 to {deployments.MAX_PULL_REQUEST}")
    repository = body_field(body, "repository", str)
    if repository is not None and not REPOSITORY_RE.match(repository):
        raise Invalid("'repository' must be owner/name")
    return deployments.DeploymentRequest(
        service=body_field(body, "service", str, required=True),
        environment=body_field(body, "environment", str, required=True),
        tag=body_field(body, "tag", str), image=body_field(body, "image", str),
        ref=ref, sha=sha, pull_request=pull_request, source_repo=repository,
        app_overrides=app_overrides, deployment_overrides=deployment_overrides,
        unpin=bool(body_field(body, "unpin", bool)), force=bool(body_field(body, "force", bool)),
        requested_by=requested_by, origin=origin)


@bp.post("/deployment_request")
@bp.post("/api/v1/deployments")
@token_required
def deployment_request():
    """Create or update a deployment: 202 with the action that will do it."""
    body = json_object()
    req = deployment_request_from_body(body, requester(), "api")
    require("deploy", req.service, req.environment)
    result = deployments.request_deployment(get_session(), shared.manifests().current(), req,
                                         shared.services_context(_knows("deploy")))
    return _accepted(result)


OPERATIONS = {"archive": deployments.archive_deployment, "restore": deployments.restore_deployment,
              "cleanup": deployments.cleanup_deployment}


@bp.post("/api/v1/deployments/<name>/<any(archive, restore, cleanup):kind>")
@token_required
def operation(name: str, kind: str):
    """Archive a live deployment (scale to zero, keep its data), restore an archived one, or
    clean up an archived one (remove it and what it owns)."""
    session = get_session()
    deployment = _deployment(session, name, kind)
    require(kind, deployment.service, deployment.environment)
    result = OPERATIONS[kind](session, shared.manifests().current(), name, shared.services_context(),
                              requested_by=requester(), origin="api")
    return _accepted(result)


@bp.get("/api/v1/deployments/<name>/rollback")
@token_required
def rollback_target(name: str):
    """Where a rollback would go now (``action_id``, or the previous good config); nothing changes."""
    raw = request.args.get("action_id")
    if raw is not None and not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= 2**63 - 1):
        raise Invalid(f"'action_id' must be an action's number, got {raw!r}")
    session = get_session()
    _deployment(session, name)
    target = history.rollback_target(session, name, int(raw) if raw is not None else None)
    return jsonify(deployment=name, **target.as_dict())


@bp.post("/api/v1/deployments/<name>/rollback")
@token_required
def rollback(name: str):
    """Update a deployment back to an earlier succeeded config (``action_id``, or the previous good one)."""
    body = json_object() if request.content_length else {}
    unknown = sorted(set(body) - {"action_id"})
    if unknown:
        raise Invalid(f"unknown field(s) {', '.join(unknown)} (known: action_id)")
    to_action_id = body_field(body, "action_id", int)
    session = get_session()
    deployment = _deployment(session, name, "deploy")
    require("deploy", deployment.service, deployment.environment)
    result = history.rollback_deployment(session, shared.manifests().current(), name, shared.services_context(),
                                          to_action_id=to_action_id, requested_by=requester(), origin="api")
    return _accepted(result)


@bp.post("/api/v1/deployments/<name>/reconcile")
@token_required
def reconcile(name: str):
    """Put back what Sami deployed (the last succeeded config) on a deployment whose target drifted."""
    session = get_session()
    deployment = _deployment(session, name, "deploy")
    require("deploy", deployment.service, deployment.environment)
    result = history.reconcile_deployment(session, shared.manifests().current(), name, shared.services_context(),
                                          requested_by=requester(), origin="api")
    return _accepted(result)


@bp.post("/api/v1/deployments/<name>/unpin")
@token_required
def unpin(name: str):
    """Clear the pin a rollback put on a deployment: CI requests and pushes change it again."""
    session = get_session()
    deployment = _deployment(session, name, "deploy")
    require("deploy", deployment.service, deployment.environment)
    deployment = pins.unpin(session, name, requested_by=requester())
    deploy = queries.last_deploys(session, [deployment.id]).get(deployment.id)
    return jsonify(deployment_to_dict(deployment, deploy))


@bp.post("/api/v1/deployments/<name>/clone")
@token_required
def clone(name: str):
    """A new deployment with this one's service, tag/image and overrides, in another environment or name."""
    body = json_object()
    unknown = sorted(set(body) - {"environment", "name"})
    if unknown:
        raise Invalid(f"unknown field(s) {', '.join(unknown)} (known: environment, name)")
    environment, new_name = body_field(body, "environment", str), body_field(body, "name", str)
    session = get_session()
    source = _deployment(session, name)  # the clone copies its config: read on the source
    require("deploy", source.service, environment or source.environment)
    result = history.clone_deployment(session, shared.manifests().current(), name,
                                          shared.services_context(_knows("deploy")),
                                       environment=environment, new_name=new_name, requested_by=requester(),
                                       origin="api")
    return _accepted(result)


ACTIONS_PAGE = 50
# The scope that cancelling an action of each kind needs: the one that asks for it.
CANCEL_SCOPE = {"create": "deploy", "update": "deploy", "archive": "archive", "restore": "restore",
                "cleanup": "cleanup"}


@bp.post("/api/v1/actions/<int:action_id>/cancel")
@token_required
def cancel(action_id: int):
    """Cancel a queued action, or stop a running one's script (it ends cancelled within seconds)."""
    session = get_session()
    action = _action(session, action_id, lambda a: CANCEL_SCOPE.get(a.kind, "admin"))
    require(CANCEL_SCOPE.get(action.kind, "admin"), action.deployment.service, action.deployment.environment)
    action = actions.cancel_action(session, action_id, shared.services_context(), requested_by=requester(),
                                    origin="api")
    return jsonify(action_to_dict(action))


@bp.get("/api/v1/deployments/<name>/actions")
@token_required
def list_actions(name: str):
    """A deployment's actions, newest first, a page at a time (``limit``, ``cursor``)."""
    session = get_session()
    deployment = _deployment(session, name)
    limit = int(request.args.get("limit", ACTIONS_PAGE))
    query = select(Action).where(Action.deployment_id == deployment.id)
    if request.args.get("cursor"):
        query = query.where(Action.id < int(request.args["cursor"]))
    rows = session.scalars(query.options(selectinload(Action.steps))
                           .order_by(Action.id.desc()).limit(limit + 1)).all()
    next_cursor = str(rows[limit - 1].id) if len(rows) > limit else None
    return jsonify(actions=[action_to_dict(a) for a in rows[:limit]], next_cursor=next_cursor)




@bp.delete("/api/v1/deployments/<name>")
@token_required
def delete(name: str):
    """Forget a deployment whose cleanup failed (admin)."""
    require("admin")
    deployments.delete_deployment(get_session(), name, requested_by=requester(), origin="api")
    return jsonify(deleted=name)


def _iso(value):
    return value.isoformat() if value else None


def deployment_to_dict(deployment: Deployment, last_deploy: queries.LastDeploy | None = None) -> dict:
    return {
        "name": deployment.name, "service": deployment.service, "environment": deployment.environment,
        "type": deployment.type, "state": str(deployment.state),
        "failure_reason": str(deployment.failure_reason) if deployment.failure_reason else None,
        "status_message": deployment.status_message, "tag": deployment.tag, "image": deployment.image,
        "overrides": {"app": deployment.app_overrides, "deployment": deployment.deployment_overrides},
        "links": deployment.links, "source": {"repository": deployment.source_repo,
                                              "pull_request": deployment.pull_request,
                                              "ref": deployment.ref, "sha": deployment.sha},
        "created_at": _iso(deployment.created_at), "updated_at": _iso(deployment.updated_at),
        "status_changed_at": _iso(deployment.status_changed_at), "checked_at": _iso(deployment.checked_at),
        "archived_at": _iso(deployment.archived_at), "drift": drift.drift_view(deployment),
        "last_deploy": last_deploy.as_dict() if last_deploy else None, "pin": pins.view(deployment),
    }


def step_to_dict(step: ActionStep) -> dict:
    return {"operation": step.operation, "started_at": _iso(step.started_at), "finished_at": _iso(step.finished_at),
            "exit_code": step.exit_code, "timed_out": step.timed_out, "duration_seconds": step.duration_seconds,
            "attempts": step.attempts}


def action_to_dict(action: Action, with_log: bool = False) -> dict:
    data = {
        "id": action.id, "deployment": action.deployment.name, "kind": action.kind, "state": str(action.state),
        "requested_by": action.requested_by, "origin": action.origin, "delivery_id": action.delivery_id,
        "config": action.config, "exit_code": action.exit_code, "error": action.error,
        "created_at": _iso(action.created_at), "started_at": _iso(action.started_at),
        "finished_at": _iso(action.finished_at), "duration_ms": action.duration_ms,
        "cancel_requested_at": _iso(action.cancel_requested_at), "cancel_requested_by": action.cancel_requested_by,
        "steps": [step_to_dict(step) for step in action.steps],
    }
    if with_log:
        data["log"] = action.log
        data["log_truncated"] = action.log_truncated
    return data


@bp.get("/api/v1/deployments")
@token_required
def list_deployments():
    """Deployments the token may read, filtered, sorted and paged (see bot.services.queries)."""
    require("read")
    flt = queries.DeploymentFilter.from_args(request.args)
    page = queries.list_deployments(get_session(), flt, Scopes.from_dict(g.token.scopes))
    deploys = queries.last_deploys(get_session(), [d.id for d in page.rows])
    return jsonify(deployments=[deployment_to_dict(d, deploys.get(d.id)) for d in page.rows],
                   next_cursor=page.next_cursor)


def delivery_to_dict(delivery) -> dict:
    return {"id": delivery.id, "delivery_id": delivery.delivery_id, "event": delivery.event,
            "action": delivery.action, "repository": delivery.repository, "sender": delivery.sender,
            "status": str(delivery.status), "outcome": delivery.outcome, "attempts": delivery.attempts,
            "received_at": _iso(delivery.received_at), "processed_at": _iso(delivery.processed_at)}


@bp.get("/api/v1/deliveries")
@token_required
def list_deliveries():
    """Recent GitHub deliveries and what each caused (tokens that read every service, or admin)."""
    if not queries.may_read_deliveries(Scopes.from_dict(g.token.scopes)):
        raise Forbidden(f"token {g.token.name!r} may not read deliveries: they span every service; it needs "
                        "read on all services and environments, or admin")
    page = queries.list_deliveries(get_session(), request.args)
    return jsonify(deliveries=[delivery_to_dict(d) for d in page.rows], next_cursor=page.next_cursor)


@bp.get("/api/v1/deployments/<name>")
@token_required
def show_deployment(name: str):
    """One deployment with its latest actions, and what it was asked for, deployed and runs."""
    session = get_session()
    deployment = _deployment(session, name)
    actions = session.scalars(select(Action).where(Action.deployment_id == deployment.id)
                              .options(selectinload(Action.steps)).order_by(Action.id.desc()).limit(50)).all()
    views = drift.config_views(session, deployment, shared.secret_names(deployment))
    deploy = queries.last_deploys(session, [deployment.id]).get(deployment.id)
    return jsonify(deployment=deployment_to_dict(deployment, deploy), requested=views["requested"],
                   deployed=views["deployed"], running=views["running"],
                   actions=[action_to_dict(a) for a in actions])


@bp.get("/api/v1/actions/<int:action_id>")
@token_required
def show_action(action_id: int):
    """An action's state; its log only for admin tokens."""
    with_log = _scopes().admin
    action = _action(get_session(), action_id, options=[undefer(Action.log)] if with_log else [])
    return jsonify(action_to_dict(action, with_log=with_log))


@bp.get("/api/v1/actions/<int:action_id>/log")
@token_required
def action_log(action_id: int):
    """An action's captured output (admin): ``?offset=N`` returns what came after byte N."""
    require("admin")
    action = _action(get_session(), action_id, options=[undefer(Action.log)])
    offset = request.args.get("offset", "0")
    if not offset.isdigit():
        raise Invalid("'offset' must be a whole number")
    text = action.log or ""
    return jsonify(action_id=action.id, state=str(action.state), offset=len(text), log=text[int(offset):],
                   finished=action.state.finished, truncated=action.log_truncated,
                   steps=[step_to_dict(step) for step in action.steps])


@bp.get("/api/v1/services")
@token_required
def list_services():
    """The services and environments the deployments repo defines, and its manifest errors."""
    require("read")
    scopes = Scopes.from_dict(g.token.scopes)
    repo = shared.manifests().current()
    return jsonify(
        sha=repo.sha,
        manifests=[{"service": m.service_name, "environment": m.environment, "type": str(m.type),
                    "path": m.path, "pr_deploy": str(m.pr_deploy.value)} for m in repo.manifests
                   if scopes.allows("read", m.service_name, m.environment)],
        errors=[{"path": e.path, "line": e.line, "column": e.column, "field": e.field, "message": e.message}
                for e in repo.errors if scopes.may_read_path(e.path)])


OUTBOX_STATES = ("pending", "delivering", "delivered", "skipped", "failed")


@bp.get("/api/v1/outbox")
@token_required
def list_outbox():
    """GitHub side effects and their delivery state, newest first (admin). ``?state=`` (repeatable),
    ``?limit=`` (default 100, at most 500)."""
    require("admin")
    states = request.args.getlist("state")
    unknown = sorted(set(states) - set(OUTBOX_STATES))
    if unknown:
        raise Invalid(f"unknown state {unknown[0]!r} (states: {', '.join(OUTBOX_STATES)})")
    limit = request.args.get("limit", "100")
    if not limit.isdigit() or not 1 <= int(limit) <= 500:
        raise Invalid("'limit' must be a whole number from 1 to 500")
    query = select(OutboxRow).order_by(OutboxRow.id.desc()).limit(int(limit))
    if states:
        query = query.where(OutboxRow.state.in_(states))
    rows = get_session().scalars(query).all()
    return jsonify(outbox=[outbox.row_to_dict(row) for row in rows])
