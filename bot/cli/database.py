"""``sami db``: the database's migrations."""

from __future__ import annotations

import click

from bot.cli.common import one_line_errors
from bot.core import db as database
from bot.core.config import load_settings


@click.group()
def db() -> None:
    """Database migrations."""


@db.command("upgrade")
@click.argument("revision", default="head")
@one_line_errors
def db_upgrade(revision: str) -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    settings = load_settings()
    database.upgrade(settings.database_url, revision)
    click.echo(f"database at {revision}")


@db.command("downgrade")
@click.argument("revision")
@one_line_errors
def db_downgrade(revision: str) -> None:
    """Revert migrations down to REVISION (``base`` drops every table)."""
    settings = load_settings()
    database.downgrade(settings.database_url, revision)
    click.echo(f"database at {revision}")


@db.command("current")
@one_line_errors
def db_current() -> None:
    """Print the migration the database is at."""
    settings = load_settings()
    engine = database.make_engine(settings.database_url)
    click.echo(database.current_revision(engine) or "none (run: sami db upgrade)")
