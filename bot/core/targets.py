"""Targets: the Swarm managers, Kubernetes contexts and static roots one Sami deploys to.

A targets file (``SAMI_TARGETS``: a YAML or JSON file) names them; environment files in the
deployments repo name the target they run on. Credentials are Sami's configuration, never the
deployments repo's: a target's ``env`` maps variable names the control scripts get to a
reference (``{from_env: NAME}`` or ``{from_file: PATH}``), read when a script runs, so no
secret value is written in the file, the settings or a log.

Without a targets file there is one target, ``default``, made from today's settings: the Docker
and Kubernetes settings of Sami's own environment and SAMI_STATIC_ROOT, so nothing changes.

    default: swarm-a            # the target of environments without one (default: "default")
    targets:
      swarm-a:
        docker_host: tcp://10.0.0.1:2376
        docker_cert_path: /etc/sami/swarm-a
        docker_tls_verify: true
      eu:
        kubeconfig: /etc/sami/kubeconfig-eu
        kube_context: eu-prod
        kube_namespace: shop
      edge:
        static_root: /srv/sites
        env:
          AWS_SECRET_ACCESS_KEY: {from_file: /run/secrets/edge-key}
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

DEFAULT_TARGET = "default"
TARGET_NAME_RE = re.compile(r"^[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_ENV_NAME_RE = re.compile(r"^[A-Z_][A-Z0-9_]*$")
# Variables a target's env may not set: Sami sets them itself, from the target's own fields.
_RESERVED_ENV = frozenset({"PATH", "DOCKER_HOST", "DOCKER_CERT_PATH", "DOCKER_TLS_VERIFY", "DOCKER_CONTEXT",
                           "KUBECONFIG", "SAMI_TARGET", "SAMI_KUBE_CONTEXT", "SAMI_KUBE_NAMESPACE",
                           "SAMI_STATIC_ROOT"})
_DOCKER_HOST_RE = re.compile(r"^(unix|tcp|ssh|npipe)://\S+$")
_FIELDS = ("docker_host", "docker_cert_path", "docker_tls_verify", "kubeconfig", "kube_context",
           "kube_namespace", "static_root", "env")
MAX_TARGETS_BYTES = 256 * 1024


class TargetsError(ValueError):
    """The targets file cannot be used; the message says where and why."""


@dataclass(frozen=True)
class SecretRef:
    """Where a value comes from: a variable of Sami's environment, or a file. Never the value."""

    env: str | None = None
    file: str | None = None

    def describe(self) -> str:
        return f"${self.env}" if self.env is not None else f"file {self.file}"

    def read(self, environ: Mapping[str, str]) -> str:
        """The value now; ValueError says which reference is missing (never the value)."""
        if self.env is not None:
            value = environ.get(self.env)
            if not value:
                raise ValueError(f"{self.env} is not set in Sami's environment")
            return value
        assert self.file is not None
        try:
            return Path(self.file).read_text().strip()
        except OSError as exc:
            raise ValueError(f"{self.file} cannot be read ({exc.strerror})") from None


@dataclass(frozen=True)
class Target:
    """Where an environment runs: any of a Docker endpoint, a Kubernetes context, a static root.

    A field left None keeps what Sami's own environment gives (DOCKER_HOST, KUBECONFIG) or its
    settings (SAMI_STATIC_ROOT). ``configured`` is False only for the built-in default target.
    """

    name: str
    docker_host: str | None = None
    docker_cert_path: str | None = None
    docker_tls_verify: bool | None = None
    kubeconfig: str | None = None
    kube_context: str | None = None
    kube_namespace: str | None = None
    static_root: str | None = None
    env: tuple[tuple[str, SecretRef], ...] = ()
    configured: bool = True

    def describe(self) -> str:
        """What the target points at, for messages (no secret is part of it)."""
        parts = []
        if self.docker_host:
            parts.append(f"Docker at {self.docker_host}")
        if self.kubeconfig or self.kube_context:
            context = f" context {self.kube_context}" if self.kube_context else ""
            parts.append(f"Kubernetes{context}" + (f" ({self.kubeconfig})" if self.kubeconfig else ""))
        if self.static_root:
            parts.append(f"static root {self.static_root}")
        return ", ".join(parts) or "Sami's own Docker and Kubernetes settings"


def default_target(static_root: str) -> Target:
    """The target of today's settings: Sami's environment for Docker and Kubernetes, its static root."""
    return Target(name=DEFAULT_TARGET, static_root=static_root, configured=False)


