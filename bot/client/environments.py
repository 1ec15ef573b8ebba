"""``sami env``: whole environments through the API — deploy, status, archive, restore, cleanup,
clone, diff and snapshots. Each command is one or two API calls; ``--wait`` follows a run until
every component has ended, and the exit status says how it ended."""

from __future__ import annotations

import sys
import time
import urllib.parse

import click

from bot.client import output
from bot.client.common import Out, client_command, confirm_by_name, yes_option
from bot.client.exits import Exit
from bot.client.http import ClientError

SNAPSHOT_PREFIX = "snapshot:"


def _path(*parts: str) -> str:
    return "/".join(urllib.parse.quote(part, safe="") for part in parts)


def _versions(pairs: tuple[str, ...]) -> dict[str, str]:
    versions = {}
    for pair in pairs:
        service, equals, version = pair.partition("=")
        if not equals or not service or not version:
            raise click.BadParameter(f"{pair!r}: give SERVICE=TAG (or SERVICE=IMAGE)", param_hint="--version")
        versions[service] = version
    return versions


def _wave(component: dict) -> str:
    """The wave counted from 1, as the page shows it (the API counts from 0)."""
    wave = component.get("wave")
    return "-" if wave is None else str(int(wave) + 1)


def _show_run(out: Out, run: dict) -> None:
    if out.as_json:
        return
    out.say(f"{run['operation']} run {run['id']} of {run['environment']}: {run['state']}"
            + (f" ({run['message']})" if run.get("message") else ""))
    rows = [[_wave(c), c["service"], c["deployment"], output.state(c["status"], out.colour),
             str(c["action_id"] or "-"), c.get("message") or ""] for c in run["components"]]
    headers = ["WAVE", "SERVICE", "DEPLOYMENT", "STATUS", "ACTION", "NOTE"]
    if any(c.get("data") for c in run["components"]):  # a clone's or a preview's: what each service holds
        headers.insert(5, "DATA")
        for row, c in zip(rows, run["components"], strict=True):
            row.insert(5, c.get("data") or "-")
    out.say(output.table(headers, rows, width=output.terminal_width(), shrink=(len(headers) - 1,)))


def _progress(run: dict) -> dict[str, tuple]:
    return {c["service"]: (c["status"], c["action_id"], c.get("message")) for c in run["components"]}


def _say_progress(out: Out, run: dict, seen: dict[str, tuple], started: float) -> dict[str, tuple]:
    """One line for each component whose status changed since ``seen``, with the time since the wait began."""
    now = _progress(run)
    elapsed = int(time.monotonic() - started)
    for component in run["components"]:
        status, action_id, message = now[component["service"]]
        if seen.get(component["service"]) == now[component["service"]] or out.as_json:
            continue
        out.say(f"{component['deployment']}: {output.state(status, out.colour)}"
                + (f" (action {action_id})" if action_id else "") + (f": {message}" if message else "")
                + f" · {elapsed // 60}:{elapsed % 60:02d}")
    return now


def _follow(out: Out, run: dict, timeout: float, interval: float) -> Exit:
    """Poll the run until nothing in it waits or runs, saying each component's change as it comes."""
    started = time.monotonic()
    deadline = started + timeout
    path = f"/api/v1/environments/{_path(run['environment'])}/runs/{int(run['id'])}"
    seen = _progress(run)
    while run["state"] == "running":
        if time.monotonic() > deadline:
            _finish(out, run)
            click.echo(f"sami: run {run['id']} still going after {timeout:g} s; it goes on on the server "
                       f"(sami env status {run['environment']})", err=True)
            return Exit.TIMED_OUT
        time.sleep(interval)
        run = out.client.get(path)
        seen = _say_progress(out, run, seen, started)
    _finish(out, run)
    return Exit.OK if run["state"] == "succeeded" else Exit.FAILED


def _finish(out: Out, run: dict) -> None:
    if out.as_json:
        output.print_json(run)
    else:
        _show_run(out, run)


def _started(out: Out, run: dict, wait: bool, timeout: float, interval: float) -> Exit:
    if wait:
        if not out.as_json:
            _show_run(out, run)
            out.say("waiting for every component...")
        return _follow(out, run, timeout, interval)
    _finish(out, run)
    out.say(f"follow it: sami env status {run['environment']}")
    return Exit.OK


