"""The client commands of ``sami``: request, create, update, archive, restore, cleanup, delete,
rollback, clone, cancel, list, info, logs, wait, services, login.

Each command is a thin layer over one or two API calls: it checks its input, calls, and prints a
table for people or ``--json`` for scripts. Errors are one line with the fix and an exit code
from bot.client.exits; the server decides everything else.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable

import click

from bot import naming
from bot.client import output
from bot.client.exits import ACTION_EXITS, DESCRIPTIONS, Exit
from bot.client.http import Client, ClientError
from bot.client.settings import Connection, read_config, write_config
from bot.states import DeploymentState

LOG_TAIL_LINES = 20
EXIT_HELP = "\b\nExit status:\n" + "\n".join(f"  {int(code)}  {text}" for code, text in DESCRIPTIONS.items())


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


def complete_deployment(ctx, param, incomplete: str) -> list[str]:
    """Shell completion of deployment names from the server (nothing when it cannot be asked)."""
    try:
        connection = Connection.resolve(ctx.params.get("url"), ctx.params.get("token"))
        answer = Client(connection.url, connection.token, timeout=3).get("/api/v1/deployments",
                                                                            {"q": incomplete or None})
    except (ClientError, OSError):
        return []
    return [d["name"] for d in answer.get("deployments", []) if d["name"].startswith(incomplete)]


# --- following an action ------------------------------------------------------------------


def _tail(text: str | None, lines: int = LOG_TAIL_LINES) -> str | None:
    if text is None:
        return None
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def follow(out: Out, action_id: int, timeout: float, interval: float) -> dict:
    """Wait for action ``action_id`` to end, showing a progress line; the result document."""
    client = out.client
    started = time.monotonic()
    action = client.get(f"/api/v1/actions/{action_id}")
    # An admin token sees the log: then the log endpoint, read from where it was, is the cheap poll.
    log = action.pop("log", None)
    label = f"{action['kind']} {action['deployment']} (action {action_id})"
    progress = output.Progress()
    current = action["state"]
    try:
        while True:
            progress.show(label, current, time.monotonic() - started)
            if current not in ("queued", "running"):
                break
            if time.monotonic() - started > timeout:
                raise ClientError(f"{label} is still {current} after {output.elapsed(timeout)}; it goes on on the "
                                  f"server: sami wait {action_id}", Exit.TIMED_OUT)
            time.sleep(interval)
            if log is not None:
                chunk = client.get(f"/api/v1/actions/{action_id}/log", {"offset": len(log)})
                log += chunk["log"]
                current = chunk["state"]
            else:
                current = client.get(f"/api/v1/actions/{action_id}")["state"]
    finally:
        progress.done()
    action = client.get(f"/api/v1/actions/{action_id}")
    log = action.pop("log", log)
    action.pop("log_truncated", None)
    try:
        deployment = client.get(f"/api/v1/deployments/{action['deployment']}")["deployment"]
    except ClientError as exc:
        if exc.exit_code is not Exit.NOT_FOUND:  # cleaned up: it is gone
            raise
        deployment = None
    return {"outcome": action["state"], "action": action, "deployment": deployment, "log_tail": _tail(log)}


def report(out: Out, result: dict) -> Exit:
    """Print how a followed action ended; its exit code."""
    action, deployment = result["action"], result["deployment"]
    code = ACTION_EXITS.get(result["outcome"], Exit.FAILED)
    if out.as_json:
        return code
    if result["log_tail"]:
        out.say(f"--- the log's last lines (all of it: sami logs {action['id']}) ---")
        out.say(result["log_tail"])
        out.say("---")
    duration = f" in {action['duration_ms'] / 1000:.1f} s" if action.get("duration_ms") is not None else ""
    out.say(f"{action['kind']} {action['deployment']} (action {action['id']}) "
            f"{output.state(action['state'], out.colour)}{duration}")
    if action.get("error"):
        out.say(f"  error: {action['error']}")
    if result["outcome"] == "superseded":
        out.say(f"  a newer request replaced it: sami info {action['deployment']}")
    if deployment is None:
        out.say(f"{action['deployment']} is removed")
        return code
    line = f"{deployment['name']} is {output.state(deployment['state'], out.colour)}"
    if deployment.get("status_message") and deployment["state"] != "Running":
        line += f": {deployment['status_message']}"
    out.say(line)
    for link in deployment.get("links") or []:
        out.say(f"  {link.get('name', 'link')}: {link.get('url')}")
    return code


def accepted(out: Out, answer: dict, wait: bool, timeout: float, interval: float = 1.0) -> Exit:
    """Print a 202 answer; with ``wait``, follow its action to the end."""
    document = {key: answer.get(key) for key in ("deployment", "action_id", "kind", "state", "status_url")}
    document["result"] = None
    if not out.as_json:
        out.say(f"accepted: {document['kind']} {document['deployment']} (action {document['action_id']}, "
                f"{output.state(document['state'], out.colour)})")
        if not wait:
            out.say(f"follow it: sami wait {document['action_id']}")
    code = Exit.OK
    if wait:
        document["result"] = follow(out, document["action_id"], timeout, interval)
        code = report(out, document["result"])
    if out.as_json:
        output.print_json(document)
    return code


def wait_options(function: Callable) -> Callable:
    function = click.option("--interval", type=click.FloatRange(0.1, 60), default=1.0, hidden=True)(function)
    function = click.option("--timeout", type=click.FloatRange(1, 86400), default=1800, show_default=True,
                            help="With --wait: give up waiting after this many seconds (exit 5).")(function)
    return click.option("--wait", is_flag=True,
                        help="Wait until the action ends; the exit status says how it ended.")(function)


# --- request, create, update --------------------------------------------------------------


def _overrides(pairs: tuple[str, ...], option: str) -> dict[str, str | None]:
    values: dict[str, str | None] = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        try:
            naming.check_override_key(key)
        except naming.InvalidName as exc:
            raise click.BadParameter(f"{pair!r}: {exc}", param_hint=option) from None
        values[key] = value if equals else None
    return values


def deploy_options(function: Callable) -> Callable:
    """The options that say what to deploy."""
    for decorator in reversed([
        click.option("--tag", help="The manifest's image at this tag."),
        click.option("--image", help="A whole image reference of the manifest's image (name:tag or name@sha256:...)."),
        click.option("--override", "-o", "app_overrides", multiple=True, metavar="KEY=VALUE",
                     help="An app override (repeat). KEY alone removes it: the manifest's default applies again."),
        click.option("--deployment-override", "deployment_overrides", multiple=True, metavar="KEY=VALUE",
                     help="A deployment override for the control scripts (repeat; KEY alone removes it)."),
        click.option("--ref", help="The git branch or tag the image was built from."),
        click.option("--sha", help="The commit the image was built from."),
        click.option("--repository", metavar="OWNER/NAME", help="The application repository."),
    ]):
        function = decorator(function)
    return function


def _body(tag, image, app_overrides, deployment_overrides, ref, sha, repository) -> dict:
    if tag and image:
        raise click.UsageError("give --tag or --image, not both: an image carries its own tag")
    body = {"tag": tag, "image": image, "ref": ref, "sha": sha, "repository": repository}
    overrides = {"app": _overrides(app_overrides, "--override"),
                 "deployment": _overrides(deployment_overrides, "--deployment-override")}
    if overrides["app"] or overrides["deployment"]:
        body["overrides"] = {k: v for k, v in overrides.items() if v}
    return {k: v for k, v in body.items() if v is not None}


@click.command()
@click.argument("service")
@click.argument("environment")
@deploy_options
@click.option("--pull-request", type=click.IntRange(1, 2147483647), metavar="N",
              help="The pull request (with the environment pull_request).")
@wait_options
@client_command
def request(out: Out, service, environment, pull_request, wait, timeout, interval, **what) -> Exit:
    """Deploy SERVICE to ENVIRONMENT: create the deployment, or update it if it exists.

    What CI runs after building an image. With --wait it follows the action to its end and exits
    0 only when the deployment succeeded.

    \b
    Example:
        sami request web stage --tag "$GITHUB_SHA" --wait
        sami request web pull_request --pull-request 42 --tag 3f2c1ab -o LOG_LEVEL=debug
    """
    if not (what["tag"] or what["image"]):
        raise click.UsageError("give --tag or --image: what to deploy")
    body = {"service": service, "environment": environment, **_body(**what)}
    if pull_request is not None:
        body["pull_request"] = pull_request
    return accepted(out, out.client.post("/api/v1/deployments", body), wait, timeout, interval)


@click.command()
@click.argument("service")
@click.argument("environment")
@deploy_options
@click.option("--pull-request", type=click.IntRange(1, 2147483647), metavar="N",
              help="The pull request (with the environment pull_request).")
@wait_options
@client_command
def create(out: Out, service, environment, pull_request, wait, timeout, interval, **what) -> Exit:
    """Create the deployment of SERVICE in ENVIRONMENT; refused when it exists (use update).

    \b
    Example:
        sami create web stage --tag 1.4.2 --wait
    """
    if not (what["tag"] or what["image"]):
        raise click.UsageError("give --tag or --image: what to deploy")
    try:
        name = naming.deployment_name(service, environment, pull_request)
    except naming.InvalidName as exc:
        raise click.BadParameter(str(exc)) from None
    try:
        existing = out.client.get(f"/api/v1/deployments/{name}")["deployment"]
    except ClientError as exc:
        if exc.exit_code is not Exit.NOT_FOUND:
            raise
    else:
        raise ClientError(f"deployment {name} exists ({existing['state']}): change it with `sami update {name}`",
                          Exit.BAD_INPUT, 409)
    body = {"service": service, "environment": environment, **_body(**what)}
    if pull_request is not None:
        body["pull_request"] = pull_request
    return accepted(out, out.client.post("/api/v1/deployments", body), wait, timeout, interval)


@click.command()
@click.argument("name", shell_complete=complete_deployment)
@deploy_options
@wait_options
@client_command
def update(out: Out, name, wait, timeout, interval, **what) -> Exit:
    """Update deployment NAME: a new tag or image, or changed overrides (the rest stays as it is).

    \b
    Example:
        sami update web-stage --tag 1.4.3 --wait
        sami update web-pr-42 -o LOG_LEVEL=debug
    """
    current = out.client.get(f"/api/v1/deployments/{name}")["deployment"]
    body = {"service": current["service"], "environment": current["environment"], **_body(**what)}
    if not (what["tag"] or what["image"]):
        body["tag"] = current["tag"]
    if current["source"].get("pull_request") is not None:
        body["pull_request"] = current["source"]["pull_request"]
    return accepted(out, out.client.post("/api/v1/deployments", body), wait, timeout, interval)


# --- operations on a deployment -----------------------------------------------------------


def _operation(kind: str, summary: str, example: str) -> click.Command:
    @click.argument("name", shell_complete=complete_deployment)
    @wait_options
    @client_command
    def command(out: Out, name, wait, timeout, interval) -> Exit:
        return accepted(out, out.client.post(f"/api/v1/deployments/{name}/{kind}"), wait, timeout, interval)

    command.__doc__ = f"{summary}\n\n\b\nExample:\n    {example}\n"
    return click.command(kind)(command)


archive = _operation("archive", "Archive deployment NAME: stop it and keep its data, to restore later.",
                     "sami archive web-pr-42 --wait")
restore = _operation("restore", "Restore archived deployment NAME: start it again with its last configuration.",
                     "sami restore web-pr-42 --wait")
cleanup = _operation("cleanup", "Clean up archived deployment NAME: remove it and everything it owns.",
                     "sami cleanup web-pr-42 --wait")


@click.command()
@click.argument("name", shell_complete=complete_deployment)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@client_command
def delete(out: Out, name, yes) -> Exit:
    """Forget deployment NAME whose cleanup failed (admin): its record goes, whatever it left stays.

    \b
    Example:
        sami delete web-pr-42 --yes
    """
    if not yes:
        if not sys.stdin.isatty():
            raise click.UsageError("give --yes to delete without a terminal to confirm on")
        click.confirm(f"Forget deployment {name}? What its cleanup left behind is not removed", abort=True)
    answer = out.client.call("DELETE", f"/api/v1/deployments/{name}")
    if out.as_json:
        output.print_json({"deleted": answer.get("deleted", name)})
    else:
        out.say(f"deployment {name} is deleted")
    return Exit.OK


@click.command()
@click.argument("name", shell_complete=complete_deployment)
@click.option("--to", "to_action", type=click.IntRange(1), metavar="ACTION_ID",
              help="The action whose configuration to go back to (default: the last one that succeeded before).")
@wait_options
@client_command
def rollback(out: Out, name, to_action, wait, timeout, interval) -> Exit:
    """Roll deployment NAME back to an earlier configuration (tag, image, overrides).

    \b
    Example:
        sami rollback web-stage --wait
        sami rollback web-stage --to 118
    """
    body = {"action_id": to_action} if to_action else {}
    return accepted(out, out.client.post(f"/api/v1/deployments/{name}/rollback", body), wait, timeout, interval)


@click.command()
@click.argument("name", shell_complete=complete_deployment)
@click.option("--environment", help="The new deployment's environment (default: the same).")
@click.option("--name", "new_name", help="The new deployment's name.")
@wait_options
@client_command
def clone(out: Out, name, environment, new_name, wait, timeout, interval) -> Exit:
    """Create a new deployment with the configuration of deployment NAME.

    \b
    Example:
        sami clone web-stage --environment qa --wait
    """
    body = {k: v for k, v in (("environment", environment), ("name", new_name)) if v}
    return accepted(out, out.client.post(f"/api/v1/deployments/{name}/clone", body), wait, timeout, interval)


@click.command()
@click.argument("action_id", type=click.IntRange(1))
@wait_options
@client_command
def cancel(out: Out, action_id, wait, timeout, interval) -> Exit:
    """Cancel action ACTION_ID: a queued one never runs; a running one's script is stopped within
    seconds. With --wait, exit 0 once it has ended cancelled.

    \b
    Example:
        sami cancel 118 --wait
    """
    action = out.client.post(f"/api/v1/actions/{action_id}/cancel")
    action.pop("log", None)
    label = f"action {action_id} ({action['kind']} {action['deployment']})"
    if not wait:
        if out.as_json:
            output.print_json({"action": action, "result": None})
        elif action["state"] == "cancelled":
            out.say(f"{label} is {output.state('cancelled', out.colour)}")
        else:
            out.say(f"{label}: cancel requested, its script stops within seconds (sami wait {action_id})")
        return Exit.OK
    result = follow(out, action_id, timeout, interval)
    report(out, result)
    if out.as_json:
        output.print_json({"action": action, "result": result})
    if result["outcome"] == "cancelled":
        return Exit.OK
    click.echo(f"sami: {label} ended {result['outcome']} before it could be stopped", err=True)
    # it succeeded after all: not what was asked for
    return Exit.FAILED if result["outcome"] == "succeeded" else ACTION_EXITS.get(result["outcome"], Exit.FAILED)


# --- reading ------------------------------------------------------------------------------


def _first_link(deployment: dict) -> str:
    links = deployment.get("links") or []
    return links[0].get("url", "-") if links else "-"


@click.command("list")
@click.option("--service", "services_", multiple=True, help="Only this service (repeat for several).")
@click.option("--environment", "environments", multiple=True, help="Only this environment (repeat for several).")
@click.option("--state", "states", multiple=True, type=click.Choice([str(s) for s in DeploymentState]),
              help="Only deployments in this state (repeat).")
@click.option("--pull-request", type=click.IntRange(1), metavar="N", help="Only this pull request's deployments.")
@click.option("--repository", metavar="OWNER/NAME", help="Only deployments of this application repository.")
@click.option("--search", "-q", "query", help="Names (and tags) containing this text.")
@click.option("--sort", type=click.Choice(["name", "-updated", "state", "attention"]),
              help="The order (default: by name).")
@click.option("--limit", type=click.IntRange(1, 200), help="At most this many (the server's default: 50).")
@click.option("--cursor", help="Where the previous page ended (its next_cursor).")
@click.option("--include-removed", is_flag=True, help="Removed deployments too.")
@client_command
def list_(out: Out, services_, environments, states, pull_request, repository, query, sort, limit, cursor,
          include_removed) -> Exit:
    """List deployments, with filters.

    \b
    Example:
        sami list --state Failure --state CleanupFailed
        sami list --service web --sort -updated --json
        sami list --sort attention --limit 20
    """
    answer = out.client.get("/api/v1/deployments", {
        "service": list(services_), "environment": list(environments), "state": list(states),
        "pull_request": pull_request, "repository": repository, "q": query, "sort": sort, "limit": limit,
        "cursor": cursor, "all": "1" if include_removed else None})
    deployments = answer.get("deployments", [])
    document = {"deployments": deployments, "next_cursor": answer.get("next_cursor")}
    if out.as_json:
        output.print_json(document)
        return Exit.OK
    if not deployments:
        out.say("no deployments")
    else:
        rows = [[d["name"], d["state"], d["service"], d["environment"], d.get("tag"), _first_link(d),
                 d["source"].get("pull_request") or "-", output.ago(d.get("updated_at"))] for d in deployments]
        out.say(output.table(["NAME", "STATE", "SERVICE", "ENVIRONMENT", "TAG", "URL", "PR", "UPDATED"], rows,
                             width=output.terminal_width(), shrink=(4, 5, 0),
                             styles={1: lambda s: output.state(s, out.colour)}))
    if document["next_cursor"]:
        click.echo(f"more: add --cursor {document['next_cursor']}", err=True)
    return Exit.OK


@click.command()
@click.argument("name", shell_complete=complete_deployment)
@client_command
def info(out: Out, name) -> Exit:
    """Show deployment NAME: state, links, configuration, source and its latest actions.

    \b
    Example:
        sami info web-pr-42
    """
    answer = out.client.get(f"/api/v1/deployments/{name}")
    if out.as_json:
        output.print_json({"deployment": answer["deployment"], "actions": answer.get("actions", [])})
        return Exit.OK
    d = answer["deployment"]
    status = output.state(d["state"], out.colour)
    if d.get("failure_reason"):
        status += f" ({d['failure_reason']})"
    fields = [("name", d["name"]), ("state", status), ("message", d.get("status_message")),
              ("service", d["service"]), ("environment", d["environment"]), ("type", d.get("type")),
              ("tag", d.get("tag")), ("image", d.get("image"))]
    for kind in ("app", "deployment"):
        values = (d.get("overrides") or {}).get(kind) or {}
        if values:
            fields.append((f"{kind} overrides", ", ".join(f"{k}={v}" for k, v in sorted(values.items()))))
    for link in d.get("links") or []:
        fields.append((link.get("name", "link"), link.get("url")))
    source = d.get("source") or {}
    for key in ("repository", "pull_request", "ref", "sha"):
        if source.get(key):
            fields.append((key.replace("_", " "), source[key]))
    fields += [("updated", f"{output.ago(d.get('updated_at'))} ({d.get('updated_at')})"),
               ("created", d.get("created_at"))]
    for label, value in fields:
        if value not in (None, ""):
            out.say(f"{label + ':':<22}{value}")
    actions = answer.get("actions", [])
    if actions:
        out.say()
        rows = [[a["id"], a["kind"], a["state"], a.get("requested_by"), output.ago(a.get("created_at")),
                 f"{a['duration_ms'] / 1000:.1f} s" if a.get("duration_ms") is not None else "-",
                 a.get("error") or ""] for a in actions]
        out.say(output.table(["ACTION", "KIND", "STATE", "BY", "REQUESTED", "TOOK", "ERROR"], rows,
                             width=output.terminal_width(), shrink=(6, 3),
                             styles={2: lambda s: output.state(s, out.colour)}))
    return Exit.OK


@click.command()
@click.argument("action_id", type=click.IntRange(1))
@click.option("--follow", "-f", is_flag=True, help="Keep printing new output until the action ends.")
@click.option("--interval", type=click.FloatRange(0.1, 60), default=1.0, hidden=True)
@click.option("--timeout", type=click.FloatRange(1, 86400), default=1800, show_default=True,
              help="With --follow: give up after this many seconds (exit 5).")
@client_command
def logs(out: Out, action_id, follow, interval, timeout) -> Exit:
    """Print action ACTION_ID's output (admin: logs may hold secrets).

    With --follow, new output is printed as it comes until the action ends; the exit status is
    then the action's (0 succeeded, 1 failed, 5 timed out).

    \b
    Example:
        sami logs 118 --follow
    """
    client = out.client
    started = time.monotonic()
    answer = client.get(f"/api/v1/actions/{action_id}/log")
    text = answer["log"]
    if not out.as_json:
        click.echo(text, nl=False)
    while follow and not answer["finished"]:
        if time.monotonic() - started > timeout:
            raise ClientError(f"action {action_id} is still {answer['state']} after {output.elapsed(timeout)}",
                              Exit.TIMED_OUT)
        time.sleep(interval)
        answer = client.get(f"/api/v1/actions/{action_id}/log", {"offset": len(text)})
        text += answer["log"]
        if not out.as_json and answer["log"]:
            click.echo(answer["log"], nl=False)
    if out.as_json:
        output.print_json({"action_id": action_id, "state": answer["state"], "finished": answer["finished"],
                           "truncated": answer.get("truncated", False), "log": text})
    elif text and not text.endswith("\n"):
        click.echo()
    if follow:
        return ACTION_EXITS.get(answer["state"], Exit.FAILED)
    return Exit.OK


@click.command()
@click.argument("action_id", type=click.IntRange(1))
@click.option("--timeout", type=click.FloatRange(1, 86400), default=1800, show_default=True,
              help="Give up waiting after this many seconds (exit 5).")
@click.option("--interval", type=click.FloatRange(0.1, 60), default=1.0, hidden=True)
@client_command
def wait(out: Out, action_id, timeout, interval) -> Exit:
    """Wait for action ACTION_ID to end: a progress line, then the log's last lines and the
    deployment's state and links. The exit status says how it ended.

    \b
    Example:
        sami wait 118 --timeout 600
    """
    result = follow(out, action_id, timeout, interval)
    code = report(out, result)
    if out.as_json:
        output.print_json(result)
    return code


@click.command()
@client_command
def services(out: Out) -> Exit:
    """List the services and environments the deployments repo defines, and its manifest errors.

    \b
    Example:
        sami services
    """
    answer = out.client.get("/api/v1/services")
    if out.as_json:
        output.print_json({"sha": answer.get("sha"), "manifests": answer.get("manifests", []),
                           "errors": answer.get("errors", [])})
        return Exit.OK
    rows = [[m["service"], m["environment"], m["type"], m.get("pr_deploy"), m["path"]]
            for m in answer.get("manifests", [])]
    out.say(output.table(["SERVICE", "ENVIRONMENT", "TYPE", "PR DEPLOY", "MANIFEST"], rows,
                         width=output.terminal_width(), shrink=(4,)) if rows else "no services")
    errors = answer.get("errors", [])
    if errors:
        out.say()
        out.say(output.state("Failure", out.colour).replace("Failure", f"{len(errors)} manifest error(s):"))
        for e in errors:
            where = e["path"] + "".join(f":{e[k]}" for k in ("line", "column") if e.get(k))
            out.say(f"  {where}: {e['message']}")
    return Exit.OK


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
            raise ClientError("no token given: create one with `sami token create NAME` on the server",
                              Exit.BAD_INPUT)
        client = Client(url, token)
        try:
            client.get("/api/v1/deployments", {"limit": 1})
            reads = True
        except ClientError as exc:
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


COMMANDS = (request, create, update, archive, restore, cleanup, delete, rollback, clone, cancel, list_, info,
            logs, wait, services, login)


def register(group: click.Group) -> None:
    """Add the client commands to the ``sami`` group."""
    for command in COMMANDS:
        command.epilog = EXIT_HELP
        group.add_command(command)
