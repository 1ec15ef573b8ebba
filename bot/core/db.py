"""Database engine, sessions and migrations (the web app's per-request session is bot.web.database)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, event, func, select, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from bot.core.config import database_url

MIGRATIONS_DIR = Path(__file__).resolve().parents[1] / "migrations"


def make_engine(url: str, **kwargs) -> Engine:
    """An engine for ``url``; SQLite gets foreign keys, WAL and a busy timeout."""
    url = database_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        kwargs.setdefault("connect_args", {"timeout": 30, "check_same_thread": False})
        engine = create_engine(url, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    # One connection per gunicorn thread (8 by default) and a few for the embedded worker, so a
    # busy web process does not open and close connections on every request.
    if "poolclass" not in kwargs:
        kwargs.setdefault("pool_size", 10)
    return create_engine(url, **kwargs)


def alembic_config(url: str) -> AlembicConfig:
    """An Alembic configuration for Sami's migrations against ``url``."""
    # The migrations environment reads the URL from here: the same driver as make_engine.
    url = database_url(url)
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Alembic's config is an ini file: a literal % must be doubled.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head", connection=None) -> None:
    """Apply migrations up to ``revision``."""
    config = alembic_config(url)
    if connection is not None:
        config.attributes["connection"] = connection
    command.upgrade(config, revision)


def downgrade(url: str, revision: str, connection=None) -> None:
    """Revert migrations down to ``revision`` (``base`` removes every table)."""
    config = alembic_config(url)
    if connection is not None:
        config.attributes["connection"] = connection
    command.downgrade(config, revision)


def current_revision(engine: Engine) -> str | None:
    """The migration the database is at, or None if it has none."""
    with engine.connect() as connection:
        return revision_of(connection)


def revision_of(connection) -> str | None:
    """The migration the database behind ``connection`` is at, or None if it has none."""
    return MigrationContext.configure(connection).get_current_revision()


def check_reachable(url: str) -> None:
    """Raise the driver's error unless the database at ``url`` accepts a connection."""
    engine = make_engine(url, poolclass=NullPool)
    try:
        with engine.connect():
            pass
    finally:
        engine.dispose()


def unreachable_message(url: str, exc: Exception) -> str:
    """One line on a database that did not answer: where Sami looked, why it failed, what to check."""
    parsed = make_url(database_url(url))
    if parsed.get_backend_name() == "sqlite":
        where = f"the SQLite database {parsed.database}"
        check = "that its folder exists and is writable"
    else:
        host = parsed.host or "the local socket"
        where = f"the database at {host}:{parsed.port or 5432}" + (f" ({parsed.database})" if parsed.database else "")
        check = "that PostgreSQL runs there and accepts connections, and the user, password and database name"
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    reason = reason[0].rsplit(": ", 1)[-1] if reason else type(exc).__name__
    return f"cannot reach {where}: {reason}; check SAMI_DATABASE_URL, {check}"


def ping(session: Session) -> None:
    """Raise if the database does not answer."""
    session.execute(text("SELECT 1"))


def db_now(session: Session) -> datetime:
    """The database's current time (UTC): the one clock every machine agrees on."""
    if session.get_bind().dialect.name == "sqlite":
        return datetime.now(UTC)  # SQLite is the embedded default: one machine, one clock
    # clock_timestamp(), not now(): now() stands still for the whole transaction.
    return session.scalar(select(func.clock_timestamp())).astimezone(UTC)
