"""Environment files and the checks that span manifests: components, dependencies, references.

``environments/<environment>.yaml`` (schema: manifests_schema/environment-v1beta.json) names an
environment's components, its target, its environment-wide overrides and, for pull_request,
the environment its previews copy (preview_of). Every environment, with a file or implicit
(every service with a manifest for it), is then checked as a whole: each component's
depends_on and ``${service.output}`` references name components of the same environment that
record that output, and the dependencies have no cycle. Problems are ManifestErrors at
file:line like the manifests' own; a repo without environments/ and without dependencies
costs nothing here.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.core import naming

from . import yamlsafe
from .model import Manifest, ManifestError
from .schema import environment_schema
from .topology import (
    COLOURS,
    DEFAULT_KEEP_PREVIOUS,
    ENVIRONMENTS_DIR,
    BlueGreen,
    Kind,
    Topology,
    find_cycle,
    parse_duration,
    references,
)

ENVIRONMENT_SUFFIXES = (".yaml", ".yml")
MAX_ENVIRONMENT_BYTES = 256 * 1024
PULL_REQUEST_ENVIRONMENT = naming.PULL_REQUEST_ENVIRONMENT

Position = tuple[int | None, int | None]


@dataclass
class EnvironmentFile:
    """One environment file as read: its topology when its own content is valid, and positions."""

    name: str
    path: str
    topology: Topology | None
    errors: list[ManifestError]
    node: Any = None
    explicit_components: bool = False  # the file lists components (else: every service with a manifest)

    def where(self, path: tuple[str | int, ...]) -> Position:
        if self.node is None:
            return None, None
        target, _ = yamlsafe.node_at(self.node, path)
        return (None, None) if target is None else yamlsafe.position(target.start_mark)

    def error(self, path: tuple[str | int, ...], message: str) -> ManifestError:
        line, column = self.where(path)
        return ManifestError(self.path, line, column, yamlsafe.format_field(path), message)


@dataclass
class EnvironmentsResult:
    """What the environment checks found: valid topologies, invalid environment names, errors."""

    topologies: dict[str, Topology] = field(default_factory=dict)  # every file that parsed, valid or not
    invalid: set[str] = field(default_factory=set)
    files: dict[str, str] = field(default_factory=dict)  # environment name -> its file's path
    errors: list[ManifestError] = field(default_factory=list)


# --- reading environments/ -----------------------------------------------------------------


def read_environment_files(root: Path) -> tuple[list[EnvironmentFile], list[ManifestError]]:
    """Every environments/<name>.yaml of the tree, read and checked on its own (schema, name)."""
    folder = root / ENVIRONMENTS_DIR
    errors: list[ManifestError] = []
    if os.path.islink(folder):
        errors.append(ManifestError(ENVIRONMENTS_DIR, None, None, "", "is a symlink; it must be a real folder"))
        return [], errors
    if not folder.is_dir():
        if folder.exists():
            errors.append(ManifestError(ENVIRONMENTS_DIR, None, None, "", "is a file; it must be a folder"))
        return [], errors
    by_name: dict[str, list[str]] = {}
    files: list[EnvironmentFile] = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        stem, suffix = os.path.splitext(entry.name)
        if suffix not in ENVIRONMENT_SUFFIXES:
            continue  # a README or notes beside the files
        rel = f"{ENVIRONMENTS_DIR}/{entry.name}"
        if entry.is_symlink():
            errors.append(ManifestError(rel, None, None, "", "is a symlink; environment files must be regular files"))
            continue
        if not entry.is_file(follow_symlinks=False):
            errors.append(ManifestError(rel, None, None, "", "is not a regular file"))
            continue
        problem = naming.environment_problem(stem)
        if problem:
            errors.append(ManifestError(rel, 1, 1, "", f"environment {stem!r} {problem}"))
            continue
        by_name.setdefault(stem, []).append(rel)
        files.append(_read_one(root, stem, rel))
    for name, paths in by_name.items():
        if len(paths) > 1:
            for path in paths:
                others = ", ".join(p for p in paths if p != path)
                errors.append(
                    ManifestError(path, 1, 1, "", f"environment {name!r} has more than one file (also {others}); "
                                                  "keep exactly one")
                )
            for env_file in files:
                if env_file.name == name:
                    env_file.topology = None
    return files, errors


def _read_one(root: Path, name: str, rel: str) -> EnvironmentFile:
    env_file = EnvironmentFile(name, rel, None, [])
    try:
        text = yamlsafe.read_text(os.path.join(root, rel), MAX_ENVIRONMENT_BYTES)
        document = yamlsafe.load_document(text)
    except yamlsafe.ReadError as exc:
        env_file.errors.append(ManifestError(rel, exc.problem.line, exc.problem.column, "", exc.problem.message))
        return env_file
    env_file.node = document.node
    for problem in document.problems:
        env_file.errors.append(ManifestError(rel, problem.line, problem.column, problem.field, problem.message))
    data = document.data
    if data is None:
        env_file.errors.append(ManifestError(rel, 1, 1, "", "is empty; an environment file starts with "
                                                            "'version: v1beta'"))
        return env_file
    if not isinstance(data, dict):
        env_file.errors.append(env_file.error((), "must be a mapping of keys to values"))
        return env_file
    reported = {problem.field for problem in document.problems}
    for problem in environment_schema("v1beta").problems(data):
        if yamlsafe.format_field(problem.path) in reported:
            continue
        line, column = env_file.where(problem.path)
        if problem.at_key:
            key = yamlsafe.key_node_at(env_file.node, problem.path)
            if key is not None:
                line, column = yamlsafe.position(key.start_mark)
        env_file.errors.append(ManifestError(rel, line, column, yamlsafe.format_field(problem.path), problem.message))
    if env_file.errors:
        return env_file
    overrides = data.get("overrides", {}).get("app", {})
    blue_green = None
    if "blue_green" in data:
        spec = data["blue_green"]
        blue_green = BlueGreen(entry=spec["entry"],
                               keep_previous=parse_duration(spec.get("keep_previous", DEFAULT_KEEP_PREVIOUS)),
                               approvers=tuple(spec.get("release_approvers") or ()),
                               colours={colour: {service: {k: _text(v) for k, v in values.items()}
                                                 for service, values in by_service.items()}
                                        for colour, by_service in (spec.get("colours") or {}).items()})
    env_file.topology = Topology(
        name=name,
        components=tuple(data["components"]) if "components" in data else (),
        target=data.get("target"),
        overrides={k: _text(v) for k, v in overrides.items()},
        preview_of=data.get("preview_of"),
        path=rel,
        blue_green=blue_green,
    )
    env_file.explicit_components = "components" in data
    return env_file


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --- checking every environment --------------------------------------------------------------


@dataclass(frozen=True)
class Marked:
    """A valid manifest with the positions of its depends_on entries and reference values."""

    manifest: Manifest
    marks: Mapping[str, Position]

    def error(self, field_name: str, message: str) -> ManifestError:
        line, column = self.marks.get(field_name, (None, None))
        return ManifestError(self.manifest.path, line, column, field_name, message)


def check_environments(
    files: Sequence[EnvironmentFile],
    manifests: Iterable[Marked],
    targets: Iterable[str] | None,
    broken: Mapping[tuple[str, str], str] | None = None,
) -> EnvironmentsResult:
    """Check every environment as a whole; ``targets`` None leaves target names unchecked.

    ``broken`` maps (service, environment) to the path of a manifest that has errors of its own:
    what names it is told so, not that the service is unknown.
    """
    result = EnvironmentsResult()
    broken = broken or {}
    broken_services = {service for service, _ in broken}
    by_key: dict[tuple[str, str], Marked] = {}
    services: dict[str, list[str]] = {}
    for marked in manifests:
        m = marked.manifest
        by_key[(m.service_name, m.environment)] = marked
        services.setdefault(m.service_name, []).append(m.environment)
    environments = {e for _, e in by_key}
    known_targets = None if targets is None else sorted(set(targets))
    valid_files = {f.name: f for f in files if f.topology is not None}
    for env_file in files:
        result.files[env_file.name] = env_file.path
        result.errors.extend(env_file.errors)
        if env_file.topology is None:
            result.invalid.add(env_file.name)

    errors: list[ManifestError] = []
    # Unknown services named by a manifest, whatever the environment.
    for marked in by_key.values():
        m = marked.manifest
        for index, dep in enumerate(m.depends_on):
            if dep not in services and dep not in broken_services:
                errors.append(marked.error(f"depends_on[{index}]", f"depends_on[{index}]: unknown service {dep!r} "
                                                                   "(no manifest in services/ has that name)"))
        for field_name, service, output in _manifest_references(m):
            if service not in services and service not in broken_services:
                errors.append(marked.error(field_name, f"{field_name}: ${{{service}.{output}}} names an unknown "
                                                       f"service {service!r} (no manifest in services/ has that name)"))

    for name in sorted(environments | set(valid_files)):
        env_file = valid_files.get(name)
        found = _check_one(name, env_file, valid_files, by_key, services, environments, known_targets, broken)
        if found:
            errors.extend(found)
            result.invalid.add(name)
        if env_file is not None:
            result.topologies[name] = _completed(env_file, by_key, valid_files)
    for name in sorted(environments):
        errors.extend(_manifest_blue_green(name, by_key, result))
    seen: set[ManifestError] = set()
    for error in errors:
        if error not in seen:
            seen.add(error)
            result.errors.append(error)
    # An environment whose components' manifests have unknown dependencies cannot run either.
    with_errors = {e.path for e in errors}
    for marked in by_key.values():
        if marked.manifest.path in with_errors:
            result.invalid.add(marked.manifest.environment)
    return result


def _manifest_references(m: Manifest) -> list[tuple[str, str, str]]:
    """(field, service, output) of every reference in the manifest's overrides."""
    found = []
    for level, values in (("app", m.app_overrides), ("deployment", m.deployment_overrides)):
        for key, value in values.items():
            if "${" in value:
                for service, output in references(value):
                    found.append((yamlsafe.format_field(("overrides", level, key)), service, output))
    return found


