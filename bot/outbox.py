"""The GitHub outbox: every GitHub side effect is a row written in the transaction that causes it.

A caller that changes a state (through bot.core.states, which records each change) commits with
``commit``: it writes the rows those changes imply, beside them, and commits them together, so no
side effect is reported of a change that did not commit, and none is lost of one that did. Rows
that follow commands (a reaction, a reply, a validation status) are added with ``add``.

Each row carries what caused it: the action it is about and the webhook delivery being handled
(bot.core.logs' current ids). Rows are sent later by a job (workers/outbox.py, through
bot.github.senders) with retries and backoff. A row's ``key`` makes an effect recorded once.
Rows that show "the latest state of something" (the sticky comment, a commit status) also have a
``coalesce_key``: while one such row waits, no other is added, and the row renders the state as it
is when it is sent, so many changes within ``COALESCE_SECONDS`` become one request. A GitHub
Deployment's statuses are a history: one row per state the action reached, sent in order.

Nothing here talks to GitHub.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from bot.core import logs
from bot.core.lifecycle import DEPLOY_KINDS
from bot.core.models import (
    Action,
    Delivery,
    Deployment,
    EnvironmentRecord,
    OutboxRow,
    OutboxState,
    PullRequestRecord,
    Release,
)
from bot.core.states import ActionState, StateChange, take_changes

A = ActionState

COALESCE_SECONDS = 3.0
# Actions that put a commit somewhere: each gets a GitHub Deployment and a commit status.
DEPLOYING_KINDS = DEPLOY_KINDS
# Actions that take an environment down: its last GitHub Deployment becomes inactive.
STOPPING_KINDS = frozenset({"archive", "cleanup"})
DESCRIPTION = 140  # GitHub's limit for statuses and Deployments

# The GitHub Deployment status of each action state.
DEPLOYMENT_STATES = {
    A.QUEUED: "queued", A.RUNNING: "in_progress", A.SUCCEEDED: "success", A.FAILED: "failure",
    A.TIMED_OUT: "failure", A.CANCELLED: "error", A.SUPERSEDED: "inactive",
}


# Whole-environment previews of pull requests are environments named pr-<number>-<6 hex digits>.
PREVIEW_PREFIX = "pr-"

def commit(session: Session) -> None:
    """Write the rows the state changes recorded on ``session`` imply, then commit them together."""
    write_rows(session, take_changes(session))
    session.commit()


def write_rows(session: Session, changes: list[StateChange]) -> None:
    """The rows each change implies, in ``session``'s transaction: a deployment's change refreshes
    its pull request's sticky comment (so does a change of its drift or pin); an action's gives its GitHub
    Deployment, statuses and reaction."""
    if not changes:
        return
    session.flush()
    connection = session.connection()
    for change in changes:
        if change.record in ("deployment", "drift", "pin"):
            deployment = session.get(Deployment, change.id)
            if deployment is not None and deployment.source_repo and deployment.pull_request:
                request_sticky_comment(connection, deployment.source_repo, deployment.pull_request)
            elif deployment is not None and deployment.environment.startswith(PREVIEW_PREFIX):
                preview = _preview_of(session, deployment.environment)
                if preview is not None:  # a component of a pull request's whole-environment preview
                    request_sticky_comment(connection, *preview)
            continue
        if change.record == "release":  # a release asked for on a pull request: its sticky comment says so
            release = session.get(Release, change.id)
            if release is not None and release.source_repo and release.pull_request:
                request_sticky_comment(connection, release.source_repo, release.pull_request)
            continue
        action = session.get(Action, change.id)
        deployment = session.get(Deployment, action.deployment_id) if action is not None else None
        if deployment is not None and deployment.source_repo:
            _action_rows(connection, action, deployment, ActionState(change.current))


def _preview_of(session: Session, environment: str) -> tuple[str, int] | None:
    """The pull request (repository, number) whose preview ``environment`` is, if it is one."""
    row = session.execute(select(EnvironmentRecord.pull_request_repository, EnvironmentRecord.pull_request_number)
                          .where(EnvironmentRecord.name == environment)).first()
    if row is None or not row.pull_request_repository or not row.pull_request_number:
        return None
    return row.pull_request_repository, int(row.pull_request_number)


def _cause(action: Action | None = None) -> str | None:
    """The webhook delivery a row comes from: the one being handled, else the one that asked for the action."""
    return logs.current("delivery_id") or (action.delivery_id if action is not None else None)


def _insert(connection: Connection, *, key: str, kind: str, repository: str, pull_request: int | None = None,
            deployment_id: int | None = None, action_id: int | None = None, delivery_id: str | None = None,
            payload: dict | None = None, coalesce_key: str | None = None, delay: float = 0.0) -> None:
    dialect = connection.dialect.name
    insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[dialect]
    now = datetime.now(UTC)
    connection.execute(insert(OutboxRow.__table__).values(
        key=key[:255], coalesce_key=coalesce_key[:255] if coalesce_key else None, kind=kind, repository=repository,
        pull_request=pull_request, deployment_id=deployment_id, action_id=action_id,
        delivery_id=(delivery_id or logs.current("delivery_id") or None), payload=payload or {},
        state=OutboxState.PENDING.value, attempts=0, due_at=now + timedelta(seconds=delay), created_at=now,
    ).on_conflict_do_nothing())


def _latest(connection: Connection, kind: str, coalesce_key: str, repository: str, **ids: Any) -> None:
    """A row rendering the latest state, unless one is waiting already."""
    _insert(connection, key=f"{coalesce_key}@{uuid.uuid4().hex}", kind=kind, repository=repository,
            coalesce_key=coalesce_key, delay=COALESCE_SECONDS, **ids)


def request_sticky_comment(connection: Connection, repository: str, number: int,
                           delay: float = COALESCE_SECONDS) -> None:
    """Refresh the sticky comment of pull request ``number`` soon (coalesced with other changes)."""
    key = f"comment:{repository}#{int(number)}"
    _insert(connection, key=f"{key}@{uuid.uuid4().hex}", kind="comment", repository=repository,
            pull_request=number, coalesce_key=key, delay=delay)


def add(session: Session, *, key: str, kind: str, repository: str, payload: dict, pull_request: int | None = None,
        delay: float = 0.0) -> None:
    """Record a one-off effect (a reaction, a reply, a validation status) in ``session``'s transaction."""
    _insert(session.connection(), key=key, kind=kind, repository=repository, pull_request=pull_request,
            payload=payload, delay=delay)


