"""The queue job that processes a recorded GitHub webhook delivery through the worker's router.

The web request only verified and recorded the delivery; here its handler runs. A delivery is
claimed with a conditional UPDATE (received -> processing), so however many times its job is
queued or run, it is processed once. A handler's exception fails the delivery (with the
exception's type and message, secrets masked); a handler that raises ``Retry`` has it tried
again later by the scheduler's sweep.
"""

from __future__ import annotations

import logging
import traceback
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.sql.elements import ColumnElement

from bot.core import logs, metrics
from bot.core.errors import failure_text
from bot.core.models import Delivery, DeliveryStatus
from bot.github import router
from bot.github.outcomes import Kind, Outcome
from bot.services.deployments import Context
from workers.context import WorkerContext
from workers.lease import db_now

log = logging.getLogger(__name__)
D = DeliveryStatus

# A delivery still "processing" this long after it was claimed lost its worker: it may be claimed
# again. Longer than the job timeout, so a slow handler is never run twice at once.
STALE_PROCESSING = timedelta(seconds=600)
MAX_ATTEMPTS = 10  # tries of a handler that keeps asking to be retried
OUTCOME_LENGTH = 2000


def claimable(now: datetime) -> ColumnElement[bool]:
    """Deliveries a job may claim now: received, retrying and due, or lost by a dead worker."""
    return or_(Delivery.status == D.RECEIVED,
               and_(Delivery.status == D.RETRYING, Delivery.retry_at <= now),
               and_(Delivery.status == D.PROCESSING, Delivery.started_at < now - STALE_PROCESSING))


def sweepable(now: datetime, received_before: timedelta) -> ColumnElement[bool]:
    """Deliveries the scheduler queues: claimable ones, and received ones only once their own
    job had ``received_before`` to start (Redis was down, or lost the job)."""
    return and_(claimable(now), or_(Delivery.status != D.RECEIVED, Delivery.received_at < now - received_before))


def _mask(text: str, settings) -> str:
    """``text`` with the values of Sami's secret settings replaced by ***."""
    for name in ("webhook_secret", "github_token", "github_app_private_key", "secret_key", "deployments_token"):
        value = getattr(settings, name, "")
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return text


def process_delivery(delivery_row_id: int, *, ctx: WorkerContext) -> str | None:
    """Queue job: run the handler of delivery row ``delivery_row_id`` once; returns its status, or
    None when the delivery was not this job's to process (already done, or not due)."""
    with ctx.session() as session:
        now = db_now(session)
        claimed = session.execute(
            update(Delivery).where(Delivery.id == delivery_row_id, claimable(now))
            .values(status=D.PROCESSING, started_at=now, attempts=Delivery.attempts + 1)
            .execution_options(synchronize_session=False)).rowcount == 1
        session.commit()
        if not claimed:
            return None
        row = session.scalars(select(Delivery).where(Delivery.id == delivery_row_id)
                              .execution_options(populate_existing=True)).one()
        # Every line of its processing, the handler's and the services' included, names the delivery.
        with logs.about(delivery_id=row.delivery_id):
            status = _process(ctx, session, row, now)
    return str(status)


def _process(ctx: WorkerContext, session, row: Delivery, claimed_at: datetime) -> DeliveryStatus:
    """Run the handler of the claimed delivery ``row`` and record how it went."""
    event = router.Event(name=row.event, action=row.action, delivery_id=row.delivery_id, payload=row.payload)
    row_id, attempts = row.id, row.attempts
    what = f"{event.name}.{event.action}" if event.action else event.name
    retry_at = None
    try:
        handler_ctx = router.HandlerContext(
            session=session, manifests=ctx.manifests, services=Context.from_settings(ctx.settings, ctx.broker),
            settings=ctx.settings, github=ctx.github)
        outcome = ctx.router.dispatch(event, handler_ctx)
        if not isinstance(outcome, Outcome) or outcome.kind not in (Kind.PROCESSED, Kind.IGNORED):
            raise TypeError(f"the handler of {what} returned {outcome!r}, not an Outcome processed or ignored")
        session.commit()
    except router.Retry as retry:
        session.rollback()
        reason = _mask(str(retry), ctx.settings)
        if attempts >= MAX_ATTEMPTS:
            outcome = Outcome.failed(f"gave up after {attempts} tries: {reason}")
        else:
            retry_at = db_now(session) + timedelta(seconds=max(0.0, retry.after_seconds))
            outcome = Outcome.retrying(retry.after_seconds, attempts, reason)
        log.info("delivery %s (%s): %s", event.delivery_id, what, outcome)
    except Exception as exc:
        session.rollback()
        outcome = Outcome.failed(_mask(failure_text(exc), ctx.settings))
        details = _mask("".join(traceback.format_exception(exc)), ctx.settings)
        log.error("delivery %s (%s) failed:\n%s", event.delivery_id, what, details)
    status = D(outcome.kind)  # the kinds are named as the statuses they are recorded as
    # Written only while the claim is still this job's (a stale claim may have been taken over).
    session.execute(
        update(Delivery).where(Delivery.id == row_id, Delivery.status == D.PROCESSING,
                               Delivery.started_at == claimed_at)
        .values(status=status, outcome=outcome.text[:OUTCOME_LENGTH], retry_at=retry_at,
                processed_at=None if status is D.RETRYING else db_now(session))
        .execution_options(synchronize_session=False))
    session.commit()
    metrics.DELIVERIES_PROCESSED.labels(event.name, str(status)).inc()
    if outcome.kind in (Kind.PROCESSED, Kind.IGNORED):
        log.info("delivery %s (%s): %s", event.delivery_id, what, outcome)
    return status
