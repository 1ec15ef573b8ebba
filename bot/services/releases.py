"""Blue-green releases of an environment: two colours, a QA gate, one switch, an immediate rollback.

An environment whose file has ``blue_green: {entry, keep_previous, release_approvers}`` is kept in two
**colours**, ``<environment>-blue`` and ``<environment>-green``: each an environment of its own, deployed
with the environment's manifests (like a clone: every component under ``<service>-<environment>-<colour>``),
so each colour's entry uses its own colour's components. A stable **entry** (the entry component's
deployment name without a colour, ``<entry>-<environment>``) points at the live colour's entry.

The steps, each a ``Release`` row whose state changes through ``bot.core.states``:

1. ``prepare``: a release (a snapshot, or versions) is deployed into the idle colour by an ordinary
   environment run (``deploying``); once the run succeeded it is ``awaiting`` release, and QA tests it on
   the idle colour's own URL.
2. ``switch``: someone allowed to release (``release_approvers``, when the file names any) switches the
   entry to it (``switching``); a worker runs the entry's ``switch`` control script and settles the row
   (``live``, the one live before it ``replaced``; or ``failed``, the entry unchanged).
3. ``rollback``: the entry goes back to the previous colour at once (a ``rollback`` row, ``switching``):
   the previous colour keeps running for ``keep_previous`` after a switch, then ``expire`` (a scheduler
   step) archives it (scaled to zero, data kept).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot import outbox
from bot.core import naming
from bot.core.errors import Conflict, Invalid, NotAllowed, NotFound, SamiError
from bot.core.lifecycle import RELEASE_WORDS
from bot.core.models import Deployment, EnvironmentRecord, EnvironmentRun, Release
from bot.core.states import DeploymentState, IllegalReleaseTransition, new_release, transition_release
from bot.manifests import DeploymentsRepo
from bot.manifests.topology import COLOURS, BlueGreen
from bot.services import environments, pins, snapshots
from bot.services.deployments import Context

log = logging.getLogger(__name__)
S = DeploymentState
RELEASE, ROLLBACK = "release", "rollback"
KEEP_PREVIOUS_BY = "schedule:keep_previous"  # who archives a previous colour whose keep_previous has passed
OPEN_STATES = ("deploying", "awaiting", "switching")


@dataclass(frozen=True)
class BlueGreenEnvironment:
    """An environment released blue-green: its name, its blue_green settings and its entry's stable name."""

    name: str
    settings: BlueGreen
    entry_deployment: str

    def colour_environment(self, colour: str) -> str:
        return colour_environment(self.name, colour)


def colour_environment(name: str, colour: str) -> str:
    """``production`` and ``blue`` -> ``production-blue`` (an environment name, checked)."""
    if colour not in COLOURS:
        raise Invalid(f"{colour!r} is not a colour (one of: {', '.join(COLOURS)})")
    try:
        return naming.check_environment(f"{name}-{colour}")
    except naming.InvalidName as exc:
        raise Invalid(str(exc)) from None


def other_colour(colour: str | None) -> str:
    return COLOURS[1] if colour == COLOURS[0] else COLOURS[0]


def blue_green(session: Session, repo: DeploymentsRepo, name: str) -> BlueGreenEnvironment:
    """The environment ``name`` as released blue-green; Invalid when its file has no ``blue_green``."""
    env = environments.environment(session, repo, name)
    if env.template != name:
        raise Invalid(f"environment {name!r} is a colour or a clone of {env.template!r}; release {env.template!r}")
    settings = env.topology.blue_green
    if settings is None:
        raise Invalid(f"environment {name!r} is not released blue-green: its environment file has no blue_green "
                      "(blue_green: {entry: SERVICE, keep_previous: 24h})")
    try:
        entry = naming.deployment_name(settings.entry, name)
        for colour in COLOURS:
            for component in env.components:
                naming.deployment_name(component.service, colour_environment(name, colour))
    except naming.InvalidName as exc:
        raise Invalid(str(exc)) from None
    return BlueGreenEnvironment(name, settings, entry)


