"""JSON Schemas of Sami's deployments-repo files, one file per format version.

Manifests (sami.yaml): ``<version>.json``; environment files (environments/<environment>.yaml):
``environment-<version>.json``.
"""

from __future__ import annotations

import copy
import functools
import json
from importlib import resources
from pathlib import Path
from typing import Any

CURRENT_VERSION = "v1beta"
SUPPORTED_VERSIONS = ("v1beta",)


class UnknownSchemaVersion(ValueError):
    """No schema ships for the requested manifest version."""


def schema_path(version: str = CURRENT_VERSION) -> Path:
    """Return the path of the JSON Schema file for a manifest version."""
    if version not in SUPPORTED_VERSIONS:
        raise UnknownSchemaVersion(
            f"no manifest schema for version {version!r} (known: {', '.join(SUPPORTED_VERSIONS)})"
        )
    return Path(str(resources.files(__name__).joinpath(f"{version}.json")))


@functools.cache
def _load(version: str) -> dict[str, Any]:
    with schema_path(version).open(encoding="utf-8") as handle:
        return json.load(handle)


def load_schema(version: str = CURRENT_VERSION) -> dict[str, Any]:
    """Return the JSON Schema for a manifest version as a fresh dict the caller may modify."""
    return copy.deepcopy(_load(version))


def environment_schema_path(version: str = CURRENT_VERSION) -> Path:
    """Return the path of the JSON Schema file for an environment file version."""
    if version not in SUPPORTED_VERSIONS:
        raise UnknownSchemaVersion(
            f"no environment file schema for version {version!r} (known: {', '.join(SUPPORTED_VERSIONS)})"
        )
    return Path(str(resources.files(__name__).joinpath(f"environment-{version}.json")))


@functools.cache
def _load_environment(version: str) -> dict[str, Any]:
    with environment_schema_path(version).open(encoding="utf-8") as handle:
        return json.load(handle)


def load_environment_schema(version: str = CURRENT_VERSION) -> dict[str, Any]:
    """Return the JSON Schema for an environment file version as a fresh dict the caller may modify."""
    return copy.deepcopy(_load_environment(version))
