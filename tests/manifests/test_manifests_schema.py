"""The JSON Schema itself, and the compiled fast check against jsonschema, plus fuzzing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.manifests import DeploymentsRepo, load_deployments_repo
from bot.manifests.schema import manifest_schema
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
    if schema.fast_check(document):
        assert schema.validator.is_valid(document)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(KEYS), values, max_size=3))
def test_fast_check_agrees_on_near_valid_documents(changes: dict[str, Any]) -> None:
    schema = manifest_schema()
    document = {**BASE, **changes}
    full = schema.validator.is_valid(document)
    assert schema.fast_check(document) is full or (full and _has_float(document))
    assert schema.is_valid(document) is full
    assert (schema.problems(document) == []) is full


def _has_float(value: Any) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, list):
        return any(_has_float(v) for v in value)
    if isinstance(value, dict):
        return any(_has_float(v) for v in value.values())
    return False


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
