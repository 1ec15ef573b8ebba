"""What every client command shares: the connection options, --json, turning a ClientError into
its one-line message and exit code, the --wait options, and completing deployment names."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

import click

from bot.client import output
from bot.client.exits import Exit
from bot.client.http import Client, ClientError
from bot.client.settings import Connection


class Out:
    """One command's connection and output mode."""

    def __init__(self, url: str | None, token: str | None, as_json: bool):
        self.url, self.token = url, token
        self.as_json = as_json
        self.colour = output.is_tty() and not as_json
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            connection = Connection.resolve(self.url, self.token)
            connection.check_token()
            self._client = Client(connection.url, connection.token)
        return self._client

    def say(self, text: str = "") -> None:
        """A line for people (nothing with --json, whose output is the document alone)."""
        if not self.as_json:
            click.echo(text)

    def fail(self, exc: ClientError) -> None:
        if self.as_json:
            output.print_json({"error": exc.message, "status": exc.status, "exit_code": int(exc.exit_code)})
        click.echo(f"sami: {exc.message}", err=True)
        sys.exit(int(exc.exit_code))


def client_command(function: Callable) -> Callable:
    """Give a command the connection options and --json, and turn ClientError into its exit code."""

    @click.option("--json", "as_json", is_flag=True, help="Print one JSON document (stable shape) for scripts.")
    @click.option("--token", envvar="SAMI_TOKEN", metavar="TOKEN",
                  help="API token. Env: SAMI_TOKEN; prefer it or `sami login`: a command line is visible to others.")
    @click.option("--url", envvar="SAMI_URL", metavar="URL",
                  help="The Sami server's root URL. Env: SAMI_URL; default: the one saved by `sami login`.")
    @functools.wraps(function)
    def wrapper(url, token, as_json, **kwargs):
        out = Out(url, token, as_json)
        try:
            code = function(out, **kwargs)
        except ClientError as exc:
            out.fail(exc)
        except KeyboardInterrupt:
            click.echo("\nsami: interrupted; what the server was asked to do goes on there", err=True)
            sys.exit(130)
        sys.exit(int(code or 0))

    return wrapper


def parse_action_id(value: str, name: str = "ACTION_ID") -> int:
    """An action id given on the command line, or a one-line error (exit 2) saying what one is.

    Checked here rather than by click, whose message ("not a valid integer range") says nothing of ids.
    """
    hint = "(an action's id, as `sami info NAME` lists them)"
    if not (value.isascii() and value.isdigit()):
        raise ClientError(f"{name} must be a whole number {hint}", Exit.BAD_INPUT)
    if int(value) < 1:
        raise ClientError(f"{name} must be 1 or more {hint}", Exit.BAD_INPUT)
    return int(value)


def complete_deployment(ctx, param, incomplete: str) -> list[str]:
    """Shell completion of deployment names from the server (nothing when it cannot be asked)."""
    try:
        connection = Connection.resolve(ctx.params.get("url"), ctx.params.get("token"))
        answer = Client(connection.url, connection.token, timeout=3).get("/api/v1/deployments",
                                                                            {"q": incomplete or None})
    except (ClientError, OSError):
        return []
    return [d["name"] for d in answer.get("deployments", []) if d["name"].startswith(incomplete)]


def wait_options(function: Callable) -> Callable:
    function = click.option("--interval", type=click.FloatRange(0.1, 60), default=1.0, hidden=True)(function)
    function = click.option("--timeout", type=click.FloatRange(1, 86400), default=1800, show_default=True,
                            help="With --wait: give up waiting after this many seconds (exit 5).")(function)
    return click.option("--wait", is_flag=True,
                        help="Wait until the action ends; the exit status says how it ended.")(function)


def confirm_by_name(name: str, what: str, yes: bool) -> None:
    """Ask for ``name`` to be typed before ``what`` (something that cannot be undone), as the page does;
    ``--yes`` skips it, and without a terminal to ask on it is required."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise click.UsageError(f"give --yes to {what} without a terminal to confirm on")
    typed = click.prompt(f"This will {what}; it cannot be undone. Type {name} to go on", default="",
                         show_default=False)
    if typed.strip() != name:
        raise ClientError(f"not confirmed ({typed.strip()!r} is not {name!r}); nothing was done", Exit.BAD_INPUT)


def yes_option(function: Callable) -> Callable:
    return click.option("--yes", is_flag=True, help="Do not ask for the name to be typed.")(function)