# --- who may release ---------------------------------------------------------------------------

# Whether a GitHub login is an active member of a GitHub team: ``(org, team_slug, login) -> bool``. The caller
# that can ask GitHub hands one in (bot.github.teams); it raises MembershipUnknown when GitHub cannot say.
TeamCheck = Callable[[str, str, str], bool]
TEAM, TOKEN = "team:", "token:"


class MembershipUnknown(SamiError):
    """Whether someone is a member of a team among the approvers could not be learnt (a GitHub error, no
    credentials): they are refused, never let through."""


def approvers(bg: BlueGreenEnvironment) -> tuple[str, ...]:
    return bg.settings.approvers


def who_may(bg: BlueGreenEnvironment) -> str:
    """The approvers in words: ``alice, team:acme/releasers (its members on GitHub), token:release-bot``."""
    return ", ".join(f"{entry} (its members on GitHub)" if entry.startswith(TEAM) else entry
                     for entry in approvers(bg))


def may_release(bg: BlueGreenEnvironment, who: str, teams: TeamCheck | None = None) -> bool:
    """Whether ``who`` (``github:<login>`` or ``token:<name>``) may release and roll back ``bg``.

    Without ``release_approvers`` whoever may deploy the environment may; with it, a GitHub user whose
    login is listed (case-insensitive, as GitHub's) or who is an active member of a listed ``team:<org>/<slug>``
    (asked through ``teams``), or an API token listed as ``token:<name>``. MembershipUnknown when only a team's
    membership could let them and it could not be learnt (without ``teams``, or a GitHub error).
    """
    listed = approvers(bg)
    if not listed:
        return True
    kind, _, name = who.partition(":")
    for entry in listed:
        if entry.startswith(TOKEN):
            if kind == "token" and entry[len(TOKEN):] == name:
                return True
        elif not entry.startswith(TEAM) and kind == "github" and entry.lower() == name.lower():
            return True
    if kind != "github":
        return False  # teams have people as members, not API tokens
    unknown = []
    for entry in listed:
        if not entry.startswith(TEAM):
            continue
        org, _, slug = entry[len(TEAM):].partition("/")
        if teams is None:
            unknown.append(f"{entry}: GitHub is not asked here")
            continue
        try:
            if teams(org, slug, name):
                return True
        except MembershipUnknown as exc:
            unknown.append(f"{entry}: {exc.message}")
    if unknown:
        raise MembershipUnknown("; ".join(unknown))
    return False


def check_may_release(bg: BlueGreenEnvironment, who: str, teams: TeamCheck | None = None) -> None:
    """NotAllowed, saying who may (teams included), unless ``who`` may release ``bg``; a team membership GitHub
    could not confirm refuses too."""
    try:
        allowed = may_release(bg, who, teams)
    except MembershipUnknown as exc:
        log.warning("environment %s: refused %s, whose team membership could not be learnt: %s", bg.name, who,
                    exc.message)
        raise NotAllowed(f"{who} may not release {bg.name!r}: Sami could not learn from GitHub whether they are a "
                         f"member of the teams that may ({exc.message}), and lets no one through on an error; only "
                         f"{who_may(bg)} may (release_approvers in its environment file)",
                         approvers=list(approvers(bg))) from None
    if not allowed:
        raise NotAllowed(f"{who} may not release {bg.name!r}: only {who_may(bg)} may "
                         "(release_approvers in its environment file)", approvers=list(approvers(bg)))


# --- reading -----------------------------------------------------------------------------------

def _latest(session: Session, name: str, states: Iterable[str]) -> Release | None:
    return session.scalars(select(Release).where(Release.environment == name, Release.state.in_(list(states)))
                           .order_by(Release.id.desc()).limit(1)).first()


def live(session: Session, name: str) -> Release | None:
    """The switch that made the live colour live (None: never released)."""
    return _latest(session, name, ("live",))


def live_colour(session: Session, name: str) -> str | None:
    current = live(session, name)
    return None if current is None else current.to_colour


