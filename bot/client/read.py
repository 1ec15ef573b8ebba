"""The client commands that read: list, info, logs, wait, services."""

from __future__ import annotations

import re
import time

import click

from bot.client import output
from bot.client.common import Out, client_command, complete_deployment, parse_action_id
from bot.client.exits import ACTION_EXITS, Exit
from bot.client.follow import follow, report
from bot.client.http import ClientError
from bot.core.lifecycle import DeploymentState, last_deploy_failed, last_deploy_note, last_deploy_words, state_words

LABEL_WIDTH = 22  # `sami info`'s field labels, padded: "deployment overrides:" is the longest
STEPS_RULE = "---"  # between an action's steps and its log


# How `sami list` fits a narrow terminal (columns: NAME STATE SERVICE ENVIRONMENT TAG URL PR UPDATED). The name
# stays whole and carries the service, environment and pull request, so those go first; then the URL is cut
# around what tells it from the others, the time goes, the URL is cut further, then goes; last, a long state.
# Column indices: NAME 0, STATE 1, DRIFT 2, SERVICE 3, ENVIRONMENT 4, TAG 5, URL 6, PR 7, UPDATED 8.
LIST_PLAN = (("drop", 3), ("drop", 4), ("drop", 7), ("drop", 2), ("cut", 6, 24), ("drop", 8), ("cut", 6, 16),
             ("drop", 6), ("cut", 1, 16), ("cut", 5, 8))
_SHA = re.compile(r"[0-9a-f]{12,64}\Z")


def short_tag(tag: str | None) -> str | None:
    """A tag that is a commit's sha (a pull request's default tag) as its first 7 characters."""
    return tag[:7] if tag and _SHA.match(tag) else tag


def state_cell(d: dict) -> str:
    """The state as the page and the comment word it, with its short reason, and a last deploy that failed."""
    words = state_words(d["state"], d.get("failure_reason"), d.get("status_message"))
    note = last_deploy_note(d["state"], (d.get("last_deploy") or {}).get("state"))
    words = f"{words}, {note}" if note else words
    # First, so that a narrow terminal's cut of the state keeps it.
    return f"{PINNED} {words}" if d.get("pin") else words


PINNED = "PINNED"


def pin_text(d: dict) -> str | None:
    """A pinned deployment's pin for `sami info`: who, when, why, and how to unpin."""
    pin = d.get("pin")
    if not pin:
        return None
    why = f" after a {pin['reason']}" if pin.get("reason", "").startswith("rollback") else \
        (f" ({pin['reason']})" if pin.get("reason") else "")
    return (f"by {pin.get('by')}, {output.ago(pin.get('at'))}{why}\nCI requests and pushes to the deployments repo "
            f"are refused until it is unpinned: sami unpin {d['name']}")


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
        rows = [[d["name"], state_cell(d), output.drift(d), d["service"], d["environment"], short_tag(d.get("tag")),
                 _first_link(d), d["source"].get("pull_request") or "-", output.ago(d.get("updated_at"))]
                for d in deployments]
        out.say(output.table(["NAME", "STATE", "DRIFT", "SERVICE", "ENVIRONMENT", "TAG", "URL", "PR", "UPDATED"], rows,
                             width=output.terminal_width(), plan=LIST_PLAN, middle=(6,),
                             styles={1: lambda s: output.deployment_state(s, out.colour),
                                     2: lambda s: output.state(s, out.colour)}))
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
        output.print_json({"deployment": answer["deployment"], "actions": answer.get("actions", []),
                           **{k: answer.get(k) for k in ("requested", "deployed", "running")}})
        return Exit.OK
    d = answer["deployment"]
    status = output.deployment_state(state_words(d["state"], d.get("failure_reason"), d.get("status_message")),
                                     out.colour)
    deploy = d.get("last_deploy")
    last = None
    if deploy:
        last = f"{last_deploy_words(deploy['kind'], deploy['state'], deploy.get('tag'))} (action {deploy['action_id']}"
        last += f", {output.ago(deploy['finished_at'])})" if deploy.get("finished_at") else ")"
        if last_deploy_failed(d["state"], deploy["state"]):
            last += f"; {d['name']} still runs what ran before it"
    drift = d.get("drift") or {}
    drift_text = None
    if drift.get("status") == "drifted":
        drift_text = (f"{output.state('drift', out.colour)} since {drift.get('since')}: "
                      + "\n".join(x.get("text") or "" for x in drift.get("differences") or [])
                      + f"\n(put the deployed config back: sami reconcile {d['name']})")
    elif drift.get("status") == "in_sync":
        drift_text = "in sync (the target runs what was deployed)"
    fields = [("name", d["name"]), ("state", status), ("pinned", pin_text(d)), ("drift", drift_text),
              ("message", d.get("status_message")),
              ("last deploy", last),
              ("service", d["service"]), ("environment", d["environment"]), ("type", d.get("type")),
              ("tag", d.get("tag")), ("image", d.get("image"))]
    for kind in ("app", "deployment"):
        values = (d.get("overrides") or {}).get(kind) or {}
        if values:
            fields.append((f"{kind} overrides", ", ".join(f"{k}={v}" for k, v in sorted(values.items()))))
    links = [(link.get("name") or "link", link.get("url")) for link in d.get("links") or []]
    if links:  # under one label, names in a column of their own: a name may be longer than any label
        width = max(len(name) for name, _ in links) + 2
        fields.append(("links", "\n".join(f"{name:<{width}}{url}" for name, url in links)))
    source = d.get("source") or {}
    for key in ("repository", "pull_request", "ref", "sha"):
        if source.get(key):
            fields.append((key.replace("_", " "), source[key]))
    fields += [("requested", output.config_line(answer.get("requested"))),
               ("deployed", output.config_line(answer.get("deployed"))),
               ("running", output.running_lines(answer.get("running")))]
    fields += [("updated", f"{output.ago(d.get('updated_at'))} ({d.get('updated_at')})"),
               ("created", d.get("created_at"))]
    for label, value in fields:
        if value not in (None, ""):
            first, *more = str(value).split("\n")
            out.say(f"{label + ':':<{LABEL_WIDTH}}{first}")
            for line in more:
                out.say(" " * LABEL_WIDTH + line)
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


