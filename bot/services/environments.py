"""Whole-environment operations: deploy, archive, restore and clean up an environment as one product.

An operation is a **run** (``EnvironmentRun``) with one **component** row per service of the
environment: its deployment, the components it waits for (``after``), its action and its status
(waiting, queued, succeeded, failed, skipped). A deploy waits for each component's dependencies
(``depends_on`` and the services its overrides reference), and so does a restore (an application's
check needs its database up); archive and cleanup wait for its dependents instead (reverse order:
an application goes down before its database).

Starting a run records it and queues every component that waits for nothing, through the same
service functions a single request takes (``accept_request``/``accept_operation``: the state
machine, the outbox). When a component's action settles, the worker calls ``action_settled`` in
the transaction that records the outcome: the run advances there, queuing the components whose
dependencies have all succeeded and skipping those that wait for a failed one. Components of one
wave go to the queue together, so workers run them in parallel. The scheduler calls ``advance_runs``
as a backstop (an action settled by the reaper, or a component that could not be queued yet).

References (``${redis.endpoint}``) are resolved when a component's action is accepted, from the
outputs its environment's deployments recorded (``bot.services.deployments.resolve_config``): a
clone gets its own database's endpoint because its database is its own deployment.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot import outbox
from bot.core import naming
from bot.core.errors import Conflict, Invalid, NotFound, SamiError
from bot.core.models import Action, Deployment, EnvironmentRecord, EnvironmentRun, EnvironmentRunComponent
from bot.core.states import ActionState, DeploymentState, IllegalTransition
from bot.manifests import DeploymentsRepo, Manifest
from bot.manifests.topology import CycleError, Kind, ThirdPartyMode, Topology, dependents, deploy_waves, references
from bot.services import pins
from bot.services.deployments import (
    Context,
    DeploymentRequest,
    Start,
    accept_operation,
    accept_request,
    image_and_tag,
    lock_deployment,
    refuse_blue_green_base,
)

log = logging.getLogger(__name__)
S = DeploymentState

OPERATIONS = ("deploy", "archive", "restore", "cleanup")
# Taking an environment down goes in reverse: an application before the database it uses. Restore
# brings it back up, so it goes in deploy order: a restored application's check needs what it uses.
REVERSE = frozenset({"archive", "cleanup"})

WAITING, QUEUED, SUCCEEDED, FAILED, SKIPPED = "waiting", "queued", "succeeded", "failed", "skipped"
# What a fresh environment's third-party service holds (a clone's, a preview's): internal ones are
# provisioned empty and, when their manifest says ``seed``, seeded once their first check passes.
EMPTY, SEEDED, SEED_FAILED, SHARED = "empty", "seeded", "seed failed", "shared"
COMPONENT_STATUSES = (WAITING, QUEUED, SUCCEEDED, FAILED, SKIPPED)
RUNNING, RUN_SUCCEEDED, RUN_FAILED = "running", "succeeded", "failed"


# --- the environment and its graph -------------------------------------------------------------

@dataclass(frozen=True)
class Component:
    """One component of an environment: its service, deployment name, manifest and dependencies."""

    service: str
    deployment: str
    manifest: Manifest
    depends_on: tuple[str, ...]
    wave: int

    @property
    def kind(self) -> str:
        return str(self.manifest.kind)

    @property
    def mode(self) -> str | None:
        return None if self.manifest.mode is None else str(self.manifest.mode)


@dataclass(frozen=True)
class Environment:
    """An environment as a product: its name, the environment whose manifests it deploys with
    (``template``: itself, or the environment it was cloned from), and its components in deploy order."""

    name: str
    template: str
    topology: Topology
    components: tuple[Component, ...]

    @property
    def waves(self) -> list[tuple[str, ...]]:
        waves: dict[int, list[str]] = {}
        for component in self.components:
            waves.setdefault(component.wave, []).append(component.service)
        return [tuple(waves[w]) for w in sorted(waves)]

    def component(self, service: str) -> Component:
        for component in self.components:
            if component.service == service:
                return component
        raise KeyError(service)


def dependency_graph(repo: DeploymentsRepo, topology: Topology, template: str) -> dict[str, set[str]]:
    """Each component's dependencies: its manifest's ``depends_on`` and the services its default
    overrides (and the environment's) reference. Invalid names a component without a manifest or a
    dependency outside the environment."""
    members = set(topology.components)
    graph: dict[str, set[str]] = {}
    for service in topology.components:
        manifest = repo.find(service, template)
        if manifest is None:
            raise Invalid(f"environment {topology.name!r} names {service!r}, which has no valid manifest for "
                          f"{template!r}")
        deps = set(manifest.depends_on)
        values = [*manifest.app_overrides.values(), *manifest.deployment_overrides.values()]
        if manifest.kind is Kind.APPLICATION:  # the environment's overrides are every application's
            values += list(topology.overrides.values())
        for value in values:
            deps.update(other for other, _ in references(str(value)))
        deps.discard(service)
        missing = sorted(deps - members)
        if missing:
            raise Invalid(f"{service} ({manifest.path}) depends on {', '.join(missing)}, which environment "
                          f"{topology.name!r} does not have")
        graph[service] = deps
    return graph


def environment(session: Session, repo: DeploymentsRepo, name: str) -> Environment:
    """The environment ``name``: its own file or manifests, or, for an environment Sami cloned, its
    template's components under names of its own."""
    try:
        naming.check_environment(name)
    except naming.InvalidName as exc:
        raise Invalid(str(exc)) from None
    record = session.scalars(select(EnvironmentRecord).where(EnvironmentRecord.name == name)).first()
    template = record.template if record is not None else name
    invalid = getattr(repo, "invalid_environments", ())
    if template in invalid:
        reasons = [str(e) for e in repo.errors if template in str(e)][:5]
        raise Invalid(f"environment {template!r} is invalid in the deployments repo (sami validate says why)"
                      + (": " + "; ".join(reasons) if reasons else ""))
    topology = repo.topology(template)
    if topology is None:
        known = sorted({m.environment for m in repo.manifests} | set(repo.topologies))
        raise NotFound(f"no environment named {name!r} (known: {', '.join(known) or 'none'})")
    graph = dependency_graph(repo, topology, template)
    try:
        waves = deploy_waves(graph)
    except CycleError as exc:
        raise Invalid(f"environment {name!r} cannot be ordered: {exc}") from None
    components = []
    for index, wave in enumerate(waves):
        for service in wave:
            try:
                deployment = naming.deployment_name(service, name)
            except naming.InvalidName as exc:
                raise Invalid(str(exc)) from None
            components.append(Component(service, deployment, repo.find(service, template),
                                        tuple(sorted(graph[service])), index))
    return Environment(name, template, topology, tuple(components))


def reverse_graph(graph: Mapping[str, Iterable[str]]) -> dict[str, set[str]]:
    """node -> the nodes that depend on it."""
    reverse: dict[str, set[str]] = {node: set() for node in graph}
    for node, deps in graph.items():
        for dep in deps:
            if dep in reverse:
                reverse[dep].add(node)
    return reverse


# --- starting a run ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Queued:
    """An action a run queued, to hand to the queue once its transaction has committed."""

    action_id: int
    delay: float = 0.0
    behind: int = 0  # components that wait for it


def running_run(session: Session, name: str) -> EnvironmentRun | None:
    return session.scalars(select(EnvironmentRun).where(EnvironmentRun.environment == name,
                                                       EnvironmentRun.state == RUNNING)
                           .order_by(EnvironmentRun.id.desc()).limit(1)).first()


def start_run(session: Session, repo: DeploymentsRepo, name: str, operation: str, ctx: Context, *,
              requested_by: str, origin: str, versions: Mapping[str, str] | None = None,
              snapshot: Mapping | None = None, snapshot_id: int | None = None,
              only: Iterable[str] | None = None, delete_data: bool = False,
              pin_reason: str | None = None, fresh: bool = False, force: bool = False,
              releasing: bool = False) -> EnvironmentRun:
    """Start ``operation`` on every component of environment ``name`` and commit; the first components
    are on the queue when it returns.

    A deploy gives each component ``versions[service]`` (a tag, or an image with ``/`` or ``:``), else
    its snapshot's version (``snapshot``: the components of a snapshot, by service), else the version
    its deployment runs now. With ``only``, the other components are left as they are (recorded as
    succeeded, "unchanged"). ``delete_data`` (cleanup): internal third-party services' data volumes
    are removed too (their cleanup gets ``--delete-data``); without it they are kept, and the component's
    note says so. ``fresh`` (a clone, a preview's first deploy): each component records what its data is
    (``data``: internal third-party services empty, or seeded when their manifest says ``seed``; external
    ones shared). ``force`` (deploy): internal third-party services may shrink (their update gets
    ``--force``); without it a shrink fails its component, naming both sizes. Conflict while another run
    of the environment is still going.

    A deploy with ``pin_reason`` is a rollback (to a snapshot): it pins every component it deploys, at once
    and again with its action when each is queued. A deploy without one is refused (Pinned) while a
    component it would move is pinned, or while a rollback of its blue-green release pinned the environment
    (its colours); ``releasing`` (a release deployed into the idle colour) goes through that pin and leaves it.
    """
    if operation not in OPERATIONS:
        raise Invalid(f"unknown environment operation {operation!r} (one of: {', '.join(OPERATIONS)})")
    if operation == "deploy":
        refuse_blue_green_base(repo, name)
    env = environment(session, repo, name)
    # One run of an environment at a time: the environment's record row is its lock (made if needed).
    _lock_environment(session, name)
    busy = running_run(session, name)
    if busy is not None:
        session.rollback()
        raise Conflict(f"environment {name!r} has {busy.operation} run {busy.id} in progress: wait until it "
                       f"finishes (sami env status {name})", run_id=busy.id)
    versions = dict(versions or {})
    unknown = sorted(set(versions) - {c.service for c in env.components})
    if unknown:
        raise Invalid(f"environment {name!r} has no component {', '.join(unknown)}")
    for service, version in sorted(versions.items()):
        # A version the component's deploy would refuse is refused now, before any run is recorded.
        request = _deploy_request(session, env.component(service), version, None)
        try:
            image_and_tag(env.component(service).manifest, request.get("tag"), request.get("image"))
        except Invalid as exc:
            raise Invalid(f"version {version!r} of {service}: {exc}") from None
    snapshot = dict(snapshot or {})
    # Services of a clone or a preview still waiting for the seed they asked for: seeded by this deploy.
    unseeded = awaiting_seed(session, name) if operation == "deploy" and not fresh else {}
    moved = [c.deployment for c in env.components if only is None or c.service in set(only)]
    if operation == "deploy" and pin_reason is None and not releasing:
        held = pins.release_pins(session, repo, name)
        if held:
            session.rollback()
            raise pins.release_refusal(pins.blue_green_of(repo, name) or name, held)
        pinned = pins.pinned_of(session, moved)
        if pinned:
            session.rollback()
            raise pins.environment_refusal(name, pinned)
    graph = {c.service: set(c.depends_on) for c in env.components}
    after = reverse_graph(graph) if operation in REVERSE else graph
    run = EnvironmentRun(environment=name, operation=operation, state=RUNNING, requested_by=requested_by[:255],
                         origin=origin, manifest_sha=repo.sha, snapshot_id=snapshot_id)
    session.add(run)
    # Reverse operations start from the last wave.
    last = max((c.wave for c in env.components), default=0)
    ordered = sorted(env.components, key=lambda c: ((last - c.wave) if operation in REVERSE else c.wave, c.service))
    only = None if only is None else set(only)
    for component in ordered:
        request: dict = {"template": env.template if env.template != name else None}
        left = only is not None and component.service not in only
        if operation == "deploy" and not left:
            request.update(_deploy_request(session, component, versions.get(component.service),
                                           snapshot.get(component.service)))
            if pin_reason is not None:
                request["pin"] = pin_reason
            if releasing:
                request["release"] = True
            if force and is_internal(component):
                request["force"] = True
        if operation == "cleanup" and is_internal(component):
            request["delete_data"] = bool(delete_data)
        data = None
        if fresh and operation == "deploy" and not left and component.manifest.kind is Kind.THIRD_PARTY:
            data = EMPTY if is_internal(component) else SHARED
            if is_internal(component) and component.manifest.seed:
                request["seed"] = True
        elif component.service in unseeded and not left and is_internal(component) and component.manifest.seed:
            # Its create (or its seed) failed before: the seed runs once this deploy's check passes.
            data, request["seed"] = unseeded[component.service], True
        run.components.append(EnvironmentRunComponent(
            service=component.service, deployment=component.deployment,
            wave=(last - component.wave) if operation in REVERSE else component.wave,
            after=sorted(after[component.service]), request=request, status=SUCCEEDED if left else WAITING,
            message="unchanged" if left else None, data=data))
    session.flush()
    if operation == "deploy" and pin_reason is not None:
        # Pinned from now, not only once each component's wave comes: no CI request slips in between.
        for deployment in session.scalars(select(Deployment).where(Deployment.name.in_(moved),
                                                                   Deployment.state != S.REMOVED)):
            pins.pin(deployment, by=requested_by, action_id=None, reason=pin_reason)
    queued = advance(session, repo, run, ctx, requested_by=requested_by, origin=origin)
    outbox.commit(session)
    hand_to_queue(ctx, queued)
    log.info("environment %s: %s run %s started (%d components, %d queued)", name, operation, run.id,
             len(run.components), len(queued))
    return run


def _lock_environment(session: Session, name: str) -> None:
    from sqlalchemy.dialects import postgresql, sqlite

    dialect = session.get_bind().dialect.name
    insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[dialect]
    session.execute(insert(EnvironmentRecord).values(name=name, template=name, created_at=datetime.now(UTC))
                    .on_conflict_do_nothing(index_elements=["name"]))
    session.scalars(select(EnvironmentRecord).where(EnvironmentRecord.name == name).with_for_update()).one()


def _deploy_request(session: Session, component: Component, version: str | None, snapshot: Mapping | None) -> dict:
    """What a deploy asks of one component: its version and (from a snapshot) its exact overrides."""
    if version is not None:
        is_image = "/" in version or ":" in version or "@" in version
        return {"image": version} if is_image else {"tag": version}
    if snapshot is not None:
        return {"tag": snapshot.get("tag"), "image": snapshot.get("image"),
                "app_overrides": dict(snapshot.get("app_overrides") or {}),
                "deployment_overrides": dict(snapshot.get("deployment_overrides") or {}), "exact": True}
    current = session.scalars(select(Deployment).where(Deployment.name == component.deployment)).first()
    if current is not None and current.state is not S.REMOVED and current.tag:
        keep_image = bool(current.image and component.manifest.image
                          and naming.split_image(current.image)[0] == component.manifest.image)
        return {"image": current.image} if keep_image else {"tag": current.tag}
    return {}


def hand_to_queue(ctx: Context, queued: list[Queued]) -> None:
    """Queue the actions a committed run step accepted (the sweep queues any the queue refuses).

    ``queued`` comes most waited-for first. What other components wait behind goes to the front of the
    queue, before work already waiting there (a quick component of an earlier step must not hold up the
    longest chain); each is put at the front in turn, so the most waited-for is pushed last and taken
    first. The others go to the back."""
    if ctx.broker is None:
        return
    for item in reversed([q for q in queued if q.behind > 0 and q.delay <= 0]):
        ctx.broker.enqueue_action(item.action_id, delay=item.delay, front=True)
    for item in queued:
        if item.behind <= 0 or item.delay > 0:
            ctx.broker.enqueue_action(item.action_id, delay=item.delay)


# --- advancing a run ---------------------------------------------------------------------------

def advance(session: Session, repo: DeploymentsRepo, run: EnvironmentRun, ctx: Context, *,
            requested_by: str | None = None, origin: str | None = None) -> list[Queued]:
    """Queue every waiting component whose predecessors all succeeded, skip those behind a failed or
    skipped one, and settle the run when nothing waits or runs; in ``session``'s transaction (not committed)."""
    requested_by = requested_by or run.requested_by
    origin = origin or run.origin
    by_service = {c.service: c for c in run.components}
    queued: list[Queued] = []
    changed = True
    while changed:
        changed = False
        for component in sorted(run.components, key=lambda c: (c.wave, c.service)):
            if component.status != WAITING:
                continue
            before = [by_service[s] for s in component.after if s in by_service]
            stopped = [c for c in before if c.status in (FAILED, SKIPPED)]
            if stopped:
                component.status = SKIPPED
                component.message = (f"not run: {stopped[0].service} {stopped[0].status}"
                                     + (f" ({stopped[0].message})" if stopped[0].message else ""))[:1000]
                changed = True
                continue
            if any(c.status != SUCCEEDED for c in before):
                continue
            changed = True
            try:
                done = _queue_component(session, repo, run, component, ctx, requested_by=requested_by,
                                        origin=origin)
            except (SamiError, IllegalTransition) as exc:
                component.status, component.message = FAILED, str(exc)[:1000]
                continue
            if isinstance(done, str):  # nothing to do
                component.status, component.message = SUCCEEDED, done
            else:
                action, start = done
                component.status, component.action_id, component.message = QUEUED, action.id, None
                queued.append(Queued(action.id, start.delay, _waiting_behind(run, component.service)))
    _settle_run(session, run)
    # The queue hands out jobs oldest first: what most components wait behind goes first (the
    # longest chain is the likeliest to be the critical path).
    return sorted(queued, key=lambda q: -q.behind)


def _waiting_behind(run: EnvironmentRun, service: str) -> int:
    """How many components of the run wait for ``service``, directly or through others."""
    return len(dependents({c.service: c.after for c in run.components}, service))


def _settle_run(session: Session, run: EnvironmentRun) -> None:
    if run.state != RUNNING or any(c.status in (WAITING, QUEUED) for c in run.components):
        return
    counts = {status: sum(1 for c in run.components if c.status == status) for status in COMPONENT_STATUSES}
    run.state = RUN_SUCCEEDED if counts[SUCCEEDED] == len(run.components) else RUN_FAILED
    run.finished_at = datetime.now(UTC)
    run.message = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    log.info("environment %s: %s run %s %s (%s)", run.environment, run.operation, run.id, run.state, run.message)


def _queue_component(session: Session, repo: DeploymentsRepo, run: EnvironmentRun,
                     component: EnvironmentRunComponent, ctx: Context, *, requested_by: str,
                     origin: str) -> tuple[Action, Start] | str:
    """Accept the component's action (not committed), or say why none is needed."""
    who = dict(requested_by=requested_by, origin=origin)
    deployment = lock_deployment(session, component.deployment)
    state = None if deployment is None else deployment.state
    if run.operation == "deploy":
        return _queue_deploy(session, repo, run, component, deployment, ctx, who)
    if state is None or state is S.REMOVED:
        if run.operation == "cleanup" and (component.request or {}).get("delete_data"):
            # An earlier cleanup kept the volumes on purpose; they are no longer any deployment's.
            return "not deployed: data volumes an earlier cleanup kept stay (remove them on the target)"
        return "not deployed"
    if run.operation == "archive":
        if state in (S.ARCHIVED, S.ARCHIVE_PENDING):
            return f"already {state}"
    elif run.operation == "restore":
        if state in (S.RUNNING, S.CREATE_PENDING, S.UPDATE_PENDING):
            return f"already {state}"
    elif run.operation == "cleanup" and state in (S.RUNNING, S.FAILURE):
        raise Conflict(f"{component.deployment} is {state}: archive the environment before cleaning it up")
    delete_data = bool((component.request or {}).get("delete_data"))
    deployment, action = accept_operation(session, repo, component.deployment, run.operation, **who,
                                          delete_data=delete_data)
    return action, Start()


def _queue_deploy(session: Session, repo: DeploymentsRepo, run: EnvironmentRun, component: EnvironmentRunComponent,
                  deployment: Deployment | None, ctx: Context, who: dict) -> tuple[Action, Start]:
    wanted = dict(component.request or {})
    template = wanted.get("template")
    environment_name = run.environment
    if not wanted.get("tag") and not wanted.get("image"):
        raise Invalid(f"no version for {component.service}: it is not deployed in {environment_name!r} yet; give "
                      f"one (versions: {{{component.service}: TAG}}, or sami env deploy --version "
                      f"{component.service}=TAG)")
    if deployment is not None and deployment.state is S.ARCHIVED:
        # Back with its volumes first; the update queued behind it on the same deployment moves it on.
        accept_operation(session, repo, component.deployment, "restore", **who)
    app, dep = dict(wanted.get("app_overrides") or {}), dict(wanted.get("deployment_overrides") or {})
    if wanted.get("exact") and deployment is not None and deployment.state is not S.REMOVED:
        # A snapshot deploys exactly its overrides: what it did not have is removed.
        app = {**dict.fromkeys(deployment.app_overrides or {}), **app}
        dep = {**dict.fromkeys(deployment.deployment_overrides or {}), **dep}
    request = DeploymentRequest(
        service=component.service, environment=environment_name, tag=wanted.get("tag"),
        image=wanted.get("image") if not wanted.get("tag") else None, app_overrides=app,
        deployment_overrides=dep, manifest_environment=template, pinning=bool(wanted.get("pin")),
        releasing=bool(wanted.get("release")),
        force=bool(wanted.get("force")), **who)
    deployment, action, start = accept_request(session, repo, request, ctx)
    if wanted.get("pin"):
        pins.pin(deployment, by=who["requested_by"], action_id=action.id, reason=wanted["pin"])
    if wanted.get("seed") and action.kind in ("create", "update"):
        # Provisioned fresh for a clone or a preview, and not seeded yet: the worker runs the scripts' seed once
        # the check of this create (or, when that failed before, of a later deploy's update) passes.
        action.config = {**(action.config or {}), "seed": True}
    return action, start


def action_settled(session: Session, action: Action, repo_at: Callable[[str | None], DeploymentsRepo],
                   ctx: Context) -> list[Queued]:
    """The action of a run's component has settled (in ``session``'s transaction, not committed):
    record the component's result and advance its run. Returns what to queue after the commit."""
    component = session.scalars(select(EnvironmentRunComponent).where(
        EnvironmentRunComponent.action_id == action.id, EnvironmentRunComponent.status == QUEUED)).first()
    if component is None:
        return []
    run = _lock_run(session, component.run_id)
    if run is None or run.state != RUNNING:
        return []
    session.refresh(component)
    if component.status != QUEUED:
        return []
    _record_result(component, action)
    return advance(session, repo_at(run.manifest_sha), run, ctx)


def _record_result(component: EnvironmentRunComponent, action: Action) -> None:
    seeding = bool((action.config or {}).get("seed"))
    if seeding and action.state is ActionState.SUCCEEDED:
        component.data = SEEDED
    elif seeding and (action.error or "").startswith(SEED_FAILED):
        component.data = action.error[:1000]
    if action.state is ActionState.SUCCEEDED:
        component.status, component.message = SUCCEEDED, None
        if "delete_data" in (component.request or {}):  # an internal third-party service cleaned up
            component.message = ("data volumes deleted" if component.request["delete_data"]
                                 else "data volumes kept: they outlive the deployment "
                                      "(cleanup --delete-data deletes them with it)")
    else:
        component.status = FAILED
        detail = f": {action.error}" if action.error else ""
        component.message = f"action {action.id} {action.state}{detail}"[:1000]


def _lock_run(session: Session, run_id: int) -> EnvironmentRun | None:
    return session.scalars(select(EnvironmentRun).where(EnvironmentRun.id == run_id).with_for_update()
                           .execution_options(populate_existing=True)).first()


def advance_runs(session_factory: Callable[[], Session], repo_at: Callable[[str | None], DeploymentsRepo],
                 ctx: Context) -> list[int]:
    """The scheduler's backstop: settle components whose action ended without the worker's step (the
    reaper or a cancel settled it), queue what can go, and settle finished runs. Returns the run ids moved."""
    with session_factory() as session:
        run_ids = list(session.scalars(select(EnvironmentRun.id).where(EnvironmentRun.state == RUNNING)))
    moved = []
    for run_id in run_ids:
        with session_factory() as session:
            run = _lock_run(session, run_id)
            if run is None or run.state != RUNNING:
                continue
            before = [(c.status, c.action_id) for c in run.components]
            for component in run.components:
                if component.status == QUEUED and component.action_id is not None:
                    action = session.get(Action, component.action_id)
                    if action is not None and ActionState(action.state).finished:
                        _record_result(component, action)
                elif component.status == QUEUED:  # its action was deleted with its deployment's record
                    component.status, component.message = FAILED, "its action is gone"
            try:
                queued = advance(session, repo_at(run.manifest_sha), run, ctx)
            except Exception:
                log.exception("environment run %s could not advance", run_id)
                session.rollback()
                continue
            after = [(c.status, c.action_id) for c in run.components]
            outbox.commit(session)
            hand_to_queue(ctx, queued)
            if before != after or run.state != RUNNING:
                moved.append(run_id)
    return moved


# --- reading -----------------------------------------------------------------------------------

def get_run(session: Session, run_id: int) -> EnvironmentRun:
    run = session.get(EnvironmentRun, run_id)
    if run is None:
        raise NotFound(f"no environment run {run_id}")
    return run


def run_view(run: EnvironmentRun) -> dict:
    """A run as the API shows it."""
    return {
        "id": run.id, "environment": run.environment, "operation": run.operation, "state": run.state,
        "requested_by": run.requested_by, "origin": run.origin, "snapshot_id": run.snapshot_id,
        "manifest_sha": run.manifest_sha, "message": run.message,
        "created_at": _time(run.created_at), "finished_at": _time(run.finished_at),
        "components": [{"service": c.service, "deployment": c.deployment, "wave": c.wave, "after": list(c.after),
                        "action_id": c.action_id, "status": c.status, "message": c.message, "data": c.data}
                       for c in sorted(run.components, key=lambda c: (c.wave, c.service))],
    }


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def status(session: Session, repo: DeploymentsRepo, name: str) -> dict:
    """The environment now: its components in deploy order with state, version and endpoint, and its last run."""
    env = environment(session, repo, name)
    names = [c.deployment for c in env.components]
    rows = {d.name: d for d in session.scalars(select(Deployment).where(Deployment.name.in_(names)))}
    last = session.scalars(select(EnvironmentRun).where(EnvironmentRun.environment == name)
                           .order_by(EnvironmentRun.id.desc()).limit(1)).first()
    data = component_data(session, name)
    components = []
    for c in env.components:
        d = rows.get(c.deployment)
        live = d is not None and d.state is not S.REMOVED
        outputs = dict(d.outputs or {}) if live else {}
        components.append({
            "service": c.service, "deployment": c.deployment, "wave": c.wave, "depends_on": list(c.depends_on),
            "kind": c.kind, "mode": c.mode, "state": str(d.state) if live else None,
            "tag": d.tag if live else None, "image": d.image if live else None,
            "endpoint": outputs.get("endpoint"), "url": outputs.get("url"),
            "status_message": d.status_message if live else None,
            "pin": pins.view(d) if live else None,
            "data": data.get(c.service) if live else None,
        })
    return {"environment": name, "template": env.template, "target": env.topology.target,
            "waves": [list(w) for w in env.waves], "components": components,
            "last_run": run_view(last) if last is not None else None}


def unpin(session: Session, repo: DeploymentsRepo, name: str, *, requested_by: str) -> list[str]:
    """Unpin every pinned component of environment ``name`` (a snapshot deploy pinned them) and commit; the
    deployments unpinned. For an environment released blue-green, or one of its colours, both colours are
    unpinned (a rollback of its release pinned them). Conflict when none is pinned."""
    env = environment(session, repo, name)
    pinned = pins.pinned_of(session, [c.deployment for c in env.components])
    released = pins.blue_green_of(repo, name)
    if released is not None:
        pinned = sorted({d.name: d for d in [*pinned, *pins.pinned_in(session, pins.colour_environments(released))]}
                        .values(), key=lambda d: d.name)
    if not pinned:
        raise Conflict(f"no component of environment {name!r} is pinned: CI requests and pushes already change them")
    for deployment in pinned:
        pins.clear(deployment)
    outbox.commit(session)
    unpinned = [d.name for d in pinned]
    log.info("environment %s: unpinned %s by %s", name, ", ".join(unpinned), requested_by)
    return unpinned


def component_data(session: Session, name: str) -> dict[str, str]:
    """What each third-party service of a clone or a preview holds (empty, seeded, seed failed: ..., shared),
    as the latest run that provisioned it recorded; by service."""
    found: dict[str, str] = {}
    for service, data in session.execute(
            select(EnvironmentRunComponent.service, EnvironmentRunComponent.data)
            .join(EnvironmentRun, EnvironmentRun.id == EnvironmentRunComponent.run_id)
            .where(EnvironmentRun.environment == name, EnvironmentRunComponent.data.is_not(None))
            .order_by(EnvironmentRun.id.desc())):
        found.setdefault(service, data)
    return found


def awaiting_seed(session: Session, name: str) -> dict[str, str]:
    """The services of environment ``name`` that asked for a seed when they were provisioned fresh and do not
    hold it yet: the latest run that recorded their data says ``empty`` (their create, or their run, stopped
    before the seed) or ``seed failed: ...``; what it says, by service."""
    found: dict[str, tuple[str, bool]] = {}
    for service, data, request in session.execute(
            select(EnvironmentRunComponent.service, EnvironmentRunComponent.data, EnvironmentRunComponent.request)
            .join(EnvironmentRun, EnvironmentRun.id == EnvironmentRunComponent.run_id)
            .where(EnvironmentRun.environment == name, EnvironmentRunComponent.data.is_not(None))
            .order_by(EnvironmentRun.id.desc())):
        found.setdefault(service, (data, bool((request or {}).get("seed"))))
    return {service: data for service, (data, asked) in found.items()
            if asked and (data == EMPTY or data.startswith(SEED_FAILED))}


def is_internal(component: Component) -> bool:
    return component.manifest.kind is Kind.THIRD_PARTY and component.manifest.mode is not ThirdPartyMode.EXTERNAL


# --- clone -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Cloned:
    """A clone: its run, and per component what its data is (empty, shared, or an application's none)."""

    environment: str
    run: EnvironmentRun
    data: dict[str, str]


def versions_of(session: Session, env: Environment) -> dict[str, dict]:
    """What each deployed component of ``env`` runs now: version and its own overrides, by service."""
    names = {c.deployment: c for c in env.components}
    found = {}
    for d in session.scalars(select(Deployment).where(Deployment.name.in_(list(names)))):
        if d.state is S.REMOVED:
            continue
        component = names[d.name]
        found[component.service] = {
            "service": component.service, "deployment": d.name, "kind": component.kind, "mode": component.mode,
            "wave": component.wave, "depends_on": list(component.depends_on), "tag": d.tag, "image": d.image,
            "app_overrides": dict(d.app_overrides or {}), "deployment_overrides": dict(d.deployment_overrides or {}),
            "secrets": sorted(component.manifest.secrets), "state": str(d.state),
        }
    return found


def clone(session: Session, repo: DeploymentsRepo, source: str, name: str, ctx: Context, *, requested_by: str,
          origin: str) -> Cloned:
    """Deploy every component of ``source`` as environment ``name``: the same versions and overrides under
    new deployment names; internal third-party services are provisioned fresh (no data is copied), external
    ones stay the same outside endpoint."""
    env = environment(session, repo, source)
    try:
        naming.check_environment(name)
        if name == naming.PULL_REQUEST_ENVIRONMENT:
            raise naming.InvalidName("a clone cannot be the pull request environment: previews follow their pull "
                                     "request")
        for component in env.components:
            naming.deployment_name(component.service, name)
    except naming.InvalidName as exc:
        raise Invalid(str(exc)) from None
    if repo.topology(name) is not None:
        raise Conflict(f"environment {name!r} is in the deployments repo already; choose another name")
    record = session.scalars(select(EnvironmentRecord).where(EnvironmentRecord.name == name)).first()
    if record is not None:
        live = session.scalars(select(Deployment.name).where(Deployment.environment == name,
                                                             Deployment.state != S.REMOVED)).first()
        if live is not None or record.clone_of is None:
            raise Conflict(f"environment {name!r} exists already; choose another name (or clean it up first)")
    for component in env.components:
        taken = session.scalars(select(Deployment).where(Deployment.name == f"{component.service}-{name}")).first()
        if taken is not None and (taken.state is not S.REMOVED
                                  or (taken.service, taken.environment) != (component.service, name)):
            if not ctx.sees(taken):
                raise Conflict(f"deployment name {taken.name!r} is not available; choose another environment name")
            raise Conflict(f"deployment name {taken.name!r} is taken (service {taken.service!r}, environment "
                           f"{taken.environment!r}, {taken.state}); choose another environment name")
    running = versions_of(session, env)
    missing = [c.service for c in env.components if c.service not in running]
    if missing:
        raise Invalid(f"cannot clone {source!r}: {', '.join(missing)} not deployed there (deploy it first)")
    if record is None:  # a clone cleaned up before keeps its record: the name is its again
        record = EnvironmentRecord(name=name)
        session.add(record)
    record.template, record.clone_of, record.created_by = env.template, source, requested_by[:255]
    session.flush()
    run = start_run(session, repo, name, "deploy", ctx, requested_by=requested_by, origin=origin,
                    snapshot=running, fresh=True)
    return Cloned(name, run, {component.service: data_words(component) for component in env.components})


def data_words(component: Component) -> str:
    """What a fresh environment's component holds, in the words a clone's answer gives."""
    if component.manifest.kind is not Kind.THIRD_PARTY:
        return "application"
    if component.manifest.mode is ThirdPartyMode.EXTERNAL:
        return "shared (external endpoint)"
    if component.manifest.seed:
        return "seeded (provisioned fresh, no data copied; its seed runs once it is up)"
    return "empty (provisioned fresh, no data copied)"


def cloned_names(session: Session) -> list[str]:
    """The environments Sami cloned (their names are not in the deployments repo)."""
    return list(session.scalars(select(EnvironmentRecord.name).where(EnvironmentRecord.clone_of.is_not(None))))


# --- pull request previews ---------------------------------------------------------------------

def preview_name(repository: str, number: int) -> str:
    """The environment of a pull request's whole-environment preview: ``pr-<n>-<6 hex of the repository>``.

    Pull requests of one number in two repositories never share it, and it is not the ``pr-<n>``
    reserved for single-service previews; with any service name of at most 40 characters the
    deployment names stay DNS labels of at most 63.
    """
    if not isinstance(number, int) or isinstance(number, bool) or not 1 <= number <= 2**31 - 1:
        raise Invalid(f"pull request number must be a whole number from 1 to {2**31 - 1}")
    return f"pr-{number}-{hashlib.sha256(repository.lower().encode()).hexdigest()[:6]}"


def sync_preview(session: Session, repo: DeploymentsRepo, source: str, tags: Mapping[str, str], ctx: Context, *,
                 repository: str, number: int, is_open: bool, requested_by: str,
                 origin: str) -> EnvironmentRun | None:
    """Bring the whole-environment preview of pull request ``repository#number`` in line with it.

    Open: the first time, every component of ``source`` (``preview_of``) is deployed under the
    preview's names — the services of ``tags`` (the pull request's applications) at their tag of its
    head commit, every other component at the version and overrides ``source`` runs now, internal
    third-party services fresh; later, only those services move to the new tags. Closed: the preview
    is archived as a whole. Returns the run started (None when a closed pull request has no preview).
    """
    name = preview_name(repository, number)
    record = session.scalars(select(EnvironmentRecord).where(EnvironmentRecord.name == name)).first()
    live = record is not None and session.scalars(select(Deployment.id).where(
        Deployment.environment == name, Deployment.state.not_in((S.REMOVED, S.ARCHIVED)))).first() is not None
    if not is_open:
        if not live:
            return None
        return start_run(session, repo, name, "archive", ctx, requested_by=requested_by, origin=origin)
    env = environment(session, repo, source)
    outside = sorted(set(tags) - {c.service for c in env.components})
    if outside:
        raise Invalid(f"{', '.join(outside)} not a component of {source!r}: no preview of it")
    if not tags or not all(tags.values()):
        raise Invalid("a preview needs the pull request's tag of each of its applications")
    if record is not None and live:
        return start_run(session, repo, name, "deploy", ctx, requested_by=requested_by, origin=origin,
                         versions=dict(tags), only=set(tags))
    running = versions_of(session, env)
    missing = [c.service for c in env.components if c.service not in running and c.service not in tags]
    if missing:
        raise Invalid(f"no preview of {source!r}: {', '.join(missing)} not deployed there")
    for service, tag in tags.items():
        running[service] = {**running.get(service, {}), "service": service, "tag": tag, "image": None}
    if record is None:
        record = EnvironmentRecord(name=name)
        session.add(record)
    record.template, record.clone_of, record.created_by = env.template, source, requested_by[:255]
    # The pull request whose sticky comment lists the preview's components.
    record.pull_request_repository, record.pull_request_number = repository[:140], number
    session.flush()
    return start_run(session, repo, name, "deploy", ctx, requested_by=requested_by, origin=origin, snapshot=running,
                     fresh=True)


def preview_of_pull_request(session: Session, repository: str, number: int) -> dict | None:
    """The whole-environment preview of pull request ``repository#number`` as its sticky comment shows it: its
    name, source, and each component (in deploy order) with state, version, link and the last run's result."""
    record = session.scalars(select(EnvironmentRecord).where(
        EnvironmentRecord.pull_request_repository == repository,
        EnvironmentRecord.pull_request_number == number)).first()
    if record is None:
        return None
    last = session.scalars(select(EnvironmentRun).where(EnvironmentRun.environment == record.name)
                           .order_by(EnvironmentRun.id.desc()).limit(1)).first()
    if last is None:
        return None
    names = [c.deployment for c in last.components]
    rows = {d.name: d for d in session.scalars(select(Deployment).where(Deployment.name.in_(names)))}
    components = []
    for c in sorted(last.components, key=lambda c: (c.wave, c.service)):
        d = rows.get(c.deployment)
        live = d is not None and d.state is not S.REMOVED
        outputs = dict(d.outputs or {}) if live else {}
        link = next((entry.get("url") for entry in (d.links or ()) if entry.get("url")), None) if live else None
        components.append({
            "service": c.service, "deployment": c.deployment, "state": d.state if live else None,
            "failure_reason": d.failure_reason if live else None,
            "status_message": d.status_message if live else None, "tag": d.tag if live else None,
            "url": link or outputs.get("url"), "endpoint": outputs.get("endpoint"),
            "status": c.status, "message": c.message, "data": c.data,
            "updated_at": d.status_changed_at if live else None,
        })
    return {"environment": record.name, "source": record.clone_of, "run_id": last.id,
            "operation": last.operation, "run_state": last.state, "components": components}