def _secret_ref(where: str, value: Any) -> SecretRef:
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in ("from_env", "from_file"):
        raise TargetsError(f"{where}: write {{from_env: NAME}} or {{from_file: /path}}; values are never written "
                           "in the targets file")
    kind, ref = next(iter(value.items()))
    if not isinstance(ref, str) or not ref:
        raise TargetsError(f"{where}: {kind} must name a variable or a file")
    if kind == "from_env":
        if not _ENV_NAME_RE.match(ref):
            raise TargetsError(f"{where}: {ref!r} is not a variable name")
        return SecretRef(env=ref)
    if not os.path.isabs(ref):
        raise TargetsError(f"{where}: {ref!r} must be an absolute path")
    return SecretRef(file=ref)


def _text(where: str, value: Any) -> str:
    if not isinstance(value, str) or not value or "\n" in value:
        raise TargetsError(f"{where}: expected a single line of text")
    return value


def _target(name: str, spec: Any) -> Target:
    where = f"targets.{name}"
    if not TARGET_NAME_RE.match(name):
        raise TargetsError(f"{where}: a target name is lowercase letters, digits and '-', starting with a letter")
    if not isinstance(spec, dict):
        raise TargetsError(f"{where}: expected a mapping")
    unknown = sorted(set(spec) - set(_FIELDS))
    if unknown:
        raise TargetsError(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(_FIELDS)})")
    values: dict[str, Any] = {}
    for key in ("docker_host", "docker_cert_path", "kubeconfig", "kube_context", "kube_namespace", "static_root"):
        if key in spec:
            values[key] = _text(f"{where}.{key}", spec[key])
    if "docker_host" in values and not _DOCKER_HOST_RE.match(values["docker_host"]):
        raise TargetsError(f"{where}.docker_host: expected unix://, tcp://, ssh:// or npipe:// and an address")
    for key in ("docker_cert_path", "kubeconfig", "static_root"):
        if key in values and not os.path.isabs(values[key]):
            raise TargetsError(f"{where}.{key}: must be an absolute path")
    if "docker_tls_verify" in spec:
        if not isinstance(spec["docker_tls_verify"], bool):
            raise TargetsError(f"{where}.docker_tls_verify: expected true or false")
        values["docker_tls_verify"] = spec["docker_tls_verify"]
    env = spec.get("env", {})
    if not isinstance(env, dict):
        raise TargetsError(f"{where}.env: expected a mapping of variable names to references")
    refs = []
    for variable, ref in sorted(env.items()):
        if not isinstance(variable, str) or not _ENV_NAME_RE.match(variable):
            raise TargetsError(f"{where}.env: {variable!r} is not a variable name (A-Z, 0-9 and _)")
        if variable in _RESERVED_ENV or variable.startswith("SAMI_SECRET_"):
            raise TargetsError(f"{where}.env.{variable}: set by Sami itself; use the target's own fields")
        refs.append((variable, _secret_ref(f"{where}.env.{variable}", ref)))
    return Target(name=name, env=tuple(refs), **values)


def parse_targets(data: Any, static_root: str) -> tuple[tuple[Target, ...], str]:
    """The targets of a parsed targets file (the built-in default included) and the default's name."""
    if not isinstance(data, dict):
        raise TargetsError("expected a mapping with targets: and optionally default:")
    unknown = sorted(set(data) - {"targets", "default"})
    if unknown:
        raise TargetsError(f"unknown key {unknown[0]!r} (allowed: targets, default)")
    specs = data.get("targets") or {}
    if not isinstance(specs, dict):
        raise TargetsError("targets: expected a mapping of target names to targets")
    targets = {name: _target(str(name), spec) for name, spec in specs.items()}
    if DEFAULT_TARGET not in targets:
        targets[DEFAULT_TARGET] = default_target(static_root)
    default = data.get("default", DEFAULT_TARGET)
    if default not in targets:
        raise TargetsError(f"default: {default!r} is not one of the targets ({', '.join(sorted(targets))})")
    return tuple(targets[name] for name in sorted(targets)), default


def load_targets_file(path: str, static_root: str) -> tuple[tuple[Target, ...], str]:
    """Read a YAML or JSON targets file; TargetsError names the file and the problem."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_TARGETS_BYTES + 1)
    except OSError as exc:
        raise TargetsError(f"{path} cannot be read ({exc.strerror})") from None
    if len(raw) > MAX_TARGETS_BYTES:
        raise TargetsError(f"{path} is larger than {MAX_TARGETS_BYTES} bytes")
    text = raw.decode("utf-8", errors="replace")
    try:
        data = yaml.safe_load(text)  # JSON is YAML too
    except yaml.YAMLError as exc:
        raise TargetsError(f"{path} is not valid YAML or JSON: {str(exc).splitlines()[0]}") from None
    try:
        return parse_targets(data, static_root)
    except TargetsError as exc:
        raise TargetsError(f"{path}: {exc}") from None
