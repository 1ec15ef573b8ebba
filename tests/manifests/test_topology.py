"""The order of an environment's components: waves from depends_on, cycles, dependents, references."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.manifests.topology import (
    CycleError,
    dependents,
    deploy_waves,
    find_cycle,
    references,
    resolve_references,
)


@st.composite
def acyclic_graphs(draw):
    """A DAG: node i may depend only on nodes with a smaller index (then names are shuffled)."""
    size = draw(st.integers(min_value=0, max_value=25))
    names = draw(st.permutations([f"svc-{i}" for i in range(size)]))
    graph = {}
    for i, name in enumerate(names):
        deps = draw(st.sets(st.integers(min_value=0, max_value=i - 1), max_size=i)) if i else set()
        graph[name] = {names[d] for d in deps}
    return graph


@settings(max_examples=300, deadline=None)
@given(acyclic_graphs())
def test_every_component_comes_after_all_it_depends_on(graph):
    waves = deploy_waves(graph)
    position = {node: index for index, wave in enumerate(waves) for node in wave}
    assert sorted(position) == sorted(graph)
    for node, deps in graph.items():
        for dep in deps:
            assert position[dep] < position[node], (node, dep, waves)
    # As few waves as the longest dependency chain needs: every node of a later wave waits on
    # something in the wave just before it.
    for index, wave in enumerate(waves[1:], start=1):
        for node in wave:
            assert any(position[dep] == index - 1 for dep in graph[node])


def test_a_cycle_is_named_in_order():
    graph = {"web": {"api"}, "api": {"db"}, "db": {"web"}, "cache": set()}
    with pytest.raises(CycleError) as caught:
        deploy_waves(graph)
    cycle = caught.value.cycle
    assert cycle[0] == cycle[-1]
    assert set(cycle) == {"web", "api", "db"}
    assert "dependency cycle: " in str(caught.value)


def test_a_self_dependency_is_a_cycle():
    assert find_cycle({"db": {"db"}}) == ["db", "db"]


def test_unknown_dependencies_are_left_to_validation():
    assert deploy_waves({"web": {"redis", "missing"}, "redis": set()}) == [("redis",), ("web",)]


def test_dependents_are_transitive():
    graph = {"db": set(), "api": {"db"}, "web": {"api"}, "docs": set()}
    assert dependents(graph, "db") == {"api", "web"}
    assert dependents(graph, "docs") == set()


def test_references_are_found_and_resolved():
    value = "redis://${cache.endpoint}/0?fallback=${db.host}"
    assert references(value) == [("cache", "endpoint"), ("db", "host")]
    outputs = {"cache": {"endpoint": "cache-qa-7:6379"}, "db": {"host": "db-qa-7"}}
    assert resolve_references(value, outputs) == "redis://cache-qa-7:6379/0?fallback=db-qa-7"
    with pytest.raises(KeyError, match=r"\$\{db.port\}"):
        resolve_references("${db.port}", outputs)
    assert references("plain ${NOT_A_REF} $HOME") == []
