"""The ``sami`` command: serve, workers, the scheduler, validation, tokens, migrations."""

from __future__ import annotations

import shutil
import sys

import click

from bot import __version__
from bot.client.commands import register as register_client_commands
from bot.core.config import ConfigError, load_settings
from bot.core.logs import configure_logging
from bot.manifests.cli import validate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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


@cli.command()
@click.option("--bind", "-b", default="127.0.0.1:8000", show_default=True, help="HOST:PORT to listen on.")
@click.option("--workers", "-w", type=click.IntRange(1, 64), default=None,
              help="Web processes (default 2; 1 in the embedded default).")
@click.option("--threads", type=click.IntRange(1, 64), default=8, show_default=True)
@click.option("--migrate/--no-migrate", default=False, help="Apply database migrations first.")
def serve(bind: str, workers: int | None, threads: int, migrate: bool) -> None:
    """Serve the web application with gunicorn.

    On SIGTERM it stops accepting, lets in-flight requests finish (up to SAMI_SHUTDOWN_GRACE
    seconds) and, in the embedded default, hands a running action back to the queue.
    """
    from gunicorn.app.base import BaseApplication

    settings = load_settings()
    configure_logging(settings)
    _warn_if_metrics_open(settings)
    # Before anything imports prometheus_client: every gunicorn process writes its samples here.
    metrics_dir = _metrics_folder()
    from bot.core import db

    if migrate:
        db.upgrade(settings.database_url)
    else:
        db.check_reachable(settings.database_url)  # a database that does not answer: one line, not 500s
    if workers is None:
        workers = 1 if settings.embedded else 2
    if settings.embedded and settings.mode == "development" and not settings.webhook_secret:
        _announce_webhook_secret(settings)
    elif settings.embedded and workers > 1:
        raise click.UsageError(
            "the embedded default (no SAMI_REDIS_URL) runs in one process: use --workers 1"
        )
    if settings.embedded and settings.mode == "development":
        _announce_sign_in_link(settings)

    class _Server(BaseApplication):
        def load_config(self):
            for key, value in {
                "bind": bind,
                "workers": workers,
                "threads": threads,
                # gthread, answering gunicorn's own errors (414, 431, 400) with JSON.
                "worker_class": "bot.web.gunicorn_worker.JSONErrorWorker",
                "accesslog": "-",
                "timeout": 60,
                # Server-sent events keep connections open; gthread handles them.
                "keepalive": 5,
                # SIGTERM: stop accepting, finish in-flight requests for this long, then stop.
                "graceful_timeout": settings.shutdown_grace,
                "worker_exit": _web_process_exit,
                "child_exit": _web_process_gone,
                "on_exit": lambda _arbiter: shutil.rmtree(metrics_dir, ignore_errors=True),
            }.items():
                self.cfg.set(key, value)

        def load(self):
            from bot.web import auth, create_app, queue, shared

            app = create_app()
            if settings.embedded:
                from workers.embedded import start_embedded

                # One context for the process: the app queues onto the worker's broker, reads the
                # manifests through the worker's store and asks GitHub through the worker's client.
                context = start_embedded(app.config["SAMI"])
                queue.init_app(app, context.broker)
                shared.init_app(app, context.manifests)
                auth.init_app(app, context.github)
            return app

    _Server().run()


def _warn_if_metrics_open(settings) -> None:
    """Production serving /metrics to anyone is allowed (a private network may be enough) but said once, at start."""
    if settings.mode == "production" and not settings.metrics_token:
        import logging

        logging.getLogger("bot.core.metrics").warning(
            "/metrics is open to anyone who can reach it: set SAMI_METRICS_TOKEN to require a bearer token")


def _announce_sign_in_link(settings) -> None:
    """The embedded default's one-time sign-in link, so a newcomer can drive deployments from the page.

    The code rides in the URL's fragment, which browsers do not send, so it never reaches an access
    log; the server keeps only its hash, and it works once, within the hour. Its session is a fresh
    admin token's (``sami token list`` shows it; signing out of the page revokes it, as ``sami token
    revoke`` does).
    """
    from bot.web.auth import ONE_TIME_TTL, make_one_time_code

    code = make_one_time_code(settings.instance_dir)
    click.echo(f"Sign in to the status page (one-time link, valid {ONE_TIME_TTL // 60} minutes): "
               f"{settings.public_url.rstrip('/')}/login/once#{code}")
    sys.stdout.flush()


