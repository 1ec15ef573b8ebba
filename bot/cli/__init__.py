"""The ``sami`` command: the server's commands (serve, worker, scheduler, db, token, github,
validate) and the client's (request, list, info, wait, logs, ..., from bot.client).

A server command's module is imported when that command runs: together they load Flask,
SQLAlchemy, RQ, gunicorn and PyGithub, which ``sami --help`` and the client commands do not
need (about a second of start-up on a small machine). ``SERVER_COMMANDS`` names each one's module
and the line ``sami --help`` shows for it.
"""

from __future__ import annotations

import importlib

import click

from bot import __version__
from bot.client.commands import register as register_client_commands

# name: (module, attribute, the first paragraph of its help, which `sami --help` shortens as click does);
# tests/test_cli.py holds each to the command's own.
SERVER_COMMANDS: dict[str, tuple[str, str, str]] = {
    "db": ("bot.cli.database", "db", "Database migrations."),
    "github": ("bot.cli.github", "github",
               "GitHub: send test deliveries, check the connection, recover missed deliveries, create the App."),
    "scheduler": ("bot.cli.processes", "scheduler",
                  "Run the scheduler: queue sweep, reaper, status checks, retention cleanup."),
    "serve": ("bot.cli.serve", "serve", "Serve the web application with gunicorn."),
    "token": ("bot.cli.tokens", "token", "API tokens: create (shown once), list, revoke."),
    "validate": ("bot.manifests.cli", "validate",
                 "Validate the deployments repo at PATH (a folder or a git URL): exit 0 when valid."),
    "worker": ("bot.cli.processes", "worker",
               "Run a worker that executes queued actions and checks (needs SAMI_REDIS_URL)."),
}


class Sami(click.Group):
    """A group whose server commands are imported when they are asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *SERVER_COMMANDS})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in SERVER_COMMANDS and name not in self.commands:
            module, attribute, _ = SERVER_COMMANDS[name]
            self.add_command(getattr(importlib.import_module(module), attribute), name)
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list of ``sami --help``, without importing the server commands."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(map(len, names))  # as click.Group.format_commands
        rows = []
        for name in names:
            if name in SERVER_COMMANDS and name not in self.commands:
                rows.append((name, click.Command(name, help=SERVER_COMMANDS[name][2]).get_short_help_str(limit)))
                continue
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=Sami, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sami")
def cli() -> None:
    """Sami: per-pull-request staging environments driven from GitHub.

    The server commands (serve, worker, scheduler, token, db, github) run where Sami runs; the
    client commands (request, list, info, wait, logs, ...) drive a server from anywhere, with
    SAMI_URL and SAMI_TOKEN or `sami login`.

    \b
    Shell completion (bash; zsh and fish likewise):
        eval "$(_SAMI_COMPLETE=bash_source sami)"
    """


register_client_commands(cli)


def main() -> None:
    """The ``sami`` entry point."""
    cli.main(standalone_mode=True)

