"""The web app's database: one session factory per app and one session per request, closed when
the request ends."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask, current_app, g
from sqlalchemy.engine import Connection, Engine
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


@contextmanager
def transaction() -> Iterator[Connection]:
    """A connection of the app's pool in a transaction of its own, committed when the block ends
    (rolled back if it raises), without an ORM session: for a request that runs one or two plain
    statements (the webhook intake records a delivery) and none of the session's bookkeeping.

    Where the app's sessions are bound to one connection instead of the pool (the tests: each test's
    work is rolled back at its end), the transaction is a savepoint of that connection, as a session's
    commit is there.
    """
    bind = current_app.extensions["sami.db"].kw["bind"]
    if isinstance(bind, Engine):
        with bind.connect() as connection, connection.begin():
            yield connection
    else:
        with bind.begin_nested():
            yield bind