def settled(session: Session, release: Release) -> tuple[str, str | None] | None:
    """What a release deploying into the idle colour becomes once its run has finished: (state, message), or
    None while it is not deploying or its run goes on. Reads only."""
    if release.state != "deploying" or release.run_id is None:
        return None
    run = session.get(EnvironmentRun, release.run_id)
    if run is None:
        return "failed", "its deploy run is gone"
    if run.state == environments.RUN_SUCCEEDED:
        return "awaiting", f"{release.to_colour} deployed (run {run.id}): awaiting release"
    if run.state == environments.RUN_FAILED:
        return "failed", f"deploy run {run.id} failed: {run.message or ''}"
    return None


def refresh(session: Session, release: Release) -> Release:
    """A release deploying into the idle colour moves on once its run has finished (not committed)."""
    moved = settled(session, release)
    if moved is not None:
        transition_release(release, moved[0], message=moved[1])
    return release


def deploys_settled(session: Session, environment: str) -> None:
    """A run of ``environment`` may have finished (in the worker's transaction, not committed): a release
    deploying into it (a colour) moves on to awaiting release, or failed."""
    for release in session.scalars(select(Release).where(Release.state == "deploying")):
        if release.environment and environment in {colour_environment(release.environment, c) for c in COLOURS}:
            refresh(session, release)


def status(session: Session, repo: DeploymentsRepo, name: str, ctx: Context | None = None) -> dict:
    """Live and idle colour, what awaits release and who may release it, what a rollback pinned (``pinned``),
    and the last releases. Reads only: a
    release whose run has finished is shown as what it becomes (the worker that settles the run's last
    component, or the scheduler's releases step, records it)."""
    bg = blue_green(session, repo, name)
    pending = _latest(session, name, OPEN_STATES)
    pending_view = None if pending is None else shown(session, pending)
    current = live(session, name)
    live_c = None if current is None else current.to_colour
    idle = other_colour(live_c)
    return {
        "environment": name, "entry": bg.settings.entry, "entry_deployment": bg.entry_deployment,
        "keep_previous": bg.settings.keep_previous, "release_approvers": list(approvers(bg)),
        "live": None if live_c is None else _colour_view(session, repo, bg, live_c, ctx),
        "idle": _colour_view(session, repo, bg, idle, ctx),
        "previous": None if current is None or current.from_colour is None else {
            "colour": current.from_colour, "archived": current.previous_archived_at is not None,
            "archive_at": _time(_archive_at(bg, current))},
        "pending": pending_view,
        "pinned": [{"deployment": d.name, **pins.view(d)}
                   for d in pins.pinned_in(session, pins.colour_environments(name))],
        "awaiting_release": pending_view is not None and pending_view["state"] == "awaiting",
        "history": history_view(session, name, limit=20),
    }


def _archive_at(bg: BlueGreenEnvironment, release: Release) -> datetime | None:
    if release.switched_at is None or release.from_colour is None:
        return None
    return _aware(release.switched_at) + timedelta(seconds=bg.settings.keep_previous)


def _colour_view(session: Session, repo: DeploymentsRepo, bg: BlueGreenEnvironment, colour: str,
                 ctx: Context | None) -> dict:
    env_name = bg.colour_environment(colour)
    entry_name = f"{bg.settings.entry}-{env_name}"
    entry = session.scalars(select(Deployment).where(Deployment.name == entry_name)).first()
    url = None
    if entry is not None and entry.state is not S.REMOVED:
        url = (entry.outputs or {}).get("url") or next((link.get("url") for link in entry.links or []
                                                        if isinstance(link, dict) and link.get("url")), None)
    if url is None and ctx is not None:
        manifest = repo.find(bg.settings.entry, bg.name)
        if manifest is not None:
            url = manifest.render_url(name=entry_name, base_domain=ctx.base_domain, namespace=ctx.namespace,
                                      project_name=ctx.project_name, pr=None)
    states = sorted({str(d.state) for d in session.scalars(select(Deployment).where(
        Deployment.environment == env_name, Deployment.state != S.REMOVED))})
    return {"colour": colour, "environment": env_name, "entry_deployment": entry_name,
            "tag": None if entry is None or entry.state is S.REMOVED else entry.tag,
            "preview_url": url, "states": states}


