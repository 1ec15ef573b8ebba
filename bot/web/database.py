"""The web app's database: one session factory per app and one session per request, closed when
the request ends; and, for a request whose whole write is one statement (the webhook intake), that
statement run and committed on a pooled connection without a session."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from flask import Flask, current_app, g
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from bot.core.db import make_engine

WEB_POOL_RECYCLE = 300  # seconds a pooled connection of the web app is used before it is replaced


def init_app(app: Flask, engine: Engine | None = None, session_factory=None) -> None:
    """Give the app an engine and a per-request session, closed when the request ends."""
    settings = app.config["SAMI"]
    if session_factory is None:
        # No ping (a SELECT 1) before each request's statements: a connection PostgreSQL closed
        # (it restarted) fails its first statement instead, which makes the pool replace every
        # connection it held; the webhook intake records its delivery again on a new one, and other
        # requests are answered 503 (bot.web.errors). Connections are renewed every few minutes,
        # before idle timeouts in between (a proxy, a firewall) close them.
        engine = engine or make_engine(settings.database_url, pool_pre_ping=False, pool_recycle=WEB_POOL_RECYCLE)
        session_factory = sessionmaker(bind=engine, expire_on_commit=False)
    app.extensions["sami.db"] = session_factory
    app.teardown_appcontext(_close_session)


def get_session() -> Session:
    """The session of the current request (or app context)."""
    if "db_session" not in g:
        g.db_session = current_app.extensions["sami.db"]()
    return g.db_session


def _close_session(_exc=None) -> None:
    session = g.pop("db_session", None)
    if session is not None:
        session.close()


class Statement(Protocol):
    """A statement compiled once for the driver: its SQL text and its parameters from values."""

    sql: str

    def parameters(self, values: dict[str, Any]) -> dict[str, Any] | tuple[Any, ...]: ...


def run_and_commit(compiled: Callable[[Dialect], Statement], values: dict[str, Any]) -> Any:
    """Run one statement on a connection of the app's pool and commit it; its first row's first
    column (None without a row). For a request whose whole write is that one statement (the webhook
    intake records a delivery): no ORM session, and the driver's cursor directly, without
    SQLAlchemy's result and transaction objects around it.

    Errors are SQLAlchemy's as elsewhere (``DBAPIError``; 503 when the database is unreachable). A
    connection PostgreSQL closed (it restarted) is handled as SQLAlchemy handles it: the error
    says ``connection_invalidated``, and every connection the pool held is replaced, so that the
    caller may run the statement again on a new one. Where the app's sessions are bound to one
    connection instead of the pool (the tests: each test's work is rolled back at its end), the
    statement runs in a savepoint of that connection, as a session's commit does there.
    """
    bind = current_app.extensions["sami.db"].kw["bind"]
    statement = compiled(bind.dialect)
    parameters = statement.parameters(values)
    if not isinstance(bind, Engine):
        with bind.begin_nested():
            return bind.exec_driver_sql(statement.sql, parameters).scalar()
    error = bind.dialect.loaded_dbapi.Error
    try:
        connection = bind.raw_connection()
    except error as exc:  # not reachable (Engine.connect says so the same way)
        raise DBAPIError.instance(None, None, exc, error, dialect=bind.dialect) from exc
    try:
        cursor = connection.cursor()
        cursor.execute(statement.sql, parameters)
        row = cursor.fetchone()
        cursor.close()
        connection.commit()
    except error as exc:
        # Otherwise the pool rolls the connection back as it takes it back.
        lost = bind.dialect.is_disconnect(exc, connection.dbapi_connection, None)
        if lost:
            connection.invalidate(exc)
            bind.dispose(close=False)  # the other pooled connections went with the server
        raise DBAPIError.instance(statement.sql, parameters, exc, error, hide_parameters=bind.hide_parameters,
                                  connection_invalidated=lost, dialect=bind.dialect) from exc
    finally:
        connection.close()
    return row[0] if row else None