def _print_steps(out: Out, steps: list[dict], finished: bool, rule: bool = True) -> None:
    """The step lines of ``sami logs``, and a rule that ends them where the log follows."""
    if not steps:
        return
    for line in output.step_lines(steps, finished, out.colour):
        click.echo(line)
    if rule:
        click.echo(STEPS_RULE)


def _latest_action(out: Out, name: str) -> int:
    """The newest action of deployment ``name`` (said on stderr, so that the output stays the log)."""
    actions = out.client.get(f"/api/v1/deployments/{name}").get("actions") or []
    if not actions:
        raise ClientError(f"deployment {name} has no actions yet", Exit.NOT_FOUND)
    newest = actions[0]
    click.echo(f"{name}: action {newest['id']} ({newest['kind']}, {newest['state']})", err=True)
    return int(newest["id"])


@click.command()
@click.argument("action_id", metavar="ACTION_ID|NAME", shell_complete=complete_deployment)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new output until the action ends.")
@click.option("--interval", type=click.FloatRange(0.1, 60), default=1.0, hidden=True)
@click.option("--timeout", type=click.FloatRange(1, 86400), default=1800, show_default=True,
              help="With --follow: give up after this many seconds (exit 5).")
@client_command
def logs(out: Out, action_id, follow, interval, timeout) -> Exit:
    """Print action ACTION_ID's steps (its control-script calls: ✓ passed, ✗ failed, ⏱ timed out,
    with how long each took and a non-zero exit code), then its output (admin: logs may hold secrets).
    Given a deployment's NAME instead, its newest action's.

    With --follow, new output is printed as it comes until the action ends, then the steps again
    if they changed meanwhile; the exit status is then the action's (0 succeeded, 1 failed, 5 timed
    out).

    \b
    Example:
        sami logs 118 --follow
        sami logs web-pr-42
    """
    is_name = not action_id.isdigit() and re.fullmatch(r"[a-z][a-z0-9-]{0,62}", action_id) is not None
    action_id = _latest_action(out, action_id) if is_name else parse_action_id(action_id)
    client = out.client
    started = time.monotonic()
    answer = client.get(f"/api/v1/actions/{action_id}/log")
    text = answer["log"]
    shown_steps = answer.get("steps") or []
    if not out.as_json:
        _print_steps(out, shown_steps, answer["finished"])
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
    steps = answer.get("steps") or []
    if out.as_json:
        output.print_json({"action_id": action_id, "state": answer["state"], "finished": answer["finished"],
                           "truncated": answer.get("truncated", False), "steps": steps, "log": text})
    else:
        if text and not text.endswith("\n"):
            click.echo()
        if steps != shown_steps:
            click.echo(STEPS_RULE)
            _print_steps(out, steps, answer["finished"], rule=False)
    if follow:
        return ACTION_EXITS.get(answer["state"], Exit.FAILED)
    return Exit.OK


@click.command()
@click.argument("action_id")
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
    result = follow(out, parse_action_id(action_id), timeout, interval)
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