def _components(
    name: str,
    env_file: EnvironmentFile | None,
    valid_files: Mapping[str, EnvironmentFile],
    by_key: Mapping[tuple[str, str], Marked],
) -> list[str]:
    if env_file is not None and env_file.explicit_components:
        return list(env_file.topology.components)  # type: ignore[union-attr]
    own = sorted(s for s, e in by_key if e == name)
    preview_of = env_file.topology.preview_of if env_file is not None and env_file.topology else None
    if preview_of is not None:
        base = valid_files.get(preview_of)
        base_components = _components(preview_of, base, valid_files, by_key) if preview_of != name else []
        return sorted(set(own) | set(base_components))
    return own


def _manifest_in(name: str, service: str, preview_of: str | None, by_key: Mapping[tuple[str, str], Marked]):
    found = by_key.get((service, name))
    if found is None and preview_of is not None:
        found = by_key.get((service, preview_of))
    return found


def _check_one(
    name: str,
    env_file: EnvironmentFile | None,
    valid_files: Mapping[str, EnvironmentFile],
    by_key: Mapping[tuple[str, str], Marked],
    services: Mapping[str, list[str]],
    environments: set[str],
    known_targets: list[str] | None,
    broken: Mapping[tuple[str, str], str],
) -> list[ManifestError]:
    errors: list[ManifestError] = []
    topology = env_file.topology if env_file is not None else None
    preview_of = topology.preview_of if topology is not None else None
    if env_file is not None and topology is not None:
        if topology.target is not None and known_targets is not None and topology.target not in known_targets:
            shown = ", ".join(known_targets) or "none configured"
            errors.append(env_file.error(("target",), f"target: unknown target {topology.target!r} (known: {shown})"))
        if preview_of is not None:
            if name != PULL_REQUEST_ENVIRONMENT:
                errors.append(env_file.error(("preview_of",), "preview_of: only the pull_request environment can "
                                                              "be a preview of another environment"))
                preview_of = None
            elif preview_of == name or (preview_of not in environments and preview_of not in valid_files):
                what = "itself" if preview_of == name else f"{preview_of!r}, which has no file and no manifest"
                errors.append(env_file.error(("preview_of",), f"preview_of: names {what}"))
                preview_of = None
    components = _components(name, env_file, valid_files, by_key)
    in_environment = set(components)
    if env_file is not None and env_file.explicit_components:
        for index, service in enumerate(components):
            if (service, name) in broken:
                errors.append(env_file.error(("components", index), f"components[{index}]: the manifest of "
                                                                    f"{service!r}, {broken[(service, name)]}, has "
                                                                    "errors"))
            elif service not in services:
                errors.append(env_file.error(("components", index), f"components[{index}]: unknown service "
                                                                    f"{service!r} (no manifest in services/ has that "
                                                                    "name)"))
            elif _manifest_in(name, service, preview_of, by_key) is None:
                has = ", ".join(services[service])
                errors.append(env_file.error(("components", index), f"components[{index}]: {service!r} has no "
                                                                    f"manifest for environment {name!r} (it has: "
                                                                    f"{has})"))
    if env_file is not None and not components:
        errors.append(env_file.error((), f"environment {name!r} has no components: no service has a manifest for it"))
    blue_green = topology.blue_green if topology is not None else None
    if env_file is not None and blue_green is not None:
        errors.extend(_blue_green_problems(name, env_file, blue_green, components))

    graph: dict[str, set[str]] = {}
    edges: dict[tuple[str, str], tuple[Marked, str]] = {}
    for service in components:
        marked = _manifest_in(name, service, preview_of, by_key)
        if marked is None:
            continue
        m = marked.manifest
        deps = graph.setdefault(service, set())
        own = m.environment == name  # a preview's borrowed components were checked in their own environment
        for index, dep in enumerate(m.depends_on):
            field_name = f"depends_on[{index}]"
            edges.setdefault((service, dep), (marked, field_name))
            if dep not in services:
                continue  # reported once, above
            if dep not in in_environment:
                if own:
                    errors.append(marked.error(field_name, f"{field_name}: {dep!r} "
                                                           f"{_missing(name, dep, env_file, services)}"))
                continue
            deps.add(dep)
        for field_name, dep, output in _manifest_references(m):
            if dep not in services or dep == service:
                continue
            if dep not in in_environment:
                if own:
                    errors.append(marked.error(field_name, f"{field_name}: ${{{dep}.{output}}} names {dep!r}, which "
                                                           f"{_missing(name, dep, env_file, services)}"))
                continue
            edges.setdefault((service, dep), (marked, field_name))
            deps.add(dep)
            problem = _output_problem(name, dep, output, preview_of, by_key)
            if problem and own:
                errors.append(marked.error(field_name, f"{field_name}: {problem}"))
    if topology is not None:
        for key, value in topology.overrides.items():
            for dep, output in references(value):
                path = ("overrides", "app", key)
                if dep not in services:
                    errors.append(env_file.error(path, f"overrides.app.{key}: ${{{dep}.{output}}} names an unknown "  # type: ignore[union-attr]
                                                       f"service {dep!r}"))
                elif dep not in in_environment:
                    errors.append(env_file.error(path, f"overrides.app.{key}: ${{{dep}.{output}}} names {dep!r}, "  # type: ignore[union-attr]
                                                       f"which is not a component of environment {name!r}"))
                else:
                    problem = _output_problem(name, dep, output, preview_of, by_key)
                    if problem:
                        errors.append(env_file.error(path, f"overrides.app.{key}: {problem}"))  # type: ignore[union-attr]
                    # Every application of the environment then depends on dep.
                    for service in components:
                        marked = _manifest_in(name, service, preview_of, by_key)
                        if marked is not None and service != dep and marked.manifest.kind is Kind.APPLICATION:
                            graph.setdefault(service, set()).add(dep)
    cycle = find_cycle(graph)
    if cycle is not None:
        files = []
        for a, b in itertools.pairwise(cycle):
            marked, _ = edges.get((a, b), (_manifest_in(name, a, preview_of, by_key), ""))
            if marked is not None:
                files.append(marked.manifest.path)
        shown = " -> ".join(cycle)
        listed = ", ".join(dict.fromkeys(files))
        for a, b in itertools.pairwise(cycle):
            found = edges.get((a, b))
            message = f"dependency cycle in environment {name!r}: {shown} (files: {listed})"
            if found is not None:
                marked, field_name = found
                errors.append(marked.error(field_name, f"{field_name}: {message}"))
            elif env_file is not None:
                errors.append(env_file.error(("overrides", "app"), message))
    return errors


