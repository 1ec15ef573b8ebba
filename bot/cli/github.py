"""``sami github``: send a signed test delivery, check the connection, ask GitHub again for missed
deliveries, and create Sami's GitHub App."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta

import click
from sqlalchemy.orm import sessionmaker

from bot.cli.common import one_line_errors
from bot.client.http import ClientError
from bot.client.settings import read_config
from bot.core import db as database
from bot.core.config import load_settings
from bot.core.signing import signature
from bot.github.check import github_check as github_check_lines
from bot.github.client import GitHubClient
from bot.github.redeliver import LocalAskedMemory, RedisAskedMemory, redeliver_missed, watched_repositories
from bot.github.setup import SetupError, credentials_problem, loopback_warning
from bot.manifests.store import ManifestStore
from bot.web.setup import LocalSetup
from workers.queue import connect_redis

LOCAL_SERVER = "http://127.0.0.1:8000"


@click.group()
def github() -> None:
    """GitHub: send test deliveries, check the connection, recover missed deliveries, create the App."""


@github.command("send")
@click.argument("event")
@click.argument("payload", type=click.File("rb"))
@click.option("--url", envvar="SAMI_URL", default=None,
              help="The Sami server (its /webhooks/github endpoint is added), or the webhook URL itself. "
                   f"Env: SAMI_URL; default: the one saved by `sami login`, else {LOCAL_SERVER}.")
@click.option("--secret", envvar="SAMI_WEBHOOK_SECRET", default="", show_default=False,
              help="The webhook secret to sign with. Env: SAMI_WEBHOOK_SECRET (prefer it: argv is visible).")
@click.option("--delivery", default=None, help="The X-GitHub-Delivery id (default: a new uuid4).")
@click.option("--action", default=None, help="Set the payload's action (e.g. synchronize) before sending.")
@one_line_errors
def github_send(event: str, payload, url: str, secret: str, delivery: str | None, action: str | None) -> None:
    """Sign PAYLOAD (a JSON file, - for stdin) and post it as GitHub delivers EVENT.

    Prints the server's answer; exits 1 when the server refuses (4xx, 5xx) or cannot be reached.
    """
    if not secret:
        raise click.UsageError("no webhook secret: set SAMI_WEBHOOK_SECRET (the embedded default's is in "
                               "instance/webhook-secret) or give --secret")
    body = payload.read()
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint="PAYLOAD") from None
    if not isinstance(document, dict):
        raise click.BadParameter("GitHub payloads are JSON objects", param_hint="PAYLOAD")
    if action is not None:
        document["action"] = action
        pull = document.get("pull_request")
        if event == "pull_request" and isinstance(pull, dict) and action in ("closed", "reopened"):
            # As GitHub sends them: the pull request object says it is closed (or open again).
            pull["state"] = "closed" if action == "closed" else "open"
        body = json.dumps(document, separators=(",", ":")).encode()
    delivery = delivery or str(uuid.uuid4())
    if not url:
        try:
            url = read_config().get("url") or LOCAL_SERVER
        except ClientError as exc:
            raise click.UsageError(f"{exc.message}, or give --url") from None
    target = url.rstrip("/")
    if not target.endswith("/webhooks/github"):
        target += "/webhooks/github"
    status, answer = _post(target, body, {
        "User-Agent": "GitHub-Hookshot/sami", "Content-Type": "application/json", "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery, "X-Hub-Signature-256": signature(secret.encode(), body)})
    click.echo(f"{status} {answer}")
    if status >= 400:
        try:
            message = json.loads(answer).get("error") or answer
        except (ValueError, AttributeError):
            message = answer
        click.echo(f"sami: the server refused delivery {delivery} ({status}): {message}", err=True)
        sys.exit(1)


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    """POST ``body``; the status and the answer's text, whatever the status."""
    if not url.startswith(("http://", "https://")):
        raise click.BadParameter(f"{url!r} is not an http(s) URL", param_hint="--url")
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, response.read().decode(errors="replace").strip()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace").strip()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        click.echo(f"sami: cannot reach {url}: {reason}", err=True)
        sys.exit(1)


@github.command("check")
@one_line_errors
def github_check() -> None:
    """Check that Sami can work with GitHub: one line per item, exit 1 if any fails.

    The credentials, each repository Sami hears from, the webhook and its secret, the deployments repo.
    """
    settings = load_settings()
    lines = github_check_lines(settings, GitHubClient.from_settings(settings), ManifestStore.from_settings(settings))
    for line in lines:
        click.echo(str(line))
    if not all(line.ok for line in lines):
        sys.exit(1)


