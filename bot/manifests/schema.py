"""The manifest JSON Schema: one compiled validator, and its errors in words a person can act on.

jsonschema (Draft 2020-12) is the authority. Because it costs a few hundred microseconds per
manifest, the schema is also compiled once into plain Python predicates that can only say
"certainly valid": whenever that check does not accept a document, jsonschema's
``iter_errors`` runs and decides. The compiled check is conservative (anything it cannot
judge exactly counts as "not certain"), so it never accepts a document jsonschema rejects;
tests compare the two on generated documents.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import jsonschema

from manifests_schema import load_schema

Check = Callable[[Any], bool]

_ANNOTATIONS = frozenset({"$schema", "$id", "$comment", "title", "description", "default", "examples", "$defs"})


class Unsupported(Exception):
    """The schema uses a keyword the fast check does not implement."""


def _is_integer(value: Any) -> bool:
    return type(value) is int


def _is_number(value: Any) -> bool:
    return type(value) is int or type(value) is float


_TYPE_CHECKS: dict[str, Check] = {
    "string": lambda v: type(v) is str,
    "integer": _is_integer,
    "number": _is_number,
    "boolean": lambda v: type(v) is bool,
    "object": lambda v: type(v) is dict,
    "array": lambda v: type(v) is list,
    "null": lambda v: v is None,
}


def _same(a: Any, b: Any) -> bool:
    # Conservative equality: only identical JSON types compare equal (true is not 1).
    return type(a) is type(b) and type(a) in (str, int, bool) and a == b


class _Compiler:
    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.refs: dict[str, Check] = {}

    def ref(self, pointer: str) -> Check:
        if not pointer.startswith("#/"):
            raise Unsupported(pointer)
        if pointer not in self.refs:
            target: Any = self.root
            for part in pointer[2:].split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            slot: list[Check] = []
            self.refs[pointer] = lambda v: slot[0](v)
            slot.append(self.compile(target))
        return self.refs[pointer]

    def compile(self, schema: Any) -> Check:
        if schema is True:
            return lambda v: True
        if schema is False:
            return lambda v: False
        if not isinstance(schema, dict):
            raise Unsupported(repr(schema))
        checks: list[Check] = []
        grouped = False
        for keyword, value in schema.items():
            if keyword in _ANNOTATIONS or keyword.startswith("x-"):
                continue
            if keyword in _OBJECT_KEYWORDS:
                if not grouped:
                    checks.append(self.object_keywords(schema))
                    grouped = True
                continue
            checks.append(self.keyword(keyword, value))
        return _all_of(checks)

    def object_keywords(self, schema: dict[str, Any]) -> Check:
        props = {name: self.compile(sub) for name, sub in schema.get("properties", {}).items()}
        patterns = [(re.compile(p).search, self.compile(sub)) for p, sub in schema.get("patternProperties", {}).items()]
        additional_schema = schema.get("additionalProperties", True)
        additional = None if additional_schema is True else self.compile(additional_schema)
        required = tuple(schema.get("required", ()))

        def check(v: Any) -> bool:
            if type(v) is not dict:
                return True
            for name in required:
                if name not in v:
                    return False
            for key, item in v.items():
                sub = props.get(key)
                if sub is not None:
                    if not sub(item):
                        return False
                    continue
                matched = False
                for search, pattern_check in patterns:
                    if search(key):
                        matched = True
                        if not pattern_check(item):
                            return False
                if not matched and additional is not None and not additional(item):
                    return False
            return True

        return check

    def keyword(self, keyword: str, value: Any) -> Check:
        if keyword == "type":
            names = [value] if isinstance(value, str) else list(value)
            type_checks = [_TYPE_CHECKS[name] for name in names]
            if len(type_checks) == 1:
                return type_checks[0]
            return lambda v: any(check(v) for check in type_checks)
        if keyword == "const":
            return lambda v: _same(v, value)
        if keyword == "enum":
            options = list(value)
            return lambda v: any(_same(v, option) for option in options)
        if keyword == "pattern":
            search = re.compile(value).search
            return lambda v: type(v) is not str or search(v) is not None
        if keyword == "minLength":
            return lambda v: type(v) is not str or len(v) >= value
        if keyword == "maxLength":
            return lambda v: type(v) is not str or len(v) <= value
        if keyword == "minimum":
            return lambda v: not _is_number(v) or v >= value
        if keyword == "maximum":
            return lambda v: not _is_number(v) or v <= value
        if keyword == "items":
            item_check = self.compile(value)

            def items(v: Any) -> bool:
                if type(v) is not list:
                    return True
                for item in v:  # noqa: SIM110 - a plain loop is faster than all(genexpr)
                    if not item_check(item):
                        return False
                return True

            return items
        if keyword == "uniqueItems":
            if not value:
                return lambda v: True
            # Only lists of strings are judged here; anything else goes to jsonschema.
            return lambda v: type(v) is not list or (all(type(item) is str for item in v) and len(set(v)) == len(v))
        if keyword in ("anyOf", "oneOf"):
            subs = [self.compile(sub) for sub in value]
            if keyword == "anyOf":
                return lambda v: any(sub(v) for sub in subs)
            return lambda v: sum(1 for sub in subs if sub(v)) == 1
        if keyword == "$ref":
            return self.ref(value)
        raise Unsupported(keyword)


_OBJECT_KEYWORDS = frozenset({"properties", "patternProperties", "additionalProperties", "required"})


def _all_of(checks: list[Check]) -> Check:
    if not checks:
        return lambda v: True
    if len(checks) == 1:
        return checks[0]
    if len(checks) == 2:
        first, second = checks
        return lambda v: first(v) and second(v)

    def every(v: Any) -> bool:
        for check in checks:  # noqa: SIM110 - a plain loop is faster than all(genexpr)
            if not check(v):
                return False
        return True

    return every


def compile_fast_check(schema: dict[str, Any]) -> Check | None:
    """Compile a schema into a predicate that is True only for surely valid documents."""
    try:
        return _Compiler(schema).compile(schema)
    except (Unsupported, KeyError, TypeError, re.error):
        return None


@dataclass(frozen=True)
class SchemaProblem:
    """A schema violation: where (path to a value, or to a key when at_key) and what."""

    path: tuple[str | int, ...]
    at_key: bool
    message: str


class ManifestSchema:
    """The compiled manifest schema of one version."""

    def __init__(self, schema: dict[str, Any]) -> None:
        jsonschema.Draft202012Validator.check_schema(schema)
        self.schema = schema
        self.validator = jsonschema.Draft202012Validator(schema)
        self.fast_check = compile_fast_check(schema)

    def is_valid(self, document: Any) -> bool:
        """True when the document satisfies the schema."""
        if self.fast_check is not None and self.fast_check(document):
            return True
        return self.validator.is_valid(document)

    def problems(self, document: Any) -> list[SchemaProblem]:
        """Every schema violation in the document, described for a person."""
        if self.fast_check is not None and self.fast_check(document):
            return []
        found: list[SchemaProblem] = []
        seen: set[tuple[tuple[str | int, ...], str]] = set()
        for error in self.validator.iter_errors(document):
            for problem in describe(error):
                if (problem.path, problem.message) not in seen:
                    seen.add((problem.path, problem.message))
                    found.append(problem)
        return found

    def default(self, *path: str) -> Any:
        """The schema's default for a property path, e.g. default("pr_deploy")."""
        node: Any = self.schema
        for part in path:
            node = node["properties"][part]
        return node.get("default")


