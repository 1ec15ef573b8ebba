"""What the server commands share: one-line errors for what a person can fix (the configuration,
a database or Redis that does not answer), and a migrated database to work on."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import click
import redis.exceptions
import sqlalchemy.exc
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from bot.core import db as database
from bot.core.config import ConfigError, Settings, load_settings
from workers.queue import redis_unreachable_message


class Problem(click.ClickException):
    """An error that is one line saying what to check, not a traceback: ``sami: <message>``."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file=None) -> None:
        click.echo(f"sami: {self.format_message()}", err=True, file=file)


def one_line_errors(command: Callable) -> Callable:
    """A server command's configuration error (exit 2), or a database or Redis it cannot reach
    (exit 1), becomes one line naming what to check."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except ConfigError as exc:
            raise Problem(f"configuration error: {exc}", exit_code=2) from None
        except Exception as exc:
            problem = unreachable(exc)
            if problem is None:
                raise
            raise Problem(problem) from None

    return wrapper


def unreachable(exc: BaseException) -> str | None:
    """What to check when ``exc`` says the database or Redis could not be reached; None for any other error."""
    if isinstance(exc, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError):
        return database.unreachable_message(load_settings().database_url, exc)
    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        return redis_unreachable_message(load_settings().redis_url, exc)
    return None


def warn_if_metrics_open(settings: Settings) -> None:
    """Production serving /metrics to anyone is allowed (a private network may be enough) but said once, at start."""
    if settings.mode == "production" and not settings.metrics_token:
        logging.getLogger("bot.core.metrics").warning(
            "/metrics is open to anyone who can reach it: set SAMI_METRICS_TOKEN to require a bearer token")


def migrated_engine(settings: Settings) -> Engine:
    """The database's engine; a one-line error when it was never migrated (every query would fail)."""
    engine = database.make_engine(settings.database_url)
    if database.current_revision(engine) is None:
        engine.dispose()
        raise click.ClickException("the database has no tables: run `sami db upgrade`")
    return engine


def migrated_sessions(settings: Settings) -> sessionmaker:
    return sessionmaker(bind=migrated_engine(settings), expire_on_commit=False)


def admin_session() -> Session:
    return Session(migrated_engine(load_settings()))
