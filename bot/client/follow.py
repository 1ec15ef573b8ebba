"""Following an action to its end: the progress line while it runs, then how it ended (the log's
last lines, the deployment's state and links) and the exit code that says so."""

from __future__ import annotations

import time

from bot.client import output
from bot.client.common import Out
from bot.client.exits import ACTION_EXITS, Exit
from bot.client.http import ClientError
from bot.core.lifecycle import state_word

LOG_TAIL_LINES = 20


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
    line = f"{deployment['name']} is {output.deployment_state(state_word(deployment['state']), out.colour)}"
    if deployment.get("status_message") and deployment["state"] != "Running":
        line += f": {deployment['status_message']}"
    out.say(line)
    for link in deployment.get("links") or []:
        out.say(f"  {link.get('name', 'link')}: {link.get('url')}")
    return code


def rollback_words(target: dict) -> str:
    """Where a rollback goes: "v1 (the configuration of action 3)"."""
    return (f"{target.get('tag') or target.get('image') or 'its earlier image'} "
            f"(the configuration of action {target['action_id']})")


def accepted(out: Out, answer: dict, wait: bool, timeout: float, interval: float = 1.0) -> Exit:
    """Print a 202 answer; with ``wait``, follow its action to the end."""
    document = {key: answer.get(key) for key in ("deployment", "action_id", "kind", "state", "status_url")}
    if answer.get("rollback_to"):
        document["rollback_to"] = answer["rollback_to"]
    document["result"] = None
    if not out.as_json:
        to = answer.get("rollback_to")
        what = f"rollback of {document['deployment']} to {rollback_words(to)}" if to else \
            f"{document['kind']} {document['deployment']}"
        out.say(f"accepted: {what} (action {document['action_id']}, "
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
