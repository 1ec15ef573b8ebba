"""The services layer: decide whether a request is allowed, record it, and queue it.

Every function checks the manifest and the state machine, writes the deployment and its action
in one transaction, commits, and only then hands the action id to the queue. If the queue is
unreachable the action stays recorded (its job is not on the queue) and the scheduler's sweep queues
it later: nothing accepted is lost.
"""

from __future__ import annotations

import logging
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import exists, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from bot import outbox
from bot.core import naming
from bot.core.db import db_now
from bot.core.errors import Conflict, Invalid, NotFound
from bot.core.lifecycle import DEPLOY_KINDS
from bot.core.models import Action, Deployment
from bot.core.states import (
    ActionState,
    DeploymentState,
    IllegalTransition,
    new_action,
    supersede_queued_updates,
    transition,
)
from bot.manifests import DeploymentsRepo, Manifest
from bot.manifests.topology import COLOURS, REFERENCE_RE, Kind, ThirdPartyMode, resolve_references
from bot.services import pins

log = logging.getLogger(__name__)
S = DeploymentState

ORIGINS = ("api", "webhook", "cli", "page", "schedule", "reconcile")
# Deployments.pull_request is a 32-bit integer column.
MAX_PULL_REQUEST = 2**31 - 1
# Whole numbers Sami takes in requests: what a script (or a database id) can hold.
MIN_INT64, MAX_INT64 = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class DeploymentRequest:
    """A request to create or update a deployment, from CI, a webhook, the CLI or the page."""

    service: str
    environment: str
    requested_by: str
    origin: str
    tag: str | None = None
    image: str | None = None
    ref: str | None = None
    sha: str | None = None
    pull_request: int | None = None
    source_repo: str | None = None
    app_overrides: Mapping[str, str] = field(default_factory=dict)
    deployment_overrides: Mapping[str, str] = field(default_factory=dict)
    delivery_id: str | None = None
    # Seconds an update waits before it starts, so that a newer request can replace it (pushes to a
    # pull request come in series); 0 starts it at once.
    debounce_seconds: float = 0
    # The environment whose manifest it deploys with, when not its own (a component of a cloned environment).
    manifest_environment: str | None = None
    # The request is itself a rollback that pins (a component of an environment deployed from a snapshot):
    # a pin does not refuse it. Every other request is refused while the deployment is pinned.
    pinning: bool = False
    # A blue-green release deploys into its idle colour: a rollback's pin of the environment does not refuse it
    # (the pin stays until the release is switched live).
    releasing: bool = False
    # A person deploys this on purpose over a pin (sami update --unpin): the pin is cleared with it.
    unpin: bool = False
    # Shrink an internal third-party service anyway: its update script gets --force (see check_resize).
    force: bool = False


@dataclass(frozen=True)
class Accepted:
    """What the caller gets back: the deployment, the recorded action and its kind."""

    deployment: str
    action_id: int
    kind: str
    state: str
    queued: bool
    # A rollback's target: {"action_id", "tag", "image"} of the configuration it goes back to.
    rollback_to: Mapping[str, object] | None = None


@dataclass(frozen=True)
class Context:
    """What the services need besides the session: settings values, the queue, and what the caller
    may read.

    ``may_read(service, environment)`` says whether the caller may know of a deployment of that
    service and environment: an answer about a name taken by one it may not read says only that
    the name is not available. None: the caller reads everything (webhooks, the CLI, the scheduler).
    """

    project_name: str
    base_domain: str
    namespace: str
    broker: object  # workers.queue.Broker; typed loosely to keep the web layer free of RQ imports
    may_read: Callable[[str, str], bool] | None = None

    @classmethod
    def from_settings(cls, settings, broker, may_read: Callable[[str, str], bool] | None = None) -> Context:
        return cls(settings.project_name, settings.base_domain, settings.namespace, broker, may_read)

    def sees(self, deployment: Deployment) -> bool:
        return self.may_read is None or self.may_read(deployment.service, deployment.environment)


def deployment_links(manifest: Manifest, deployment: Deployment, ctx: Context) -> list[dict[str, str]]:
    """The deployment's links from its manifest's URL template (``info`` may replace them later)."""
    url = manifest.render_url(name=deployment.name, base_domain=ctx.base_domain, namespace=ctx.namespace,
                              project_name=ctx.project_name, pr=deployment.pull_request)
    return [{"name": "app", "url": url}] if url else []