def history(session: Session, name: str, limit: int = 100) -> list[Release]:
    return list(session.scalars(select(Release).where(Release.environment == name)
                                .order_by(Release.id.desc()).limit(limit)))


def history_view(session: Session, name: str, limit: int = 100) -> list[dict]:
    """The releases of ``name``, newest first, as shown: one whose run has finished as what it becomes."""
    found = []
    for release in history(session, name, limit=limit):
        found.append(shown(session, release))
    return found


def shown(session: Session, release: Release) -> dict:
    """``view`` of ``release``, a release whose deploy run has finished as what it becomes (reads only)."""
    found = view(release)
    moved = settled(session, release)
    if moved is not None:
        found.update(state=moved[0], state_words=RELEASE_WORDS.get(moved[0], moved[0]), message=moved[1])
    return found


def get(session: Session, release_id: int) -> Release:
    release = session.get(Release, release_id)
    if release is None:
        raise NotFound(f"no release {release_id}")
    return release


def view(release: Release) -> dict:
    return {"id": release.id, "environment": release.environment, "kind": release.kind, "state": release.state,
            "state_words": RELEASE_WORDS.get(release.state, release.state),
            "from_colour": release.from_colour, "to_colour": release.to_colour,
            "snapshot_id": release.snapshot_id, "run_id": release.run_id, "archive_run_id": release.archive_run_id,
            "versions": dict(release.versions or {}), "requested_by": release.requested_by,
            "switched_by": release.switched_by, "origin": release.origin, "message": release.message,
            "created_at": _time(release.created_at), "switched_at": _time(release.switched_at),
            "previous_archived_at": _time(release.previous_archived_at)}


def summary(release: Release) -> str:
    """One line for a history, a comment or a log: who switched what from which colour to which."""
    when = _aware(release.switched_at or release.created_at)
    who = release.switched_by or release.requested_by
    moved = f"{release.from_colour or 'nothing'} → {release.to_colour}"
    return (f"{release.kind} {release.id} of {release.environment}: {moved}, "
            f"{RELEASE_WORDS.get(release.state, release.state)}, by {who} at {when:%Y-%m-%d %H:%M} UTC")


def _time(value: datetime | None) -> str | None:
    return None if value is None else _aware(value).isoformat()


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


# --- deploying a release into the idle colour ------------------------------------------------------

