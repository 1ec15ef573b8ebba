"""The JSON Schema itself, and the compiled fast check against jsonschema, plus fuzzing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.manifests import DeploymentsRepo, load_deployments_repo
from bot.manifests.schema import compile_fast_check, manifest_schema
from manifests_schema import load_schema, schema_path

from .conftest import STACK

SCHEMA = load_schema("v1beta")


def _objects(node: Any, where: str = "#") -> list[tuple[str, dict[str, Any]]]:
    found = []
    if isinstance(node, dict):
        if node.get("type") == "object":
            found.append((where, node))
        for key, value in node.items():
            found.extend(_objects(value, f"{where}/{key}"))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found.extend(_objects(value, f"{where}/{index}"))
    return found


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert json.loads(schema_path().read_text()) == SCHEMA


def test_every_object_forbids_unknown_keys_and_every_property_is_described() -> None:
    objects = _objects(SCHEMA)
    assert len(objects) >= 6
    for where, node in objects:
        assert node.get("additionalProperties") is False, where
        for name, prop in node.get("properties", {}).items():
            assert prop.get("description"), f"{where}/properties/{name}"


def test_load_schema_returns_a_private_copy() -> None:
    copy = load_schema()
    copy["properties"].clear()
    assert load_schema()["properties"]


def test_schema_accepts_the_original_sami_fields() -> None:
    original = {
        "version": "v1beta",
        "service_name": "web",
        "type": "swarm",
        "pr_deploy": True,
        "files": ["stack.yml"],
        "oob": {"update-image": {"file": "stack.yml", "path": "services.web.image"}},
    }
    assert manifest_schema().validator.is_valid(original)


# --- the fast check never accepts what jsonschema rejects -------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-5, max_value=10**10),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["", "v1beta", "web", "Web", "swarm", "label", "7d", "0s", "/x", "a/b", "X_Y"]),
    st.text(max_size=12),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.sampled_from(["app", "deployment", "path", "timeout", "file", "A", "x y"]),
            inner,
            max_size=3,
        ),
    ),
    max_leaves=8,
)
KEYS = [*SCHEMA["properties"], "zigzag"]
documents = st.dictionaries(st.sampled_from(KEYS), values, max_size=8)

BASE = {
    "version": "v1beta",
    "service_name": "web",
    "type": "swarm",
    "files": ["stack.yml"],
    "overrides": {"app": {"A": "1"}},
    "secrets": ["A_B"],
    "timeout": "30m",
}


@settings(max_examples=400, deadline=None)
@given(documents)
def test_fast_check_is_sound_on_arbitrary_documents(document: dict[str, Any]) -> None:
    schema = manifest_schema()
    assert schema.fast_check is not None
    verdict = schema.fast_check(document)
    assert verdict is None or verdict is schema.validator.is_valid(document)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(KEYS), values, max_size=3))
def test_fast_check_agrees_on_near_valid_documents(changes: dict[str, Any]) -> None:
    schema = manifest_schema()
    document = {**BASE, **changes}
    full = schema.validator.is_valid(document)
    assert schema.fast_check(document) is full  # today's schema is decided entirely by the fast check
    assert schema.is_valid(document) is full
    assert (schema.problems(document) == []) is full


# --- the fast check on schemas that use what today's schema does not ---------------------
#
# A verdict of the compiled check is True (jsonschema accepts), False (jsonschema rejects) or
# None (not decided: jsonschema decides). Whatever the schema, a verdict that is not None
# must be jsonschema's.


def _verdicts(schema: dict[str, Any], instances: list[Any]) -> list[tuple[Any, Any, bool]]:
    """(instance, fast verdict, jsonschema's verdict) for each instance; fast is None if not compiled."""
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    fast = compile_fast_check(schema)
    return [(i, None if fast is None else fast(i), validator.is_valid(i)) for i in instances]


TRICKY = [
    # a key named by properties and matched by patternProperties must satisfy both
    (
        {"type": "object", "properties": {"a": {"type": "string"}}, "patternProperties": {"^a": {"maxLength": 1}}},
        [{"a": "xyz"}, {"a": "x"}, {"ab": "xyz"}, {"a": 1}],
    ),
    (
        {"properties": {"a": True}, "patternProperties": {"a": False}, "additionalProperties": False},
        [{"a": 1}, {"b": 1}, {}],
    ),
    # oneOf with overlapping branches: 1.0 is an integer and a number, so it is not "one of"
    ({"oneOf": [{"type": "integer"}, {"type": "number"}]}, [1, 1.0, 1.5, "x"]),
    ({"oneOf": [{"const": 1}, {"type": "number"}]}, [1, 1.0, 2, True]),
    ({"oneOf": [{"enum": [[1], "a"]}, {"type": "array"}]}, [[1], [1.0], [2], "a"]),
    ({"oneOf": [{"uniqueItems": True}, {"maxItems": 1}]}, [[1, 1], [1, True], [[1], [1]], [1], []]),
    ({"oneOf": [{"minimum": 1}, {"multipleOf": 2}]}, [2, 3, 0, -2, "x"]),
    # keywords the fast check does not implement, under a negation
    ({"not": {"contains": {"const": 1}}}, [[1], [2], []]),
    ({"not": {"prefixItems": [{"type": "string"}], "items": {"type": "integer"}}}, [["a", 1], [1, 1], ["a", "b"]]),
    ({"if": {"format": "email"}, "then": False}, ["x", 1]),
    ({"not": {"unevaluatedProperties": False, "properties": {"a": True}}}, [{"a": 1}, {"b": 1}]),
    ({"anyOf": [{"dependentRequired": {"a": ["b"]}}, {"required": ["c"]}]}, [{"a": 1}, {"a": 1, "b": 1}, {"c": 1}]),
    ({"propertyNames": {"maxLength": 1}, "minProperties": 1}, [{"a": 1}, {"ab": 1}, {}]),
    # references that change meaning with $id, anchors and dynamic scopes
    ({"$defs": {"a": {"$id": "urn:x", "$defs": {"b": {"type": "string"}}, "$ref": "#/$defs/b"}},
      "$ref": "#/$defs/a"}, ["x", 1]),
    ({"$defs": {"a": {"$anchor": "here", "type": "string"}}, "$ref": "#here"}, ["x", 1]),
]


@pytest.mark.parametrize(("schema", "instances"), TRICKY)
def test_fast_check_matches_jsonschema_on_tricky_schemas(schema: dict[str, Any], instances: list[Any]) -> None:
    for instance, fast, full in _verdicts(schema, instances):
        if fast is True:
            assert full, f"the fast check accepts {instance!r}, jsonschema does not"
        assert fast is None or fast == full, (instance, fast, full)


def test_fast_check_decides_overlapping_properties_and_branches_exactly() -> None:
    overlap = compile_fast_check(TRICKY[0][0])
    assert overlap is not None
    assert [overlap(i) for i in TRICKY[0][1]] == [False, True, False, False]
    one_of = compile_fast_check(TRICKY[2][0])
    assert one_of is not None
    assert [one_of(i) for i in TRICKY[2][1]] == [False, False, True, False]


PROPERTY_NAMES = ["a", "b", "ab"]
PATTERNS = ["^a", "b$", "^x", "."]
LITERALS = [0, 1, 1.0, 1.5, -1, True, False, None, "a", "ab", "", [1], [1.0], {"a": 1}, []]


def _keyword_values(sub: st.SearchStrategy[Any]) -> dict[str, st.SearchStrategy[Any]]:
    names = st.sampled_from(PROPERTY_NAMES)
    small = st.integers(min_value=0, max_value=2)
    bound = st.sampled_from([0, 1, 1.0, 1.5])
    branches = st.lists(sub, min_size=1, max_size=3)
    return {
        "type": st.one_of(
            st.sampled_from(["string", "integer", "number", "boolean", "object", "array", "null"]),
            st.lists(st.sampled_from(["integer", "number", "string", "null"]), min_size=1, max_size=2, unique=True),
        ),
        "const": st.sampled_from(LITERALS),
        "enum": st.lists(st.sampled_from(LITERALS), min_size=1, max_size=3),
        "properties": st.dictionaries(names, sub, max_size=2),
        "patternProperties": st.dictionaries(st.sampled_from(PATTERNS), sub, max_size=2),
        "additionalProperties": sub,
        "required": st.lists(names, max_size=2, unique=True),
        "dependentRequired": st.dictionaries(names, st.lists(names, max_size=2, unique=True), max_size=1),
        "dependentSchemas": st.dictionaries(names, sub, max_size=1),
        "propertyNames": sub,
        "minProperties": small,
        "maxProperties": small,
        "items": sub,
        "prefixItems": st.lists(sub, min_size=1, max_size=2),
        "contains": sub,
        "minContains": small,
        "minItems": small,
        "maxItems": small,
        "uniqueItems": st.booleans(),
        "minLength": small,
        "maxLength": small,
        "pattern": st.sampled_from(PATTERNS),
        "minimum": bound,
        "maximum": bound,
        "exclusiveMinimum": bound,
        "exclusiveMaximum": bound,
        "multipleOf": st.sampled_from([1, 0.5, 2]),
        "anyOf": branches,
        "oneOf": branches,
        "allOf": branches,
        "not": sub,
        "if": sub,
        "then": sub,
        "else": sub,
        "unevaluatedProperties": sub,
        "unevaluatedItems": sub,
        "format": st.just("email"),
        "x-hint": st.just("a hint"),
        "frobnicate": st.just(1),
    }


def _schemas(depth: int) -> st.SearchStrategy[Any]:
    leaves = st.sampled_from([True, False, {}, {"$ref": "#/$defs/shared"}])
    if depth == 0:
        return leaves
    values = _keyword_values(_schemas(depth - 1))
    objects = st.lists(st.sampled_from(sorted(values)), min_size=1, max_size=3, unique=True).flatmap(
        lambda chosen: st.fixed_dictionaries({name: values[name] for name in chosen})
    )
    return st.one_of(leaves, objects)


def _shared() -> st.SearchStrategy[Any]:
    # What #/$defs/shared holds: small and without references, so nothing recurses forever.
    values = _keyword_values(st.sampled_from([True, False, {}]))
    return st.lists(st.sampled_from(sorted(values)), min_size=1, max_size=2, unique=True).flatmap(
        lambda chosen: st.fixed_dictionaries({name: values[name] for name in chosen})
    )


instances = st.recursive(
    st.sampled_from([0, 1, 1.0, 1.5, -1, 2, True, False, None, "a", "ab", "b", "", "xb"]),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from([*PROPERTY_NAMES, "x", "ba"]), inner, max_size=3),
    ),
    max_leaves=6,
)