def recorded_outputs(manifest: Manifest, deployment: Deployment, ctx: Context) -> dict[str, str]:
    """What other components of the deployment's environment may reference: its outputs so far, with
    the endpoint from its manifest (a template for an internal third-party service, the outside
    host:port list for an external one), its host and port, and its first link as ``url``."""
    outputs = dict(deployment.outputs or {})
    if manifest.endpoint:
        if manifest.mode is ThirdPartyMode.EXTERNAL:
            endpoint = manifest.endpoint
        else:
            values = {"name": deployment.name, "namespace": ctx.namespace, "base_domain": ctx.base_domain,
                      "project_name": ctx.project_name, "service": deployment.service,
                      "environment": deployment.environment}
            endpoint = string.Formatter().vformat(manifest.endpoint, (), _Blank(values))
        outputs.update(endpoint_parts(endpoint))
    if deployment.links:
        outputs["url"] = deployment.links[0]["url"]
    return outputs


class _Blank(dict):
    def __missing__(self, key: str) -> str:
        return ""


def endpoint_parts(endpoint: str) -> dict[str, str]:
    """``endpoint`` and, from its first ``host:port``, ``host`` and ``port``."""
    parts = {"endpoint": endpoint}
    first = endpoint.split(",")[0].strip()
    host, sep, port = first.rpartition(":")
    if sep and host and port.isdigit():
        parts.update(host=host, port=port)
    elif first:
        parts["host"] = first
    return parts


def environment_outputs(session: Session, deployment: Deployment) -> dict[str, dict[str, str]]:
    """The outputs recorded by the deployments of ``deployment``'s environment (a pull request's own), by service."""
    pr = Deployment.pull_request.is_(None) if deployment.pull_request is None else \
        Deployment.pull_request == deployment.pull_request
    rows = session.execute(select(Deployment.service, Deployment.outputs).where(
        Deployment.environment == deployment.environment, pr, Deployment.state != S.REMOVED)).all()
    return {service: dict(outputs or {}) for service, outputs in rows}


def resolve_config(session: Session, deployment: Deployment, config: dict, *, strict: bool) -> dict:
    """``config`` with every ``${service.output}`` in its overrides replaced by what that service
    recorded in the deployment's environment. An unresolvable reference is Invalid when ``strict``
    (create, update, restore), and left as it is otherwise (archive and cleanup do not need it)."""
    levels = ("app_overrides", "deployment_overrides")
    if not any(REFERENCE_RE.search(str(v)) for level in levels for v in (config.get(level) or {}).values()):
        return config
    outputs = environment_outputs(session, deployment)
    resolved = dict(config)
    for level in levels:
        values = {}
        for key, value in (config.get(level) or {}).items():
            try:
                values[key] = resolve_references(str(value), outputs)
            except KeyError as exc:
                if strict:
                    raise Invalid(f"override {key!r} of {deployment.name} references {exc.args[0]}, which no "
                                  f"deployment of environment {deployment.environment!r} has recorded: deploy "
                                  f"that service first (or the whole environment)") from None
                values[key] = value
        resolved[level] = values
    return resolved


def find_manifest(repo: DeploymentsRepo, service: str, environment: str) -> Manifest:
    manifest = repo.find(service, environment)
    if manifest is not None:
        return manifest
    environments = sorted(m.environment for m in repo.manifests if m.service_name == service)
    if environments:
        raise Invalid(f"service {service!r} has no {environment!r} environment "
                           f"(it has: {', '.join(environments)})")
    broken = [e for e in repo.errors if e.path.startswith(f"services/{service}/")]
    if broken:
        raise Invalid(f"the manifest of service {service!r} is invalid: {broken[0]}")
    services = sorted({m.service_name for m in repo.manifests})
    raise Invalid(f"unknown service {service!r} (known: {', '.join(services) or 'none'})")


