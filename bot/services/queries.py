"""Read queries shared by the API and the status page: the deployment list and recent deliveries.

One place turns a request's filters (service, environment, state, pull request, repository, text,
sort, cursor) into SQL, so the page and ``GET /api/v1/deployments`` cannot disagree about what a
filter means. Pagination is by keyset: a cursor holds the last row's sort key, so page 200 costs
what page 1 costs and rows inserted meanwhile do not shift what comes next.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from sqlalchemy import and_, case, false, func, or_, select, tuple_
from sqlalchemy.orm import Session

from bot.core.errors import Invalid
from bot.core.lifecycle import DEPLOY_KINDS
from bot.core.models import Action, Delivery, Deployment
from bot.core.states import DeploymentState
from bot.services.tokens import Scopes

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
# States a person should look at first: `attention` sorts them, and drifted deployments, to the top.
ATTENTION_STATES = (DeploymentState.FAILURE, DeploymentState.CLEANUP_FAILED)
SORTS = ("name", "-updated", "state", "attention")
_REPOSITORY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}\Z")
# Service and environment names; "_" for the pull_request environment.
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}\Z")


def _limit(args: Mapping[str, str]) -> int:
    """``?limit=``: rows on a page, DEFAULT_LIMIT when not given."""
    raw = args.get("limit")
    if not raw:
        return DEFAULT_LIMIT
    if not _whole(raw) or not 1 <= int(raw) <= MAX_LIMIT:
        raise QueryError(f"'limit' must be a whole number from 1 to {MAX_LIMIT}, got {raw!r}")
    return int(raw)


def _whole(text: str) -> bool:
    """Digits 0-9 only, at most 18 (``str.isdigit`` also holds for '²', which ``int`` refuses)."""
    return text.isascii() and text.isdigit() and len(text) <= 18


class QueryError(Invalid):
    """A filter, sort or cursor that cannot be used (400, saying which and what is allowed)."""


@dataclass(frozen=True)
class DeploymentFilter:
    """What a list of deployments is limited to and how it is ordered."""

    services: tuple[str, ...] = ()
    environments: tuple[str, ...] = ()
    states: tuple[DeploymentState, ...] = ()
    pull_request: int | None = None
    repository: str | None = None
    q: str | None = None
    sort: str = "name"
    limit: int = DEFAULT_LIMIT
    cursor: str | None = None
    include_removed: bool = False

    @classmethod
    def from_args(cls, args, *, default_sort: str = "name") -> DeploymentFilter:
        """Read a filter from query arguments (a werkzeug MultiDict); QueryError when one is wrong."""
        services = tuple(v for v in args.getlist("service") if v)
        environments = tuple(v for v in args.getlist("environment") if v)
        for kind, values in (("service", services), ("environment", environments)):
            for value in values:
                if not _NAME_RE.match(value):
                    raise QueryError(f"'{kind}' must be a lowercase name (letters, digits, dashes), got {value!r}")
        states = []
        for value in args.getlist("state"):
            if not value:
                continue
            try:
                states.append(DeploymentState(value))
            except ValueError:
                raise QueryError(f"unknown state {value!r} (states: {', '.join(DeploymentState)})") from None
        pull_request = None
        if args.get("pull_request"):
            raw = args["pull_request"]
            if not _whole(raw) or not 1 <= int(raw) <= 2**31 - 1:
                raise QueryError(f"'pull_request' must be a pull request number, got {raw!r}")
            pull_request = int(raw)
        repository = args.get("repository") or None
        if repository is not None and not _REPOSITORY_RE.match(repository):
            raise QueryError(f"'repository' must be owner/name, got {repository!r}")
        q = (args.get("q") or "").strip()[:100] or None
        sort = args.get("sort") or default_sort
        if sort not in SORTS:
            raise QueryError(f"unknown sort {sort!r} (sorts: {', '.join(SORTS)})")
        limit = _limit(args)
        return cls(services=services, environments=environments, states=tuple(states), pull_request=pull_request,
                   repository=repository, q=q, sort=sort, limit=limit, cursor=args.get("cursor") or None,
                   include_removed=args.get("all") in ("1", "true"))


@dataclass
class Page:
    """One page of rows and the cursor of the next (None on the last page)."""

    rows: list = field(default_factory=list)
    next_cursor: str | None = None


def readable(query, scopes: Scopes | None):
    """Limit a deployments query to what ``scopes`` may read; None reads everything (an open page)."""
    if scopes is None or scopes.admin:
        return query
    if "read" not in scopes.actions:
        return query.where(false())
    if "*" not in scopes.services:
        query = query.where(Deployment.service.in_(scopes.services))
    if "*" not in scopes.environments:
        query = query.where(Deployment.environment.in_(scopes.environments))
    return query


def _attention_rank():
    # drift_since is set exactly while the deployment drifts
    return case((Deployment.state.in_([s.value for s in ATTENTION_STATES]) | Deployment.drift_since.is_not(None), 0),
                else_=1)


def _needs_attention(deployment: Deployment) -> bool:
    return deployment.state in ATTENTION_STATES or deployment.drift_since is not None


def _sort_keys(sort: str) -> list[tuple[object, bool, str]]:
    """(expression, ascending, kind) in order; the last key (id) makes every row's key unique."""
    if sort == "name":
        return [(Deployment.name, True, "str"), (Deployment.id, True, "int")]
    if sort == "-updated":
        return [(Deployment.updated_at, False, "time"), (Deployment.id, False, "int")]
    if sort == "state":
        return [(Deployment.state, True, "str"), (Deployment.name, True, "str"), (Deployment.id, True, "int")]
    return [(_attention_rank(), True, "int"), (Deployment.updated_at, False, "time"), (Deployment.id, False, "int")]