@settings(max_examples=1000, deadline=None)
@given(_schemas(2), _shared(), st.lists(instances, min_size=1, max_size=6))
def test_fast_check_verdicts_are_jsonschemas_on_generated_schemas(
    body: Any, shared: dict[str, Any], documents: list[Any]
) -> None:
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$defs": {"shared": shared}}
    schema.update(body if isinstance(body, dict) else {"allOf": [body]})
    for instance, fast, full in _verdicts(schema, documents):
        assert fast is None or fast == full, (instance, fast, full)


# --- arbitrary input never crashes the loader -------------------------------------------


def _load_bytes(root: Path, data: bytes) -> DeploymentsRepo:
    folder = root / "services/web/swarm/stage"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "stack.yml").write_text(STACK)
    (folder / "sami.yaml").write_bytes(data)
    return load_deployments_repo(root)


def _check_outcome(repo: DeploymentsRepo) -> None:
    assert len(repo.manifests) + len({e.path for e in repo.errors}) == 1
    for error in repo.errors:
        assert not error.message.startswith("could not be checked"), str(error)
        assert error.line is None or error.line >= 1
        assert error.column is None or error.column >= 1


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_raise(tmp_path_factory: Any, data: bytes) -> None:
    _check_outcome(_load_bytes(tmp_path_factory.mktemp("bytes"), data))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(KEYS), values, max_size=8))
def test_arbitrary_yaml_documents_never_raise(tmp_path_factory: Any, document: dict[str, Any]) -> None:
    text = yaml.safe_dump({**BASE, **document}, allow_unicode=True)
    _check_outcome(_load_bytes(tmp_path_factory.mktemp("yaml"), text.encode()))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet="ab:-[]{}&*!|>'\"#? \n\t,.%@`0", max_size=120))
def test_yaml_syntax_soup_never_raises(tmp_path_factory: Any, text: str) -> None:
    _check_outcome(_load_bytes(tmp_path_factory.mktemp("soup"), text.encode()))
