"""The client commands that ask for something: request, create, update, archive, restore,
cleanup, delete, rollback, reconcile, unpin, clone, cancel. Each is one API call (create and update read the
deployment first), then the 202 answer, followed to its end with --wait."""

from __future__ import annotations

from collections.abc import Callable

import click

from bot.client import output
from bot.client.common import (
    Out,
    client_command,
    complete_deployment,
    confirm_by_name,
    parse_action_id,
    wait_options,
    yes_option,
)
from bot.client.exits import ACTION_EXITS, Exit
from bot.client.follow import accepted, follow, report, rollback_words
from bot.client.http import ClientError
from bot.core import naming


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
        click.option("--force", is_flag=True, help="Shrink an internal third-party service anyway (refused "
                     "without it: the data of the members removed is not handed over)."),
    ]):
        function = decorator(function)
    return function


def _body(tag, image, app_overrides, deployment_overrides, ref, sha, repository, force=False) -> dict:
    if tag and image:
        raise click.UsageError("give --tag or --image, not both: an image carries its own tag")
    body = {"tag": tag, "image": image, "ref": ref, "sha": sha, "repository": repository, "force": force or None}
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
@click.option("--unpin", is_flag=True, help="NAME is pinned (a rollback pinned it): unpin it and deploy this.")
@wait_options
@client_command
def update(out: Out, name, unpin, wait, timeout, interval, **what) -> Exit:
    """Update deployment NAME: a new tag or image, or changed overrides (the rest stays as it is).

    A deployment a rollback pinned is updated only with --unpin.

    \b
    Example:
        sami update web-stage --tag 1.4.3 --wait
        sami update web-pr-42 -o LOG_LEVEL=debug
        sami update web-stage --tag 1.4.4 --unpin
    """
    current = out.client.get(f"/api/v1/deployments/{name}")["deployment"]
    body = {"service": current["service"], "environment": current["environment"], **_body(**what)}
    if unpin:
        body["unpin"] = True
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
restore = _operation("restore", "Restore archived deployment NAME: start it again with its last deployed "
                     "configuration.", "sami restore web-pr-42 --wait")
reconcile = _operation("reconcile", "Reconcile deployment NAME: put back what Sami deployed (its last succeeded "
                       "configuration) where the target drifted from it, e.g. an image changed by hand.",
                       "sami reconcile web-stage --wait")


@click.command()
@click.argument("name", shell_complete=complete_deployment)
@yes_option
@wait_options
@client_command
def cleanup(out: Out, name, yes, wait, timeout, interval) -> Exit:
    """Clean up archived deployment NAME: remove it and everything it owns (asks for NAME to be typed).

    \b
    Example:
        sami cleanup web-pr-42 --yes --wait
    """
    confirm_by_name(name, f"remove deployment {name} and everything it owns", yes)
    return accepted(out, out.client.post(f"/api/v1/deployments/{name}/cleanup"), wait, timeout, interval)


@click.command()
@click.argument("name", shell_complete=complete_deployment)
@client_command
def unpin(out: Out, name) -> Exit:
    """Unpin deployment NAME: a rollback pinned it, so CI requests and pushes to the deployments repo were
    refused; from now on they change it again.

    \b
    Example:
        sami unpin web-stage
    """
    answer = out.client.call("POST", f"/api/v1/deployments/{name}/unpin")
    if out.as_json:
        output.print_json({"deployment": answer})
    else:
        out.say(f"unpinned {answer.get('name', name)}: CI requests and pushes to the deployments repo change it again")
    return Exit.OK


@click.command()
@click.argument("name", shell_complete=complete_deployment)
@yes_option
@client_command
def delete(out: Out, name, yes) -> Exit:
    """Forget deployment NAME whose cleanup failed (admin): its record goes, whatever it left stays.

    \b
    Example:
        sami delete web-pr-42 --yes
    """
    confirm_by_name(name, f"forget deployment {name} (what its cleanup left behind is not removed)", yes)
    answer = out.client.call("DELETE", f"/api/v1/deployments/{name}")
    if out.as_json:
        output.print_json({"deleted": answer.get("deleted", name)})
    else:
        out.say(f"deployment {name} is deleted")
    return Exit.OK


@click.command()
@click.argument("name", shell_complete=complete_deployment)
@click.option("--to", "to_action", metavar="ACTION_ID",
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
    body = {"action_id": parse_action_id(to_action, "--to")} if to_action is not None else {}
    # Said before it is done: where the rollback goes (the server's choice, asked without changing anything) ...
    target = out.client.get(f"/api/v1/deployments/{name}/rollback", body or None)
    out.say(f"rolling {name} back to {rollback_words(target)}")
    # ... and that exact configuration is what is asked for, whatever happens in between.
    answer = out.client.post(f"/api/v1/deployments/{name}/rollback", {"action_id": target["action_id"]})
    return accepted(out, answer, wait, timeout, interval)


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
@click.argument("action_id")
@wait_options
@client_command
def cancel(out: Out, action_id, wait, timeout, interval) -> Exit:
    """Cancel action ACTION_ID: a queued one never runs; a running one's script is stopped within
    seconds. With --wait, exit 0 once it has ended cancelled.

    \b
    Example:
        sami cancel 118 --wait
    """
    action_id = parse_action_id(action_id)
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
