"""GitHub webhooks: ``POST /webhooks/github`` verifies a delivery, records it and queues its
processing, then answers.

The controller answers fast and makes no GitHub call: the signature (HMAC-SHA256 of the raw body
with the webhook secret) is checked, the delivery is written as one row keyed by its
``X-GitHub-Delivery`` id and committed, and only then is its processing queued: the row's id is
pushed on a Redis list that the workers turn into its job (``workers.queue``,
``workers.deliveries``). A redelivery or a duplicate finds the row there and is acknowledged
without doing anything more. If the queue is unreachable the delivery stays recorded and the
scheduler's sweep queues it.
"""

from __future__ import annotations

import functools
import hmac
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Flask, current_app, g, jsonify, request
from sqlalchemy import Text, bindparam, func, null
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from bot.core import logs
from bot.core.errors import Invalid
from bot.core.models import Delivery, DeliveryStatus
from bot.core.signing import signature, webhook_secret
from bot.web.database import run_and_commit
from bot.web.errors import Unauthorized, WebError
from bot.web.queue import get_broker

log = logging.getLogger(__name__)
bp = Blueprint("webhooks", __name__)

SIGNATURE_HEADER = "X-Hub-Signature-256"
EVENT_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}\Z")
# GitHub's delivery ids are GUIDs; redeliveries keep the id of the delivery they repeat.
DELIVERY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}\Z")
NOT_CONFIGURED = ("GitHub webhooks are off: no webhook secret is set. Set SAMI_WEBHOOK_SECRET to the secret "
             "of the GitHub webhook (or GitHub App) and restart Sami")


# --- the app ----------------------------------------------------------------------------------

def init_app(app: Flask) -> None:
    """Serve ``POST /webhooks/github`` with the app's webhook secret."""
    app.extensions["sami.webhook_secret"] = webhook_secret(app.config["SAMI"]).encode()
    app.register_blueprint(bp)


# --- the delivery -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Received:
    """A verified delivery, as it is recorded."""

    delivery_id: str
    event: str
    action: str | None
    repository: str | None
    installation_id: int | None
    sender: str | None
    payload: dict[str, Any]
    body: str  # the payload as GitHub sent it: what the row keeps


def _text(value: object, length: int) -> str | None:
    # NUL cannot be stored in a text column: such a field is kept with U+FFFD in its place (the
    # payload keeps what was sent, and processing ignores the delivery as malformed).
    return value[:length].replace("\x00", "\ufffd") if isinstance(value, str) and value else None


def _field(payload: dict, name: str, key: str) -> object:
    value = payload.get(name)
    return value.get(key) if isinstance(value, dict) else None


def parse_delivery(delivery_id: str, event: str, payload: dict[str, Any], body: str | None = None) -> Received:
    """What a delivery's row records: the payload's body and the fields it is found by."""
    installation_id = _field(payload, "installation", "id")
    if not isinstance(installation_id, int) or isinstance(installation_id, bool) or not 0 < installation_id < 2**63:
        installation_id = None
    return Received(delivery_id=delivery_id, event=event, action=_text(payload.get("action"), 64),
                    repository=_text(_field(payload, "repository", "full_name"), 255),
                    installation_id=installation_id, sender=_text(_field(payload, "sender", "login"), 255),
                    payload=payload, body=json.dumps(payload) if body is None else body)


@dataclass(frozen=True)
class _Insert:
    """The intake's INSERT compiled once for one kind of database: the SQL text its driver runs, and
    how the values go in (by name, or in ``order`` for drivers that take them by position), each
    through its column type's conversion where it has one (an enum's value, SQLite's timestamps)."""

    sql: str
    order: tuple[str, ...] | None
    conversions: tuple[tuple[str, Callable[[Any], Any]], ...]

    def parameters(self, values: dict[str, Any]) -> dict[str, Any] | tuple[Any, ...]:
        for name, convert in self.conversions:
            values[name] = convert(values[name])
        return values if self.order is None else tuple(values[name] for name in self.order)