def _metrics_folder() -> str:
    """A private, empty folder for this server's metrics samples, named in PROMETHEUS_MULTIPROC_DIR
    (prometheus_client's multiprocess mode): /metrics adds up every gunicorn process's."""
    import os
    import tempfile

    if "prometheus_client" in sys.modules:
        raise RuntimeError("prometheus_client was imported before its multiprocess folder was set")
    path = tempfile.mkdtemp(prefix="sami-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    return path


def _web_process_exit(_arbiter, _worker) -> None:
    """gunicorn's worker_exit hook (in the web process, its requests done): stop the embedded worker."""
    if "workers.embedded" in sys.modules:
        from workers.embedded import stop_embedded

        stop_embedded()


def _web_process_gone(_arbiter, worker) -> None:
    """gunicorn's child_exit hook (in the master): a web process ended; its live gauges go."""
    from bot.core.metrics import child_exited

    child_exited(worker.pid)


def _announce_webhook_secret(settings) -> None:
    """The embedded default's generated webhook secret: shown once, when it is made (not logged)."""
    from bot.core.signing import embedded_secret

    secret, created, path = embedded_secret(settings.instance_dir)
    if created:
        click.echo(f"GitHub webhook secret (generated, stored in {path}, shown this once): {secret}")
    else:
        click.echo(f"GitHub webhook secret: the one stored in {path}")
    sys.stdout.flush()  # before gunicorn takes over this process's output


@cli.group()
def db() -> None:
    """Database migrations."""


@db.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    from bot.core import db as database

    settings = load_settings()
    database.upgrade(settings.database_url, revision)
    click.echo(f"database at {revision}")


@db.command("downgrade")
@click.argument("revision")
def db_downgrade(revision: str) -> None:
    """Revert migrations down to REVISION (``base`` drops every table)."""
    from bot.core import db as database

    settings = load_settings()
    database.downgrade(settings.database_url, revision)
    click.echo(f"database at {revision}")


@db.command("current")
def db_current() -> None:
    """Print the migration the database is at."""
    from bot.core import db as database

    settings = load_settings()
    engine = database.make_engine(settings.database_url)
    click.echo(database.current_revision(engine) or "none (run: sami db upgrade)")


@cli.command()
@click.option("--burst", is_flag=True, help="Stop when the queues are empty.")
@click.option("--name", default=None, help="Worker name (default: host and pid).")
def worker(burst: bool, name: str | None) -> None:
    """Run a worker that executes queued actions and checks (needs SAMI_REDIS_URL).

    On SIGTERM it takes no new job; the running action has SAMI_SHUTDOWN_GRACE seconds to finish,
    then it is handed back to the queue (a second SIGTERM hands it back at once).
    """
    from workers.context import build_context, set_context
    from workers.queue import ACTIONS_QUEUE, CHECKS_QUEUE, RQBroker, connect_redis
    from workers.shutdown import GracefulWorker

    settings = load_settings()
    if settings.embedded:
        raise click.UsageError("set SAMI_REDIS_URL: without Redis, `sami serve` runs the worker itself")
    sessions = _migrated_sessions(settings)  # before logging is set up: the check's own lines are noise
    configure_logging(settings)
    connection = connect_redis(settings)
    context = build_context(settings, broker=RQBroker(connection), session_factory=sessions)
    set_context(context)
    _serve_process_metrics(settings, context)
    # No fork per job: the process keeps its database pool, and scripts run in their own
    # process groups anyway. RQ's scheduler (one process for all workers, by a lock in Redis)
    # queues actions that may not start yet when their time comes.
    GracefulWorker([ACTIONS_QUEUE, CHECKS_QUEUE], connection=connection, name=name,
                   grace=settings.shutdown_grace).work(burst=burst, logging_level=settings.log_level.upper(),
                                                       with_scheduler=True)


def _serve_process_metrics(settings, context) -> None:
    """With SAMI_METRICS_PORT, this worker or scheduler serves its own /metrics on that port."""
    if not settings.metrics_port:
        return
    from bot.core.metrics import StateCollector, serve_metrics

    _warn_if_metrics_open(settings)
    serve_metrics(settings.metrics_port, settings.metrics_token,
                  extra=[StateCollector(context.session, lambda: context.broker)])


@cli.command()
@click.option("--interval", type=click.FloatRange(0.5, 600), default=5.0, show_default=True,
              help="Seconds between ticks.")
@click.option("--once", is_flag=True, help="Run one tick and print what it did.")
def scheduler(interval: float, once: bool) -> None:
    """Run the scheduler: queue sweep, reaper, status checks, retention cleanup.

    On SIGTERM it finishes the tick under way, if any, and stops.
    """
    import signal

    from workers.context import build_context
    from workers.scheduler import Scheduler

    settings = load_settings()
    sessions = _migrated_sessions(settings)  # before logging is set up: the check's own lines are noise
    configure_logging(settings)
    context = build_context(settings, session_factory=sessions)
    runner = Scheduler(context, interval=interval)
    if once:
        click.echo(runner.tick())
        return
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: runner.stop())
    _serve_process_metrics(settings, context)
    log_started = f"scheduler running (every {interval:g} s); SIGTERM stops it after the tick under way"
    click.echo(log_started, err=True)
    runner.run_forever()
    click.echo("scheduler stopped", err=True)