def check_overrides(kind: str, given: Mapping[str, object], allowed: tuple[str, ...]) -> dict[str, str | None]:
    """Checked overrides as the text the scripts get; a None value removes an override set by an
    earlier request.

    A value is a string, passed as it is, or a whole number, passed in decimal. Booleans and
    fractions are refused rather than spelled for the service ("true"? "True"? "1.50"?), and so
    are objects and lists: an override is one KEY=VALUE argument.
    """
    if not isinstance(given, Mapping):
        raise Invalid(f"{kind} overrides must be an object of KEY: value")
    checked: dict[str, str | None] = {}
    for key, value in given.items():
        try:
            naming.check_override_key(key)
        except naming.InvalidName as exc:
            raise Invalid(str(exc)) from None
        if key not in allowed:
            raise Invalid(f"{kind} override {key!r} is not allowed by the manifest "
                               f"(allowed: {', '.join(allowed) or 'none'})")
        if value is None:
            checked[key] = None
            continue
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise Invalid(f"{kind} override {key!r} must be a string or a whole number (null removes it); "
                               f"give other values as the text the service expects, e.g. \"true\" or \"1.5\"")
        if isinstance(value, int) and not MIN_INT64 <= value <= MAX_INT64:
            raise Invalid(f"{kind} override {key!r} must be a whole number a script can take: from {MIN_INT64} "
                               f"to {MAX_INT64} (64 bits); give a larger value as text")
        text = value if isinstance(value, str) else str(value)
        if len(text) > 4096:
            raise Invalid(f"{kind} override {key!r} is longer than 4096 characters")
        if "\n" in text or "\x00" in text:
            raise Invalid(f"{kind} override {key!r} must be one line")
        checked[key] = text
    return checked


def merge_overrides(current: Mapping[str, str], changes: Mapping[str, str | None]) -> dict[str, str]:
    merged = {**current, **changes}
    return {key: value for key, value in merged.items() if value is not None}


def image_and_tag(manifest: Manifest, tag: str | None, image: str | None) -> tuple[str | None, str]:
    if tag is not None and image is not None:
        raise Invalid("give 'tag' or 'image', not both: an image carries its own tag "
                           "(name:tag, name@sha256:... or name:tag@sha256:...)")
    try:
        if image:
            name, image_tag, digest = naming.split_image(image)
            if manifest.image and name != manifest.image:
                raise Invalid(f"image {name!r} is not this service's image ({manifest.image!r})")
            # A digest alone names the deployment's tag by its first 12 hex digits.
            tag = image_tag or (digest.split(":", 1)[1][:12] if digest else None)
            if not tag:
                raise Invalid("the image has no tag: give name:tag or name@sha256:..., or 'tag' alone for "
                                   "this service's image")
            return image, naming.check_tag(tag)
        if not tag:
            raise Invalid("give 'tag' or 'image'")
        naming.check_tag(tag)
        return (f"{manifest.image}:{tag}" if manifest.image else None), tag
    except naming.InvalidName as exc:
        raise Invalid(str(exc)) from None


def lock_deployment(session: Session, name: str) -> Deployment | None:
    # Row lock on PostgreSQL: concurrent requests for one deployment are decided one after another.
    # populate_existing: what the lock protects is the row as it is now, not a copy this session
    # loaded earlier.
    return session.scalars(
        select(Deployment).where(Deployment.name == name).with_for_update()
        .execution_options(populate_existing=True)
    ).first()


def lock_or_create(session: Session, name: str, service: str, environment: str, type_: str) -> Deployment:
    """The locked row of ``name``, inserted first (as Removed) if it does not exist yet.

    Inserting with ON CONFLICT DO NOTHING and then locking makes concurrent first requests for
    one name wait for each other instead of failing on the unique name.
    """
    dialect = session.get_bind().dialect.name
    insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[dialect]
    session.execute(
        insert(Deployment).values(name=name, service=service, environment=environment, type=type_,
                                  state=S.REMOVED, app_overrides={}, deployment_overrides={}, links=[])
        .on_conflict_do_nothing(index_elements=["name"])
    )
    return lock_deployment(session, name)


def record_action(session: Session, deployment: Deployment, kind: str, *, requested_by: str, origin: str,
            config: dict, delivery_id: str | None = None, not_before: datetime | None = None) -> Action:
    if origin not in ORIGINS:
        raise ValueError(f"unknown origin {origin!r}")
    # By the deployment's id, not deployment.actions.append: that would load every earlier action
    # (the whole history) while the deployment's row is locked.
    return new_action(session, Action(deployment_id=deployment.id, kind=kind, requested_by=requested_by[:255],
                                      origin=origin, delivery_id=delivery_id, config=config, retry_at=not_before))


@dataclass(frozen=True)
class Start:
    """When a new action may start: ``not_before`` (None: at once), ``delay`` seconds from now."""

    not_before: datetime | None = None
    delay: float = 0.0