def run_options(function):
    function = click.option("--interval", type=click.FloatRange(0.1, 60), default=1.0, hidden=True)(function)
    function = click.option("--timeout", type=click.FloatRange(1, 86400), default=3600, show_default=True,
                            help="With --wait: give up waiting after this many seconds (exit 5).")(function)
    return click.option("--wait", is_flag=True, help="Wait until every component has ended; exit 0 only when all "
                        "succeeded, 1 when one failed or was skipped.")(function)


@click.group(name="env")
def env() -> None:
    """Whole environments: deploy in dependency order, status, archive, restore, cleanup, clone, diff, snapshots,
    and blue-green releases (release, rollback, releases).

    \b
    Example:
        sami env deploy stage --version web=3f2c1ab --wait
        sami env status stage
        sami env clone stage qa-7 --wait
        sami env snapshot stage --name before-release
        sami env deploy production --from-snapshot before-release
        sami env diff stage qa-7
        sami env release production --snapshot before-release --wait
    """


@env.command()
@click.argument("environment")
@click.option("--version", "versions", multiple=True, metavar="SERVICE=TAG",
              help="A component's tag or image (repeat); the others keep the version they run.")
@click.option("--from-snapshot", "snapshot", metavar="NAME", help="Deploy exactly this snapshot.")
@click.option("--force", is_flag=True, help="Let internal third-party services shrink (refused without it: the "
              "data of the members removed is not handed over).")
@run_options
@client_command
def deploy(out: Out, environment, versions, snapshot, force, wait, timeout, interval) -> Exit:
    """Deploy every component of ENVIRONMENT: third-party services and then applications, in
    depends_on order, independent ones in parallel; a failed component stops those that depend on it."""
    if versions and snapshot:
        raise click.UsageError("give --version or --from-snapshot, not both")
    body: dict = {"snapshot": snapshot} if snapshot else {}
    if versions:
        body["versions"] = _versions(versions)
    if force:
        body["force"] = True
    run = out.client.post(f"/api/v1/environments/{_path(environment)}/deploy", body)
    return _started(out, run, wait, timeout, interval)


def _operation(name: str, doc: str):
    @click.argument("environment")
    @run_options
    @client_command
    def command(out: Out, environment, wait, timeout, interval) -> Exit:
        run = out.client.post(f"/api/v1/environments/{_path(environment)}/{name}", {})
        return _started(out, run, wait, timeout, interval)

    command.__doc__ = doc
    return env.command(name=name)(command)


@env.command()
@click.argument("environment")
@click.option("--delete-data", is_flag=True, help="Remove internal third-party services' data volumes too "
              "(without it they are kept, and each says so).")
@yes_option
@run_options
@client_command
def cleanup(out: Out, environment, delete_data, yes, wait, timeout, interval) -> Exit:
    """Clean up every archived component of ENVIRONMENT in reverse dependency order (asks for ENVIRONMENT to
    be typed)."""
    confirm_by_name(environment, f"remove every archived component of environment {environment}"
                    + (" and the data of its internal third-party services" if delete_data else ""), yes)
    run = out.client.post(f"/api/v1/environments/{_path(environment)}/cleanup",
                          {"delete_data": True} if delete_data else {})
    return _started(out, run, wait, timeout, interval)


@env.command()
@click.argument("environment")
@client_command
def unpin(out: Out, environment) -> Exit:
    """Unpin every pinned component of ENVIRONMENT: deploying a snapshot pinned them, so CI requests,
    pushes and environment deploys were refused; from now on they change them again.

    \b
    Example:
        sami env unpin production
    """
    answer = out.client.post(f"/api/v1/environments/{_path(environment)}/unpin", {})
    if out.as_json:
        output.print_json(answer)
    else:
        out.say(f"unpinned {', '.join(answer.get('unpinned') or [])}: CI requests and pushes change them again")
    return Exit.OK


archive = _operation("archive", "Archive every component of ENVIRONMENT in reverse dependency order (data kept).")
restore = _operation("restore", "Restore every archived component of ENVIRONMENT in deploy order (what it uses first).")


