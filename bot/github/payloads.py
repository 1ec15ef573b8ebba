"""The shape of the webhook payload fields Sami reads, checked before a handler runs.

A handler trusts what it reads only after this check: the fields it uses have their types and
ranges (a pull request number fits the database, a login is a login, a sha is a sha), so a
malformed delivery is ignored with the field and the reason, instead of failing in the database or
deploying from a payload GitHub would never send. Only the fields handlers read are described;
everything else GitHub sends passes. The tests hold these shapes against GitHub's published
webhook schemas (npm ``@octokit/webhooks-schemas``) and example payloads.
"""

from __future__ import annotations

import functools
from typing import Any

from jsonschema import Draft202012Validator

# Database columns: pull request numbers are 32-bit, GitHub ids 64-bit.
MAX_NUMBER = 2**31 - 1
MAX_ID = 2**63 - 1
# GitHub logins (Enterprise Managed Users add an _shortcode suffix; apps' bots end in [bot]).
LOGIN = {"type": "string", "pattern": r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,99})(?:\[bot\])?$"}
REPOSITORY_NAME = {"type": "string", "pattern": r"^[A-Za-z0-9](?:[A-Za-z0-9_-]{0,38})/[A-Za-z0-9._-]{1,100}$"}
SHA = {"type": "string", "pattern": r"^[0-9a-f]{40}$"}
# One line of printable text (a branch, a label, a status context): it may be stored or shown.
LINE = {"type": "string", "maxLength": 255, "pattern": r"^[^\x00-\x1f\x7f]*$"}
NUMBER = {"type": "integer", "minimum": 1, "maximum": MAX_NUMBER}
ID = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
USER = {"type": ["object", "null"], "properties": {"login": LOGIN, "type": {"type": "string"}}}


def _object(required: tuple[str, ...] = (), **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": list(required), "properties": properties}


REPOSITORY = _object(("full_name",), full_name=REPOSITORY_NAME, default_branch=LINE,
                     master_branch=LINE, clone_url={"type": "string"}, html_url={"type": "string"},
                     ssh_url={"type": "string"}, git_url={"type": "string"})
PULL_REQUEST = _object(
    ("number", "state", "head", "base"),
    number=NUMBER,
    state={"enum": ["open", "closed"]},
    merged={"type": ["boolean", "null"]},
    head=_object(("sha",), sha=SHA, ref=LINE,
                 repo={"type": ["object", "null"], "properties": {"full_name": REPOSITORY_NAME}}),
    base=_object(("repo",), repo=_object(("full_name",), full_name=REPOSITORY_NAME)),
    labels={"type": "array", "items": _object(name=LINE)},
    user=USER,
    updated_at={"type": ["string", "null"]},
)
# What every delivery a handler acts on names: where it comes from and who sent it.
COMMON = {"repository": REPOSITORY, "sender": _object(("login",), login=LOGIN), "installation": _object(id=ID)}

SHAPES: dict[str, dict[str, Any]] = {
    "pull_request": _object(("repository", "sender", "pull_request"), **COMMON, action=LINE, pull_request=PULL_REQUEST,
                            label=_object(name=LINE)),
    "issue_comment": _object(
        ("repository", "sender", "issue", "comment"), **COMMON, action=LINE,
        issue=_object(("number",), number=NUMBER, pull_request={"type": ["object", "null"]}),
        comment=_object(("id",), id=ID, body={"type": ["string", "null"]}, user=USER)),
    "push": _object(("repository", "sender", "ref", "after"), **COMMON, ref=LINE,
                    before={"anyOf": [SHA, {"type": "null"}]}, after=SHA, deleted={"type": "boolean"}),
    "check_suite": _object(("repository", "check_suite"), **COMMON, action=LINE,
                           check_suite=_object(("head_sha",), head_sha=SHA)),
    "workflow_run": _object(("repository", "workflow_run"), **COMMON, action=LINE,
                            workflow_run=_object(("head_sha",), head_sha=SHA)),
    "status": _object(("repository", "sha"), **COMMON, sha=SHA, context=LINE),
}


@functools.cache
def _validator(event: str) -> Draft202012Validator | None:
    shape = SHAPES.get(event)
    return Draft202012Validator(shape) if shape is not None else None


def payload_problem(event: str, payload: Any) -> str | None:
    """What is wrong with the fields of ``payload`` Sami reads for ``event``, or None when they are
    as GitHub sends them (events Sami does not read are not checked)."""
    validator = _validator(event)
    if validator is None:
        return None
    error = next(iter(sorted(validator.iter_errors(payload), key=lambda e: list(e.absolute_path))), None)
    if error is None:
        return None
    where = ".".join(str(part) for part in error.absolute_path) or "the payload"
    return f"{where}: {_describe(error)}"


def _describe(error) -> str:
    """The problem in words, without quoting an arbitrarily long value back."""
    value = error.instance
    shown = repr(value) if isinstance(value, bool | int | float | type(None)) or (
        isinstance(value, str) and len(value) <= 80) else f"a {_kind(value)}"
    keyword = error.validator
    if keyword == "required":
        return error.message.replace("'", "").replace(" is a required property", " is missing")
    if keyword == "type":
        wanted = error.validator_value
        wanted = " or ".join(wanted) if isinstance(wanted, list) else wanted
        return f"must be {_article(wanted)}, not {_article(_kind(value))}"
    if keyword in ("minimum", "maximum"):
        return f"{shown} is out of range ({payload_range(error.schema)})"
    if keyword == "pattern":
        return f"{shown} is not {_pattern_name(error.schema)}"
    if keyword == "enum":
        return f"{shown} is not one of {', '.join(map(str, error.validator_value))}"
    if keyword == "maxLength":
        return f"is longer than {error.validator_value} characters"
    return f"{shown} is not as GitHub sends it"


def payload_range(schema: dict[str, Any]) -> str:
    return f"{schema.get('minimum')} to {schema.get('maximum')}"


def _pattern_name(schema: dict[str, Any]) -> str:
    return {LOGIN["pattern"]: "a GitHub login", REPOSITORY_NAME["pattern"]: "owner/name",
            SHA["pattern"]: "a commit sha (40 hex digits)", LINE["pattern"]: "one line of text"}.get(
        schema.get("pattern"), "as GitHub sends it")


def _kind(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number",
            type(None): "null"}.get(type(value), type(value).__name__)


def _article(word: str) -> str:
    return word if word == "null" else ("an " if word[0] in "aeiou" else "a ") + word
