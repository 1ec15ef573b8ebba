"""The client commands of ``sami``, added to its group by ``register``: those that ask for
something (bot.client.write), those that read (bot.client.read), and ``login`` here.

Each command is a thin layer over one or two API calls: it checks its input, calls, and prints a
table for people or ``--json`` for scripts. Errors are one line with the fix and an exit code
from bot.client.exits; the server decides everything else.
"""

from __future__ import annotations

import sys

import click

from bot.client import output
from bot.client.common import Out
from bot.client.environments import env
from bot.client.exits import DESCRIPTIONS, Exit
from bot.client.http import Client, ClientError
from bot.client.read import info, list_, logs, services, wait
from bot.client.settings import read_config, write_config
from bot.client.write import (
    archive,
    cancel,
    cleanup,
    clone,
    create,
    delete,
    reconcile,
    request,
    restore,
    rollback,
    unpin,
    update,
)

# Where a person gets a token (the server never shows one again after it is made).
WHERE_TOKENS_COME_FROM = ("a token comes from `sami token create NAME` (--admin, or --service, --environment, "
                          "--action for less) run where the server runs, by its admin, who gives it to you")
EXIT_HELP = "\b\nExit status:\n" + "\n".join(f"  {int(code)}  {text}" for code, text in DESCRIPTIONS.items())


@click.command()
@click.option("--url", envvar="SAMI_URL", metavar="URL", help="The Sami server's root URL (asked when not given).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document for scripts.")
def login(url: str | None, as_json: bool) -> None:
    """Save the server's URL and a token for the other commands, in a file only you can read.

    The token is asked for without echo (or read from standard input when that is not a
    terminal), never taken from the command line. It is checked against the server first.

    \b
    Example:
        sami login --url https://sami.example.com
    """
    out = Out(url, None, as_json)
    try:
        saved = read_config()
        if not url:
            url = click.prompt("Sami server URL", default=saved.get("url") or "http://127.0.0.1:8000")
        # Never an option: a command line is visible to every user of the machine.
        token = click.prompt("Token", hide_input=True) if sys.stdin.isatty() else sys.stdin.readline()
        token = token.strip()
        if not token:
            raise ClientError(f"no token given; {WHERE_TOKENS_COME_FROM}", Exit.BAD_INPUT)
        client = Client(url, token)
        try:
            client.get("/api/v1/deployments", {"limit": 1})
            reads = True
        except ClientError as exc:
            if exc.status == 401:  # not "run sami login": that is what was just done
                raise ClientError(f"the server at {client.url} refused this token; {WHERE_TOKENS_COME_FROM}",
                                  Exit.REFUSED, 401) from None
            if exc.status != 403:  # a token without the read scope is still a good token
                raise
            reads = False
        path = write_config(client.url, token)
    except ClientError as exc:
        out.fail(exc)
    if as_json:
        output.print_json({"url": client.url, "config": str(path), "reads": reads})
        return
    click.echo(f"saved {client.url} and the token to {path} (readable by you only)")
    if not reads:
        click.echo("note: this token may not read deployments; list, info and wait will be refused", err=True)


COMMANDS = (request, create, update, archive, restore, cleanup, delete, rollback, reconcile, unpin, clone, cancel,
            list_, info, logs, wait, services, login, env)


def register(group: click.Group) -> None:
    """Add the client commands to the ``sami`` group."""
    for command in COMMANDS:
        command.epilog = EXIT_HELP
        for sub in getattr(command, "commands", {}).values():
            sub.epilog = EXIT_HELP
        group.add_command(command)