def _blue_green_problems(name: str, env_file: EnvironmentFile, blue_green: BlueGreen,
                         components: Sequence[str]) -> list[ManifestError]:
    """The entry must be a component; the pull request environment has no colours; every colour's
    deployment name must stay a DNS label; a team among the approvers is named by its slug; no approver twice."""
    errors = [env_file.error(("blue_green",), problem) for problem in _colours_problems(name, components)]
    if blue_green.entry not in components:
        shown = ", ".join(components) or "none"
        errors.append(env_file.error(("blue_green", "entry"), f"blue_green.entry: {blue_green.entry!r} is not a "
                                                              f"component of environment {name!r} (its components: "
                                                              f"{shown})"))
    for colour, by_service in blue_green.colours.items():
        for service in by_service:
            if service not in components:
                errors.append(env_file.error(("blue_green", "colours", colour, service), (
                    f"blue_green.colours.{colour}: {service!r} is not a component of environment {name!r}")))
    seen: dict[str, int] = {}
    for index, entry in enumerate(blue_green.approvers):
        where = ("blue_green", "release_approvers", index)
        if entry.startswith("team:") and entry != entry.lower():
            errors.append(env_file.error(where, f"blue_green.release_approvers[{index}]: {entry!r}: GitHub's team "
                                                f"names here are the team's slug, in lowercase as in its URL "
                                                f"(team:{entry[len('team:'):].lower()})"))
        key = entry if entry.startswith("token:") else entry.lower()  # logins and teams ignore case on GitHub
        if key in seen:
            errors.append(env_file.error(where, f"blue_green.release_approvers[{index}]: {entry!r} is listed "
                                                f"already (release_approvers[{seen[key]}])"))
        seen.setdefault(key, index)
    return errors