def _key_of(deployment: Deployment, sort: str) -> list:
    values = {"name": [deployment.name, deployment.id],
              "-updated": [deployment.updated_at.isoformat(), deployment.id],
              "state": [str(deployment.state), deployment.name, deployment.id],
              "attention": [0 if _needs_attention(deployment) else 1, deployment.updated_at.isoformat(),
                            deployment.id]}
    return values[sort]


def encode_cursor(sort: str, key: Sequence) -> str:
    raw = json.dumps({"s": sort, "k": list(key)}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str, sort: str, kinds: Sequence[str]) -> list:
    problem = "'cursor' is not one this list gave out: start again without it"
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        key = data["k"]
    except (ValueError, TypeError, KeyError):
        raise QueryError(problem) from None
    if not isinstance(data, dict) or data.get("s") != sort:
        raise QueryError("'cursor' belongs to another sort order: start again without it")
    if not isinstance(key, list) or len(key) != len(kinds):
        raise QueryError(problem)
    values = []
    for value, kind in zip(key, kinds, strict=True):
        try:
            if kind == "int":
                if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
                    raise ValueError
                values.append(value)
            elif kind == "time":
                moment = datetime.fromisoformat(value)
                if moment.tzinfo is None:
                    raise ValueError
                values.append(moment)
            elif isinstance(value, str):
                values.append(value)
            else:
                raise ValueError
        except (ValueError, TypeError):
            raise QueryError(problem) from None
    return values


def _after(keys: Sequence[tuple[object, bool, str]], values: Sequence) -> object:
    """Rows strictly after ``values`` in the order of ``keys`` (mixed directions allowed)."""
    alternatives = []
    for i, (expression, ascending, _) in enumerate(keys):
        equal = [keys[j][0] == values[j] for j in range(i)]
        beyond = expression > values[i] if ascending else expression < values[i]
        alternatives.append(and_(*equal, beyond))
    return or_(*alternatives)