@cli.group()
def token() -> None:
    """API tokens: create (shown once), list, revoke."""


def _migrated_engine(settings):
    """The database's engine; a one-line error when it was never migrated (every query would fail)."""
    from bot.core import db as database

    engine = database.make_engine(settings.database_url)
    if database.current_revision(engine) is None:
        engine.dispose()
        raise click.ClickException("the database has no tables: run `sami db upgrade`")
    return engine


def _migrated_sessions(settings):
    from sqlalchemy.orm import sessionmaker

    return sessionmaker(bind=_migrated_engine(settings), expire_on_commit=False)


def _admin_session():
    from sqlalchemy.orm import Session

    return Session(_migrated_engine(load_settings()))


@token.command("create")
@click.argument("name")
@click.option("--service", "services", multiple=True, help="A service it may act on (repeat; default all).")
@click.option("--environment", "environments", multiple=True, help="An environment (repeat; default all).")
@click.option("--action", "actions", multiple=True, type=click.Choice(["deploy", "archive", "restore",
              "cleanup", "read"]), help="What it may do (repeat; default deploy and read).")
@click.option("--admin", is_flag=True, help="Everything, including logs, delete and tokens.")
def token_create(name, services, environments, actions, admin) -> None:
    """Create token NAME and print it (it is stored hashed and cannot be shown again)."""
    import getpass

    from bot.services.tokens import Scopes, TokenError, create_token

    scopes = Scopes(services=services or ("*",), environments=environments or ("*",),
                    actions=actions or ("deploy", "read"), admin=admin)
    with _admin_session() as session:
        try:
            value = create_token(session, name, scopes, created_by=f"cli:{getpass.getuser()}")
        except TokenError as exc:
            raise click.ClickException(str(exc)) from None
        session.commit()
    click.echo(value)
    click.echo(f"token {name!r} created ({scopes.describe()}); store it now, it is not shown again", err=True)


@token.command("list")
@click.option("--json", "as_json", is_flag=True)
def token_list(as_json: bool) -> None:
    """List tokens (names and scopes, never secrets)."""
    import json

    from bot.services.tokens import Scopes, list_tokens

    with _admin_session() as session:
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
def token_revoke(name: str) -> None:
    """Revoke token NAME: it stops working at once."""
    from bot.services.tokens import TokenError, revoke_token

    with _admin_session() as session:
        try:
            revoke_token(session, name)
        except TokenError as exc:
            raise click.ClickException(str(exc)) from None
        session.commit()
    click.echo(f"token {name!r} revoked")


@cli.group()
def github() -> None:
    """GitHub: send test deliveries, check the connection, recover missed deliveries, create the App."""


@github.command("send")
@click.argument("event")
@click.argument("payload", type=click.File("rb"))
@click.option("--url", envvar="SAMI_URL", default="http://127.0.0.1:8000", show_default=True,
              help="The Sami server (its /webhooks/github endpoint is added), or the webhook URL itself. "
                   "Env: SAMI_URL.")
@click.option("--secret", envvar="SAMI_WEBHOOK_SECRET", default="", show_default=False,
              help="The webhook secret to sign with. Env: SAMI_WEBHOOK_SECRET (prefer it: argv is visible).")