def prepare(session: Session, repo: DeploymentsRepo, name: str, ctx: Context, *, requested_by: str, origin: str,
            versions: Mapping[str, str] | None = None, snapshot: str | None = None,
            source_repo: str | None = None, pull_request: int | None = None) -> Release:
    """Deploy a release into the idle colour of ``name``: ``snapshot`` (its name; a snapshot of any
    environment, e.g. stage's, gives its components' versions and overrides exactly), or ``versions``
    (service -> tag or image); the components neither names keep what the live colour runs. Commits;
    the release is ``deploying`` until its run has finished."""
    bg = blue_green(session, repo, name)
    if snapshot and versions:
        raise Invalid("give versions or a snapshot, not both")
    busy = _latest(session, name, OPEN_STATES)
    if busy is not None:
        refresh(session, busy)
    if busy is not None and busy.state in ("deploying", "switching"):
        outbox.commit(session)
        raise Conflict(f"release {busy.id} of {name!r} is {RELEASE_WORDS[busy.state]}: wait until it is done",
                       release_id=busy.id)
    current = live(session, name)
    idle = other_colour(None if current is None else current.to_colour)
    idle_env = bg.colour_environment(idle)
    env = environments.environment(session, repo, name)
    by_service: dict[str, dict] = {}
    snapshot_id = None
    if current is not None:
        by_service = environments.versions_of(session, environments.environment(
            session, repo, bg.colour_environment(current.to_colour)))
    if snapshot:  # of any environment (stage's, QA'd there): the components it has, exactly
        found = snapshots.get(session, snapshot)
        members = {c.service for c in env.components}
        by_service.update({c["service"]: dict(c) for c in found.components if c["service"] in members})
        snapshot_id = found.id
    unknown = sorted(set(versions or {}) - {c.service for c in env.components})
    if unknown:
        raise Invalid(f"environment {name!r} has no component {', '.join(unknown)}")
    missing = sorted({c.service for c in env.components} - set(versions or {}) - set(by_service))
    if missing:
        raise Invalid(f"no version for {', '.join(missing)}: nothing of {name!r} is live yet to keep it from; give "
                      f"a snapshot or a version of every component (sami env release {name} --version "
                      f"{missing[0]}=TAG)")
    _colour_record(session, name, idle_env, requested_by)
    if busy is not None and busy.state == "awaiting":
        transition_release(busy, "superseded", message="a newer release was deployed into the idle colour")
    release = new_release(session, Release(
        environment=name, kind=RELEASE, from_colour=None if current is None else current.to_colour,
        to_colour=idle, snapshot_id=snapshot_id, versions=dict(versions or {}), requested_by=requested_by[:255],
        origin=origin, source_repo=source_repo, pull_request=pull_request), "deploying")
    try:
        run = environments.start_run(session, repo, idle_env, "deploy", ctx, requested_by=requested_by,
                                     origin=origin, versions=versions, snapshot=by_service or None,
                                     snapshot_id=snapshot_id, releasing=True)
    except Exception:  # refused (a run of the colour in progress, a version missing): no release either
        session.rollback()
        raise
    release = session.get(Release, release.id)  # start_run committed it with the run
    release.run_id = run.id
    refresh(session, release)
    outbox.commit(session)
    log.info("environment %s: release %s deploying into %s (run %s)", name, release.id, idle_env, run.id)
    return release


def _colour_record(session: Session, name: str, colour_env: str, requested_by: str) -> None:
    """A colour is an environment Sami made, deployed with ``name``'s manifests (like a clone)."""
    record = session.scalars(select(EnvironmentRecord).where(EnvironmentRecord.name == colour_env)).first()
    if record is None:
        session.add(EnvironmentRecord(name=colour_env, template=name, clone_of=name, created_by=requested_by[:255]))
        session.flush()
    elif record.template != name:
        raise Conflict(f"environment {colour_env!r} exists already and is not a colour of {name!r}")


# --- switching -----------------------------------------------------------------------------------

def switch(session: Session, repo: DeploymentsRepo, name: str, ctx: Context, *, requested_by: str, origin: str,
           source_repo: str | None = None, pull_request: int | None = None, teams: TeamCheck | None = None) -> Release:
    """Switch the entry of ``name`` to the colour awaiting release (``teams`` answers for the approvers' GitHub
    teams). Commits and queues the switch."""
    bg = blue_green(session, repo, name)
    check_may_release(bg, requested_by, teams)
    pending = _latest(session, name, OPEN_STATES)
    if pending is not None:
        refresh(session, pending)
    if pending is None or pending.state != "awaiting":
        outbox.commit(session)
        if pending is not None and pending.state == "deploying":
            raise Conflict(f"release {pending.id} of {name!r} is still deploying into {pending.to_colour}: QA it "
                           "and release once it is deployed", release_id=pending.id)
        if pending is not None and pending.state == "switching":
            raise Conflict(f"{pending.kind} {pending.id} of {name!r} is switching already", release_id=pending.id)
        raise Conflict(f"nothing of {name!r} awaits release: deploy one into the idle colour first "
                       f"(sami release {name} --snapshot NAME)")
    _check_colour_runs(session, bg, pending.to_colour)
    pending.switched_by = requested_by[:255]
    if source_repo and pull_request:
        pending.source_repo, pending.pull_request = source_repo, pull_request
    transition_release(pending, "switching")
    outbox.commit(session)
    _queue(ctx, pending.id)
    log.info("environment %s: release %s switching to %s", name, pending.id, pending.to_colour)
    return pending