def deployments_query(flt: DeploymentFilter, scopes: Scopes | None):
    """The filtered (not yet ordered or paged) SELECT of deployments."""
    query = readable(select(Deployment), scopes)
    if flt.states:
        query = query.where(Deployment.state.in_([s.value for s in flt.states]))
    elif not flt.include_removed:
        query = query.where(Deployment.state != DeploymentState.REMOVED.value)
    if flt.services:
        query = query.where(Deployment.service.in_(flt.services))
    if flt.environments:
        query = query.where(Deployment.environment.in_(flt.environments))
    if flt.pull_request is not None:
        query = query.where(Deployment.pull_request == flt.pull_request)
    if flt.repository:
        query = query.where(Deployment.source_repo == flt.repository)
    if flt.q:
        pattern = "%" + flt.q.replace("\\", "").replace("%", r"\%").replace("_", r"\_") + "%"
        matches = [Deployment.name.ilike(pattern, escape="\\"), Deployment.tag.ilike(pattern, escape="\\"),
                   Deployment.source_repo.ilike(pattern, escape="\\")]
        if re.match(r"^[0-9a-fA-F]{4,64}\Z", flt.q):
            matches.append(Deployment.sha.startswith(flt.q.lower()))
        query = query.where(or_(*matches))
    return query


def list_deployments(session: Session, flt: DeploymentFilter, scopes: Scopes | None) -> Page:
    """One page of the deployments ``scopes`` may read that match ``flt``."""
    keys = _sort_keys(flt.sort)
    query = deployments_query(flt, scopes)
    if flt.cursor:
        query = query.where(_after(keys, _decode_cursor(flt.cursor, flt.sort, [k[2] for k in keys])))
    query = query.order_by(*[(e.asc() if asc else e.desc()) for e, asc, _ in keys]).limit(flt.limit + 1)
    rows = list(session.scalars(query))
    page = Page(rows=rows[:flt.limit])
    if len(rows) > flt.limit:
        page.next_cursor = encode_cursor(flt.sort, _key_of(rows[flt.limit - 1], flt.sort))
    return page


@dataclass(frozen=True)
class LastDeploy:
    """A deployment's last deploy (create, update, restore or rollback): what it did and how it ended."""

    action_id: int
    kind: str
    state: str
    tag: str | None
    finished_at: datetime | None

    def as_dict(self) -> dict:
        return {"action_id": self.action_id, "kind": self.kind, "state": self.state, "tag": self.tag,
                "finished_at": self.finished_at.isoformat() if self.finished_at else None}


def last_deploys(session: Session, deployment_ids: Sequence[int]) -> dict[int, LastDeploy]:
    """The last deploy of each of ``deployment_ids`` that has one, in one query whatever their number."""
    if not deployment_ids:
        return {}
    latest = (select(func.max(Action.id)).where(Action.deployment_id.in_(list(deployment_ids)),
                                                Action.kind.in_(DEPLOY_KINDS))
              .group_by(Action.deployment_id))
    rows = session.execute(select(Action.deployment_id, Action.id, Action.kind, Action.state, Action.config,
                                  Action.finished_at).where(Action.id.in_(latest))).all()
    return {deployment_id: LastDeploy(action_id, kind, str(state), (config or {}).get("tag"), finished_at)
            for deployment_id, action_id, kind, state, config, finished_at in rows}


def state_counts(session: Session, flt: DeploymentFilter, scopes: Scopes | None) -> Mapping[str, int]:
    """How many deployments match ``flt`` but for its state filter, by state (the page's chips)."""
    unstated = replace(flt, states=(), cursor=None, include_removed=True)
    sub = deployments_query(unstated, scopes).with_only_columns(Deployment.state, func.count()).group_by(
        Deployment.state)
    return {str(state): count for state, count in session.execute(sub)}


@dataclass
class ManifestDeployments:
    """The deployments one manifest (service, environment) made: the first few, those needing attention
    first, and how many there are in all."""

    rows: list = field(default_factory=list)
    total: int = 0


