"""The manifest JSON Schema: one compiled validator, and its errors in words a person can act on.

jsonschema (Draft 2020-12) is the authority. Because it costs a few hundred microseconds per
manifest, the schema is also compiled once into plain Python checks. Each check answers
True (jsonschema accepts), False (jsonschema rejects) or None (not decided here), and every
keyword is judged the way jsonschema judges it (its type checks, its equality) or not at all:
a keyword the compiler does not implement, or a value it cannot compare exactly, answers
None, and jsonschema decides the document. Constructs that change what other keywords mean
($id below the root, anchors, dynamic references, another dialect, references that are not
local JSON pointers) make the whole schema go to jsonschema. Tests compare both verdicts on
generated schemas and documents.
"""

from __future__ import annotations

import difflib
import functools
import json
import numbers
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import jsonschema

from manifests_schema import load_environment_schema, load_schema

from .yamlsafe import format_field

Verdict = bool | None
Check = Callable[[Any], Verdict]

DIALECT = "https://json-schema.org/draft/2020-12/schema"
# What jsonschema acts on; any other word in a schema is an annotation it ignores (then, else,
# minContains and maxContains are read by if and contains).
_VALIDATION_KEYWORDS = frozenset(jsonschema.Draft202012Validator.VALIDATORS)
# Words that change how references resolve or what other keywords mean.
_SCOPE_KEYWORDS = frozenset(
    {"$id", "$anchor", "$dynamicAnchor", "$dynamicRef", "$recursiveAnchor", "$recursiveRef", "$vocabulary", "$schema"}
)
_OBJECT_KEYWORDS = frozenset({"properties", "patternProperties", "additionalProperties", "required"})
_ARRAY_KEYWORDS = frozenset({"items", "prefixItems"})


class Unsupported(Exception):
    """The schema uses a construct the fast check cannot judge exactly anywhere."""


# --- jsonschema's own notions, judged the same way -------------------------------------------


def _is_number(value: Any) -> bool:
    return type(value) in (int, float) or (isinstance(value, numbers.Number) and not isinstance(value, bool))


def _is_integer(value: Any) -> bool:
    # Draft 2020-12: 1.0 is an integer.
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


_TYPE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": _is_integer,
    "number": _is_number,
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "null": lambda v: v is None,
}


def _equal(a: Any, b: Any) -> Verdict:
    """jsonschema's equality (true is not 1, 1.0 is 1, deep for lists and mappings), or None."""
    if a is b:
        return True
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return False  # the same boolean, or null twice, is caught by `is`
    if isinstance(a, list) and isinstance(b, list):
        return _all_equal(zip(a, b, strict=True)) if len(a) == len(b) else False
    if isinstance(a, dict) and isinstance(b, dict):
        return _all_equal((value, b[key]) for key, value in a.items()) if a.keys() == b.keys() else False
    if type(a) in _COMPARED and type(b) in _COMPARED:
        return a == b  # numbers by value; a list, a mapping and a number never equal each other
    return None


_COMPARED = (int, float, list, dict)


def _all_equal(pairs: Any) -> Verdict:
    verdict: Verdict = True
    for x, y in pairs:
        same = _equal(x, y)
        if same is False:
            return False
        if same is None:
            verdict = None
    return verdict


def _unique(items: list[Any]) -> Verdict:
    """uniqueItems as jsonschema judges it, for lists whose items a set compares the same way."""
    kinds = {type(item) for item in items}
    if kinds <= {str, int, type(None)} or kinds == {bool}:
        return len(set(items)) == len(items)
    return None


# --- combining verdicts --------------------------------------------------------------------


def _always(verdict: Verdict) -> Check:
    return lambda v: verdict


def _all_of(checks: list[Check]) -> Check:
    if not checks:
        return _always(True)
    if len(checks) == 1:
        return checks[0]
    if len(checks) == 2:
        first, second = checks

        def both(v: Any) -> Verdict:
            a = first(v)
            if a is False:
                return False
            b = second(v)
            if b is False:
                return False
            return True if a is True and b is True else None

        return both

    def every(v: Any) -> Verdict:
        verdict: Verdict = True
        for check in checks:
            result = check(v)
            if result is not True:
                if result is False:
                    return False
                verdict = None
        return verdict

    return every


def _any_of(checks: list[Check]) -> Check:
    def any_(v: Any) -> Verdict:
        verdict: Verdict = False
        for check in checks:
            result = check(v)
            if result is True:
                return True
            if result is None:
                verdict = None
        return verdict

    return any_


def _one_of(checks: list[Check]) -> Check:
    def one(v: Any) -> Verdict:
        passed = 0
        undecided = False
        for check in checks:
            result = check(v)
            if result is True:
                passed += 1
                if passed > 1:
                    return False
            elif result is None:
                undecided = True
        return None if undecided else passed == 1

    return one


def _not(check: Check) -> Check:
    def negated(v: Any) -> Verdict:
        result = check(v)
        return None if result is None else not result

    return negated