def _colours_problems(name: str, components: Sequence[str]) -> list[str]:
    """Why environment ``name`` cannot have colours: the pull request environment has none, and every
    colour's deployment name must stay a DNS label (the first that would not)."""
    problems = []
    if name == PULL_REQUEST_ENVIRONMENT:
        problems.append("blue_green: the pull_request environment is not released blue-green (its previews follow "
                        "their pull request)")
    for service in components:
        problem = naming.name_length_problem(service, f"{name}-{max(COLOURS, key=len)}")
        if problem is not None:
            problems.append(f"blue_green: {problem} (the colours add -blue and -green to the environment)")
            break
    return problems


def _manifest_blue_green(name: str, by_key: Mapping[tuple[str, str], Marked],
                         result: EnvironmentsResult) -> list[ManifestError]:
    """A manifest's own ``blue_green``: when its environment has no file, that environment (every service
    with a manifest for it) is released blue-green with the manifest's service as the entry. One manifest
    per environment may say it; an environment with a file says it there."""
    saying = [by_key[key] for key in sorted(by_key) if key[1] == name and by_key[key].manifest.blue_green]
    if not saying:
        return []
    errors = []
    if name in result.files:
        errors = [marked.error("blue_green", f"blue_green: environment {name!r} has a file ({result.files[name]}): "
                                             "say blue_green there") for marked in saying]
    elif len(saying) > 1:
        paths = ", ".join(marked.manifest.path for marked in saying)
        errors = [marked.error("blue_green", f"blue_green: more than one manifest of environment {name!r} says it "
                                             f"({paths}); one entry per environment") for marked in saying]
    else:
        marked = saying[0]
        components = tuple(sorted(service for service, environment in by_key if environment == name))
        errors = [marked.error("blue_green", problem) for problem in _colours_problems(name, components)]
        if not errors:
            result.topologies[name] = Topology(name=name, components=components,
                                               blue_green=marked.manifest.blue_green)
    if errors:
        result.invalid.add(name)
    return errors


