"""``sami token``: the API's tokens, made and revoked where Sami runs (the database is the authority)."""

from __future__ import annotations

import getpass
import json

import click

from bot.cli.common import admin_session, one_line_errors
from bot.services.tokens import Scopes, TokenError, create_token, list_tokens, revoke_token


@click.group()
def token() -> None:
    """API tokens: create (shown once), list, revoke."""


@token.command("create")
@click.argument("name")
@click.option("--service", "services", multiple=True, help="A service it may act on (repeat; default all).")
@click.option("--environment", "environments", multiple=True, help="An environment (repeat; default all).")
@click.option("--action", "actions", multiple=True, type=click.Choice(["deploy", "archive", "restore",
              "cleanup", "read"]), help="What it may do (repeat; default deploy and read).")
@click.option("--admin", is_flag=True, help="Everything, including logs, delete and tokens.")
@one_line_errors
def token_create(name, services, environments, actions, admin) -> None:
    """Create token NAME and print it (it is stored hashed and cannot be shown again)."""
    scopes = Scopes(services=services or ("*",), environments=environments or ("*",),
                    actions=actions or ("deploy", "read"), admin=admin)
    with admin_session() as session:
        try:
            value = create_token(session, name, scopes, created_by=f"cli:{getpass.getuser()}")
        except TokenError as exc:
            raise click.ClickException(str(exc)) from None
        session.commit()
    click.echo(value)
    click.echo(f"token {name!r} created ({scopes.describe()}); store it now, it is not shown again", err=True)


@token.command("list")
@click.option("--json", "as_json", is_flag=True)
@one_line_errors
def token_list(as_json: bool) -> None:
    """List tokens (names and scopes, never secrets)."""
    with admin_session() as session:
        rows = [{"name": t.name, "scopes": Scopes.from_dict(t.scopes).describe(),
                 "created_at": t.created_at.isoformat(timespec="seconds"),
                 "last_used_at": t.last_used_at.isoformat(timespec="seconds") if t.last_used_at else None,
                 "revoked": t.revoked_at is not None} for t in list_tokens(session)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        state = "revoked" if row["revoked"] else f"last used {row['last_used_at'] or 'never'}"
        click.echo(f"{row['name']:<24} {row['scopes']:<60} {state}")


@token.command("revoke")
@click.argument("name")
@one_line_errors
def token_revoke(name: str) -> None:
    """Revoke token NAME: it stops working at once."""
    with admin_session() as session:
        try:
            revoke_token(session, name)
        except TokenError as exc:
            raise click.ClickException(str(exc)) from None
        session.commit()
    click.echo(f"token {name!r} revoked")