def _action_rows(connection: Connection, action: Action, deployment: Deployment, state: ActionState) -> None:
    repository = deployment.source_repo
    assert repository is not None
    ids = {"pull_request": deployment.pull_request, "deployment_id": deployment.id, "action_id": action.id,
           "delivery_id": _cause(action)}
    sha = (action.config or {}).get("sha") or deployment.sha
    if action.kind in DEPLOYING_KINDS and sha:
        environment = (f"{deployment.service}-pr-{deployment.pull_request}" if deployment.pull_request
                       else deployment.environment)
        # An action that may not start yet is shown on GitHub once it may: a newer push may replace it first.
        wait = _seconds_to_start(action, datetime.now(UTC))
        _insert(connection, key=f"deployment:{action.id}", kind="deployment", repository=repository,
                payload={"ref": sha, "environment": environment, "transient": bool(deployment.pull_request)},
                delay=wait, **ids)
        _insert(connection, key=f"deployment_status:{action.id}:{state}", kind="deployment_status",
                repository=repository, payload={"state": DEPLOYMENT_STATES[state]}, delay=wait, **ids)
        _latest(connection, "commit_status", f"commit_status:{action.id}", repository, **ids)
    elif action.kind in STOPPING_KINDS and state is A.SUCCEEDED:
        _insert(connection, key=f"inactive:{action.id}", kind="inactive", repository=repository, **ids)
    if state.finished and action.delivery_id:
        _settle_reaction(connection, action.delivery_id)


def _settle_reaction(connection: Connection, delivery_id: str) -> None:
    """Once every action a `/sami` comment asked for has finished: rocket, or confused if one failed."""
    states = connection.execute(select(Action.state).where(Action.delivery_id == delivery_id)).scalars().all()
    if not states or not all(ActionState(s).finished for s in states):
        return
    delivery = connection.execute(select(Delivery.event, Delivery.payload, Delivery.repository)
                                  .where(Delivery.delivery_id == delivery_id)).first()
    if delivery is None or delivery.event != "issue_comment":
        return
    comment_id = ((delivery.payload or {}).get("comment") or {}).get("id")
    if not comment_id or not delivery.repository:
        return
    ok = all(ActionState(s) in (A.SUCCEEDED, A.SUPERSEDED) for s in states)
    _insert(connection, key=f"reaction:{comment_id}:settled", kind="reaction", repository=delivery.repository,
            delivery_id=delivery_id, payload={"comment_id": comment_id, "content": "rocket" if ok else "confused"})


def _seconds_to_start(action: Action, now: datetime) -> float:
    """Seconds until a queued action may start (it waits for a retry, or for newer pushes); 0 if it may."""
    if ActionState(action.state) is not A.QUEUED or action.retry_at is None:
        return 0.0
    return max(0.0, (action.retry_at - now).total_seconds())


def pull_request_record(session: Session, repository: str, number: int, *, lock: bool = False) -> PullRequestRecord:
    """The pull request's record, created when missing (locked, with ``lock``, while its comment is sent)."""
    dialect = session.get_bind().dialect.name
    insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[dialect]
    session.execute(insert(PullRequestRecord.__table__).values(
        repository=repository, number=number, fork=False, updated_at=datetime.now(UTC))
        .on_conflict_do_nothing(index_elements=["repository", "number"]))
    query = select(PullRequestRecord).where(PullRequestRecord.repository == repository,
                                            PullRequestRecord.number == number)
    if lock:
        query = query.with_for_update()
    return session.scalars(query.execution_options(populate_existing=True)).one()


def row_to_dict(row: OutboxRow) -> dict[str, Any]:
    """An outbox row as the API shows it."""
    return {
        "id": row.id, "key": row.key, "kind": row.kind, "repository": row.repository,
        "pull_request": row.pull_request, "deployment_id": row.deployment_id, "action_id": row.action_id,
        "delivery_id": row.delivery_id, "state": str(row.state), "attempts": row.attempts,
        "due_at": row.due_at.isoformat() if row.due_at else None, "last_error": row.last_error,
        "result": row.result, "created_at": row.created_at.isoformat() if row.created_at else None,
        "delivered_at": row.delivered_at.isoformat() if row.delivered_at else None,
    }
