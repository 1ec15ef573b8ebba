"""The ``sami`` command: serve, workers, the scheduler, validation, tokens, migrations."""

from __future__ import annotations

import sys

import click

from bot import __version__
from bot.config import ConfigError, load_settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sami")
def cli() -> None:
    """Sami: per-pull-request staging environments driven from GitHub."""


@cli.command()
@click.option("--bind", "-b", default="127.0.0.1:8000", show_default=True, help="HOST:PORT to listen on.")
@click.option("--workers", "-w", type=click.IntRange(1, 64), default=None,
              help="Web processes (default 2; 1 in the embedded default).")
@click.option("--threads", type=click.IntRange(1, 64), default=8, show_default=True)
@click.option("--migrate/--no-migrate", default=False, help="Apply database migrations first.")
def serve(bind: str, workers: int | None, threads: int, migrate: bool) -> None:
    """Serve the web application with gunicorn."""
    from gunicorn.app.base import BaseApplication

    settings = load_settings()
    if migrate:
        from bot import db

        db.upgrade(settings.database_url)
    if workers is None:
        workers = 1 if settings.embedded else 2
    elif settings.embedded and workers > 1:
        raise click.UsageError(
            "the embedded default (no SAMI_REDIS_URL) runs in one process: use --workers 1"
        )

    class _Server(BaseApplication):
        def load_config(self):
            for key, value in {
                "bind": bind,
                "workers": workers,
                "threads": threads,
                "worker_class": "gthread",
                "accesslog": "-",
                "timeout": 60,
                # Server-sent events keep connections open; gthread handles them.
                "keepalive": 5,
            }.items():
                self.cfg.set(key, value)

        def load(self):
            from bot import create_app

            return create_app()

    _Server().run()


@cli.group()
def db() -> None:
    """Database migrations."""


@db.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    from bot import db as database

    settings = load_settings()
    database.upgrade(settings.database_url, revision)
    click.echo(f"database at {revision}")


@db.command("downgrade")
@click.argument("revision")
def db_downgrade(revision: str) -> None:
    """Revert migrations down to REVISION (``base`` drops every table)."""
    from bot import db as database

    settings = load_settings()
    database.downgrade(settings.database_url, revision)
    click.echo(f"database at {revision}")


@db.command("current")
def db_current() -> None:
    """Print the migration the database is at."""
    from bot import db as database

    settings = load_settings()
    engine = database.make_engine(settings.database_url)
    click.echo(database.current_revision(engine) or "none (run: sami db upgrade)")


def _register_optional_commands() -> None:
    # Commands that live with the layer they drive.
    try:
        from bot.manifests.cli import validate
    except ImportError:  # the manifests package is optional while it is being built
        return
    cli.add_command(validate)


_register_optional_commands()


def main() -> None:
    """Entry point: a configuration error is one line naming the variable, not a traceback."""
    try:
        cli.main(standalone_mode=True)
    except ConfigError as exc:
        click.echo(f"sami: configuration error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