def _missing(name: str, dep: str, env_file: EnvironmentFile | None, services: Mapping[str, list[str]]) -> str:
    """Why dep is not in the environment, naming the file that decides it."""
    if env_file is not None and env_file.explicit_components:
        return f"is not a component of environment {name!r} ({env_file.path} does not list it)"
    has = ", ".join(f"services/{dep}/.../{e}" for e in services.get(dep, ()))
    return f"is not a component of environment {name!r}: it has no manifest for it (it has {has})"


def _output_problem(
    name: str, service: str, output: str, preview_of: str | None, by_key: Mapping[tuple[str, str], Marked]
) -> str | None:
    marked = _manifest_in(name, service, preview_of, by_key)
    if marked is None:
        return None
    recorded = marked.manifest.outputs
    if output in recorded:
        return None
    shown = ", ".join(recorded) or "nothing"
    return f"${{{service}.{output}}}: {marked.manifest.path} records no {output!r} (it records: {shown})"


def _completed(
    env_file: EnvironmentFile, by_key: Mapping[tuple[str, str], Marked], valid_files: Mapping[str, EnvironmentFile]
) -> Topology:
    """The file's topology with its components filled in when the file leaves them implicit."""
    topology = env_file.topology
    assert topology is not None
    if env_file.explicit_components:
        return topology
    return Topology(
        name=topology.name,
        components=tuple(_components(topology.name, env_file, valid_files, by_key)),
        target=topology.target,
        overrides=topology.overrides,
        preview_of=topology.preview_of,
        path=topology.path,
        blue_green=topology.blue_green,
    )