def _debounced_start(session: Session, deployment: Deployment, seconds: float) -> Start:
    """When a debounced update may start: when the queued update it replaces was to start (the
    window the first push of a series opened), or else ``seconds`` from now."""
    if seconds <= 0:
        return Start()
    waiting = session.execute(
        select(Action.retry_at).where(Action.deployment_id == deployment.id, Action.state == ActionState.QUEUED,
                                      Action.kind == "update")
        .order_by(Action.id.desc()).limit(1)).first()
    now = db_now(session)
    not_before = waiting.retry_at if waiting is not None else now + timedelta(seconds=seconds)
    if not_before is None:
        return Start()  # the update it replaces was due already: this one does not wait longer
    return Start(not_before, max(0.0, (not_before - now).total_seconds()))


def commit_and_queue(session: Session, ctx: Context, deployment: Deployment, action: Action,
                      start: Start = Start()) -> Accepted:
    outbox.commit(session)
    # The action was just inserted: no job of it exists to look for.
    queued = (ctx.broker.enqueue_action(action.id, delay=start.delay, new=True)
              if ctx.broker is not None else False)
    log.info("accepted %s of %s as action %s (queued: %s%s)", action.kind, deployment.name, action.id, queued,
             f", starts in {start.delay:.0f} s" if start.delay else "",
             extra={"deployment": deployment.name, "action_id": action.id})
    return Accepted(deployment.name, action.id, action.kind, str(deployment.state), queued)


def _target(repo: DeploymentsRepo, request: DeploymentRequest) -> tuple[str, Manifest]:
    """The deployment name a request is for, and the manifest it deploys with (Invalid if none)."""
    try:
        name = naming.deployment_name(request.service, request.environment, request.pull_request)
    except naming.InvalidName as exc:
        raise Invalid(str(exc)) from None
    return name, find_manifest(repo, request.service, request.manifest_environment or request.environment)


def manifest_of(repo: DeploymentsRepo, deployment: Deployment) -> Manifest | None:
    """The manifest ``deployment`` deploys with: its environment's, or the one it was cloned from."""
    return repo.find(deployment.service, deployment.manifest_environment or deployment.environment)


def request_deployment(session: Session, repo: DeploymentsRepo, request: DeploymentRequest,
                       ctx: Context) -> Accepted:
    """Create the deployment, or update it to a new tag/image or overrides."""
    deployment, action, start = accept_request(session, repo, request, ctx)
    return commit_and_queue(session, ctx, deployment, action, start)


