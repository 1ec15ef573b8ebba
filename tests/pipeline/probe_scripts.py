"""A deployments repo for pipeline tests whose service uses its own control scripts ("probe").

The probe scripts are a real control-script set in the repo (a manifest's ``control_scripts``
folder): they append every call to a record file, detect two scripts running on one deployment
at once, and fail, hang or report check results as the deployment's overrides tell them.
"""

from __future__ import annotations

import stat
from pathlib import Path

import yaml

OPERATIONS = ("create", "update", "archive", "unarchive", "check", "archive_check", "cleanup",
              "config_check", "info", "notifications")

PROBE = r"""#!/bin/sh
# Probe control script: records its calls; behaviour comes from --deployment-config values.
op=$(basename "$0")
name=""; tag=""; record=""; sleep_for=0; exits=""; hang=""; checks=""; notify=0; old=""; new=""
while [ $# -gt 0 ]; do
  case "$1" in
    --name) name="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    --old-status) old="$2"; shift 2 ;;
    --new-status) new="$2"; shift 2 ;;
    --deployment-config)
      case "$2" in
        record=*) record="${2#record=}" ;;
        sleep=*) sleep_for="${2#sleep=}" ;;
        fail=*) exits="${2#fail=}" ;;
        hang=*) hang="${2#hang=}" ;;
        check=*) checks="${2#check=}" ;;
        notify=*) notify="${2#notify=}" ;;
      esac
      shift 2 ;;
    *) shift ;;
  esac
done
[ -n "$record" ] || { echo "no record file" >&2; exit 90; }
state="$record.d/$name"
mkdir -p "$state"
if ! mkdir "$state/running" 2>/dev/null; then
  echo "OVERLAP $op $name" >> "$record"
fi
echo "$op $name $tag" >> "$record"
echo "probe $op of $name at $tag"
if [ "$SAMI_SECRET_PROBE_TOKEN" != "" ]; then
  echo "using token $SAMI_SECRET_PROBE_TOKEN"
  echo "$SAMI_SECRET_PROBE_TOKEN"
fi
case "$op" in
  create|update|unarchive|archive|cleanup) sleep "$sleep_for" ;;
esac
if [ "$op" = "$hang" ]; then
  sleep 300 &
  echo $! > "$record.child"
  echo $$ > "$record.pid"
  wait
fi
rmdir "$state/running"
if [ "$op" = "$exits" ]; then echo "probe: $op failed on purpose" >&2; exit 1; fi
case "$op" in
  create|update|unarchive) echo "$tag" > "$state/tag" ;;
  archive) echo "archived" > "$state/archived" ;;
  cleanup) rm -rf "$state" ;;
  check)
    if [ -n "$checks" ]; then echo "probe: check says $checks" >&2; exit "$checks"; fi
    running=$(cat "$state/tag" 2>/dev/null)
    [ "$running" = "$tag" ] || { echo "running $running, want $tag" >&2; exit 3; }
    ;;
  archive_check) [ -f "$state/archived" ] || exit 1 ;;
  info) echo "app,https://$name.example.test"; echo "logs,https://logs.example.test/$name" ;;
  notifications) sleep "$notify"; echo "$name $old $new" >> "$record.notified" ;;
esac
exit 0
"""


def write_probe_scripts(scripts: Path) -> Path:
    """The probe set, one executable per operation, in ``scripts`` (made if needed)."""
    scripts.mkdir(parents=True, exist_ok=True)
    for operation in OPERATIONS:
        path = scripts / operation
        path.write_text(PROBE)
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return scripts


def write_probe_repo(root: Path, record: Path, *, timeout: str = "60s", status_timeout: str = "5s",
                     secrets: tuple[str, ...] = (), environments: tuple[str, ...] = ("stage", "pull_request")) -> Path:
    """Create a deployments repo with one service ``probe`` in ``environments`` (stage and pull_request)."""
    write_probe_scripts(root / "scripts" / "probe")
    for environment in environments:
        folder = root / "services" / "probe" / "swarm" / environment
        folder.mkdir(parents=True)
        (folder / "stack.yml").write_text(yaml.safe_dump(
            {"version": "3.8", "services": {"app": {"image": "local/probe:latest"}}}))
        manifest = {
            "version": "v1beta", "service_name": "probe", "type": "swarm",
            "files": ["stack.yml"], "oob": {"update-image": {"file": "stack.yml", "path": "services.app.image"}},
            "image": "local/probe", "url": "https://{name}.{base_domain}",
            "timeout": timeout, "status_timeout": status_timeout,
            "control_scripts": "scripts/probe",
            "overrides": {"deployment": {"record": str(record)}, "app": {"LOG_LEVEL": "info"}},
            "allowed_overrides": {"deployment": ["sleep", "fail", "hang", "check", "notify"], "app": ["LOG_LEVEL"]},
            "pr_deploy": environment == "pull_request",
            "repository": "acme/probe",
        }
        if secrets:
            manifest["secrets"] = list(secrets)
        (folder / "sami.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    return root
