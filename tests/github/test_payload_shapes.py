"""The payload shapes Sami checks before a handler runs (bot.github.payloads), held against GitHub's
published webhook schemas (npm ``@octokit/webhooks-schemas``) and example payloads: every field
Sami reads is one GitHub describes, with a type GitHub may send accepted, a field Sami requires is
one GitHub always sends, and every example GitHub publishes passes."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest

from bot.github import payloads
from tests.support import github_payloads

SCHEMAS = Path(github_payloads.ROOT) / "tests" / "node" / "node_modules" / "@octokit" / "webhooks-schemas" / \
    "schema.json"
# The actions Sami handles, per event (None: the event has no action).
HANDLED = {"pull_request": ("opened", "reopened", "synchronize", "closed", "labeled", "unlabeled"),
           "issue_comment": ("created",), "check_suite": ("completed",), "workflow_run": ("completed",),
           "push": (None,), "status": (None,)}


@functools.cache
def _definitions() -> dict[str, Any]:
    return json.loads(SCHEMAS.read_text())["definitions"]


def _official(event: str, action: str | None) -> dict[str, Any]:
    return _definitions()[f"{event}${action or 'event'}"]


def _branches(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """The alternatives a schema allows, each with $ref followed and allOf merged into one object."""
    if "$ref" in schema:
        return _branches(_definitions()[schema["$ref"].rsplit("/", 1)[1]])
    for key in ("oneOf", "anyOf"):
        if key in schema:
            return [branch for part in schema[key] for branch in _branches(part)]
    if "allOf" in schema:
        merged: list[dict[str, Any]] = [{}]
        for part in schema["allOf"]:
            merged = [_merge(left, right) for left in merged for right in _branches(part)]
        return merged
    return [schema]


def _merge(left: dict[str, Any], right: dict[str, Any]) -> dict[str, Any]:
    properties = dict(left.get("properties", {}))
    for name, value in right.get("properties", {}).items():
        properties[name] = {"allOf": [properties[name], value]} if name in properties else value
    types = [t for t in (_types(left), _types(right)) if t is not None]
    merged = {"properties": properties, "required": sorted({*left.get("required", ()), *right.get("required", ())})}
    if types:
        merged["type"] = sorted(set.intersection(*types))
    return merged


def _types(schema: dict[str, Any]) -> set[str] | None:
    """The JSON types a (branch of a) schema allows; None when it does not say."""
    if "type" in schema:
        declared = schema["type"]
        found = set(declared if isinstance(declared, list) else [declared])
        return found | {"number"} if "integer" in found else found
    values = schema.get("enum", [schema["const"]] if "const" in schema else None)
    if values is None:
        return None
    return {{bool: "boolean", int: "integer", str: "string", type(None): "null"}.get(type(v), "other") for v in values}


def _ours_types(schema: dict[str, Any]) -> set[str] | None:
    if "anyOf" in schema:
        parts = [_ours_types(part) for part in schema["anyOf"]]
        return None if None in parts else set().union(*parts)
    return _types(schema)


def _disagreements(ours: dict[str, Any], official: dict[str, Any], path: str, *, absent_ok: bool = False) -> list[str]:
    """How ``ours`` disagrees with ``official``; with ``absent_ok``, a field Sami does not require
    may be missing from it (it comes with other actions of the event)."""
    found = []
    branches = _branches(official)
    objects = [b for b in branches if b.get("properties") or "object" in (_types(b) or {"object"})]
    for name in ours.get("required", ()):
        missing = [b for b in objects if name not in b.get("required", ())]
        if missing:
            found.append(f"{path}{name}: Sami requires it, GitHub's schema does not always send it")
    for name, sub in ours.get("properties", {}).items():
        theirs = [b["properties"][name] for b in objects if name in b.get("properties", {})]
        if not theirs:
            if not absent_ok or name in ours.get("required", ()):
                found.append(f"{path}{name}: Sami reads it, GitHub's schema has no such field")
            continue
        wanted = _ours_types(sub)
        for their in theirs:
            for branch in _branches(their):
                sent = _types(branch)
                if wanted is not None and (sent is None or not sent <= wanted | ({"integer"} if "number" in wanted
                                                                                  else set())):
                    found.append(f"{path}{name}: GitHub may send {sorted(sent or {'anything'})}, "
                                 f"Sami accepts {sorted(wanted)}")
            if sub.get("properties") or sub.get("required"):
                found += _disagreements(sub, {"anyOf": theirs}, f"{path}{name}.", absent_ok=absent_ok)
    return sorted(set(found))


@pytest.mark.parametrize(("event", "action"), [(e, a) for e, actions in HANDLED.items() for a in actions])
def test_what_sami_reads_is_what_githubs_schema_describes(event, action):
    assert event in payloads.SHAPES
    assert _disagreements(payloads.SHAPES[event], _official(event, action), f"{event}.", absent_ok=True) == []


@pytest.mark.parametrize("event", sorted(HANDLED))
def test_every_field_sami_reads_comes_with_some_action_it_handles(event):
    every_action = {"anyOf": [_official(event, action) for action in HANDLED[event]]}
    assert _disagreements(payloads.SHAPES[event], every_action, f"{event}.") == []


def test_the_comparison_finds_a_field_github_does_not_send():
    """The check above can fail: a made-up field, a field GitHub may leave out, a type too narrow."""
    shape = payloads._object(("repository", "sender", "nonsense"), repository=payloads.REPOSITORY,
                             sender=payloads._object(("login",), login=payloads.LOGIN),
                             installation=payloads._object(("id",), id={"type": "string"}),
                             nonsense={"type": "string"})
    found = _disagreements(shape, _official("push", None), "push.")
    assert found == ["push.installation.id: GitHub may send ['integer', 'number'], Sami accepts ['string']",
                     "push.nonsense: Sami reads it, GitHub's schema has no such field",
                     "push.nonsense: Sami requires it, GitHub's schema does not always send it"]


@pytest.mark.parametrize("event", sorted(HANDLED))
def test_every_example_github_publishes_passes(event):
    examples = github_payloads.examples(event)
    assert examples
    for example in examples:
        assert payloads.payload_problem(event, example) is None, example.get("action")


def test_events_sami_does_not_read_are_not_checked():
    assert payloads.payload_problem("star", ["not", "an", "object"]) is None


@pytest.mark.parametrize(("change", "problem"), [
    (lambda p: p.update(repository=["a", "list"]), "repository: must be an object, not an array"),
    (lambda p: p["pull_request"].update(number=2**31), "pull_request.number: 2147483648 is out of range (1 to "
                                                       "2147483647)"),
    (lambda p: p["pull_request"].update(number=True), "pull_request.number: must be an integer, not a boolean"),
    (lambda p: p["sender"].update(login="oct\x00cat"), "sender.login: 'oct\\x00cat' is not a GitHub login"),
    (lambda p: p["repository"].update(full_name="o/r\x00"), "repository.full_name: 'o/r\\x00' is not owner/name"),
    (lambda p: p["pull_request"]["head"].update(sha="HEAD"), "pull_request.head.sha: 'HEAD' is not a commit sha "
                                                             "(40 hex digits)"),
    (lambda p: p["pull_request"]["head"].update(ref="x" * 300), "pull_request.head.ref: is longer than 255 "
                                                                "characters"),
    (lambda p: p["pull_request"].pop("base"), "pull_request: base is missing"),
    (lambda p: p.update(action="opened\x00"), "action: 'opened\\x00' is not one line of text"),
    (lambda p: p["pull_request"].update(state="merged"), "pull_request.state: 'merged' is not one of open, closed"),
])
def test_a_malformed_pull_request_payload_is_named_by_its_field(change, problem):
    payload = github_payloads.example("pull_request", "opened")
    change(payload)
    assert payloads.payload_problem("pull_request", payload) == problem


def test_a_long_value_is_not_quoted_back():
    payload = github_payloads.example("push")
    payload["ref"] = "\x01" + "x" * 200
    assert payloads.payload_problem("push", payload) == "ref: a string is not one line of text"