def accept_request(session: Session, repo: DeploymentsRepo, request: DeploymentRequest,
                   ctx: Context) -> tuple[Deployment, Action, Start]:
    """Decide and record a request in ``session``'s transaction, without committing it: the caller
    commits (with ``outbox.commit``) and then queues the action (a whole-environment run queues
    several in the transaction that settles another)."""
    if request.pull_request is not None and not (isinstance(request.pull_request, int)
                                                 and 1 <= request.pull_request <= MAX_PULL_REQUEST):
        raise Invalid(f"'pull_request' must be a whole number from 1 to {MAX_PULL_REQUEST}")
    name, manifest = _target(repo, request)
    if request.environment == manifest.environment:
        refuse_blue_green_base(repo, request.environment)
    image, tag = image_and_tag(manifest, request.tag, request.image)
    app_overrides = check_overrides("app", request.app_overrides, manifest.allowed_app_overrides)
    deployment_overrides = check_overrides("deployment", request.deployment_overrides,
                                            manifest.allowed_deployment_overrides)

    deployment = lock_or_create(session, name, request.service, request.environment, str(manifest.type))
    if (deployment.service, deployment.environment) != (request.service, request.environment):
        # e.g. service web + environment api-stage and service web-api + environment stage
        if not ctx.sees(deployment):
            raise Conflict(f"deployment name {name!r} is not available; rename the environment or the service")
        raise Conflict(f"deployment name {name!r} is taken by service {deployment.service!r} in environment "
                       f"{deployment.environment!r}; rename the environment or the service")
    if not (request.pinning or request.releasing):
        # A rollback of a blue-green release pinned the environment: its colours, and its own names, stay.
        pins.refuse_if_release_pinned(session, repo, request.environment)
    if request.unpin:
        pins.clear(deployment)
    elif not (request.pinning or request.releasing):
        pins.refuse_if_pinned(deployment)  # a rollback pinned it: 409 naming who, when and how to unpin
    if deployment.state is S.REMOVED:
        kind, wanted = "create", S.CREATE_PENDING
        deployment.app_overrides, deployment.deployment_overrides = {}, {}
    elif deployment.state in (S.RUNNING, S.FAILURE, S.CREATE_PENDING, S.UPDATE_PENDING):
        kind, wanted = "update", S.UPDATE_PENDING
    elif deployment.state is S.ARCHIVED:
        raise Conflict(f"deployment {name!r} is archived: restore it first "
                       f"(POST /api/v1/deployments/{name}/restore)", state=str(deployment.state))
    else:
        raise Conflict(f"deployment {name!r} is {deployment.state}: wait until that finishes",
                       state=str(deployment.state))

    size = check_resize(session, deployment, manifest, kind, force=request.force)
    transition(deployment, wanted)
    deployment.type = str(manifest.type)
    deployment.tag, deployment.image = tag, image
    deployment.app_overrides = merge_overrides(deployment.app_overrides, app_overrides)
    deployment.deployment_overrides = merge_overrides(deployment.deployment_overrides, deployment_overrides)
    deployment.source_repo = request.source_repo or deployment.source_repo or manifest.repository
    deployment.pull_request = request.pull_request
    deployment.ref = request.ref or deployment.ref
    deployment.sha = request.sha or deployment.sha
    deployment.manifest_sha = repo.sha
    deployment.manifest_environment = (request.manifest_environment
                                       if request.manifest_environment != request.environment else None)
    deployment.links = deployment_links(manifest, deployment, ctx)
    deployment.outputs = recorded_outputs(manifest, deployment, ctx)
    start = _debounced_start(session, deployment, request.debounce_seconds) if kind == "update" else Start()
    config = resolve_config(session, deployment, action_config(deployment, manifest, repo), strict=True)
    if size is not None and request.force and kind == "update":  # a shrink asked for: its script gets --force
        config["force"] = True
    action = record_action(session, deployment, kind, requested_by=request.requested_by, origin=request.origin,
                     delivery_id=request.delivery_id, config=config, not_before=start.not_before)
    if kind == "update":
        supersede_queued_updates(session, deployment, action)
    return deployment, action, start


def check_resize(session: Session, deployment: Deployment, manifest: Manifest, kind: str, *,
                 force: bool) -> int | None:
    """The members an internal third-party service is deployed with (None for anything else).

    Growing is allowed; shrinking is refused (Conflict, naming both sizes) unless ``force``: whether the
    members removed handed their data over cannot be seen from outside. The size it runs is the one its
    last successful deploy recorded."""
    if manifest.kind is not Kind.THIRD_PARTY or manifest.mode is ThirdPartyMode.EXTERNAL:
        return None
    size = manifest.size or 1
    if kind != "update" or force:
        return size
    deployed = deployed_action(session, deployment.id)
    running = (deployed.config or {}).get("size") if deployed is not None else None
    if isinstance(running, int) and size < running:
        raise Conflict(f"resize of {deployment.name} from {running} to {size} members refused: the data of the "
                       f"members removed is not handed over to the others, and Sami cannot see that from outside; "
                       f"ask again with force (API \"force\": true, sami update/request --force, sami env deploy "
                       f"--force) to shrink anyway", size=size, running=running)
    return size


def action_config(deployment: Deployment, manifest: Manifest, repo: DeploymentsRepo) -> dict:
    """The config an action runs with, fixed when it is accepted."""
    # The environment file's overrides go to every application of the environment; its own win.
    topology = repo.topology(manifest.environment) if manifest.kind is Kind.APPLICATION else None
    shared = dict(topology.overrides) if topology is not None else {}
    return {
        "tag": deployment.tag,
        "image": deployment.image,
        "app_overrides": {**shared, **manifest.app_overrides, **deployment.app_overrides},
        "deployment_overrides": {**manifest.deployment_overrides, **deployment.deployment_overrides,
                                 **colour_overrides(deployment, manifest, repo)},
        "manifest": manifest.path,
        "manifest_sha": repo.sha,
        "type": str(manifest.type),
        "pull_request": deployment.pull_request,
        "sha": deployment.sha,
        **({"manifest_environment": deployment.manifest_environment} if deployment.manifest_environment else {}),
        # An internal third-party service's members: what a later update's size is compared with (check_resize).
        **({"size": manifest.size or 1} if manifest.kind is Kind.THIRD_PARTY
           and manifest.mode is not ThirdPartyMode.EXTERNAL else {}),
    }