@github.command("redeliver")
@click.option("--since", "hours", type=click.FloatRange(0.1, 72), default=24, show_default=True,
              help="Look back this many hours (GitHub keeps deliveries three days).")
@click.option("--dry-run", is_flag=True, help="List what would be asked for; ask GitHub for nothing.")
@one_line_errors
def github_redeliver(hours: float, dry_run: bool) -> None:
    """Ask GitHub to redeliver webhook deliveries that failed and that Sami has no record of.

    Each is asked for once in 30 minutes (remembered in Redis, when Sami has one). Exits 1 when
    GitHub could not be read or refused a request.
    """
    settings = load_settings()
    client = GitHubClient.from_settings(settings)
    if client is None:
        raise click.UsageError("no GitHub credentials: set SAMI_GITHUB_APP_ID and SAMI_GITHUB_APP_PRIVATE_KEY "
                               "(a GitHub App), or SAMI_GITHUB_TOKEN")
    memory = RedisAskedMemory(connect_redis(settings)) if settings.redis_url else LocalAskedMemory()
    repositories = [] if client.mode == "app" else watched_repositories(
        ManifestStore.from_settings(settings).current(), settings.github_repositories)
    report = redeliver_missed(sessionmaker(bind=database.make_engine(settings.database_url)), client, memory,
                              since=datetime.now(UTC) - timedelta(hours=hours), repositories=repositories,
                              public_url=settings.public_url, dry_run=dry_run)
    missed = {m.guid: m for m in report.missed}
    for guid in report.asked:
        click.echo(f"{'would ask' if dry_run else 'asked'}  {missed[guid]}")
    for guid in report.already_asked:
        click.echo(f"already asked  {missed[guid]}")
    for what, problem in report.failed.items():
        click.echo(f"sami: {what}: {problem}", err=True)
    summary = f"{len(report.missed)} missed deliveries in the last {hours:g} hours; {len(report.asked)} "
    summary += "would be asked for again" if dry_run else "asked for again"
    if report.already_asked:
        summary += f", {len(report.already_asked)} asked for within the last 30 minutes"
    click.echo(summary)
    if report.failed:
        sys.exit(1)


@github.command("setup")
@click.option("--org", default=None, help="Create the App in this organization (default: your own account).")
@click.option("--name", default=None, help="The App's name (default: Sami (host of SAMI_PUBLIC_URL)); GitHub's "
                                           "page lets you change it.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, help="The local port to listen on (default: a "
                                                                       "free one).")
@click.option("--timeout", type=click.FloatRange(1, 3600), default=600, hidden=True)
@one_line_errors
def github_setup(org: str | None, name: str | None, port: int, timeout: float) -> None:
    """Create Sami's GitHub App in one click, with GitHub's App-manifest flow.

    Serves a page on 127.0.0.1 to open in a browser on this machine: it takes you to GitHub to confirm
    the App, and GitHub sends you back here. The App's id, private key and webhook secret are written
    to the instance folder (github-app.env and a .pem, mode 0600). Exits 1 when GitHub refuses or
    nothing comes back within 10 minutes.
    """
    settings = load_settings()
    problem = credentials_problem(settings)
    if problem:
        click.echo(f"sami: {problem}", err=True)
        sys.exit(1)
    warning = loopback_warning(settings.public_url)
    if warning:
        click.echo(f"sami: {warning}", err=True)
    try:
        local = LocalSetup(settings, org=org, name=name, port=port, timeout=timeout,
                           note=lambda line: click.echo(f"sami: {line}", err=True))
    except SetupError as exc:
        raise click.BadParameter(str(exc), param_hint="--org") from None
    except OSError as exc:
        click.echo(f"sami: cannot listen on 127.0.0.1:{port}: {exc.strerror}", err=True)
        sys.exit(1)
    click.echo(f"Open {local.url} in a browser on this machine: it takes you to GitHub to create the App.")
    sys.stdout.flush()
    try:
        result = local.run()
    except SetupError as exc:
        click.echo(f"sami: {exc}", err=True)
        sys.exit(1)
    app = result.app
    click.echo(f"Created the GitHub App {app.slug or app.id} (id {app.id}): {app.html_url}")
    click.echo(f"Wrote {result.env_file} and the App's private key {result.key_file} (mode 0600).")
    if app.webhook_secret:
        click.echo(f"Webhook secret (shown this once; it is in {result.env_file.name} too): {app.webhook_secret}")
    click.echo("Next:")
    for number, step in enumerate(result.next_steps(), 1):
        click.echo(f"  {number}. {step}")