def rollback(session: Session, repo: DeploymentsRepo, name: str, ctx: Context, *, requested_by: str, origin: str,
             source_repo: str | None = None, pull_request: int | None = None,
             teams: TeamCheck | None = None) -> Release:
    """Switch the entry of ``name`` back to the colour live before the last switch (still running; ``teams``
    answers for the approvers' GitHub teams). Commits and queues the switch."""
    bg = blue_green(session, repo, name)
    check_may_release(bg, requested_by, teams)
    switching = _latest(session, name, ("switching",))
    if switching is not None:
        raise Conflict(f"{switching.kind} {switching.id} of {name!r} is switching: wait until it is done",
                       release_id=switching.id)
    current = live(session, name)
    if current is None or current.from_colour is None:
        raise Conflict(f"{name!r} has no previous colour to roll back to")
    if current.previous_archived_at is not None:
        raise Conflict(f"the previous colour of {name!r}, {current.from_colour}, was archived after keep_previous: "
                       f"restore it first (sami env restore {bg.colour_environment(current.from_colour)})")
    _check_colour_runs(session, bg, current.from_colour)
    release = new_release(session, Release(
        environment=name, kind=ROLLBACK, from_colour=current.to_colour, to_colour=current.from_colour,
        snapshot_id=_snapshot_of(session, name, current.from_colour), versions={},
        requested_by=requested_by[:255], switched_by=requested_by[:255], origin=origin,
        source_repo=source_repo, pull_request=pull_request), "switching")
    _pin_colours(session, bg, release)
    outbox.commit(session)
    _queue(ctx, release.id)
    log.info("environment %s: rollback %s switching back to %s", name, release.id, release.to_colour)
    return release


def _pin_colours(session: Session, bg: BlueGreenEnvironment, rollback: Release) -> None:
    """A rollback says "not that release": both colours are pinned at once (in the rollback's transaction), so
    CI requests, pushes and environment deploys leave them as they are until someone unpins the environment
    (sami env unpin) or a new release is switched live."""
    reason = f"rollback {rollback.id} of {bg.name} from {rollback.from_colour} to {rollback.to_colour}"
    for deployment in session.scalars(select(Deployment).where(
            Deployment.environment.in_(pins.colour_environments(bg.name)), Deployment.state != S.REMOVED)
            .order_by(Deployment.name)):
        pins.pin(deployment, by=rollback.requested_by, action_id=None, reason=reason)


def _unpin_colours(session: Session, name: str) -> list[str]:
    """A release switched live ends a rollback's pin of the environment: both colours are unpinned."""
    unpinned = [d.name for d in pins.pinned_in(session, pins.colour_environments(name)) if pins.clear(d)]
    if unpinned:
        log.info("environment %s: a release switched live unpinned %s", name, ", ".join(unpinned))
    return unpinned


def _snapshot_of(session: Session, name: str, colour: str) -> int | None:
    """The snapshot the last release into ``colour`` deployed (for the record of a rollback to it)."""
    last = session.scalars(select(Release).where(Release.environment == name, Release.to_colour == colour,
                                                 Release.kind == RELEASE).order_by(Release.id.desc()).limit(1)).first()
    return None if last is None else last.snapshot_id


def _check_colour_runs(session: Session, bg: BlueGreenEnvironment, colour: str) -> None:
    env_name = bg.colour_environment(colour)
    entry = session.scalars(select(Deployment).where(
        Deployment.name == f"{bg.settings.entry}-{env_name}")).first()
    if entry is None or entry.state is not S.RUNNING:
        shown = "not deployed" if entry is None else str(entry.state)
        raise Conflict(f"the entry of colour {colour} ({bg.settings.entry}-{env_name}) is {shown}: the entry can "
                       "only be switched to a running colour")


def switching(session: Session) -> list[int]:
    """The switches not settled yet (the scheduler's step queues again those the queue does not hold)."""
    return list(session.scalars(select(Release.id).where(Release.state == "switching").order_by(Release.id)))


def _queue(ctx: Context, release_id: int) -> None:
    enqueue = getattr(ctx.broker, "enqueue_switch", None)
    if enqueue is not None:
        enqueue(release_id)  # if the queue refuses, the scheduler's releases step runs it