def refuse_blue_green_base(repo: DeploymentsRepo, environment: str) -> None:
    """A blue-green environment runs in its two colours only (``production-blue``, ``-green``): its own
    name is its stable entry's (``web-production``, a router or a link), so nothing is deployed under it
    directly; a release goes into the idle colour. Conflict naming how, for anything asked of it."""
    topology = repo.topology(environment)
    if topology is None or topology.blue_green is None:
        return
    entry = topology.blue_green.entry
    raise Conflict(f"environment {environment!r} is released blue-green: its components run in its colours "
                   f"({environment}-blue and {environment}-green) and {entry}-{environment} is its stable entry; "
                   f"deploy a release into the idle colour (sami env release {environment} --version "
                   f"{entry}=TAG, POST /api/v1/environments/{environment}/release), then switch to it")


def colour_overrides(deployment: Deployment, manifest: Manifest, repo: DeploymentsRepo) -> dict[str, str]:
    """What the environment file's ``blue_green.colours`` gives this deployment when it is one colour
    of a blue-green environment (a port of its own, say): it wins over the manifest and the release,
    since both colours run at once. {} for anything else."""
    topology = repo.topology(manifest.environment)
    blue_green = topology.blue_green if topology is not None else None
    if blue_green is None:
        return {}
    for colour in COLOURS:
        if deployment.environment == f"{manifest.environment}-{colour}":
            return blue_green.overrides_of(colour, manifest.service_name)
    return {}


def deployed_action(session: Session, deployment_id: int) -> Action | None:
    """The deployment's last succeeded create, update or restore: the config it runs (None: never deployed)."""
    return session.scalars(select(Action).where(
        Action.deployment_id == deployment_id, Action.kind.in_(DEPLOY_KINDS),
        Action.state == ActionState.SUCCEEDED).order_by(Action.id.desc()).limit(1)).first()


def apply_config(deployment: Deployment, config: Mapping, manifest: Manifest) -> None:
    """Set ``deployment``'s tag/image and overrides to an earlier action's ``config``; overrides are stored
    as what differs from the manifest's defaults, as a request would have left them."""
    deployment.tag, deployment.image = config.get("tag"), config.get("image")
    deployment.app_overrides = {k: v for k, v in (config.get("app_overrides") or {}).items()
                                if manifest.app_overrides.get(k) != v}
    deployment.deployment_overrides = {k: v for k, v in (config.get("deployment_overrides") or {}).items()
                                       if manifest.deployment_overrides.get(k) != v}
    deployment.sha = config.get("sha") or deployment.sha


def unknown_deployment(name: str) -> NotFound:
    """The answer about a deployment that does not exist, or that the caller may not read: alike,
    so that an answer never confirms that a deployment out of a token's scope exists."""
    return NotFound(f"no deployment named {name!r} (list them: GET /api/v1/deployments)")


def unknown_action(action_id: int) -> NotFound:
    """The answer about an action that does not exist, or that the caller may not read (alike)."""
    return NotFound(f"no action {action_id}")


def get_deployment(session: Session, name: str, *, lock: bool = False) -> Deployment:
    try:
        naming.check_name(name)
    except naming.InvalidName as exc:
        raise Invalid(str(exc)) from None
    deployment = lock_deployment(session, name) if lock else session.scalars(
        select(Deployment).where(Deployment.name == name)).first()
    if deployment is None or deployment.state is S.REMOVED:
        raise unknown_deployment(name)
    return deployment


def refuse_if_busy(session: Session, deployment: Deployment) -> None:
    """Conflict when an action of ``deployment`` is queued or running: one thing at a time."""
    busy = session.scalars(select(Action.id).where(
        Action.deployment_id == deployment.id,
        Action.state.in_((ActionState.QUEUED, ActionState.RUNNING)))).first()
    if busy is not None:
        raise Conflict(f"deployment {deployment.name!r} has action {busy} in progress: wait until it finishes",
                       state=str(deployment.state), action_id=busy)


def _operation(session: Session, repo: DeploymentsRepo, name: str, kind: str, ctx: Context, *, requested_by: str,
               origin: str, delivery_id: str | None = None) -> Accepted:
    deployment, action = accept_operation(session, repo, name, kind, requested_by=requested_by, origin=origin,
                                          delivery_id=delivery_id)
    return commit_and_queue(session, ctx, deployment, action)