@click.option("--delivery", default=None, help="The X-GitHub-Delivery id (default: a new uuid4).")
@click.option("--action", default=None, help="Set the payload's action (e.g. synchronize) before sending.")
def github_send(event: str, payload, url: str, secret: str, delivery: str | None, action: str | None) -> None:
    """Sign PAYLOAD (a JSON file, - for stdin) and post it as GitHub delivers EVENT.

    Prints the server's answer; exits 1 when the server refuses (4xx, 5xx) or cannot be reached.
    """
    import json
    import uuid

    from bot.core.signing import signature

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
    import urllib.error
    import urllib.request

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
def github_check() -> None:
    """Check that Sami can work with GitHub: one line per item, exit 1 if any fails.

    The credentials, each repository Sami hears from, the webhook and its secret, the deployments repo.
    """
    from bot.github.check import github_check as check
    from bot.github.client import GitHubClient
    from bot.manifests.store import ManifestStore

    settings = load_settings()
    lines = check(settings, GitHubClient.from_settings(settings), ManifestStore.from_settings(settings))
    for line in lines:
        click.echo(str(line))
    if not all(line.ok for line in lines):
        sys.exit(1)


@github.command("redeliver")
@click.option("--since", "hours", type=click.FloatRange(0.1, 72), default=24, show_default=True,
              help="Look back this many hours (GitHub keeps deliveries three days).")
@click.option("--dry-run", is_flag=True, help="List what would be asked for; ask GitHub for nothing.")
def github_redeliver(hours: float, dry_run: bool) -> None:
    """Ask GitHub to redeliver webhook deliveries that failed and that Sami has no record of.

    Each is asked for once in 30 minutes (remembered in Redis, when Sami has one). Exits 1 when
    GitHub could not be read or refused a request.
    """
    from datetime import UTC, datetime, timedelta

    from sqlalchemy.orm import sessionmaker

    from bot.core import db as database
    from bot.github.client import GitHubClient
    from bot.github.redeliver import LocalAskedMemory, RedisAskedMemory, redeliver_missed, watched_repositories
    from bot.manifests.store import ManifestStore

    settings = load_settings()
    client = GitHubClient.from_settings(settings)
    if client is None:
        raise click.UsageError("no GitHub credentials: set SAMI_GITHUB_APP_ID and SAMI_GITHUB_APP_PRIVATE_KEY "
                               "(a GitHub App), or SAMI_GITHUB_TOKEN")
    if settings.redis_url:
        from workers.queue import connect_redis

        memory = RedisAskedMemory(connect_redis(settings))
    else:
        memory = LocalAskedMemory()
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
def github_setup(org: str | None, name: str | None, port: int, timeout: float) -> None:
    """Create Sami's GitHub App in one click, with GitHub's App-manifest flow.

    Serves a page on 127.0.0.1 to open in a browser on this machine: it takes you to GitHub to confirm
    the App, and GitHub sends you back here. The App's id, private key and webhook secret are written
    to the instance folder (github-app.env and a .pem, mode 0600). Exits 1 when GitHub refuses or
    nothing comes back within 10 minutes.
    """
    from bot.github.setup import SetupError, credentials_problem, loopback_warning
    from bot.github.setup_server import LocalSetup

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


cli.add_command(validate)
register_client_commands(cli)


def main() -> None:
    """Entry point: a configuration error, or a database or Redis that cannot be reached, is one line
    saying what to check, not a traceback."""
    try:
        cli.main(standalone_mode=True)
    except ConfigError as exc:
        click.echo(f"sami: configuration error: {exc}", err=True)
        sys.exit(2)
    except Exception as exc:
        problem = unreachable(exc)
        if problem is None:
            raise
        click.echo(f"sami: {problem}", err=True)
        sys.exit(1)


def unreachable(exc: BaseException) -> str | None:
    """What to check when ``exc`` says the database or Redis could not be reached; None for any other error.

    Only modules already imported are consulted: such an error can only come from one of them.
    """
    database_errors = sys.modules.get("sqlalchemy.exc")
    if database_errors and isinstance(exc, database_errors.OperationalError | database_errors.InterfaceError):
        from bot.core import db as database

        return database.unreachable_message(load_settings().database_url, exc)
    redis_errors = sys.modules.get("redis.exceptions")
    if redis_errors and isinstance(exc, redis_errors.ConnectionError | redis_errors.TimeoutError):
        from workers.queue import redis_unreachable_message

        return redis_unreachable_message(load_settings().redis_url, exc)
    return None


if __name__ == "__main__":
    main()