# --- the compiler --------------------------------------------------------------------------


def _check_scope(schema: Any, root: bool = True) -> None:
    """Refuse schemas whose references or keywords do not mean what the compiler assumes."""
    if isinstance(schema, list):
        for item in schema:
            _check_scope(item, False)
        return
    if not isinstance(schema, dict):
        return
    for keyword in _SCOPE_KEYWORDS.intersection(schema):
        if root and keyword == "$id":
            continue
        if root and keyword == "$schema" and schema[keyword] == DIALECT:
            continue
        raise Unsupported(keyword)
    ref = schema.get("$ref")
    if ref is not None and (not isinstance(ref, str) or not (ref == "#" or ref.startswith("#/")) or "%" in ref):
        raise Unsupported(f"$ref {ref!r}")
    for value in schema.values():
        _check_scope(value, False)


class _Compiler:
    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.refs: dict[str, Check] = {}

    def ref(self, pointer: str) -> Check:
        if pointer not in self.refs:
            target: Any = self.root
            for part in pointer[2:].split("/") if pointer != "#" else ():
                part = part.replace("~1", "/").replace("~0", "~")
                target = target[int(part)] if isinstance(target, list) else target[part]
            slot: list[Check] = []
            self.refs[pointer] = lambda v: slot[0](v)
            slot.append(self.compile(target))
        return self.refs[pointer]

    def compile(self, schema: Any) -> Check:
        if schema is True:
            return _always(True)
        if schema is False:
            return _always(False)
        if not isinstance(schema, dict):
            raise Unsupported(repr(schema))
        checks: list[Check] = []
        for keyword, value in schema.items():
            if keyword not in _VALIDATION_KEYWORDS:
                continue
            if keyword in _OBJECT_KEYWORDS:
                if keyword == next(k for k in schema if k in _OBJECT_KEYWORDS):
                    checks.append(self.object_keywords(schema))
            elif keyword in _ARRAY_KEYWORDS:
                if keyword == next(k for k in schema if k in _ARRAY_KEYWORDS):
                    checks.append(self.array_keywords(schema))
            elif keyword == "if":
                checks.append(self.condition(schema))
            else:
                checks.append(self.keyword(keyword, value))
        return _all_of(checks)

    def object_keywords(self, schema: dict[str, Any]) -> Check:
        props = {name: self.compile(sub) for name, sub in schema.get("properties", {}).items()}
        pattern_schemas = schema.get("patternProperties", {})
        patterns = [(re.compile(p).search, self.compile(sub)) for p, sub in pattern_schemas.items()]
        # jsonschema decides what is additional with the patterns joined by '|'.
        joined = re.compile("|".join(pattern_schemas)).search if pattern_schemas else None
        additional = self.compile(schema["additionalProperties"]) if "additionalProperties" in schema else None
        required = tuple(schema.get("required", ()))

        def plain(v: Any) -> Verdict:
            # No patternProperties (the common case): each key meets one subschema at most.
            if not isinstance(v, dict):
                return True
            for name in required:
                if name not in v:
                    return False
            verdict: Verdict = True
            for key, item in v.items():
                sub = props.get(key, additional)
                if sub is None:
                    continue
                result = sub(item)
                if result is not True:
                    if result is False:
                        return False
                    verdict = None
            return verdict

        def patterned(v: Any) -> Verdict:
            if not isinstance(v, dict):
                return True
            for name in required:
                if name not in v:
                    return False
            verdict: Verdict = True
            for key, item in v.items():
                if not isinstance(key, str):
                    verdict = None  # jsonschema's re.search fails on such a key
                    continue
                sub = props.get(key)
                checks = [pattern for search, pattern in patterns if search(key)]
                if sub is not None:
                    checks.append(sub)
                elif additional is not None and not joined(key):
                    checks.append(additional)
                for sub_check in checks:
                    result = sub_check(item)
                    if result is not True:
                        if result is False:
                            return False
                        verdict = None
            return verdict

        return plain if joined is None else patterned

    def array_keywords(self, schema: dict[str, Any]) -> Check:
        prefix = [self.compile(sub) for sub in schema.get("prefixItems", ())]
        rest = self.compile(schema["items"]) if "items" in schema else None
        if not prefix and rest is not None:
            return _each_item(rest)

        def check(v: Any) -> Verdict:
            if not isinstance(v, list):
                return True
            verdict: Verdict = True
            for index, item in enumerate(v):
                if index < len(prefix):
                    result = prefix[index](item)
                elif rest is not None:
                    result = rest(item)
                else:
                    break
                if result is not True:
                    if result is False:
                        return False
                    verdict = None
            return verdict

        return check

    def condition(self, schema: dict[str, Any]) -> Check:
        condition = self.compile(schema["if"])
        then = self.compile(schema.get("then", True))
        otherwise = self.compile(schema.get("else", True))

        def check(v: Any) -> Verdict:
            result = condition(v)
            if result is None:
                return None
            return then(v) if result else otherwise(v)

        return check

    def keyword(self, keyword: str, value: Any) -> Check:
        if keyword == "type":
            type_checks = [_TYPE_CHECKS[name] for name in ([value] if isinstance(value, str) else value)]
            if len(type_checks) == 1:
                return type_checks[0]
            return lambda v: any(check(v) for check in type_checks)
        if keyword == "const":
            return lambda v: _equal(v, value)
        if keyword == "enum":
            return _any_of([functools.partial(_equal, b=option) for option in value])
        if keyword == "pattern":
            search = re.compile(value).search
            return lambda v: not isinstance(v, str) or search(v) is not None
        if keyword == "minLength":
            return lambda v: not isinstance(v, str) or len(v) >= value
        if keyword == "maxLength":
            return lambda v: not isinstance(v, str) or len(v) <= value
        if keyword == "minimum":
            return lambda v: not _is_number(v) or v >= value
        if keyword == "maximum":
            return lambda v: not _is_number(v) or v <= value
        if keyword == "exclusiveMinimum":
            return lambda v: not _is_number(v) or v > value
        if keyword == "exclusiveMaximum":
            return lambda v: not _is_number(v) or v < value
        if keyword == "minItems":
            return lambda v: not isinstance(v, list) or len(v) >= value
        if keyword == "maxItems":
            return lambda v: not isinstance(v, list) or len(v) <= value
        if keyword == "minProperties":
            return lambda v: not isinstance(v, dict) or len(v) >= value
        if keyword == "maxProperties":
            return lambda v: not isinstance(v, dict) or len(v) <= value
        if keyword == "uniqueItems":
            if not value:
                return _always(True)
            return lambda v: True if not isinstance(v, list) else _unique(v)
        if keyword == "dependentRequired":
            pairs = [(name, tuple(needed)) for name, needed in value.items()]
            return lambda v: not isinstance(v, dict) or all(
                all(other in v for other in needed) for name, needed in pairs if name in v
            )
        if keyword == "dependentSchemas":
            subs = [(name, self.compile(sub)) for name, sub in value.items()]
            each = _all_of([_when_present(name, sub) for name, sub in subs])
            return lambda v: True if not isinstance(v, dict) else each(v)
        if keyword == "propertyNames":
            names = self.compile(value)
            return lambda v: True if not isinstance(v, dict) else _every_key(names, v)
        if keyword == "anyOf":
            return _any_of([self.compile(sub) for sub in value])
        if keyword == "oneOf":
            return _one_of([self.compile(sub) for sub in value])
        if keyword == "allOf":
            return _all_of([self.compile(sub) for sub in value])
        if keyword == "not":
            return _not(self.compile(value))
        if keyword == "$ref":
            return self.ref(value)
        # Not judged here (contains, multipleOf, unevaluated*, format, ...): jsonschema decides
        # whenever the keyword applies to the value's type.
        applies = _APPLIES_TO.get(keyword)
        if applies is None:
            return _always(None)
        return lambda v: None if applies(v) else True