OPERATION_STATES = {"archive": S.ARCHIVE_PENDING, "restore": S.CREATE_PENDING, "cleanup": S.CLEANUP_PENDING}


def accept_operation(session: Session, repo: DeploymentsRepo, name: str, kind: str, *, requested_by: str,
                     origin: str, delivery_id: str | None = None,
                     delete_data: bool = False) -> tuple[Deployment, Action]:
    """Decide and record an archive, restore or cleanup of ``name`` without committing it (see accept_request).

    ``delete_data``: a cleanup's script gets ``--delete-data`` (an internal third-party service's
    volumes are removed too; without it they are kept, and its output says so)."""
    wanted = OPERATION_STATES[kind]
    deployment = get_deployment(session, name, lock=True)
    refuse_if_busy(session, deployment)
    manifest = manifest_of(repo, deployment)
    if manifest is None and kind != "cleanup":
        raise Invalid(f"the deployments repo no longer has a manifest for {deployment.service} "
                           f"{deployment.environment}; only cleanup is possible")
    transition(deployment, wanted)
    if kind == "restore" and manifest is not None:
        # A restore brings back what last ran, not a request that failed before the archive.
        deployed = deployed_action(session, deployment.id)
        if deployed is not None:
            apply_config(deployment, deployed.config or {}, manifest)
    config = action_config(deployment, manifest, repo) if manifest else {
        "tag": deployment.tag, "image": deployment.image, "type": deployment.type,
        "app_overrides": deployment.app_overrides, "deployment_overrides": deployment.deployment_overrides,
        "manifest": None, "manifest_sha": repo.sha,
    }
    config = resolve_config(session, deployment, config, strict=kind == "restore")
    if delete_data and kind == "cleanup":
        config = {**config, "delete_data": True}
    action = record_action(session, deployment, kind, requested_by=requested_by, origin=origin,
                     delivery_id=delivery_id, config=config)
    return deployment, action


def archive_deployment(session, repo, name, ctx, **who) -> Accepted:
    """Take a live deployment down, keeping its volumes (restorable)."""
    return _operation(session, repo, name, "archive", ctx, **who)


def restore_deployment(session, repo, name, ctx, **who) -> Accepted:
    """Bring an archived deployment back with its last tag and overrides."""
    return _operation(session, repo, name, "restore", ctx, **who)


def cleanup_deployment(session, repo, name, ctx, **who) -> Accepted:
    """Remove an archived deployment and everything it owns."""
    return _operation(session, repo, name, "cleanup", ctx, **who)


@dataclass(frozen=True)
class Ensured:
    """What an ``ensure_*`` call did to one deployment: ``done`` says it ("created", "restored",
    "restored and updated", "updated", "archived"), or is None when nothing was needed or possible,
    and ``reason`` says why; ``accepted`` holds the actions it queued."""

    deployment: str
    done: str | None
    reason: str = ""
    accepted: tuple[Accepted, ...] = ()
    # Nothing was possible yet (an action is still pending on it): asking again later will do it.
    waiting: bool = False


def ensure_deployed(session: Session, repo: DeploymentsRepo, request: DeploymentRequest, ctx: Context, *,
                    revive: bool = True) -> Ensured:
    """Bring a deployment to the request's tag and sha: create, restore or update it as its state
    needs, and do nothing when it is there already (a repeated request changes nothing).

    An Archived or Removed deployment already at that tag and sha comes back only with ``revive``:
    callers that repair missed events leave what was archived on purpose (by hand, for idleness) alone.
    They leave a pinned deployment alone too, as unchanged rather than refused: the event that would have
    moved it was refused when it came, and a repair round must not refuse (and log) it again each time.
    """
    name, manifest = _target(repo, request)
    _, tag = image_and_tag(manifest, request.tag, request.image)
    # Decided under the row's lock: two deliveries of one event must not both create.
    deployment = lock_or_create(session, name, request.service, request.environment, str(manifest.type))
    state = deployment.state
    there = deployment.tag == tag and (request.sha is None or deployment.sha == request.sha)
    at = f"{request.sha[:7]}" if request.sha else tag
    if not (revive or there or request.unpin or request.pinning) and deployment.pinned_by is not None:
        return _unchanged(session, name, f"{pins.words(deployment)}; left as it is until it is unpinned")
    if state in (S.RUNNING, S.FAILURE, S.CREATE_PENDING, S.UPDATE_PENDING):
        if there:
            return _unchanged(session, name, f"already at {at}" + (" (Failure)" if state is S.FAILURE else ""))
        return Ensured(name, "updated", accepted=(request_deployment(session, repo, request, ctx),))
    if state is S.REMOVED:
        history = session.scalar(select(exists().where(Action.deployment_id == deployment.id)))
        if history and there and not revive:
            return _unchanged(session, name, f"removed at {at}; a new commit brings it back")
        return Ensured(name, "created", accepted=(request_deployment(session, repo, request, ctx),))
    if state is S.ARCHIVED:
        if there and not revive:
            return _unchanged(session, name, f"archived at {at}; a new commit brings it back")
        who = dict(requested_by=request.requested_by, origin=request.origin, delivery_id=request.delivery_id)
        restored = restore_deployment(session, repo, name, ctx, **who)
        if there:
            return Ensured(name, "restored", accepted=(restored,))
        # Restore brings back what was archived (volumes included), then the update moves it on.
        updated = request_deployment(session, repo, request, ctx)
        return Ensured(name, "restored and updated", accepted=(restored, updated))
    if state is S.CLEANUP_FAILED:
        return _unchanged(session, name, f"its cleanup failed; an admin must delete the record first "
                                         f"(sami delete {name})")
    return _unchanged(session, name, f"is {state}; it can be deployed again once that settles")


