"""A deployments repo of a whole environment for pipeline tests: services that use the probe control
scripts (tests/pipeline/probe_scripts.py), with dependencies, kinds and endpoints given as values.

The manifests are written as folders (what the workers read); ``EnvironmentManifests`` serves them
with the topology fields (kind, mode, endpoint, depends_on) set, as a store of the deployments repo.
"""

from __future__ import annotations

import dataclasses
import stat
from collections.abc import Mapping
from pathlib import Path

import yaml

from bot.manifests import DeploymentsRepo, load_deployments_repo
from bot.manifests.topology import Kind, ThirdPartyMode, Topology
from tests.pipeline.probe_scripts import OPERATIONS, PROBE

# Whether the manifest schema has the topology fields (then they are written into sami.yaml as well).
SCHEMA_HAS_TOPOLOGY = '"depends_on"' in (Path(__file__).resolve().parents[2] / "manifests_schema" / "v1beta.json"
                                          ).read_text()


@dataclasses.dataclass(frozen=True)
class Service:
    """One component: its dependencies, kind and endpoint template, and its default overrides."""

    depends_on: tuple[str, ...] = ()
    third_party: bool = False
    external: bool = False
    endpoint: str | None = None
    app_overrides: Mapping[str, str] = dataclasses.field(default_factory=dict)
    deployment_overrides: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # The application repository whose pull requests are deployed (a pull_request manifest is written).
    pull_requests: str | None = None


def write_environment_repo(root: Path, record: Path, services: Mapping[str, Service],
                           environments: tuple[str, ...] = ("stage",)) -> Path:
    scripts = root / "scripts" / "probe"
    scripts.mkdir(parents=True, exist_ok=True)
    for operation in OPERATIONS:
        path = scripts / operation
        path.write_text(PROBE)
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    for name, service in services.items():
        for environment in (*environments, *(("pull_request",) if service.pull_requests else ())):
            folder = root / "services" / name / "swarm" / environment
            folder.mkdir(parents=True)
            (folder / "stack.yml").write_text(yaml.safe_dump(
                {"version": "3.8", "services": {"app": {"image": f"local/{name}:latest"}}}))
            manifest = {
                "version": "v1beta", "service_name": name, "type": "swarm", "files": ["stack.yml"],
                "oob": {"update-image": {"file": "stack.yml", "path": "services.app.image"}},
                "image": f"local/{name}", "timeout": "60s", "status_timeout": "5s",
                "control_scripts": "scripts/probe",
                "overrides": {"deployment": {"record": str(record), **service.deployment_overrides},
                              "app": dict(service.app_overrides)},
                "allowed_overrides": {"deployment": ["sleep", "fail", "hang", "check"],
                                      "app": sorted({"LOG_LEVEL", *service.app_overrides})},
            }
            if environment == "pull_request":
                manifest.update(pr_deploy=True, repository=service.pull_requests)
            if SCHEMA_HAS_TOPOLOGY:
                manifest.update(topology_fields(service))
            (folder / "sami.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    return root


def topology_fields(service: Service) -> dict:
    """The manifest fields of ``service``'s place in its environment."""
    fields: dict = {"depends_on": list(service.depends_on)} if service.depends_on else {}
    if service.third_party:
        fields.update(kind="third_party", mode="external" if service.external else "internal")
        if service.endpoint:
            fields["endpoint"] = service.endpoint
    return fields


def with_topology(repo: DeploymentsRepo, services: Mapping[str, Service],
                  topologies: Mapping[str, Topology] | None = None) -> DeploymentsRepo:
    """``repo`` with each manifest's kind, mode, endpoint and depends_on as ``services`` give them, and
    ``topologies`` as its environment files."""
    manifests = []
    for manifest in repo.manifests:
        service = services.get(manifest.service_name)
        if service is not None:
            manifest = dataclasses.replace(
                manifest, depends_on=tuple(service.depends_on), endpoint=service.endpoint,
                kind=Kind.THIRD_PARTY if service.third_party else Kind.APPLICATION,
                mode=(ThirdPartyMode.EXTERNAL if service.external else ThirdPartyMode.INTERNAL)
                if service.third_party else None)
        manifests.append(manifest)
    if topologies is None:
        return dataclasses.replace(repo, manifests=tuple(manifests))
    return dataclasses.replace(repo, manifests=tuple(manifests), topologies={**repo.topologies, **topologies})


class EnvironmentManifests:
    """A stand-in for the manifest store: the folder's manifests with the topology fields set."""

    def __init__(self, root: Path, services: Mapping[str, Service], topologies: Mapping[str, Topology] | None = None):
        self.root = root
        self.services = services
        self.topologies = topologies

    def current(self, refresh: bool = False) -> DeploymentsRepo:
        return with_topology(load_deployments_repo(self.root), self.services, self.topologies)

    def at(self, sha: str | None) -> DeploymentsRepo:
        return self.current()