@functools.cache
def manifest_schema(version: str = "v1beta") -> ManifestSchema:
    """The compiled schema of a manifest version, built once per process."""
    return ManifestSchema(load_schema(version))


# --- describing jsonschema errors -------------------------------------------------------

_TYPE_WORDS = {
    "string": "a string",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "object": "a mapping",
    "array": "a list",
    "null": "nothing",
}


def _field(path: tuple[str | int, ...]) -> str:
    from .yamlsafe import format_field

    return format_field(path)


def kind_of(value: Any) -> str:
    """Words for the kind of a YAML value, for messages."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"{'true' if value else 'false'} (a boolean)"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {_short(value)}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    return a == b


def _json_value(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def _prefix(path: tuple[str | int, ...]) -> str:
    return f"{_field(path)}: " if path else ""


def _where(path: tuple[str | int, ...]) -> str:
    return f" in {_field(path)}" if path else ""


def describe(error: jsonschema.ValidationError) -> Iterator[SchemaProblem]:
    """Turn one jsonschema error into problems with positions and actionable messages."""
    path = tuple(error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    instance = error.instance
    validator = error.validator
    value = error.validator_value
    hint = schema.get("x-hint")

    if validator == "additionalProperties" and isinstance(instance, dict):
        known = list(schema.get("properties", {}))
        patterns = [re.compile(p) for p in schema.get("patternProperties", {})]
        for key in instance:
            if key in known or any(p.search(key) for p in patterns):
                continue
            if patterns and not known:
                message = f"invalid key {key!r}{_where(path)}: use {hint or 'a valid key'}"
            else:
                message = f"unknown key {key!r}{_where(path)}"
                close = difflib.get_close_matches(key, known, n=1)
                if close:
                    message += f"; did you mean {close[0]!r}?"
                message += f" (allowed: {', '.join(known)})"
            yield SchemaProblem((*path, key), True, message)
        return
    if validator == "required" and isinstance(instance, dict):
        for key in value:
            if key not in instance:
                yield SchemaProblem(path, bool(path), f"missing required key {key!r}{_where(path)}")
        return
    if validator == "type":
        names = [value] if isinstance(value, str) else list(value)
        wanted = " or ".join(_TYPE_WORDS.get(n, n) for n in names)
        yield SchemaProblem(path, False, f"{_prefix(path)}expected {wanted}, found {kind_of(instance)}")
        return
    if validator == "const":
        yield SchemaProblem(path, False, f"{_prefix(path)}must be {_json_value(value)}, found {kind_of(instance)}")
        return
    if validator == "enum":
        options = ", ".join(_json_value(v) for v in value)
        yield SchemaProblem(path, False, f"{_prefix(path)}{_short(instance)} is not one of: {options}")
        return
    if validator == "pattern":
        wanted = hint or f"text matching {value}"
        yield SchemaProblem(path, False, f"{_prefix(path)}{_short(instance)} is not valid: use {wanted}")
        return
    if validator in ("anyOf", "oneOf"):
        wanted = hint or "valid"
        yield SchemaProblem(path, False, f"{_prefix(path)}{_short(instance)} is not {wanted}")
        return
    if validator == "maxLength":
        yield SchemaProblem(
            path,
            False,
            f"{_prefix(path)}is {len(instance)} characters long; at most {value} are allowed",
        )
        return
    if validator == "minLength":
        yield SchemaProblem(path, False, f"{_prefix(path)}must not be empty")
        return
    if validator == "minimum":
        yield SchemaProblem(path, False, f"{_prefix(path)}must be at least {value}, found {instance}")
        return
    if validator == "maximum":
        yield SchemaProblem(path, False, f"{_prefix(path)}must be at most {value}, found {instance}")
        return
    if validator == "uniqueItems" and isinstance(instance, list):
        for index, item in enumerate(instance):
            if any(_json_equal(item, earlier) for earlier in instance[:index]):
                yield SchemaProblem((*path, index), False, f"{_field((*path, index))}: {_short(item)} is listed twice")
        return
    yield SchemaProblem(path, False, f"{_prefix(path)}{error.message}")