NOT_DEPLOYED = "not deployed"


def ensure_archived(session: Session, repo: DeploymentsRepo, name: str, ctx: Context, *, requested_by: str,
                    origin: str, delivery_id: str | None = None) -> Ensured:
    """Archive a live deployment; do nothing when it is not deployed, already archived or on its way."""
    deployment = lock_deployment(session, name)
    if deployment is None or deployment.state is S.REMOVED:
        return _unchanged(session, name, NOT_DEPLOYED)
    state = deployment.state
    if state in (S.ARCHIVED, S.ARCHIVE_PENDING, S.CLEANUP_PENDING, S.CLEANUP_FAILED):
        return _unchanged(session, name, f"already {state}")
    if state in (S.CREATE_PENDING, S.UPDATE_PENDING):
        # The state machine archives only a settled deployment: the caller asks again later.
        return _unchanged(session, name, f"is {state}; it can be archived once that settles", waiting=True)
    try:
        accepted = archive_deployment(session, repo, name, ctx, requested_by=requested_by, origin=origin,
                                      delivery_id=delivery_id)
    except Conflict as exc:  # an action still runs on it
        session.rollback()
        return Ensured(name, None, str(exc), waiting=True)
    return Ensured(name, "archived", accepted=(accepted,))


def _unchanged(session: Session, name: str, reason: str, waiting: bool = False) -> Ensured:
    session.rollback()  # lets go of the row's lock; nothing was written
    return Ensured(name, None, reason, waiting=waiting)


def refresh_deployment(session: Session, repo: DeploymentsRepo, name: str, ctx: Context, *, requested_by: str,
                       origin: str, delivery_id: str | None = None, unpin: bool = False) -> Accepted:
    """Update a deployment to the manifests of ``repo``, keeping its tag (or image) and overrides; ``unpin``
    clears a rollback's pin with it (else a pinned deployment is refused)."""
    deployment = get_deployment(session, name)
    manifest = find_manifest(repo, deployment.service, deployment.manifest_environment or deployment.environment)
    # An image given by digest keeps its digest; a tag follows the manifest's image name.
    keep_image = bool(deployment.image and manifest.image
                      and naming.split_image(deployment.image)[0] == manifest.image)
    request = DeploymentRequest(
        service=deployment.service, environment=deployment.environment, requested_by=requested_by,
        origin=origin, tag=None if keep_image else deployment.tag, image=deployment.image if keep_image else None,
        pull_request=deployment.pull_request, delivery_id=delivery_id,
        manifest_environment=deployment.manifest_environment, unpin=unpin)
    return request_deployment(session, repo, request, ctx)


def delete_deployment(session: Session, name: str, *, requested_by: str, origin: str) -> str:
    """Forget a deployment whose cleanup failed (admin only; nothing is run)."""
    deployment = get_deployment(session, name, lock=True)
    if deployment.state is not S.CLEANUP_FAILED:
        raise IllegalTransition(name, deployment.state, S.REMOVED)
    transition(deployment, S.REMOVED, message=f"deleted from the records by {requested_by}")
    outbox.commit(session)
    log.info("deleted the record of %s", name, extra={"deployment": name})
    return name