def _each_item(item_check: Check) -> Check:
    def check(v: Any) -> Verdict:
        if not isinstance(v, list):
            return True
        verdict: Verdict = True
        for item in v:
            result = item_check(item)
            if result is not True:
                if result is False:
                    return False
                verdict = None
        return verdict

    return check


def _when_present(name: str, check: Check) -> Check:
    return lambda v: check(v) if name in v else True


def _every_key(names: Check, value: dict[Any, Any]) -> Verdict:
    verdict: Verdict = True
    for key in value:
        result = names(key)
        if result is not True:
            if result is False:
                return False
            verdict = None
    return verdict


_APPLIES_TO: dict[str, Callable[[Any], bool]] = {
    "contains": _TYPE_CHECKS["array"],
    "unevaluatedItems": _TYPE_CHECKS["array"],
    "unevaluatedProperties": _TYPE_CHECKS["object"],
    "multipleOf": _is_number,
}


def compile_fast_check(schema: dict[str, Any]) -> Check | None:
    """Compile a schema into a check answering True/False as jsonschema would, or None.

    Returns None when the schema as a whole cannot be judged here.
    """
    try:
        _check_scope(schema)
        return _Compiler(schema).compile(schema)
    except (Unsupported, KeyError, IndexError, TypeError, ValueError, re.error):
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
        verdict = None if self.fast_check is None else self.fast_check(document)
        return self.validator.is_valid(document) if verdict is None else verdict

    def problems(self, document: Any) -> list[SchemaProblem]:
        """Every schema violation in the document, described for a person."""
        if self.fast_check is not None and self.fast_check(document) is True:
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


@functools.cache
def environment_schema(version: str = "v1beta") -> ManifestSchema:
    """The compiled schema of an environment file version, built once per process."""
    return ManifestSchema(load_environment_schema(version))


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