@env.command()
@click.argument("environment")
@client_command
def status(out: Out, environment) -> Exit:
    """ENVIRONMENT's components in deploy order with state, version and endpoint, and its last run."""
    answer = out.client.get(f"/api/v1/environments/{_path(environment)}")
    if out.as_json:
        output.print_json(answer)
        return Exit.OK
    target = f" on {answer['target']}" if answer.get("target") else ""
    made = f" (deployed with {answer['template']}'s manifests)" if answer["template"] != environment else ""
    out.say(f"environment {environment}{target}{made}")
    rows = [[_wave(c), c["service"], c["kind"] + (f"/{c['mode']}" if c.get("mode") else ""),
             c["deployment"],
             ("PINNED " if c.get("pin") else "") + output.state(c["state"] or "not deployed", out.colour),
             c["tag"] or "-",
             c.get("endpoint") or c.get("url") or "-"] for c in answer["components"]]
    headers = ["WAVE", "SERVICE", "KIND", "DEPLOYMENT", "STATE", "VERSION", "ENDPOINT"]
    if any(c.get("data") for c in answer["components"]):  # a clone or a preview: empty, seeded, seed failed
        headers.append("DATA")
        for row, c in zip(rows, answer["components"], strict=True):
            row.append(c.get("data") or "-")
    out.say(output.table(headers, rows, width=output.terminal_width(), shrink=(6,)))
    if answer.get("last_run"):
        run = answer["last_run"]
        out.say(f"last run: {run['operation']} {run['id']} {run['state']}"
                + (f" ({run['message']})" if run.get("message") else ""))
    return Exit.OK


@env.command()
@click.argument("source")
@click.argument("name")
@run_options
@client_command
def clone(out: Out, source, name, wait, timeout, interval) -> Exit:
    """Clone SOURCE as environment NAME: every component under new names with the same versions and
    overrides; internal third-party services are provisioned fresh (no data is copied)."""
    answer = out.client.post(f"/api/v1/environments/{_path(source)}/clone", {"name": name})
    if not out.as_json:
        for service, data in sorted(answer["data"].items()):
            out.say(f"{service}: {data}")
    return _started(out, answer["run"], wait, timeout, interval)


@env.command()
@click.argument("left")
@click.argument("right")
@client_command
def diff(out: Out, left, right) -> Exit:
    """What differs between LEFT and RIGHT: environments, or snapshot:NAME (versions, overrides, secret
    names, components on one side only). Exit 0 when they are alike, 1 when they differ."""
    flipped = left.startswith(SNAPSHOT_PREFIX)
    if flipped and right.startswith(SNAPSHOT_PREFIX):
        raise ClientError("give at least one environment: two snapshots are compared through an environment "
                          "(sami env diff ENVIRONMENT snapshot:NAME)", Exit.BAD_INPUT)
    base, other = (right, left) if flipped else (left, right)
    answer = out.client.get(f"/api/v1/environments/{_path(base)}/diff", {"with": other})
    if flipped:
        answer = {"left": answer["right"], "right": answer["left"], "only_left": answer["only_right"],
                  "only_right": answer["only_left"], "same": answer["same"],
                  "changed": [{"service": c["service"], "changes": {k: {"left": v["right"], "right": v["left"]}
                                                                    for k, v in c["changes"].items()}}
                              for c in answer["changed"]]}
    differ = bool(answer["changed"] or answer["only_left"] or answer["only_right"])
    if out.as_json:
        output.print_json(answer)
        return Exit.FAILED if differ else Exit.OK
    if not differ:
        out.say(f"{answer['left']} and {answer['right']} are alike ({len(answer['same'])} components)")
        return Exit.OK
    rows = []
    for change in answer["changed"]:
        for key, values in change["changes"].items():
            rows.append([change["service"], key, _text(values["left"]), _text(values["right"])])
    rows += [[s, "component", "present", "-"] for s in answer["only_left"]]
    rows += [[s, "component", "-", "present"] for s in answer["only_right"]]
    out.say(output.table(["SERVICE", "WHAT", answer["left"].upper(), answer["right"].upper()], rows,
                         width=output.terminal_width(), shrink=(2, 3)))
    return Exit.FAILED