@dataclass(frozen=True)
class SwitchPlan:
    """What the worker needs to run the entry's ``switch``: the release, the entry's manifest and
    stable name, the colour switched to and the deployment whose endpoint is the backend."""

    release_id: int
    environment: str
    entry_service: str
    entry_deployment: str
    colour: str
    backend_deployment: Deployment


def plan(session: Session, repo: DeploymentsRepo, release_id: int) -> SwitchPlan | None:
    """The switch to run for ``release_id`` (None when it is not switching any more)."""
    release = session.get(Release, release_id)
    if release is None or release.state != "switching":
        return None
    bg = blue_green(session, repo, release.environment)
    backend = session.scalars(select(Deployment).where(
        Deployment.name == f"{bg.settings.entry}-{bg.colour_environment(release.to_colour)}")).first()
    if backend is None:
        raise Conflict(f"the entry of colour {release.to_colour} is not deployed")
    return SwitchPlan(release.id, release.environment, bg.settings.entry, bg.entry_deployment, release.to_colour,
                      backend)


def switched(session: Session, release_id: int, *, ok: bool, message: str, now: datetime | None = None) -> bool:
    """Settle a switch the worker ran (commits): ``live`` (the one live before is ``replaced``; a release, not a
    rollback, unpins the colours a rollback pinned) or ``failed`` (the entry stays where it was). False when it
    was settled already."""
    release = session.scalars(select(Release).where(Release.id == release_id).with_for_update()).first()
    if release is None or release.state != "switching":
        session.rollback()
        return False
    now = now or datetime.now(UTC)
    if ok:
        before = live(session, release.environment)
        if before is not None and before.id != release.id:
            transition_release(before, "replaced", message=f"replaced by {release.kind} {release.id}")
        transition_release(release, "live", message=message, now=now)
        if release.kind == RELEASE:
            _unpin_colours(session, release.environment)
    else:
        transition_release(release, "failed", message=message)
    outbox.commit(session)
    log.info("environment %s: %s", release.environment, summary(release))
    return True


# --- the scheduler's step ---------------------------------------------------------------------------

def expire(session_factory: Callable[[], Session], repo: DeploymentsRepo, ctx: Context, now: datetime) -> list[int]:
    """Archive the previous colour of every environment whose last switch is older than its
    ``keep_previous`` (scaled to zero, data kept); advance releases whose deploy run has finished.
    Returns the ids of the releases whose previous colour was archived now."""
    archived = []
    with session_factory() as session:
        for release in session.scalars(select(Release).where(Release.state == "deploying")):
            try:
                refresh(session, release)
            except IllegalReleaseTransition:
                continue
        outbox.commit(session)
        candidates = list(session.scalars(select(Release.id).where(
            Release.state == "live", Release.from_colour.is_not(None), Release.previous_archived_at.is_(None))))
    for release_id in candidates:
        with session_factory() as session:
            release = session.scalars(select(Release).where(Release.id == release_id).with_for_update()).first()
            if release is None or release.state != "live" or release.previous_archived_at is not None:
                session.rollback()
                continue
            try:
                bg = blue_green(session, repo, release.environment)
            except SamiError as exc:
                log.warning("release %s: %s; its previous colour is left as it is", release_id, exc)
                session.rollback()
                continue
            due = _archive_at(bg, release)
            if due is None or now < due:
                session.rollback()
                continue
            previous = bg.colour_environment(release.from_colour)
            release.previous_archived_at = now
            session.flush()
            try:
                run = environments.start_run(session, repo, previous, "archive", ctx,
                                             requested_by=KEEP_PREVIOUS_BY, origin="schedule")
            except SamiError as exc:
                session.rollback()
                log.warning("release %s: the previous colour %s cannot be archived yet (%s)", release_id, previous,
                            exc)
                continue
            release = session.get(Release, release_id)
            release.archive_run_id = run.id
            session.commit()
            archived.append(release_id)
            log.info("environment %s: previous colour %s archived after keep_previous (run %s)",
                     release.environment, previous, run.id)
    return archived

