"""The queue job that sends one GitHub outbox row, and what the scheduler asks of the outbox.

A row is claimed with a conditional UPDATE (pending and due -> delivering), so however many jobs
run for it, one sends it. A failed try is tried again later with exponential backoff (or when
GitHub's rate limit says); GitHub refusing the request itself (4xx) fails the row at once, since
sending it again would be refused again. GitHub being down delays feedback and loses none of it.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.sql.elements import ColumnElement

from bot.core import logs
from bot.core.models import Deployment, OutboxRow, OutboxState
from bot.github import senders
from bot.github.client import GitHubError, RateLimited
from workers.context import WorkerContext
from workers.lease import db_now

log = logging.getLogger(__name__)
O = OutboxState  # noqa: E741

STALE_DELIVERING = timedelta(seconds=120)  # a claim this old lost its worker
MAX_ATTEMPTS = 15  # about a day of tries with the backoff below
FIRST_BACKOFF = 5.0
MAX_BACKOFF = 3600.0
ERROR_LENGTH = 1000


def backoff(attempts: int) -> float:
    """Seconds before try ``attempts + 1``: 5, 10, 20, ... up to an hour."""
    return min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** max(0, attempts - 1))


def claimable(now: datetime) -> ColumnElement[bool]:
    """Rows a job may claim now: pending and due, or claimed by a worker that died."""
    return or_(and_(OutboxRow.state == O.PENDING, OutboxRow.due_at <= now),
               and_(OutboxRow.state == O.DELIVERING, OutboxRow.claimed_at < now - STALE_DELIVERING))


def due_rows(session, now: datetime, limit: int = 500) -> list[int]:
    """Ids of the rows to queue now, oldest first."""
    return list(session.scalars(select(OutboxRow.id).where(claimable(now)).order_by(OutboxRow.id).limit(limit)))


KEEP_SENT = timedelta(days=14)  # sent and skipped rows are kept this long, for GET /api/v1/outbox


def prune(session, now: datetime) -> int:
    """Delete rows sent or skipped more than KEEP_SENT ago (failed ones stay, to be looked at)."""
    removed = session.execute(delete(OutboxRow).where(OutboxRow.state.in_((O.DELIVERED, O.SKIPPED)),
                                                      OutboxRow.delivered_at < now - KEEP_SENT)
                              .execution_options(synchronize_session=False)).rowcount or 0
    session.commit()
    return removed


def deliver_outbox_row(row_id: int, *, ctx: WorkerContext) -> str | None:
    """Queue job: send outbox row ``row_id`` once; returns its new state, or None when it was not this
    job's to send (sent already, or not due) or no longer this job's to settle (its claim went stale)."""
    with ctx.session() as session:
        now = db_now(session)
        claimed = session.execute(
            update(OutboxRow).where(OutboxRow.id == row_id, claimable(now))
            .values(state=O.DELIVERING, claimed_at=now, attempts=OutboxRow.attempts + 1)
            .execution_options(synchronize_session=False)).rowcount == 1
        session.commit()
        if not claimed:
            return None
        row = session.scalars(select(OutboxRow).where(OutboxRow.id == row_id)
                              .execution_options(populate_existing=True)).one()
        deployment = session.scalar(select(Deployment.name).where(Deployment.id == row.deployment_id)) \
            if row.deployment_id is not None else None
        # The lines of its send name what caused the row: its delivery, deployment and action.
        with logs.about(delivery_id=row.delivery_id, deployment=deployment, action_id=row.action_id):
            return _send(ctx, session, row, now)


def _send(ctx: WorkerContext, session, row: OutboxRow, claimed_at: datetime) -> str | None:
    """Send the claimed ``row`` and record how it went."""
    row_id = row.id
    values: dict = {"last_error": None}
    if ctx.github is None:
        state, values["result"] = O.SKIPPED, {"skipped": "no GitHub credentials are set"}
    else:
        try:
            result = senders.send(session, row, senders.Sender(ctx.github, ctx.settings.public_url))
            state = O.SKIPPED if "skipped" in result else O.DELIVERED
            values["result"] = result
        except senders.Postpone as wait:
            session.rollback()
            state, values = O.PENDING, {"due_at": db_now(session) + timedelta(seconds=wait.seconds),
                                        "attempts": OutboxRow.attempts - 1, "last_error": str(wait)}
        except (GitHubError, ValueError, KeyError) as exc:
            session.rollback()
            state, values = _failed(session, row, exc)
    if state is O.PENDING and _another_waits(session, row):
        state, values = O.SKIPPED, {"result": {"skipped": "a newer row sends the latest state"}}
    if state in (O.DELIVERED, O.SKIPPED):
        values["delivered_at"] = db_now(session)
    # Written only while the claim is still this job's.
    written = session.execute(update(OutboxRow).where(OutboxRow.id == row_id, OutboxRow.state == O.DELIVERING,
                                                      OutboxRow.claimed_at == claimed_at)
                              .values(state=state, **values).execution_options(synchronize_session=False))
    session.commit()
    if written.rowcount != 1:
        log.warning("outbox row %s (%s): the claim went stale and another job took the row; this try's "
                    "outcome (%s) is not recorded", row_id, row.key, state)
        return None
    level = logging.WARNING if state in (O.FAILED, O.PENDING) else logging.INFO
    log.log(level, "outbox row %s (%s): %s%s", row_id, row.key, state,
            f" ({values.get('last_error')})" if values.get("last_error") else "")
    return str(state)


def _failed(session, row: OutboxRow, exc: Exception) -> tuple[OutboxState, dict]:
    attempts = row.attempts
    message = f"{type(exc).__name__}: {exc}"[:ERROR_LENGTH]
    if isinstance(exc, RateLimited):
        wait = max(exc.retry_after, backoff(attempts))
    elif isinstance(exc, GitHubError) and (exc.status == 0 or exc.status >= 500 or exc.status == 429):
        wait = backoff(attempts)
    else:
        # GitHub refused the request itself (or its answer made no sense): sending it again changes nothing.
        return O.FAILED, {"last_error": message}
    if attempts >= MAX_ATTEMPTS:
        return O.FAILED, {"last_error": f"gave up after {attempts} tries: {message}"}
    return O.PENDING, {"last_error": message, "due_at": db_now(session) + timedelta(seconds=wait)}


def _another_waits(session, row: OutboxRow) -> bool:
    """Whether a newer row of the same coalesce key waits (it will render the latest state)."""
    if not row.coalesce_key:
        return False
    return session.scalar(select(OutboxRow.id).where(
        OutboxRow.coalesce_key == row.coalesce_key, OutboxRow.state == O.PENDING, OutboxRow.id != row.id)) is not None
