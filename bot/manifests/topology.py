"""Environments as products: the typed form of an environment file and the order of its components.

An environment file (``environments/<environment>.yaml`` in the deployments repo) names the
components of one environment (services that have a manifest for it), the target it runs on and
environment-wide overrides. Without a file an environment is implicit: every service with a
manifest for it, on the default target, with no extra overrides.

The order of a whole-environment operation comes from the components' ``depends_on`` (and the
references in their overrides, which imply a dependency): ``deploy_waves`` groups components into
waves in which every component depends only on components of earlier waves; components of one
wave may run in parallel. Archive, restore and cleanup run the waves in reverse.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

ENVIRONMENTS_DIR = "environments"
# ${<service>.<output>} in an override value: an output recorded by another component of the same
# environment (its endpoint, for a third-party service), resolved per environment at deploy time.
REFERENCE_RE = re.compile(r"\$\{([a-z0-9][a-z0-9_-]*)\.([a-z][a-z0-9_]*)\}")
REFERENCE_OUTPUTS = ("endpoint", "url", "host", "port")


class Kind(StrEnum):
    """What a manifest describes: an application the team builds, or a third-party service."""

    APPLICATION = "application"
    THIRD_PARTY = "third_party"


class ThirdPartyMode(StrEnum):
    """internal: provisioned per environment by control scripts; external: an outside endpoint."""

    INTERNAL = "internal"
    EXTERNAL = "external"


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
COLOURS = ("blue", "green")
DEFAULT_KEEP_PREVIOUS = 24 * 3600


@dataclass(frozen=True)
class BlueGreen:
    """An environment released blue-green: two colours of it (every component under ``-blue`` and
    ``-green`` names) and a stable ``entry`` component switched between them. ``keep_previous`` is
    seconds the previous colour keeps running after a release; ``approvers`` are GitHub logins,
    ``team:<org>/<slug>`` GitHub teams and ``token:<name>`` API tokens allowed to release (empty: whoever may
    deploy). ``colours`` are what tells the colours apart: colour -> component -> deployment overrides (a
    port of its own on a host's network)."""

    entry: str
    keep_previous: int = DEFAULT_KEEP_PREVIOUS
    approvers: tuple[str, ...] = ()
    colours: Mapping[str, Mapping[str, Mapping[str, str]]] = field(default_factory=dict)

    def overrides_of(self, colour: str, service: str) -> dict[str, str]:
        """The deployment overrides ``colour`` gives ``service`` ({} when none)."""
        return dict(self.colours.get(colour, {}).get(service, {}))


@dataclass(frozen=True)
class Topology:
    """One environment as a product: its components, the target it runs on, its overrides.

    ``components`` are service names in the order the file lists them (sorted for an implicit
    environment); ``target`` is a name from Sami's targets configuration, or None for the default
    target. ``path`` is None for an implicit environment (no file).
    """

    name: str
    components: tuple[str, ...]
    target: str | None = None
    overrides: Mapping[str, str] = field(default_factory=dict)
    preview_of: str | None = None
    path: str | None = None
    blue_green: BlueGreen | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.overrides, MappingProxyType):
            object.__setattr__(self, "overrides", MappingProxyType(dict(self.overrides)))

    @property
    def implicit(self) -> bool:
        return self.path is None


def parse_duration(value: int | str) -> int:
    """Seconds in a duration: an integer of seconds, or '90s', '30m', '12h', '7d'."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int):
        return value
    text = value.strip()
    if text[-1:] in _DURATION_UNITS and text[:-1].isdigit():
        return int(text[:-1]) * _DURATION_UNITS[text[-1]]
    if text.isdigit():
        return int(text)
    raise ValueError(f"not a duration: {value!r}")


class CycleError(ValueError):
    """The dependency graph has a cycle; ``cycle`` lists its members in order, first repeated last."""

    def __init__(self, cycle: list[str]) -> None:
        self.cycle = cycle
        super().__init__("dependency cycle: " + " -> ".join(cycle))


def references(value: str) -> list[tuple[str, str]]:
    """The ``(service, output)`` pairs referenced in one override value, in order of appearance."""
    return [(m.group(1), m.group(2)) for m in REFERENCE_RE.finditer(value)]


def resolve_references(value: str, outputs: Mapping[str, Mapping[str, str]]) -> str:
    """Replace every ``${service.output}`` with ``outputs[service][output]``; KeyError names a missing one."""

    def one(match: re.Match[str]) -> str:
        service, output = match.group(1), match.group(2)
        try:
            return outputs[service][output]
        except KeyError:
            raise KeyError(f"${{{service}.{output}}}") from None

    return REFERENCE_RE.sub(one, value)


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """One cycle of the graph (node -> the nodes it depends on) as a path, or None when acyclic.

    Edges to nodes outside the graph are ignored (unknown names are reported separately).
    """
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(graph, white)
    for start in sorted(graph):
        if colour[start] != white:
            continue
        path: list[str] = [start]
        stack = [iter(sorted(d for d in graph[start] if d in graph))]
        colour[start] = grey
        while stack:
            node = next(stack[-1], None)
            if node is None:
                colour[path.pop()] = black
                stack.pop()
                continue
            if colour[node] == grey:
                return [*path[path.index(node):], node]
            if colour[node] == white:
                colour[node] = grey
                path.append(node)
                stack.append(iter(sorted(d for d in graph[node] if d in graph)))
    return None


def deploy_waves(graph: Mapping[str, Iterable[str]]) -> list[tuple[str, ...]]:
    """Group the nodes into waves: each node's dependencies are all in earlier waves.

    ``graph`` maps each node to the nodes it depends on; dependencies outside the graph are
    ignored. Each wave is sorted by name, so the order is stable. Raises CycleError on a cycle.
    """
    cycle = find_cycle(graph)
    if cycle is not None:
        raise CycleError(cycle)
    remaining = {node: {d for d in deps if d in graph and d != node} for node, deps in graph.items()}
    waves: list[tuple[str, ...]] = []
    done: set[str] = set()
    while remaining:
        wave = tuple(sorted(node for node, deps in remaining.items() if deps <= done))
        waves.append(wave)
        done.update(wave)
        for node in wave:
            del remaining[node]
    return waves


def dependents(graph: Mapping[str, Iterable[str]], failed: str) -> set[str]:
    """Every node that depends on ``failed``, directly or through others (not ``failed`` itself)."""
    reverse: dict[str, set[str]] = {}
    for node, deps in graph.items():
        for dep in deps:
            reverse.setdefault(dep, set()).add(node)
    seen: set[str] = set()
    todo = [failed]
    while todo:
        for node in reverse.get(todo.pop(), ()):
            if node not in seen:
                seen.add(node)
                todo.append(node)
    return seen
