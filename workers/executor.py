"""Executors: turn an action into control-script calls (argv, environment, working copy)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

import control_scripts
from bot.core import naming
from bot.core.config import Settings
from bot.core.targets import Target as Platform
from bot.manifests import DeploymentsRepo, Manifest, folder
from bot.manifests.folder import MAX_FOLDER_ENTRIES, FolderScan
from workers.runner import MIN_MASKED_LENGTH, SUPERVISOR_LABEL, ScriptResult, run_control_script

BUILTIN_SCRIPTS = Path(control_scripts.__file__).resolve().parent
OPERATIONS = ("create", "update", "archive", "unarchive", "check", "archive_check", "cleanup",
              "config_check", "info", "notifications", "switch", "seed")
# The bot's own environment is not passed on; only what tools need to reach their targets.
PASSED_ENVIRONMENT = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "DOCKER_HOST", "DOCKER_CONFIG",
                      "DOCKER_CERT_PATH", "DOCKER_TLS_VERIFY", "DOCKER_CONTEXT", "KUBECONFIG", "DOCKER",
                      "HELM", "KUBECTL", "HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME",
                      "SSL_CERT_FILE", "CURL")
# Scripts get secret NAME as SAMI_SECRET_NAME; Sami reads its value from SAMI_SCRIPT_SECRET_NAME, a
# namespace of its own, so no manifest can ask for one of Sami's settings (SAMI_SECRET_KEY).
# One call that checks many deployments of a script set (optional; see control_scripts/README.md).
BATCH_OPERATION = "check_batch"
SECRET_PREFIX = "SAMI_SECRET_"  # noqa: S105 (variable name prefixes, not secrets)
SECRET_SOURCE_PREFIX = "SAMI_SCRIPT_SECRET_"  # noqa: S105


class ExecutorError(Exception):
    """The action cannot be turned into script calls (missing secret, manifest file, script)."""


@dataclass(frozen=True)
class Target:
    """Everything a script call needs to know about the deployment it acts on."""

    name: str
    service: str
    environment: str
    tag: str
    image: str | None
    app_overrides: Mapping[str, str]
    deployment_overrides: Mapping[str, str]
    url: str | None
    manifest: Manifest
    runs_on: str | None = None  # the Sami target (bot.core.targets) its environment names; None: the default


# Set from the target a script runs on, never inherited from Sami's environment for a configured one.
_DOCKER_VARIABLES = ("DOCKER_HOST", "DOCKER_CERT_PATH", "DOCKER_TLS_VERIFY", "DOCKER_CONTEXT")
REACH_TIMEOUT = 5.0


def reach_problem(platform: Platform, timeout: float = REACH_TIMEOUT) -> str | None:
    """Why a configured target cannot be reached now (None when its endpoints answer or exist)."""
    host = platform.docker_host
    if host and host.startswith("tcp://"):
        address = host.removeprefix("tcp://").rstrip("/")
        name, _, port = address.rpartition(":")
        try:
            with socket.create_connection((name.strip("[]") or address, int(port or 2375)), timeout=timeout):
                pass
        except (OSError, ValueError) as exc:
            return f"Docker at {host}: {getattr(exc, 'strerror', None) or exc}"
    elif host and host.startswith("unix://"):
        path = host.removeprefix("unix://")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                sock.connect(path)
        except OSError as exc:
            return f"Docker at {host}: {exc.strerror or exc}"
    if platform.kubeconfig and not os.access(platform.kubeconfig, os.R_OK):
        return f"kubeconfig {platform.kubeconfig} cannot be read"
    if platform.static_root and platform.configured and not os.path.isdir(platform.static_root):
        return f"static root {platform.static_root} is not a folder"
    return None


def _set_path(document, dotted: str, value: str) -> None:
    node = document
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def _copy_walked(scan: FolderScan, target: Path, shown: str) -> None:
    """Copy the entries of a walk into target: folders made, files copied, no link followed again.

    Each file is opened without following a link and must still be a regular file, so an
    entry swapped for a link or a pipe after the walk is refused rather than read. shown is
    the walked folder as messages name it.
    """
    target.mkdir(parents=True)
    for entry in scan.entries:
        dest = target / entry.path
        if entry.is_dir:
            dest.mkdir()
            continue
        try:
            fd = os.open(entry.source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            why = "became a symlink while being copied" if exc.errno == errno.ELOOP else exc.strerror
            raise ExecutorError(f"{shown}/{entry.path}: {why}; refused") from None
        with open(fd, "rb") as source:
            info = os.fstat(source.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise ExecutorError(f"{shown}/{entry.path}: became {folder.special_kind(info.st_mode)} while "
                                    "being copied; refused")
            with open(dest, "xb") as copy:
                shutil.copyfileobj(source, copy)
        os.chmod(dest, stat.S_IMODE(info.st_mode) & 0o777)
        os.utime(dest, ns=(info.st_atime_ns, info.st_mtime_ns))


def prepare_manifest_dir(repo: DeploymentsRepo, manifest: Manifest, image: str | None, into: Path) -> Path:
    """Copy the manifest's folder to ``into`` and write ``image`` at its ``oob`` path.

    The folder is walked again as the loader walked it (it may have changed since, or never
    have been validated): a symlink leaving the repo, a loop, a pipe, socket or device node
    anywhere in it refuses the run. Links inside the repo are copied as what they point to,
    so the scripts get a folder without a single symlink.
    """
    scan = folder.scan_folder(repo.root, manifest.directory, limit=MAX_FOLDER_ENTRIES)
    if scan.problems:
        first, *rest = scan.problems
        more = f" (and {len(rest)} more problem{'s' if len(rest) > 1 else ''})" if rest else ""
        raise ExecutorError(f"{first}{more}; nothing was run".replace("\n", " "))
    target = into / "manifest"
    try:
        _copy_walked(scan, target, manifest.directory)
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        raise ExecutorError(f"cannot copy {manifest.directory}: {exc.strerror or exc}{where}") from None
    if image and manifest.update_image:
        path = target / manifest.update_image.file
        try:
            document = yaml.safe_load(path.read_text())
            _set_path(document, manifest.update_image.path, image)
        except (OSError, yaml.YAMLError, KeyError, IndexError, ValueError, TypeError) as exc:
            raise ExecutorError(f"cannot set the image at {manifest.update_image.path} in "
                                f"{manifest.update_image.file}: {exc}") from None
        path.write_text(yaml.safe_dump(document, sort_keys=False, default_flow_style=False))
    return target


class Executor:
    """Runs a deployment's control scripts with Sami's contract (SPEC section 4)."""

    def __init__(self, settings: Settings, environ: Mapping[str, str] | None = None):
        self.settings = settings
        self.environ = os.environ if environ is None else environ

    def scripts_dir(self, repo: DeploymentsRepo, manifest: Manifest) -> Path:
        if manifest.control_scripts:
            folder = (Path(repo.root) / manifest.control_scripts).resolve()
            if not folder.is_relative_to(Path(repo.root).resolve()):
                raise ExecutorError(f"control_scripts {manifest.control_scripts!r} is outside the repo")
            return folder
        if manifest.engine and str(manifest.type) != "k8s":  # a built-in third-party set on swarm
            return BUILTIN_SCRIPTS / manifest.engine
        return BUILTIN_SCRIPTS / str(manifest.type)

    def has(self, repo: DeploymentsRepo, manifest: Manifest, operation: str) -> bool:
        script = self.scripts_dir(repo, manifest) / operation
        return script.is_file() and os.access(script, os.X_OK)

    def secrets(self, manifest: Manifest) -> dict[str, str]:
        values = {}
        for name in manifest.secrets:
            value = self.environ.get(f"{SECRET_SOURCE_PREFIX}{name}")
            if not value:
                raise ExecutorError(f"secret {name} is not set: give Sami's processes {SECRET_SOURCE_PREFIX}{name}")
            if len(value.strip()) < MIN_MASKED_LENGTH:
                raise ExecutorError(f"secret {name} is shorter than {MIN_MASKED_LENGTH} characters, too short to be "
                                    "masked in logs")
            values[name] = value
        return values

    def platform(self, target: Target) -> Platform:
        """The Sami target the deployment's environment runs on; ExecutorError names an unknown one."""
        try:
            return self.settings.target(target.runs_on)
        except KeyError:
            known = ", ".join(self.settings.target_names)
            raise ExecutorError(f"target {target.runs_on!r} of environment {target.environment!r} is not "
                                f"configured (known: {known}); nothing was run") from None

    def target_env(self, platform: Platform) -> tuple[dict[str, str], dict[str, str]]:
        """(variables, secret values) the scripts get for the target; ExecutorError names a missing one."""
        env: dict[str, str] = {"SAMI_TARGET": platform.name}
        if platform.docker_host:
            env["DOCKER_HOST"] = platform.docker_host
            if platform.docker_cert_path:
                env["DOCKER_CERT_PATH"] = platform.docker_cert_path
            if platform.docker_tls_verify is not None:
                env["DOCKER_TLS_VERIFY"] = "1" if platform.docker_tls_verify else ""
        if platform.kubeconfig:
            env["KUBECONFIG"] = platform.kubeconfig
        if platform.kube_context:
            env["SAMI_KUBE_CONTEXT"] = platform.kube_context
        if platform.kube_namespace:
            env["SAMI_KUBE_NAMESPACE"] = platform.kube_namespace
        env["SAMI_STATIC_ROOT"] = platform.static_root or self.settings.static_root
        values: dict[str, str] = {}
        for variable, ref in platform.env:
            try:
                values[variable] = ref.read(self.environ)
            except ValueError as exc:
                raise ExecutorError(f"target {platform.name!r}: {variable} comes from {ref.describe()}, but {exc}; "
                                    "nothing was run") from None
        return env, values

    def argv(self, operation: str, target: Target, script: Path, manifest_dir: Path,
             extra: tuple[str, ...] = ()) -> list[str]:
        if operation not in OPERATIONS:
            raise ExecutorError(f"unknown operation {operation!r}")
        # Names were validated when the request was accepted; check again before they reach a script.
        naming.check_name(target.name)
        naming.check_tag(target.tag)
        s = self.settings
        platform = self.platform(target)
        argv = [str(script),
                "--project-name", s.project_name, "--base-domain", s.base_domain,
                "--namespace", platform.kube_namespace or s.namespace, "--name", target.name,
                "--service", target.service, "--environment", target.environment,
                "--tag", target.tag, "--manifest-dir", str(manifest_dir)]
        if s.targets_file:  # with a targets file only: scripts written before targets see the argv they know
            argv += ["--target", platform.name]
        for key, value in sorted(target.app_overrides.items()):
            argv += ["--application-config", f"{naming.check_override_key(key)}={value}"]
        for key, value in sorted(target.deployment_overrides.items()):
            argv += ["--deployment-config", f"{naming.check_override_key(key)}={value}"]
        return argv + list(extra)

    def env(self, target: Target, secrets: Mapping[str, str],
            platform_env: tuple[dict[str, str], dict[str, str]] | None = None) -> dict[str, str]:
        env = {key: self.environ[key] for key in PASSED_ENVIRONMENT if key in self.environ}
        env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
        platform = self.platform(target)
        variables, values = platform_env if platform_env is not None else self.target_env(platform)
        if platform.docker_host:
            for key in _DOCKER_VARIABLES:  # the default's Docker settings do not belong to another host
                env.pop(key, None)
        if platform.kubeconfig:
            env.pop("KUBECONFIG", None)
        health = target.manifest.health
        env.update({
            "SAMI_IMAGE": target.image or "",
            "SAMI_URL": target.url or "",
            "SAMI_HEALTH_URL": (target.url.rstrip("/") + health.path) if (health and target.url) else "",
            "SAMI_HEALTH_TIMEOUT": str(health.timeout if health else 10),
        })
        if target.manifest.size is not None:  # an internal third-party service: its members
            env["SAMI_SIZE"] = str(target.manifest.size)
        if target.manifest.engine:  # k8s: the built-in chart of the engine (control_scripts/charts)
            env["SAMI_ENGINE"] = target.manifest.engine
        env.update(variables)
        env.update(values)
        for name, value in secrets.items():
            env[f"{SECRET_PREFIX}{name}"] = value
        return env

    def batch_entry(self, target: Target, manifest_dir: Path) -> dict:
        """One deployment's line of a ``check_batch`` file: what its ``check`` would get in argv and env
        (secrets aside: deployments whose manifests name secrets are checked one by one)."""
        naming.check_name(target.name)
        naming.check_tag(target.tag)
        env = self.env(target, {})
        return {"name": target.name, "service": target.service, "environment": target.environment,
                "tag": target.tag, "image": target.image or "", "url": target.url or "",
                "health_url": env["SAMI_HEALTH_URL"], "health_timeout": env["SAMI_HEALTH_TIMEOUT"],
                "manifest_dir": str(manifest_dir),
                "application_config": {naming.check_override_key(k): v for k, v in target.app_overrides.items()},
                "deployment_config": {naming.check_override_key(k): v
                                      for k, v in target.deployment_overrides.items()}}

    # Each deployment's own variables: a batch entry carries them, the batch's environment does not.
    BATCH_OWN_VARIABLES = frozenset({"SAMI_IMAGE", "SAMI_URL", "SAMI_HEALTH_URL", "SAMI_HEALTH_TIMEOUT", "SAMI_SIZE",
                                     "SAMI_ENGINE"})

    def run_batch(self, repo: DeploymentsRepo, target: Target, entries: list[dict], workdir: Path, *,
                  on_tick: Callable[[], None] | None = None, label: str = SUPERVISOR_LABEL,
                  timeout: float | None = None) -> ScriptResult:
        """One ``check_batch`` call of ``target``'s script set for every deployment in ``entries``, all of
        which run on ``target``'s Sami target (its Docker host, Kubernetes context or static root)."""
        manifest = target.manifest
        script = self.scripts_dir(repo, manifest) / BATCH_OPERATION
        if not (script.is_file() and os.access(script, os.X_OK)):
            raise ExecutorError(f"no executable {BATCH_OPERATION!r} script in {script.parent.name}/")
        batch = workdir / "batch.jsonl"
        batch.write_text("".join(json.dumps(entry, separators=(",", ":")) + "\n" for entry in entries))
        s = self.settings
        argv = [str(script), "--project-name", s.project_name, "--base-domain", s.base_domain,
                "--namespace", s.namespace, "--batch", str(batch)]
        # What every deployment of the batch shares: the target's settings, none of one deployment's own.
        env = {key: value for key, value in self.env(target, {}).items()
               if key not in self.BATCH_OWN_VARIABLES}
        return run_control_script(argv, env=env, cwd=str(workdir),
                                  timeout=timeout or manifest.timeout or s.script_timeout,
                                  on_tick=on_tick, label=label)

    def run(self, operation: str, repo: DeploymentsRepo, target: Target, manifest_dir: Path, *,
            on_output: Callable[[str], None] | None = None, on_tick: Callable[[], None] | None = None,
            on_start: Callable[[int], None] | None = None, label: str = SUPERVISOR_LABEL,
            extra: tuple[str, ...] = (), timeout: float | None = None) -> ScriptResult:
        """Run one operation's script for ``target``; raise ExecutorError if it cannot be run."""
        script = self.scripts_dir(repo, target.manifest) / operation
        if not (script.is_file() and os.access(script, os.X_OK)):
            raise ExecutorError(f"no executable {operation!r} script in {script.parent.name}/")
        secrets = self.secrets(target.manifest)
        platform = self.platform(target)
        platform_env = self.target_env(platform)
        if platform.configured:
            problem = reach_problem(platform)
            if problem:
                raise ExecutorError(f"target {platform.name!r} cannot be reached ({problem}); nothing was run")
        return run_control_script(
            self.argv(operation, target, script, manifest_dir, extra),
            env=self.env(target, secrets, platform_env),
            cwd=str(manifest_dir),
            timeout=timeout or target.manifest.timeout or self.settings.script_timeout,
            secrets=[*secrets.values(), *platform_env[1].values()],
            on_output=on_output,
            on_tick=on_tick,
            on_start=on_start,
            label=label,
        )
