"""Typed values the manifest loader produces; nothing past the loader sees raw YAML data."""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .topology import BlueGreen, Kind, ThirdPartyMode, Topology

URL_PLACEHOLDERS = (
    "name",
    "service",
    "environment",
    "base_domain",
    "namespace",
    "project_name",
    "pr",
)
# {sha}, {short_sha}, {number} and {branch} in a pr_tag template.
PR_TAG_PLACEHOLDERS = ("sha", "short_sha", "number", "branch")
DEFAULT_PR_TAG = "{sha}"
SHORT_SHA = 7
MAX_BRANCH_IN_TAG = 63
MAX_DEPLOYMENT_NAME = 63
# Targets with a shorter limit than a DNS label: Helm release names are at most 53 characters.
MAX_DEPLOYMENT_NAMES = {"k8s": 53}


class ServiceType(StrEnum):
    """Deployment target of a service; selects the built-in control scripts."""

    SWARM = "swarm"
    COMPOSE = "compose"
    K8S = "k8s"
    STATIC_FILE = "static_file"
    CRON = "cron"


class PrDeploy(StrEnum):
    """Whether pull requests get their own environment of a service."""

    OFF = "false"
    ON = "true"
    LABEL = "label"


@dataclass(frozen=True)
class Health:
    """HTTP health check: a path on the deployment's url and a per-request timeout in seconds."""

    path: str
    timeout: int


@dataclass(frozen=True)
class ExternalCheck:
    """How an external third-party endpoint is checked: TCP to each host:port, or HTTP GET of a path."""

    type: str  # "tcp" or "http"
    path: str | None
    timeout: int


# The outputs a deployment records, by what it is: ${<service>.<output>} may name only these.
THIRD_PARTY_OUTPUTS = ("endpoint", "host", "port")
APPLICATION_OUTPUTS = ("url",)


@dataclass(frozen=True)
class ImageUpdate:
    """Where the image reference lives: a YAML file in the manifest folder and a dotted path."""

    file: str
    path: str


def tag_safe_branch(branch: str) -> str:
    """A branch name as image tag text: other characters become '-', no leading '.' or '-', at most 63."""
    text = re.sub(r"[^A-Za-z0-9_.-]+", "-", branch).lstrip(".-")[:MAX_BRANCH_IN_TAG]
    return text or "branch"


def _frozen_mapping(value: Mapping[str, str]) -> Mapping[str, str]:
    return value if isinstance(value, MappingProxyType) else MappingProxyType(dict(value))


def _rebuild_manifest(values: dict[str, Any]) -> Manifest:
    return Manifest(**values)