_INSERTS: dict[tuple[str, str, bool], _Insert] = {}


def _insert_statement(dialect: Dialect, finished: bool) -> _Insert:
    """INSERT ... ON CONFLICT (delivery_id) DO NOTHING RETURNING id, compiled once per database kind.

    Compiled once and run with plain parameters: the intake's one statement pays no statement
    construction, compilation or cache lookup, and the payload goes in as the text GitHub sent (it
    is valid JSON: it was parsed), not serialised again.
    """
    key = (dialect.name, dialect.paramstyle, finished)
    if key not in _INSERTS:
        table = Delivery.__table__
        insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[dialect.name]
        # PostgreSQL's clock on PostgreSQL, the one the sweep and the jobs compare with.
        now = func.now() if dialect.name == "postgresql" else bindparam("now", type_=table.c.received_at.type)
        columns = ("delivery_id", "event", "action", "repository", "installation_id", "sender", "status", "outcome",
                   "attempts")
        compiled = (
            insert(table)
            .values({**{name: bindparam(name, type_=table.c[name].type) for name in columns},
                     "payload": bindparam("body", type_=Text()), "received_at": now,
                     "processed_at": now if finished else null()})
            .on_conflict_do_nothing(index_elements=["delivery_id"])
            .returning(table.c.id)
        ).compile(dialect=dialect)
        conversions = []
        for name, parameter in compiled.binds.items():
            convert = parameter.type.dialect_impl(dialect).bind_processor(dialect)
            if convert is not None:
                conversions.append((name, convert))
        order = tuple(compiled.positiontup) if compiled.positional else None
        _INSERTS[key] = _Insert(compiled.string, order, tuple(conversions))
    return _INSERTS[key]


def _values(received: Received, status: DeliveryStatus, outcome: str | None) -> dict[str, Any]:
    return {"delivery_id": received.delivery_id, "event": received.event, "action": received.action,
            "repository": received.repository, "installation_id": received.installation_id,
            "sender": received.sender, "status": status, "outcome": outcome, "attempts": 0, "body": received.body,
            "now": datetime.now(UTC)}


def _finished(status: DeliveryStatus) -> bool:
    return status in (DeliveryStatus.PROCESSED, DeliveryStatus.IGNORED)


def record_delivery(connection: Connection | Session, received: Received,
                    status: DeliveryStatus = DeliveryStatus.RECEIVED, outcome: str | None = None) -> int | None:
    """Insert the delivery's row in the connection's (or the session's) transaction; its id, or None
    if a row with that delivery id exists already.

    INSERT ... ON CONFLICT DO NOTHING: concurrent copies of one delivery never fail on the unique
    delivery id; exactly one of them gets the row. It is the delivery's only write: no outbox row
    comes with it.
    """
    if isinstance(connection, Session):
        connection = connection.connection()
    insert = _insert_statement(connection.dialect, _finished(status))
    return connection.exec_driver_sql(insert.sql, insert.parameters(_values(received, status, outcome))).scalar()


def _header(name: str, pattern: re.Pattern, example: str) -> str:
    value = request.headers.get(name, "")
    if not pattern.match(value):
        state = "missing" if not value else "invalid"
        raise Invalid(f"{name} header {state}: GitHub sends it with every delivery (e.g. {example})")
    return value