def _text(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return ", ".join(value) or "-"
    return "-" if value is None else str(value)


@env.command()
@click.argument("environment", required=False)
@click.option("--name", help="The snapshot's name (default: ENVIRONMENT-YYYYMMDD-HHMMSS).")
@click.option("--list", "list_", is_flag=True, help="List ENVIRONMENT's snapshots instead.")
@click.option("--show", metavar="NAME", help="Show one snapshot.")
@click.option("--export", metavar="NAME", help="Print one snapshot as YAML.")
@client_command
def snapshot(out: Out, environment, name, list_, show, export) -> Exit:
    """Snapshot ENVIRONMENT: every component's image and tag, overrides (secret names only), deploy
    order and the deployments-repo commit; or list, show or export snapshots."""
    if export:
        text = out.client.text(f"/api/v1/snapshots/{_path(export)}/export")
        sys.stdout.write(text)
        return Exit.OK
    if show:
        answer = out.client.get(f"/api/v1/snapshots/{_path(show)}")
        _print_snapshot(out, answer)
        return Exit.OK
    if not environment:
        raise click.UsageError("give ENVIRONMENT (or --show/--export NAME)")
    if list_:
        answer = out.client.get(f"/api/v1/environments/{_path(environment)}/snapshots")
        if out.as_json:
            output.print_json(answer)
            return Exit.OK
        rows = [[s["name"], s["created_at"] or "-", s["created_by"] or "-", str(len(s["components"])),
                 (s["manifest_sha"] or "-")[:12]] for s in answer["snapshots"]]
        out.say(output.table(["NAME", "CREATED", "BY", "COMPONENTS", "REPO COMMIT"], rows))
        return Exit.OK
    answer = out.client.post(f"/api/v1/environments/{_path(environment)}/snapshots",
                             {"name": name} if name else {})
    _print_snapshot(out, answer)
    return Exit.OK


def _print_snapshot(out: Out, answer: dict) -> None:
    if out.as_json:
        output.print_json(answer)
        return
    out.say(f"snapshot {answer['name']} of {answer['environment']}"
            + (f" at {answer['manifest_sha'][:12]}" if answer.get("manifest_sha") else ""))
    rows = [[_wave(c), c["service"], c["tag"] or "-",
             ", ".join(f"{k}={v}" for k, v in {**c.get("app_overrides", {}),
                                                **c.get("deployment_overrides", {})}.items()) or "-",
             ", ".join(c.get("secrets") or []) or "-"] for c in answer["components"]]
    out.say(output.table(["WAVE", "SERVICE", "VERSION", "OVERRIDES", "SECRETS (names)"], rows,
                         width=output.terminal_width(), shrink=(3,)))


# --- blue-green releases ---------------------------------------------------------------------------

def _show_release(out: Out, release: dict) -> None:
    if out.as_json:
        output.print_json(release)
        return
    moved = f"{release['from_colour'] or 'nothing'} -> {release['to_colour']}"
    who = release.get("switched_by") or release["requested_by"]
    out.say(f"{release['kind']} {release['id']} of {release['environment']}: {moved}, {release['state_words']} "
            f"(by {who})" + (f": {release['message']}" if release.get("message") else ""))


def _follow_release(out: Out, release: dict, timeout: float, interval: float) -> Exit:
    """Poll the release until it is no longer deploying or switching."""
    deadline = time.monotonic() + timeout
    path = f"/api/v1/environments/{_path(release['environment'])}/releases/{int(release['id'])}"
    while release["state"] in ("deploying", "switching"):
        if time.monotonic() > deadline:
            _show_release(out, release)
            click.echo(f"sami: {release['kind']} {release['id']} still {release['state']} after {timeout:g} s; it "
                       f"goes on on the server (sami env releases {release['environment']})", err=True)
            return Exit.TIMED_OUT
        time.sleep(interval)
        out.client.get(f"/api/v1/environments/{_path(release['environment'])}/releases")  # moves a finished deploy on
        release = out.client.get(path)
    _show_release(out, release)
    return Exit.OK if release["state"] in ("awaiting", "live") else Exit.FAILED


@env.command()
@click.argument("environment")
@click.option("--version", "versions", multiple=True, metavar="SERVICE=TAG",
              help="A component's tag or image (repeat); the others keep what the live colour runs.")
@click.option("--snapshot", metavar="NAME", help="Deploy exactly this snapshot into the idle colour.")
@click.option("--switch", is_flag=True, help="Switch the entry to the colour awaiting release (after QA).")
@run_options
@client_command
def release(out: Out, environment, versions, snapshot, switch, wait, timeout, interval) -> Exit:
    """Blue-green: deploy a release into ENVIRONMENT's idle colour for QA, then --switch the entry to it.

    \b
    Example:
        sami env release production --snapshot stage-ok --wait   # deployed into the idle colour
        sami env releases production                             # its preview URL; QA tests it there
        sami env release production --switch --wait              # release_approvers only
        sami env rollback production --wait                       # back to the previous colour at once
    """
    if switch and (versions or snapshot):
        raise click.UsageError("--switch switches what awaits release: deploy it first (without --switch)")
    if versions and snapshot:
        raise click.UsageError("give --version or --snapshot, not both")
    base = f"/api/v1/environments/{_path(environment)}"
    if switch:
        answer = out.client.post(f"{base}/release/switch", {})
    else:
        body: dict = {"snapshot": snapshot} if snapshot else {}
        if versions:
            body["versions"] = _versions(versions)
        answer = out.client.post(f"{base}/release", body)
    if wait:
        return _follow_release(out, answer, timeout, interval)
    _show_release(out, answer)
    out.say(f"follow it: sami env releases {environment}")
    return Exit.OK


@env.command()
@click.argument("environment")
@run_options
@client_command
def rollback(out: Out, environment, wait, timeout, interval) -> Exit:
    """Blue-green: switch ENVIRONMENT's entry back to the previous colour (still running) at once."""
    answer = out.client.post(f"/api/v1/environments/{_path(environment)}/rollback", {})
    if wait:
        return _follow_release(out, answer, timeout, interval)
    _show_release(out, answer)
    return Exit.OK


@env.command()
@click.argument("environment")
@client_command
def releases(out: Out, environment) -> Exit:
    """Blue-green: ENVIRONMENT's live and idle colour, what awaits release and who may release it, and
    every release and rollback (who, when, which snapshot, from which colour to which)."""
    answer = out.client.get(f"/api/v1/environments/{_path(environment)}/releases")
    if out.as_json:
        output.print_json(answer)
        return Exit.OK
    live = answer.get("live")
    out.say(f"environment {environment}: entry {answer['entry_deployment']} -> "
            + (f"{live['colour']} ({live['environment']}, {live['tag'] or '-'})" if live else "nothing yet"))
    idle = answer["idle"]
    out.say(f"idle: {idle['colour']} ({idle['environment']}, {idle['tag'] or '-'})"
            + (f" preview {idle['preview_url']}" if idle.get("preview_url") else ""))
    if answer["awaiting_release"]:
        who = ", ".join(answer["release_approvers"]) or "whoever may deploy it"
        out.say(f"awaiting release: {who} may release it (sami env release {environment} --switch)")
    pinned = answer.get("pinned") or []
    if pinned:  # a rollback pinned both colours
        pin = pinned[0]
        out.say(f"pinned by {pin['by']} at {(pin.get('at') or '')[:16].replace('T', ' ')} ({pin.get('reason')}): "
                f"colour deploys and pushes are refused until sami env unpin {environment} or a release is "
                "switched live")
    rows = [[str(r["id"]), r["kind"], f"{r['from_colour'] or '-'} -> {r['to_colour']}", r["state_words"],
             r.get("switched_by") or r["requested_by"], (r.get("switched_at") or r["created_at"] or "")[:19],
             str(r["snapshot_id"] or "-")] for r in answer["releases"]]
    out.say(output.table(["ID", "KIND", "COLOURS", "STATE", "BY", "WHEN", "SNAPSHOT"], rows,
                         width=output.terminal_width(), shrink=(3,)))
    return Exit.OK