@dataclass(frozen=True)
class Manifest:
    """One validated sami.yaml: how one service is deployed in one environment."""

    path: str
    directory: str
    version: str
    service_name: str
    type: ServiceType
    environment: str
    repository: str | None
    image: str | None
    url: str | None
    health: Health | None
    timeout: int | None  # seconds; None: the bot's script timeout applies
    status_timeout: int | None  # seconds; None: the bot's status timeout applies
    app_overrides: Mapping[str, str]
    deployment_overrides: Mapping[str, str]
    allowed_app_overrides: tuple[str, ...]
    allowed_deployment_overrides: tuple[str, ...]
    secrets: tuple[str, ...]
    pr_deploy: PrDeploy
    deploy_label: str
    pr_tag: str  # template of a pull request deployment's tag, see render_pr_tag
    pr_forks: bool
    ttl: int | None
    require_checks: bool
    control_scripts: str | None
    files: tuple[str, ...]
    update_image: ImageUpdate | None
    # Environments as products (bot.manifests.topology): what the manifest describes, and the
    # services of the same environment it must be deployed after.
    kind: Kind = Kind.APPLICATION
    mode: ThirdPartyMode | None = None  # third-party services only
    size: int | None = None  # members of an internal third-party service
    endpoint: str | None = None  # template (internal) or host:port list (external)
    depends_on: tuple[str, ...] = ()
    # What a periodic check that finds drift does: "report" it, or "reconcile" (put the deployed config back).
    on_drift: str = "report"
    check: ExternalCheck | None = None  # external third-party services only
    seed: bool = False  # internal third-party services: seed a fresh clone or preview
    engine: str | None = None  # internal third-party services: the built-in scripts (redis, postgres)
    # Blue-green releases of its environment when that has no file (this service is the entry).
    blue_green: BlueGreen | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "app_overrides", _frozen_mapping(self.app_overrides))
        object.__setattr__(self, "deployment_overrides", _frozen_mapping(self.deployment_overrides))

    def __hash__(self) -> int:
        return hash((self.path, self.service_name, self.environment, self.type))

    def __reduce__(self) -> tuple[Any, tuple[dict[str, Any]]]:
        # MappingProxyType cannot be pickled; rebuild from plain dicts instead.
        return (_rebuild_manifest, (self._field_values(),))

    def _field_values(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["app_overrides"] = dict(self.app_overrides)
        values["deployment_overrides"] = dict(self.deployment_overrides)
        return values

    @property
    def outputs(self) -> tuple[str, ...]:
        """What a deployment of this manifest records, for ${<service>.<output>} references.

        A third-party service records its endpoint (a host:port list) and the host and port of
        its first entry; an application with a url records the url.
        """
        if self.kind is Kind.THIRD_PARTY:
            return THIRD_PARTY_OUTPUTS
        return APPLICATION_OUTPUTS if self.url is not None else ()

    @property
    def is_pull_request_environment(self) -> bool:
        """True for the environment pull request deployments are made from."""
        return self.environment == "pull_request"

    def deployment_name(self, pr: int | None = None) -> str:
        """Name of the deployment: <service>-<environment>, or <service>-pr-<n> for a PR."""
        if pr is not None:
            return f"{self.service_name}-pr-{int(pr)}"
        return f"{self.service_name}-{self.environment}".replace("_", "-")

    def render_url(self, **values: object) -> str | None:
        """Fill the url template; placeholders missing from values become empty strings."""
        if self.url is None:
            return None
        filled = {name: "" for name in URL_PLACEHOLDERS}
        filled.update({"service": self.service_name, "environment": self.environment})
        filled.update({k: "" if v is None else str(v) for k, v in values.items()})
        return string.Formatter().vformat(self.url, (), filled)

    def render_pr_tag(self, *, sha: str, number: int, branch: str) -> str:
        """The tag of a pull request's head commit: pr_tag with {sha} {short_sha} {number} {branch}."""
        values = {"sha": sha, "short_sha": sha[:SHORT_SHA], "number": str(int(number)),
                  "branch": tag_safe_branch(branch)}
        return string.Formatter().vformat(self.pr_tag, (), values)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form, for API answers and `sami validate --format json`."""
        return {
            "path": self.path,
            "directory": self.directory,
            "version": self.version,
            "service_name": self.service_name,
            "type": self.type.value,
            "environment": self.environment,
            "repository": self.repository,
            "image": self.image,
            "url": self.url,
            "health": None if self.health is None else {"path": self.health.path, "timeout": self.health.timeout},
            "timeout": self.timeout,
            "status_timeout": self.status_timeout,
            "overrides": {
                "app": dict(self.app_overrides),
                "deployment": dict(self.deployment_overrides),
            },
            "allowed_overrides": {
                "app": list(self.allowed_app_overrides),
                "deployment": list(self.allowed_deployment_overrides),
            },
            "secrets": list(self.secrets),
            "pr_deploy": self.pr_deploy.value,
            "deploy_label": self.deploy_label,
            "pr_tag": self.pr_tag,
            "pr_forks": self.pr_forks,
            "ttl": self.ttl,
            "require_checks": self.require_checks,
            "control_scripts": self.control_scripts,
            "files": list(self.files),
            "update_image": None
            if self.update_image is None
            else {"file": self.update_image.file, "path": self.update_image.path},
            "kind": self.kind.value,
            "mode": None if self.mode is None else self.mode.value,
            "size": self.size,
            "endpoint": self.endpoint,
            "depends_on": list(self.depends_on),
            "on_drift": self.on_drift,
            # Fields of third-party services only: an application's answer stays as it was.
            **(
                {}
                if self.kind is Kind.APPLICATION
                else {
                    "check": None
                    if self.check is None
                    else {"type": self.check.type, "path": self.check.path, "timeout": self.check.timeout},
                    "seed": self.seed,
                    "engine": self.engine,
                }
            ),
        }


@dataclass(frozen=True)
class ManifestError:
    """One problem in the deployments repo, located at file:line:column (1-based)."""

    path: str
    line: int | None
    column: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = self.path
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form."""
        return {
            "path": self.path,
            "line": self.line,
            "column": self.column,
            "field": self.field,
            "message": self.message,
        }


@dataclass(frozen=True)
class DeploymentsRepo:
    """The manifests of one deployments repo tree (a folder, or a git commit), validated."""

    root: Path
    sha: str | None
    manifests: tuple[Manifest, ...]
    errors: tuple[ManifestError, ...]
    # Environment files (environments/<name>.yaml) that parsed, valid or not, by environment name;
    # topology() gives only usable ones. environment_files: every file found, name -> path.
    topologies: Mapping[str, Topology] = field(default_factory=dict, hash=False)
    environment_files: Mapping[str, str] = field(default_factory=dict, hash=False)
    # Environments that cannot be operated on as a whole: their file has errors, or their
    # components' dependencies do (a cycle, a dependency missing from the environment).
    invalid_environments: frozenset[str] = frozenset()
    _index: Mapping[tuple[str, str], Manifest] = field(init=False, repr=False, compare=False, hash=False)
    _services: Mapping[str, tuple[Manifest, ...]] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        index = {(m.service_name, m.environment): m for m in self.manifests}
        services: dict[str, list[Manifest]] = {}
        for manifest in sorted(self.manifests, key=lambda m: (m.service_name, m.environment)):
            services.setdefault(manifest.service_name, []).append(manifest)
        object.__setattr__(self, "_index", MappingProxyType(index))
        object.__setattr__(self, "_services", MappingProxyType({k: tuple(v) for k, v in services.items()}))

    @property
    def ok(self) -> bool:
        """True when the tree has no errors at all."""
        return not self.errors

    def find(self, service: str, environment: str) -> Manifest | None:
        """Return the valid manifest of a service in an environment, or None."""
        return self._index.get((service, environment))

    def services(self) -> Mapping[str, tuple[Manifest, ...]]:
        """Valid manifests grouped by service name (sorted), each group sorted by environment."""
        return self._services

    def environments(self, service: str) -> tuple[str, ...]:
        """Environments in which a service has a valid manifest."""
        return tuple(m.environment for m in self._services.get(service, ()))

    def topology(self, environment: str) -> Topology | None:
        """The environment as a product: its file, or implicitly every service with a manifest for it.

        None when the environment has neither a file nor any manifest, or is invalid (see
        invalid_environments; the reasons are in errors).
        """
        if environment in self.invalid_environments:
            return None
        explicit = self.topologies.get(environment)
        if explicit is not None:
            return explicit
        components = tuple(s for s, ms in self._services.items() if any(m.environment == environment for m in ms))
        return Topology(name=environment, components=components) if components else None

    def target_of(self, environment: str) -> str | None:
        """The target name the environment's file gives (None: the default target).

        ValueError when the environment has a file too broken to say (its errors say why): a
        deployment must not silently land on the default target.
        """
        topology = self.topologies.get(environment)
        if topology is not None:
            return topology.target
        if environment in self.environment_files:
            raise ValueError(f"{self.environment_files[environment]} has errors, so the target of environment "
                             f"{environment!r} is unknown; run sami validate")
        return None

    def errors_for(self, path: str) -> tuple[ManifestError, ...]:
        """Errors reported for one file (repo-relative path)."""
        return tuple(e for e in self.errors if e.path == path)