def _verify(secret: bytes, body: bytes) -> None:
    sent = request.headers.get(SIGNATURE_HEADER)
    if not sent:
        raise Unauthorized(f"missing {SIGNATURE_HEADER}: give the webhook a secret on GitHub, the same as "
                           "Sami's SAMI_WEBHOOK_SECRET")
    # Headers arrive as latin-1 text: encoding them back gives the bytes sent, whatever they are.
    if not hmac.compare_digest(signature(secret, body).encode(), sent.encode("latin-1")):
        raise Unauthorized(f"{SIGNATURE_HEADER} does not match the body: the webhook's secret on GitHub is not "
                           "Sami's SAMI_WEBHOOK_SECRET, or the body was changed on the way")


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _payload(body: bytes) -> tuple[dict[str, Any], str]:
    """The payload and its text; 400 unless the body is a JSON object in UTF-8."""
    if request.mimetype == "application/x-www-form-urlencoded":
        raise Invalid("the body is form-encoded: set the webhook's content type to application/json on GitHub")
    try:
        text = body.decode()
        payload = current_app.json.loads(text, parse_constant=_refuse_constant)
    except UnicodeDecodeError:
        raise Invalid("the body must be a JSON object in UTF-8, as GitHub sends it") from None
    except ValueError as exc:
        raise Invalid(f"the body must be a JSON object, and this is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise Invalid("the body must be a JSON object, not a " + type(payload).__name__)
    return payload, text


@bp.post("/webhooks/github")
def receive_github():
    """Verify a GitHub delivery, record it, queue its processing; 202 (200 for a ping or a duplicate)."""
    secret: bytes = current_app.extensions.get("sami.webhook_secret", b"")
    if not secret:
        g.sami_intake_outcome = "not_configured"
        raise WebError(NOT_CONFIGURED, status=503)
    body = request.get_data(cache=False)  # longer than the limit: 413
    _verify(secret, body)
    event = _header("X-GitHub-Event", EVENT_RE, "pull_request")
    delivery_id = _header("X-GitHub-Delivery", DELIVERY_RE, "72d3162e-cc78-11e3-81ab-4c9367dc0958")
    with logs.about(delivery_id=delivery_id):  # every line of its receipt names the delivery
        return _record_and_queue(parse_delivery(delivery_id, event, *_payload(body)))


def _record(received: Received, status: DeliveryStatus = DeliveryStatus.RECEIVED,
            outcome: str | None = None) -> int | None:
    """Insert the delivery's row and commit; once more on a new connection if PostgreSQL closed the
    pooled one (it restarted: the web's pool does not ping a connection before each request).

    If the connection was lost during the commit, the row may be in already: the second insert then
    finds it and the delivery is answered as a duplicate without queueing it; the row is still
    "received", so the scheduler's sweep queues it.
    """
    statement = functools.partial(_insert_statement, finished=_finished(status))
    try:
        return run_and_commit(statement, _values(received, status, outcome))
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        log.warning("delivery %s: the database connection was closed (%s); recording it on a new one",
                    received.delivery_id, type(exc.orig).__name__)
    return run_and_commit(statement, _values(received, status, outcome))


def _record_and_queue(received: Received):
    delivery_id, event = received.delivery_id, received.event

    if event == "ping":
        row_id = _record(received, DeliveryStatus.PROCESSED, "pong")
        if row_id is None:
            return _answered("duplicate", jsonify(delivery=delivery_id, duplicate=True), 200)
        log.info("delivery %s: ping from hook %s", delivery_id, received.payload.get("hook_id"))
        return _answered("pong", jsonify(delivery=delivery_id, zen=received.payload.get("zen"),
                                         hook_id=received.payload.get("hook_id"), outcome="pong"), 200)

    row_id = _record(received)
    if row_id is None:
        return _answered("duplicate", jsonify(delivery=delivery_id, duplicate=True), 200)
    queued = get_broker(current_app).hand_off_delivery(row_id)
    what = f"{event}.{received.action}" if received.action else event
    log.info("delivery %s: %s of %s recorded (queued: %s)", delivery_id, what, received.repository, queued)
    # Not queued (Redis is down): recorded all the same, and the scheduler's sweep will queue it.
    status = "queued" if queued else "received"
    return _answered(status, jsonify(delivery=delivery_id, status=status), 202)


def _answered(outcome: str, response, status: int):
    """The answer, with the intake's outcome kept for the metrics (bot.web.metrics counts it)."""
    g.sami_intake_outcome = outcome
    return response, status
