"""Load a deployments repo tree: find every sami.yaml, validate it, return typed manifests.

Pipeline per file: bounded read -> YAML with positions -> JSON Schema -> checks that need
the tree (layout, referenced files, every entry of the manifest's folder, control scripts)
-> frozen Manifest. Every problem is collected as a ManifestError; nothing raises for bad
content.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from bot.core import naming

from . import environments, folder, yamlsafe
from .model import (
    DEFAULT_PR_TAG,
    MAX_BRANCH_IN_TAG,
    MAX_DEPLOYMENT_NAME,
    MAX_DEPLOYMENT_NAMES,
    PR_TAG_PLACEHOLDERS,
    SHORT_SHA,
    URL_PLACEHOLDERS,
    DeploymentsRepo,
    ExternalCheck,
    Health,
    ImageUpdate,
    Manifest,
    ManifestError,
    PrDeploy,
    ServiceType,
)
from .parallel import map_chunks
from .schema import ManifestSchema, manifest_schema
from .topology import DEFAULT_KEEP_PREVIOUS, BlueGreen, Kind, ThirdPartyMode, parse_duration

log = logging.getLogger(__name__)

MANIFEST_NAMES = ("sami.yaml", "sami.yml")
SERVICES_DIR = "services"
MAX_MANIFEST_BYTES = 256 * 1024
MAX_REFERENCED_YAML_BYTES = 1024 * 1024
DEFAULT_HEALTH_TIMEOUT = 10
DEFAULT_DEPLOY_LABEL = "sami:deploy"
STANDARD_ENVIRONMENTS = naming.STANDARD_ENVIRONMENTS
PULL_REQUEST_ENVIRONMENT = naming.PULL_REQUEST_ENVIRONMENT

_PREVIEW_NAME_RE = re.compile(r"(.+)-pr-[0-9]+")
# Entries walked in a manifest's folder or a control_scripts folder.
MAX_FOLDER_ENTRIES = folder.MAX_FOLDER_ENTRIES
_TYPES = tuple(t.value for t in ServiceType)
_SINGLE_LINE_FIELDS = ("service_name", "repository", "image", "deploy_label", "url")
# Placeholders of an internal third-party service's endpoint template.
ENDPOINT_PLACEHOLDERS = ("name", "service", "environment", "namespace")
_HOST_PORT_RE = re.compile(
    r"(?:(?P<name>[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*)"
    r"|\[(?P<v6>[0-9A-Fa-f:.]+)\]):(?P<port>[0-9]{1,5})"
)
# Manifests in a folder tree are spread over worker processes above this count.
PARALLEL_THRESHOLD = 2_000

Path_ = tuple[str | int, ...]


def is_valid_environment(name: str) -> bool:
    """True for stage, production, pull_request and other DNS labels (bot.core.naming's rule).

    Other names are lowercase letters, digits and '-' starting with a letter, not ending with
    '-', without '--', and not pr-<number> (reserved for pull request deployments).
    """
    return naming.environment_problem(name) is None


def max_deployment_name(type_name: str) -> int:
    """Longest deployment name a target accepts (Helm release names: 53 characters)."""
    return MAX_DEPLOYMENT_NAMES.get(type_name, MAX_DEPLOYMENT_NAME)


def _optional_duration(data: dict[str, Any], key: str) -> int | None:
    return parse_duration(data[key]) if key in data else None


def _override_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True)
class Candidate:
    """A sami.yaml found at the right depth, with the names present in its folder."""

    rel_dir: str
    filename: str
    listing: dict[str, tuple[bool, bool]]  # name -> (is_symlink, is_dir), not following links
    plain: bool = False  # the folder holds regular files only: walking it can find nothing

    @property
    def rel_path(self) -> str:
        return f"{self.rel_dir}/{self.filename}"


@dataclass(frozen=True)
class FileResult:
    """Outcome of one sami.yaml: a manifest when valid, its errors, where service_name is.

    ``marks`` places the fields the environment checks may report on (depends_on entries,
    override values holding references): (field, line, column) each.
    """

    candidate: Candidate
    manifest: Manifest | None
    errors: tuple[ManifestError, ...]
    anchor: tuple[int, int]
    marks: tuple[tuple[str, int | None, int | None], ...] = ()


# --- discovery --------------------------------------------------------------------------


def discover(root: Path) -> tuple[list[Candidate], list[ManifestError]]:
    """Find every sami.yaml under services/, reporting the ones that cannot be manifests."""
    errors: list[ManifestError] = []
    services = root / SERVICES_DIR
    if os.path.islink(services):
        errors.append(ManifestError(SERVICES_DIR, None, None, "", "is a symlink; it must be a real folder"))
        return [], errors
    if not services.is_dir():
        errors.append(
            ManifestError(
                SERVICES_DIR,
                None,
                None,
                "",
                "no services/ folder at the root of the deployments repo; manifests go in "
                "services/<service>/<type>/<environment>/sami.yaml",
            )
        )
        return [], errors
    candidates: list[Candidate] = []
    stack: list[tuple[str, str, int]] = [(str(services), SERVICES_DIR, 0)]
    while stack:
        abs_dir, rel_dir, depth = stack.pop()
        try:
            entries = list(os.scandir(abs_dir))
        except OSError as exc:
            errors.append(ManifestError(rel_dir, None, None, "", f"cannot be read: {exc.strerror}"))
            continue
        listing: dict[str, tuple[bool, bool]] = {}
        manifests_here: list[str] = []
        plain = True
        for entry in entries:
            name = entry.name
            rel = f"{rel_dir}/{name}"
            is_link = entry.is_symlink()
            is_dir = not is_link and entry.is_dir(follow_symlinks=False)
            listing[name] = (is_link, is_dir)
            if is_link or is_dir or not entry.is_file(follow_symlinks=False):
                plain = False
            if name in MANIFEST_NAMES:
                if is_link:
                    errors.append(ManifestError(rel, None, None, "", "is a symlink; manifests must be regular files"))
                elif is_dir:
                    errors.append(ManifestError(rel, None, None, "", "is a folder, not a file"))
                elif depth == 3:
                    manifests_here.append(name)
                else:
                    errors.append(ManifestError(rel, None, None, "", _wrong_depth(rel_dir, name)))
            elif is_dir:
                stack.append((entry.path, rel, depth + 1))
            elif is_link and depth < 3 and os.path.isdir(entry.path):
                errors.append(
                    ManifestError(
                        rel,
                        None,
                        None,
                        "",
                        "is a symlinked folder; Sami does not follow symlinks in the "
                        "services/<service>/<type>/<environment> levels, use a real folder",
                    )
                )
        for name in manifests_here:
            candidates.append(Candidate(rel_dir, name, listing, plain))
    candidates.sort(key=lambda c: c.rel_path)
    return candidates, errors


def _wrong_depth(rel_dir: str, name: str) -> str:
    levels = rel_dir.count("/")
    where = "directly in services/" if levels == 0 else f"{levels} folder(s) below services/"
    return (
        f"is {where}; a manifest must be at "
        f"services/<service>/<type>/<environment>/{name} (exactly 3 folders below services/)"
    )


# --- one manifest -----------------------------------------------------------------------


class _Context:
    """Collects errors for one file, resolving value paths to positions."""

    def __init__(self, rel_path: str, node: yaml.Node | None) -> None:
        self.rel_path = rel_path
        self.node = node
        self.errors: list[ManifestError] = []

    def where(self, path: Path_, at_key: bool = False) -> tuple[int | None, int | None]:
        if self.node is None:
            return None, None
        if at_key:
            key = yamlsafe.key_node_at(self.node, path)
            if key is not None:
                return yamlsafe.position(key.start_mark)
        target, _ = yamlsafe.node_at(self.node, path)
        if target is None:
            return None, None
        return yamlsafe.position(target.start_mark)

    def add(self, path: Path_, message: str, at_key: bool = False) -> None:
        line, column = self.where(path, at_key)
        self.errors.append(ManifestError(self.rel_path, line, column, yamlsafe.format_field(path), message))

    def add_problem(self, problem: yamlsafe.Problem) -> None:
        self.errors.append(ManifestError(self.rel_path, problem.line, problem.column, problem.field, problem.message))


class _Tree:
    """The repository tree being checked (for paths that manifests reference)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.real_root = os.path.realpath(root)
        self._path_cache: dict[tuple[str, str], str | None] = {}
        self._folder_cache: dict[str, tuple[folder.FolderProblem, ...]] = {}

    def inside(self, real: str) -> bool:
        return real == self.real_root or real.startswith(self.real_root + os.sep)

    def check_path(
        self, rel_base: str, entry: str, listing: dict[str, tuple[bool, bool]] | None
    ) -> tuple[str | None, str | None, str]:
        """Return (kind, problem, usable path); kind is 'file' or 'dir' when entry is usable.

        Symlinks are followed only while they stay inside the repo.
        """
        full = os.path.join(self.root, rel_base, entry) if rel_base else os.path.join(self.root, entry)
        if listing is not None and "/" not in entry and entry in listing:
            is_link, is_dir = listing[entry]
            if not is_link:
                return ("dir" if is_dir else "file"), None, full
        if not os.path.lexists(full):
            where = f"{rel_base}/" if rel_base else "the root of the deployments repo"
            return None, f"{entry!r} does not exist in {where}", full
        real = os.path.realpath(full)
        if not self.inside(real):
            return (
                None,
                f"{entry!r} is a symlink pointing outside the deployments repo; refused",
                full,
            )
        if not os.path.exists(real):
            return None, f"{entry!r} is a broken symlink", full
        return ("dir" if os.path.isdir(real) else "file"), None, real

    def folder_problems(self, rel_dir: str) -> tuple[folder.FolderProblem, ...]:
        """What is wrong in a folder of the repo (see folder.scan_folder); memoised by folder.

        Control scripts folders are usually shared by many manifests, so each is walked once.
        """
        if rel_dir not in self._folder_cache:
            scan = folder.scan_folder(self.root, rel_dir, limit=MAX_FOLDER_ENTRIES)
            self._folder_cache[rel_dir] = scan.problems
        return self._folder_cache[rel_dir]

    def image_path_problem(self, full: str, dotted: str) -> str | None:
        """Why dotted does not resolve in the YAML file (None when it does); memoised by text.

        Environments of a service usually share identical stack files, so the result is
        cached by file content; node graphs are not kept (they would burden the collector).
        """
        try:
            text = yamlsafe.read_text(full, MAX_REFERENCED_YAML_BYTES)
        except yamlsafe.ReadError as exc:
            return _file_problem(exc.problem)
        key = (text, dotted)
        if key not in self._path_cache:
            try:
                node = yamlsafe.compose(text)
            except yamlsafe.ReadError as exc:
                self._path_cache[key] = _file_problem(exc.problem)
            else:
                self._path_cache[key] = image_path_problem(node, dotted)
        return self._path_cache[key]


_FILE_PROBLEM = "the file "


def _file_problem(problem: yamlsafe.Problem) -> str:
    where = f" (line {problem.line}, column {problem.column})" if problem.line else ""
    return f"{_FILE_PROBLEM}{problem.message}{where}"


def load_manifest_file(tree: _Tree, candidate: Candidate, schema: ManifestSchema) -> FileResult:
    """Read, validate and type one sami.yaml; never raises for bad content."""
    try:
        return _load_manifest_file(tree, candidate, schema)
    except Exception as exc:  # a bug must not hide the other manifests' results
        log.exception("unexpected failure while checking %s", candidate.rel_path)
        error = ManifestError(candidate.rel_path, None, None, "", f"could not be checked: {type(exc).__name__}: {exc}")
        return FileResult(candidate, None, (error,), (1, 1))


def _load_manifest_file(tree: _Tree, candidate: Candidate, schema: ManifestSchema) -> FileResult:
    rel_path = candidate.rel_path
    full = os.path.join(tree.root, rel_path)
    try:
        text = yamlsafe.read_text(full, MAX_MANIFEST_BYTES)
        document = yamlsafe.load_document(text)
    except yamlsafe.ReadError as exc:
        problem = exc.problem
        error = ManifestError(rel_path, problem.line, problem.column, "", problem.message)
        return FileResult(candidate, None, (error,), (problem.line or 1, problem.column or 1))
    ctx = _Context(rel_path, document.node)
    for problem in document.problems:
        ctx.add_problem(problem)
    data = document.data
    if data is None:
        ctx.errors.append(ManifestError(rel_path, 1, 1, "", "is empty; a manifest starts with 'version: v1beta'"))
        return FileResult(candidate, None, tuple(ctx.errors), (1, 1))
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else "a single value"
        ctx.add((), f"must be a mapping of keys to values (found {kind})")
        return FileResult(candidate, None, tuple(ctx.errors), (1, 1))

    bad_fields: set[str | int] = set()
    reported = {problem.field for problem in document.problems}
    for problem in schema.problems(data):
        if yamlsafe.format_field(problem.path) in reported:
            continue  # e.g. an unsupported tag: its value is already reported
        ctx.add(problem.path, problem.message, problem.at_key)
        if problem.path:
            bad_fields.add(problem.path[0])
    _check_tree_rules(tree, candidate, data, bad_fields, ctx)
    anchor_pos = _anchor(document.node)
    if ctx.errors:
        return FileResult(candidate, None, tuple(ctx.errors), anchor_pos)
    return FileResult(candidate, _build_manifest(candidate, data), (), anchor_pos, _marks(ctx, data))


def _marks(ctx: _Context, data: dict[str, Any]) -> tuple[tuple[str, int | None, int | None], ...]:
    """Positions of the depends_on entries and of the override values that hold references."""
    paths: list[Path_] = [("depends_on", index) for index in range(len(data.get("depends_on", ())))]
    if "blue_green" in data:
        paths.append(("blue_green",))
    for level in ("app", "deployment"):
        for key, value in data.get("overrides", {}).get(level, {}).items():
            if isinstance(value, str) and "${" in value:
                paths.append(("overrides", level, key))
    return tuple((yamlsafe.format_field(path), *ctx.where(path)) for path in paths)


def _anchor(root: yaml.Node | None) -> tuple[int, int]:
    # Where duplicate-manifest errors point: the service_name value, else the first key.
    if isinstance(root, yaml.MappingNode):
        for key_node, value_node in root.value:
            if key_node.value == "service_name":
                return yamlsafe.position(value_node.start_mark)
        return yamlsafe.position(root.start_mark)
    return 1, 1


def _good(data: dict[str, Any], key: str, bad_fields: set[str | int], kind: type) -> bool:
    return key in data and key not in bad_fields and isinstance(data[key], kind)


def _check_tree_rules(
    tree: _Tree,
    candidate: Candidate,
    data: dict[str, Any],
    bad: set[str | int],
    ctx: _Context,
) -> None:
    _, service_dir, type_dir, environment = candidate.rel_dir.split("/")
    rel_dir = candidate.rel_dir

    for key in _SINGLE_LINE_FIELDS:
        if _good(data, key, bad, str) and ("\n" in data[key] or "\r" in data[key]):
            ctx.add((key,), f"{key}: must be a single line")
            bad.add(key)

    service_name = data["service_name"] if _good(data, "service_name", bad, str) else None
    if service_name is not None and service_name != service_dir:
        ctx.add(
            ("service_name",),
            f"service_name is {service_name!r} but the manifest is in services/{service_dir}/; "
            "the folder name must equal service_name",
        )
    if type_dir not in _TYPES:
        ctx.add(
            ("type",) if "type" in data else (),
            f"folder {type_dir!r} (services/{service_dir}/{type_dir}/) is not a service type; "
            f"use one of: {', '.join(_TYPES)}",
        )
    elif _good(data, "type", bad, str) and data["type"] != type_dir:
        ctx.add(
            ("type",),
            f"type is {data['type']!r} but the manifest is in the {type_dir!r} folder; the folder name must equal type",
        )
    environment_problem = naming.environment_problem(environment)
    if environment_problem:
        line, column = ctx.where(())
        message = f"environment folder {environment!r} {environment_problem}"
        if naming.RESERVED_ENVIRONMENT_RE.match(environment):
            message += "; pull request environments come from the pull_request folder"
        ctx.errors.append(ManifestError(candidate.rel_path, line, column, "", message))
    elif service_name is not None and environment != PULL_REQUEST_ENVIRONMENT:
        # Pull request names (<service>-pr-<n>) fit: service names are at most 40 characters.
        limit = max_deployment_name(type_dir)
        problem = naming.name_length_problem(service_name, environment, limit)
        if problem:
            target = f" ({type_dir} deployments are Helm releases)" if type_dir == "k8s" else ""
            ctx.add(("service_name",), f"{problem}{target}")

    # Every entry of the folder counts, named by a field or not: each run gets a copy of it all.
    walked = _Walked(tree, candidate)
    if _good(data, "files", bad, list):
        for index, entry in enumerate(data["files"]):
            found = walked.under(entry)
            for problem in found:
                ctx.add(("files", index), f"files[{index}]: {walked.describe(problem)}")
            if found:
                continue
            _, message, _ = tree.check_path(rel_dir, entry, candidate.listing)
            if message:
                ctx.add(("files", index), f"files[{index}]: {message}")

    if _good(data, "oob", bad, dict) and isinstance(data["oob"].get("update-image"), dict):
        _check_image_update(tree, candidate, data["oob"]["update-image"], ctx, walked)
    for problem in walked.unclaimed():
        ctx.errors.append(ManifestError(problem.path, None, None, "", problem.message))

    if _good(data, "control_scripts", bad, str):
        scripts = data["control_scripts"].rstrip("/")
        kind, problem, _ = tree.check_path("", scripts, None)
        if problem:
            ctx.add(("control_scripts",), f"control_scripts: {problem}")
        elif kind != "dir":
            ctx.add(("control_scripts",), "control_scripts: must be a folder of scripts")
        else:
            for problem in tree.folder_problems(scripts):
                ctx.add(("control_scripts",), f"control_scripts: {problem.path!r} {problem.message}")

    if _good(data, "url", bad, str):
        problem = url_template_problem(data["url"])
        if problem:
            ctx.add(("url",), f"url: {problem}")

    if _good(data, "pr_tag", bad, str):
        problem = pr_tag_template_problem(data["pr_tag"])
        if problem:
            ctx.add(("pr_tag",), f"pr_tag: {problem}")

    pr_deploy = data.get("pr_deploy", False)
    if "pr_deploy" not in bad and pr_deploy in (True, "label") and "repository" not in data:
        ctx.add(
            ("pr_deploy",),
            "pr_deploy is on but repository is missing; set repository: owner/name of the "
            "application repo whose pull requests are deployed",
        )

    secrets = set(data["secrets"]) if _good(data, "secrets", bad, list) else set()
    for level in ("app", "deployment"):
        if _good(data, "overrides", bad, dict) and isinstance(data["overrides"].get(level), dict):
            for key in data["overrides"][level]:
                if "\n" in key:
                    ctx.add(("overrides", level, key), "override keys must be a single line", True)
                elif key in secrets:
                    ctx.add(
                        ("overrides", level, key),
                        f"{key!r} is listed in secrets; its value comes from the secret store, not from overrides",
                        True,
                    )
        if _good(data, "allowed_overrides", bad, dict) and isinstance(data["allowed_overrides"].get(level), list):
            for index, key in enumerate(data["allowed_overrides"][level]):
                if key in secrets:
                    ctx.add(
                        ("allowed_overrides", level, index),
                        f"allowed_overrides.{level}[{index}]: {key!r} is a secret; requests may not override secrets",
                    )
                elif isinstance(key, str) and "\n" in key:
                    ctx.add(("allowed_overrides", level, index), "override keys must be a single line")
    if _good(data, "secrets", bad, list):
        for index, name in enumerate(data["secrets"]):
            if isinstance(name, str) and "\n" in name:
                ctx.add(("secrets", index), f"secrets[{index}]: must be a single line")
    _check_kind_rules(data, bad, service_name, ctx)


def _check_kind_rules(data: dict[str, Any], bad: set[str | int], service_name: str | None, ctx: _Context) -> None:
    """kind, mode, size, endpoint, check, seed and depends_on fit together."""
    kind = data.get("kind", Kind.APPLICATION.value)
    if "kind" in bad:
        return
    third_party = kind == Kind.THIRD_PARTY.value
    mode = data.get("mode", ThirdPartyMode.INTERNAL.value) if third_party else None
    if "mode" in data and not third_party:
        ctx.add(("mode",), "mode: only third-party services have a mode; add kind: third_party or remove mode", True)
    internal = mode == ThirdPartyMode.INTERNAL.value
    external = mode == ThirdPartyMode.EXTERNAL.value
    if "size" in data and not internal:
        what = "external ones are not provisioned" if external else "this is an application"
        ctx.add(("size",), f"size: only internal third-party services have a size ({what})", True)
    if "engine" in data and not internal:
        ctx.add(("engine",), "engine: only internal third-party services are provisioned by a built-in set", True)
    elif "engine" in data and "control_scripts" in data:
        ctx.add(("engine",), "engine: the built-in scripts of the engine and control_scripts exclude each other",
                True)
    elif "engine" in data and data.get("type") not in ("swarm", "k8s", None) and "type" not in bad:
        ctx.add(("engine",), f"engine: the built-in {data['engine']} sets run on swarm and k8s; type is "
                             f"{data['type']!r}", True)
    elif "engine" in data and "image" not in data:
        ctx.add(("engine",), "engine: needs image (e.g. local/redis); the tag comes with each deployment request")
    if data.get("seed") is True and not internal:
        ctx.add(("seed",), "seed: only internal third-party services are seeded", True)
    if "check" in data and not external:
        ctx.add(
            ("check",),
            "check: only external third-party services have a check here; applications use health",
            True,
        )
    if "endpoint" in data and not third_party:
        ctx.add(("endpoint",), "endpoint: only third-party services have an endpoint; applications have url", True)
    elif external and "endpoint" not in data and "mode" not in bad:
        ctx.add(("mode",), "an external third-party service needs endpoint: a host:port list, e.g. pay.example.com:443")
    elif third_party and "endpoint" in data and "endpoint" not in bad and "mode" not in bad:
        entries = _endpoint_entries(data["endpoint"])
        for index, entry in enumerate(entries):
            problem = _host_port_problem(entry) if external else _endpoint_template_problem(entry)
            if problem:
                where: Path_ = ("endpoint", index) if isinstance(data["endpoint"], list) else ("endpoint",)
                ctx.add(where, f"endpoint: {entry!r} {problem}")
    if external and _good(data, "check", bad, dict) and data["check"].get("type") == "http" and (
        "path" not in data["check"]
    ):
        ctx.add(("check",), "check: an http check needs path (e.g. /healthz)")
    if _good(data, "depends_on", bad, list) and service_name is not None:
        for index, name in enumerate(data["depends_on"]):
            if name == service_name:
                ctx.add(("depends_on", index), f"depends_on[{index}]: a service cannot depend on itself")


def _endpoint_entries(value: str | list[str]) -> list[str]:
    if isinstance(value, list):
        return [str(v).strip() for v in value]
    return [part.strip() for part in value.split(",")]


def _host_port_problem(entry: str) -> str | None:
    """Why entry is not host:port (None when it is)."""
    match = _HOST_PORT_RE.fullmatch(entry)
    if match is None:
        return "is not host:port (a DNS name, an IPv4 address or [IPv6], then ':' and a port)"
    if not 1 <= int(match.group("port")) <= 65535:
        return "has a port outside 1-65535"
    return None


def _endpoint_template_problem(entry: str) -> str | None:
    """Why an internal service's endpoint template is unusable (None when it is fine)."""
    try:
        parts = list(string.Formatter().parse(entry))
    except ValueError:
        return "has an unbalanced '{' or '}'"
    allowed = " ".join("{" + p + "}" for p in ENDPOINT_PLACEHOLDERS)
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        if name not in ENDPOINT_PLACEHOLDERS:
            return f"has the unknown placeholder {{{name}}} (allowed: {allowed})"
        if spec or conversion:
            return f"placeholder {{{name}}} must be written without ':' or '!' options"
    if any(c.isspace() for c in entry):
        return "must not contain spaces"
    return None


class _Walked:
    """The problems found in a manifest's folder, handed out to the fields that name them."""

    def __init__(self, tree: _Tree, candidate: Candidate) -> None:
        self.rel_dir = candidate.rel_dir
        # A folder of regular files only has nothing to find (most manifests): not walked again.
        if candidate.plain and len(candidate.listing) <= MAX_FOLDER_ENTRIES:
            self.problems: tuple[folder.FolderProblem, ...] = ()
        else:
            self.problems = tree.folder_problems(candidate.rel_dir)
        self.claimed: set[folder.FolderProblem] = set()

    def under(self, entry: Any) -> list[folder.FolderProblem]:
        """Problems at or below entry (a path relative to the manifest's folder); claimed."""
        if not self.problems or not isinstance(entry, str):
            return []
        prefix = f"{self.rel_dir}/{os.path.normpath(entry)}"
        found = [p for p in self.problems if p.path == prefix or p.path.startswith(prefix + "/")]
        self.claimed.update(found)
        return found

    def describe(self, problem: folder.FolderProblem) -> str:
        """The problem named from the manifest's folder, for a message at the field naming it."""
        return f"{problem.path.removeprefix(self.rel_dir + '/')!r} {problem.message}"

    def unclaimed(self) -> list[folder.FolderProblem]:
        """Problems no field named: reported at the entry's own path."""
        return [p for p in self.problems if p not in self.claimed]


def _check_image_update(
    tree: _Tree, candidate: Candidate, update: dict[str, Any], ctx: _Context, walked: _Walked
) -> None:
    file = update.get("file")
    dotted = update.get("path")
    if not isinstance(file, str) or not isinstance(dotted, str):
        return
    field = ("oob", "update-image", "file")
    found = walked.under(file)
    for problem in found:
        ctx.add(field, f"oob.update-image.file: {walked.describe(problem)}")
    if found:
        return
    kind, problem, full = tree.check_path(candidate.rel_dir, file, candidate.listing)
    if problem:
        ctx.add(field, f"oob.update-image.file: {problem}")
        return
    if kind != "file":
        ctx.add(field, f"oob.update-image.file: {file!r} is a folder; name a YAML file")
        return
    problem = tree.image_path_problem(full, dotted)
    if problem and problem.startswith(_FILE_PROBLEM):
        ctx.add(field, f"oob.update-image.file: {file}: {problem.removeprefix(_FILE_PROBLEM)}")
    elif problem:
        ctx.add(("oob", "update-image", "path"), f"oob.update-image.path: {problem} in {file}")


def image_path_problem(root: yaml.Node | None, dotted: str) -> str | None:
    """Why a dotted path does not lead to a single value in a YAML document (None when it does)."""
    node = root
    walked: list[str] = []
    for part in dotted.split("."):
        if isinstance(node, yaml.MappingNode):
            keys = [k.value for k, _ in node.value if isinstance(k, yaml.ScalarNode)]
            match = yamlsafe.node_at(node, (part,))
            if not match[1]:
                under = ".".join(walked) or "the top level"
                shown = ", ".join(keys[:10]) + (", ..." if len(keys) > 10 else "")
                return f"no key {part!r} under {under} (keys there: {shown or 'none'})"
            node = match[0]
        elif isinstance(node, yaml.SequenceNode):
            if not part.isdigit() or int(part) >= len(node.value):
                return f"{'.'.join(walked)} is a list of {len(node.value)}; {part!r} is no index"
            node = node.value[int(part)]
        else:
            where = ".".join(walked) or "the document"
            return f"{where} holds a single value, so {dotted!r} cannot be followed"
        walked.append(part)
    if not isinstance(node, yaml.ScalarNode):
        return f"{dotted!r} is a {'list' if isinstance(node, yaml.SequenceNode) else 'mapping'}, not an image reference"
    return None


def url_template_problem(template: str) -> str | None:
    """Why a url template is unusable (None when it is fine)."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError:
        return "has an unbalanced '{' or '}'; write {{ or }} for a literal brace"
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        if name not in URL_PLACEHOLDERS:
            shown = "{" + name + "}"
            return f"unknown placeholder {shown} (allowed: " + " ".join("{" + p + "}" for p in URL_PLACEHOLDERS) + ")"
        if spec or conversion:
            return f"placeholder {{{name}}} must be written without ':' or '!' options"
    if not template.startswith(("http://", "https://")):
        return "must start with http:// or https://"
    return None


# The longest text each pr_tag placeholder can become.
_PR_TAG_WIDTHS = {"sha": 40, "short_sha": SHORT_SHA, "number": len(str(2**31 - 1)), "branch": MAX_BRANCH_IN_TAG}
_TAG_TEXT_RE = re.compile(r"[A-Za-z0-9_.-]*")


def pr_tag_template_problem(template: str) -> str | None:
    """Why a pr_tag template cannot give a valid image tag (None when it always does)."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError:
        return "has an unbalanced '{' or '}'"
    allowed = " ".join("{" + p + "}" for p in PR_TAG_PLACEHOLDERS)
    width = 0
    for literal, name, spec, conversion in parts:
        if not _TAG_TEXT_RE.fullmatch(literal):
            bad = next(c for c in literal if not _TAG_TEXT_RE.fullmatch(c))
            return f"{bad!r} cannot be part of an image tag (letters, digits, '_', '.' and '-' only)"
        width += len(literal)
        if name is None:
            continue
        if name not in PR_TAG_PLACEHOLDERS:
            return f"unknown placeholder {{{name}}} (allowed: {allowed})"
        if spec or conversion:
            return f"placeholder {{{name}}} must be written without ':' or '!' options"
        width += _PR_TAG_WIDTHS[name]
    if template[:1] in (".", "-"):
        return "an image tag cannot start with '.' or '-'"
    if width > 128:
        return f"can give a tag of {width} characters; image tags are at most 128 ({{branch}} counts as 63)"
    return None


def _build_manifest(candidate: Candidate, data: dict[str, Any]) -> Manifest:
    _, _, _, environment = candidate.rel_dir.split("/")
    health = data.get("health")
    overrides = data.get("overrides", {})
    allowed = data.get("allowed_overrides", {})
    update = data.get("oob", {}).get("update-image")
    pr_deploy = data.get("pr_deploy", False)
    ttl = data.get("ttl")
    kind = Kind(data.get("kind", Kind.APPLICATION.value))
    third_party = kind is Kind.THIRD_PARTY
    mode = ThirdPartyMode(data.get("mode", ThirdPartyMode.INTERNAL.value)) if third_party else None
    check = data.get("check")
    return Manifest(
        path=candidate.rel_path,
        directory=candidate.rel_dir,
        version=data["version"],
        service_name=data["service_name"],
        type=ServiceType(data["type"]),
        environment=environment,
        repository=data.get("repository"),
        image=data.get("image"),
        url=data.get("url"),
        health=None
        if health is None
        else Health(
            path=health["path"],
            timeout=parse_duration(health.get("timeout", DEFAULT_HEALTH_TIMEOUT)),
        ),
        # None when absent: the bot's SAMI_SCRIPT_TIMEOUT and SAMI_STATUS_TIMEOUT apply then.
        timeout=_optional_duration(data, "timeout"),
        status_timeout=_optional_duration(data, "status_timeout"),
        app_overrides={k: _override_text(v) for k, v in overrides.get("app", {}).items()},
        deployment_overrides={k: _override_text(v) for k, v in overrides.get("deployment", {}).items()},
        allowed_app_overrides=tuple(allowed.get("app", ())),
        allowed_deployment_overrides=tuple(allowed.get("deployment", ())),
        secrets=tuple(data.get("secrets", ())),
        pr_deploy=PrDeploy.LABEL if pr_deploy == "label" else PrDeploy(str(pr_deploy).lower()),
        deploy_label=data.get("deploy_label", DEFAULT_DEPLOY_LABEL),
        pr_tag=data.get("pr_tag", DEFAULT_PR_TAG),
        pr_forks=bool(data.get("pr_forks", False)),
        ttl=None if ttl is None else parse_duration(ttl),
        require_checks=bool(data.get("require_checks", False)),
        control_scripts=data["control_scripts"].rstrip("/") if "control_scripts" in data else None,
        files=tuple(data.get("files", ())),
        update_image=None if update is None else ImageUpdate(update["file"], update["path"]),
        on_drift=data.get("on_drift", "report"),
        kind=kind,
        mode=mode,
        size=data.get("size", 1) if mode is ThirdPartyMode.INTERNAL else None,
        endpoint=",".join(_endpoint_entries(data["endpoint"])) if "endpoint" in data else None,
        depends_on=tuple(data.get("depends_on", ())),
        check=None
        if check is None
        else ExternalCheck(
            check["type"], check.get("path"), parse_duration(check.get("timeout", DEFAULT_HEALTH_TIMEOUT))
        ),
        seed=bool(data.get("seed", False)),
        engine=data.get("engine"),
        blue_green=_blue_green(data),
    )


def _blue_green(data: dict[str, Any]) -> BlueGreen | None:
    """A manifest's own blue_green: its service is the entry of its environment's colours."""
    spec = data.get("blue_green")
    if spec is None:
        return None
    service = data["service_name"]
    return BlueGreen(entry=service, keep_previous=parse_duration(spec.get("keep_previous", DEFAULT_KEEP_PREVIOUS)),
                     approvers=tuple(spec.get("release_approvers") or ()),
                     colours={colour: {service: {k: _override_text(v) for k, v in values.items()}}
                              for colour, values in (spec.get("colours") or {}).items()})


# --- the whole tree ---------------------------------------------------------------------


def _load_chunk(root: str, candidates: Sequence[Candidate], version: str) -> list[FileResult]:
    tree = _Tree(Path(root))
    schema = manifest_schema(version)
    return [load_manifest_file(tree, candidate, schema) for candidate in candidates]


# Results cross process boundaries as plain tuples: pickling dataclasses, enums and the
# candidates' folder listings costs more than the work saved by a second process.
_Row = tuple[Any, tuple[tuple[Any, ...], ...], tuple[int, int], tuple[tuple[str, int | None, int | None], ...]]


def _manifest_row(manifest: Manifest) -> tuple[Any, ...]:
    values = manifest._field_values()
    values["type"] = manifest.type.value
    values["pr_deploy"] = manifest.pr_deploy.value
    values["health"] = None if manifest.health is None else astuple(manifest.health)
    values["update_image"] = None if manifest.update_image is None else astuple(manifest.update_image)
    values["kind"] = manifest.kind.value
    values["mode"] = None if manifest.mode is None else manifest.mode.value
    values["check"] = None if manifest.check is None else astuple(manifest.check)
    return tuple(values.values())


def _manifest_from_row(row: tuple[Any, ...]) -> Manifest:
    values = dict(zip(_MANIFEST_FIELDS, row, strict=True))
    values["type"] = ServiceType(values["type"])
    values["pr_deploy"] = PrDeploy(values["pr_deploy"])
    values["health"] = None if values["health"] is None else Health(*values["health"])
    if values["update_image"] is not None:
        values["update_image"] = ImageUpdate(*values["update_image"])
    values["kind"] = Kind(values["kind"])
    values["mode"] = None if values["mode"] is None else ThirdPartyMode(values["mode"])
    values["check"] = None if values["check"] is None else ExternalCheck(*values["check"])
    return Manifest(**values)


_MANIFEST_FIELDS = tuple(f.name for f in fields(Manifest))


def _load_chunk_rows(root: str, candidates: Sequence[Candidate], version: str) -> list[_Row]:
    return [
        (
            None if r.manifest is None else _manifest_row(r.manifest),
            tuple(astuple(e) for e in r.errors),
            r.anchor,
            r.marks,
        )
        for r in _load_chunk(root, candidates, version)
    ]


def _load_all(root: Path, candidates: list[Candidate], workers: int | None) -> list[FileResult]:
    if workers is None:
        workers = min(os.cpu_count() or 1, 8) if len(candidates) >= PARALLEL_THRESHOLD else 1
    if workers > 1 and len(candidates) > 1:
        split = map_chunks(
            functools.partial(_load_chunk_rows, str(root), version="v1beta"),
            functools.partial(_load_chunk, str(root), version="v1beta"),
            candidates,
            workers,
        )
        if split is not None:
            mine, rows = split
            theirs = [
                FileResult(
                    candidate,
                    None if manifest is None else _manifest_from_row(manifest),
                    tuple(ManifestError(*e) for e in errors),
                    anchor,
                    marks,
                )
                for candidate, (manifest, errors, anchor, marks) in zip(candidates[len(mine) :], rows, strict=True)
            ]
            return mine + theirs
    return _load_chunk(str(root), candidates, "v1beta")


def _duplicate_errors(results: Iterable[FileResult]) -> list[ManifestError]:
    by_key: dict[tuple[str, str], list[FileResult]] = {}
    for result in results:
        _, service_dir, _, environment = result.candidate.rel_dir.split("/")
        by_key.setdefault((service_dir, environment), []).append(result)
    errors = []
    for (service, environment), group in by_key.items():
        if len(group) < 2:
            continue
        for result in group:
            others = ", ".join(r.candidate.rel_path for r in group if r is not result)
            line, column = result.anchor
            errors.append(
                ManifestError(
                    result.candidate.rel_path,
                    line,
                    column,
                    "service_name",
                    f"service {service!r} has more than one manifest for environment "
                    f"{environment!r} (also {others}); keep exactly one",
                )
            )
    return errors


def _name_collision_errors(results: Iterable[FileResult]) -> list[ManifestError]:
    """Errors for manifests of different service/environment folders giving the same name.

    services/a/<type>/b-c and services/a-b/<type>/c are both 'a-b-c'; services/a/<type>/b-pr-3
    is pull request 3 of service 'a-b' when services/a-b has a pull_request environment.
    """
    by_name: dict[str, list[FileResult]] = {}
    previews: dict[str, list[FileResult]] = {}
    for result in results:
        _, service, _, environment = result.candidate.rel_dir.split("/")
        if environment == PULL_REQUEST_ENVIRONMENT:
            previews.setdefault(service, []).append(result)
        elif is_valid_environment(environment):
            by_name.setdefault(f"{service}-{environment}", []).append(result)
    clashes: dict[str, list[tuple[FileResult, str]]] = {}

    def clash(result: FileResult, message: str) -> None:
        clashes.setdefault(result.candidate.rel_path, []).append((result, message))

    for name, group in by_name.items():
        folders = {_key(r) for r in group}
        if len(folders) > 1:  # one folder pair twice is the duplicate-manifest error
            for result in group:
                for other in group:
                    if _key(other) != _key(result):
                        clash(
                            result,
                            f"the deployment name {name!r} is also the name of "
                            f"{other.candidate.rel_path}; rename the service or the environment",
                        )
        match = _PREVIEW_NAME_RE.fullmatch(name)
        if match and match.group(1) in previews:
            for result in group:
                for other in previews[match.group(1)]:
                    clash(
                        result,
                        f"the deployment name {name!r} is also the name of a pull request "
                        f"deployment of {other.candidate.rel_path}; rename the environment",
                    )
                    clash(
                        other,
                        f"pull request deployments {match.group(1) + '-pr-<n>'!r} would take the "
                        f"name {name!r} of {result.candidate.rel_path}; rename that environment",
                    )
    errors = []
    for found in clashes.values():
        for result, message in found:
            line, column = result.anchor
            errors.append(ManifestError(result.candidate.rel_path, line, column, "service_name", message))
    return errors


def _key(result: FileResult) -> tuple[str, str]:
    _, service, _, environment = result.candidate.rel_dir.split("/")
    return service, environment


def load_tree(
    root: str | os.PathLike[str],
    sha: str | None = None,
    *,
    workers: int | None = None,
    targets: Iterable[str] | None = None,
) -> DeploymentsRepo:
    """Load and validate every manifest and environment file of a deployments repo folder.

    ``targets``: the target names environment files may use; None leaves them unchecked.
    """
    root_path = Path(root)
    candidates, errors = discover(root_path)
    results = _load_all(root_path, candidates, workers)
    duplicates = _duplicate_errors(results) + _name_collision_errors(results)
    duplicated = {e.path for e in duplicates}
    manifests = tuple(r.manifest for r in results if r.manifest is not None and r.candidate.rel_path not in duplicated)
    for result in results:
        errors.extend(result.errors)
    errors.extend(duplicates)
    env_files, env_errors = environments.read_environment_files(root_path)
    topologies: dict[str, Any] = {}
    invalid: frozenset[str] = frozenset()
    files: dict[str, str] = {}
    kept = [r for r in results if r.manifest is not None and r.candidate.rel_path not in duplicated]
    if env_files or env_errors or any(r.marks or r.manifest.blue_green for r in kept):
        # Nothing to check across manifests when no file and no manifest names another service.
        checked = environments.check_environments(
            env_files,
            [environments.Marked(r.manifest, {f: (line, col) for f, line, col in r.marks})  # type: ignore[arg-type]
             for r in kept],
            targets,
            {_key(r): r.candidate.rel_path for r in results if r.manifest is None},
        )
        errors.extend(env_errors)
        errors.extend(checked.errors)
        topologies, invalid, files = checked.topologies, frozenset(checked.invalid), checked.files
    errors.sort(key=lambda e: (e.path, e.line or 0, e.column or 0, e.message))
    return DeploymentsRepo(
        root=root_path,
        sha=sha,
        manifests=manifests,
        errors=tuple(errors),
        topologies=topologies,
        environment_files=files,
        invalid_environments=invalid,
    )