def deployments_by_manifest(session: Session, pairs: Sequence[tuple[str, str]], scopes: Scopes | None,
                            per_manifest: int = 5) -> dict[tuple[str, str], ManifestDeployments]:
    """For each (service, environment), the deployments ``scopes`` may read (removed ones left out): at most
    ``per_manifest`` of them in the list's attention order, and their count."""
    found: dict[tuple[str, str], ManifestDeployments] = {pair: ManifestDeployments() for pair in pairs}
    if not pairs:
        return found
    order = [_attention_rank(), Deployment.updated_at.desc(), Deployment.id.desc()]
    ranked = (readable(select(Deployment.id), scopes)
              .where(tuple_(Deployment.service, Deployment.environment).in_(list(pairs)),
                     Deployment.state != DeploymentState.REMOVED.value)
              .add_columns(func.row_number().over(partition_by=(Deployment.service, Deployment.environment),
                                                  order_by=order).label("place"),
                           func.count().over(partition_by=(Deployment.service, Deployment.environment)).label("total"))
              .subquery())
    query = (select(Deployment, ranked.c.total).join(ranked, ranked.c.id == Deployment.id)
             .where(ranked.c.place <= per_manifest).order_by(ranked.c.place))
    for deployment, total in session.execute(query):
        entry = found[(deployment.service, deployment.environment)]
        entry.rows.append(deployment)
        entry.total = total
    return found


# Deliveries: the newest first, paged by id.
DELIVERY_STATUSES = ("received", "processing", "processed", "ignored", "failed", "retrying")


def list_deliveries(session: Session, args) -> Page:
    """Recent GitHub deliveries, newest first; ``event``, ``status``, ``limit`` and ``cursor`` narrow it."""
    query = select(Delivery)
    event = args.get("event")
    if event:
        if not re.match(r"^[a-z_]{1,64}\Z", event):
            raise QueryError(f"'event' must be a GitHub event name such as pull_request, got {event!r}")
        query = query.where(Delivery.event == event)
    status = args.get("status")
    if status:
        if status not in DELIVERY_STATUSES:
            raise QueryError(f"unknown status {status!r} (statuses: {', '.join(DELIVERY_STATUSES)})")
        query = query.where(Delivery.status == status)
    limit = _limit(args)
    if args.get("cursor"):
        (last_id,) = _decode_cursor(args["cursor"], "deliveries", ["int"])
        query = query.where(Delivery.id < last_id)
    rows = list(session.scalars(query.order_by(Delivery.id.desc()).limit(limit + 1)))
    page = Page(rows=rows[:limit])
    if len(rows) > limit:
        page.next_cursor = encode_cursor("deliveries", [rows[limit - 1].id])
    return page


def delivery_events(session: Session) -> list[str]:
    """The events deliveries were recorded for, by name: the choices of the deliveries' event filter."""
    return list(session.scalars(select(Delivery.event).distinct().order_by(Delivery.event).limit(100)))


def existing_deployments(session: Session, names: Sequence[str]) -> set[str]:
    """Which of ``names`` are deployments Sami has (removed ones included: their page still shows their history)."""
    if not names:
        return set()
    return set(session.scalars(select(Deployment.name).where(Deployment.name.in_(list(names)))))


def may_read_deliveries(scopes: Scopes | None) -> bool:
    """Deliveries name repositories and people across all services: readers of everything only."""
    if scopes is None or scopes.admin:
        return True
    return "read" in scopes.actions and "*" in scopes.services and "*" in scopes.environments


def running_tags(session: Session) -> Mapping[tuple[str, str], str]:
    """The tag each service's deployment runs now, by (service, environment), pull requests' left out: what a
    deploy form offers (never an invented tag)."""
    rows = session.execute(select(Deployment.service, Deployment.environment, Deployment.tag).where(
        Deployment.pull_request.is_(None), Deployment.tag.is_not(None),
        Deployment.state.not_in((DeploymentState.REMOVED,))))
    return {(service, environment): tag for service, environment, tag in rows}
