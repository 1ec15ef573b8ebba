"""Deployed vs requested vs running: what a deployment was asked for, what Sami last deployed, what
its target reports running, and the drift between the last two.

A control script reports what runs with one line of JSON on the stdout of ``check`` (see the
control-script contract): ``{"running": [{"name": ..., "image": ..., "replicas": ..., "env": {...}}]}``.
Only what Sami sets is compared (the images, the replica counts and the overrides it passed), so a
field another controller changes, or a component someone added beside the stack, is never drift. A
script that reports nothing gets no verdict: no report, no drift.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.core.lifecycle import DEPLOY_KINDS
from bot.core.models import Action, Deployment
from bot.core.states import ActionState
from bot.services.deployments import deployed_action

REPORT_KEY = "running"
MAX_COMPONENTS = 200
MAX_TEXT = 512
MAX_ENV = 100
_DOCKER_HUB = re.compile(r"^(?:docker\.io/|index\.docker\.io/|registry-1\.docker\.io/)?(?:library/)?")


# --- the report -------------------------------------------------------------------------------

def _text(value: object) -> str | None:
    if isinstance(value, str | int) and not isinstance(value, bool):
        text = str(value).strip()
        return text[:MAX_TEXT] if text else None
    return None


def _count(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and 0 <= value < 2**31:
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 10:
        return int(value)
    return None


def _component(raw: object) -> dict[str, Any] | None:
    if not isinstance(raw, Mapping):
        return None
    name = _text(raw.get("name"))
    if name is None:
        return None
    image = _text(raw.get("image"))
    tag = _text(raw.get("tag")) or (image_tag(image) if image else None)
    env_raw = raw.get("env")
    env = {}
    if isinstance(env_raw, Mapping):
        for key, value in list(env_raw.items())[:MAX_ENV]:
            text = value if isinstance(value, str) else _text(value)
            if isinstance(key, str) and key and text is not None:
                env[key[:MAX_TEXT]] = text[:MAX_TEXT]
    return {"name": name, "image": strip_digest(image) if image else None, "tag": tag,
            "replicas": _count(raw.get("replicas")), "running": _count(raw.get("running")), "env": env}


def parse_report(stdout: str) -> dict[str, Any] | None:
    """What a script's output says runs: the last line that is a JSON object with a ``running`` list,
    as ``{"components": [...]}`` (names, images without digests, tags, replicas, env); None when no line is."""
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if not line.startswith("{") or f'"{REPORT_KEY}"' not in line:
            continue
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if not isinstance(data, dict) or not isinstance(data.get(REPORT_KEY), list):
            continue
        components = [c for c in (_component(raw) for raw in data[REPORT_KEY][:MAX_COMPONENTS]) if c is not None]
        return {"components": components}
    return None


def strip_digest(image: str) -> str:
    return image.split("@", 1)[0]


def image_tag(image: str) -> str | None:
    """The tag of ``name:tag`` (None for a name without one)."""
    image = strip_digest(image)
    last = image.rsplit("/", 1)[-1]
    return last.rsplit(":", 1)[1] if ":" in last else None


def image_repository(image: str) -> str:
    """The repository of an image, with Docker Hub's implicit parts dropped (``docker.io/library/web`` is ``web``)."""
    image = strip_digest(image)
    head, _, last = image.rpartition("/")
    name = f"{head}/{last.split(':', 1)[0]}" if head else last.split(":", 1)[0]
    return _DOCKER_HUB.sub("", name)


def same_image(a: str, b: str) -> bool:
    """Whether two references name one image (repository and tag, digests and Docker Hub's prefixes aside)."""
    return image_repository(a) == image_repository(b) and (image_tag(a) or "latest") == (image_tag(b) or "latest")


def env_name(key: str) -> str:
    """An override's environment name, as the control scripts give it (``log.level`` -> ``LOG_LEVEL``)."""
    return re.sub(r"[.-]", "_", key).upper()


# --- the comparison ---------------------------------------------------------------------------

def _difference(component: str | None, field: str, deployed: object, running: object) -> dict[str, Any]:
    return {"component": component, "field": field, "deployed": deployed, "running": running}


def _passed_env(config: Mapping) -> dict[str, str]:
    """The overrides Sami passed, by environment name (deployment level wins, as in the scripts)."""
    env = {env_name(k): str(v) for k, v in (config.get("app_overrides") or {}).items()}
    env.update({env_name(k): str(v) for k, v in (config.get("deployment_overrides") or {}).items()})
    return env


def compare(config: Mapping, baseline: Mapping | None, current: Mapping) -> list[dict[str, Any]]:
    """How ``current`` (a report) differs from what Sami deployed: ``config`` (the deployed action's) and
    ``baseline`` (what the target reported when that action's check passed; None if it reported nothing).

    Only what Sami sets counts: each baseline component's image (or tag), replica count and the env
    entries of the overrides Sami passed. Components that were not in the baseline, other fields,
    and running counts (health, which ``check`` judges) never count."""
    components = list(current.get("components") or [])
    by_name = {c["name"]: c for c in components}
    passed = _passed_env(config)
    base = list((baseline or {}).get("components") or [])
    if not components:
        return [_difference(None, "present", f"{len(base)} component(s)" if base else "running", "nothing")]
    differences: list[dict[str, Any]] = []
    if not base:
        base = _expected_from_config(config, components, differences)
    for expected in base:
        name = expected["name"]
        now = by_name.get(name)
        if now is None:
            differences.append(_difference(name, "present", "running", "gone"))
            continue
        if expected.get("image") and now.get("image"):
            if not same_image(expected["image"], now["image"]):
                differences.append(_difference(name, "image", expected["image"], now["image"]))
        elif expected.get("tag") and now.get("tag") and expected["tag"] != now["tag"]:
            differences.append(_difference(name, "tag", expected["tag"], now["tag"]))
        if expected.get("replicas") is not None and now.get("replicas") is not None \
                and expected["replicas"] != now["replicas"]:
            differences.append(_difference(name, "replicas", expected["replicas"], now["replicas"]))
        for key, value in sorted((now.get("env") or {}).items()):
            if key in passed and value != passed[key]:
                differences.append(_difference(name, f"env {key}", passed[key], value))
    return differences


def _expected_from_config(config: Mapping, components: Sequence[Mapping],
                          differences: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Without a baseline: the components that run the deployed image's repository must run the deployed
    image (and the ``replicas`` override, when one was passed); one of them must exist."""
    image, tag = config.get("image"), config.get("tag")
    replicas = _count((config.get("deployment_overrides") or {}).get("replicas"))
    if image:
        repository = image_repository(image)
        ours = [c for c in components if c.get("image") and image_repository(c["image"]) == repository]
        if not ours:
            differences.append(_difference(None, "image", strip_digest(image), "no component runs it"))
        return [{"name": c["name"], "image": strip_digest(image), "replicas": replicas} for c in ours]
    return [{"name": c["name"], "tag": tag, "replicas": replicas} for c in components]


def describe(difference: Mapping) -> str:
    """One difference in words: ``web-stage_web: image local/app:hand (deployed local/app:abc)``."""
    who = difference.get("component") or "the deployment"
    field, deployed, running = difference.get("field"), difference.get("deployed"), difference.get("running")
    if field == "present":
        return f"{who}: {running}" + (f" (deployed {deployed})" if deployed != "running" else "")
    return f"{who}: {field} {running} (deployed {deployed})"


def summary(differences: Sequence[Mapping] | None, most: int = 3) -> str:
    """The differences in one line, the first ``most`` of them."""
    if not differences:
        return ""
    words = [describe(d) for d in differences[:most]]
    more = len(differences) - most
    return "; ".join(words) + (f"; and {more} more" if more > 0 else "")


# --- what a deployment was asked for, deployed and runs ----------------------------------------

@dataclass(frozen=True)
class ConfigView:
    """A config as people see it: image/tag, overrides, secret names (never values), from which action."""

    action_id: int | None
    kind: str | None
    state: str | None
    tag: str | None
    image: str | None
    app_overrides: dict[str, str]
    deployment_overrides: dict[str, str]
    secrets: tuple[str, ...]
    at: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"action_id": self.action_id, "kind": self.kind, "state": self.state, "tag": self.tag,
                "image": self.image, "overrides": {"app": self.app_overrides, "deployment": self.deployment_overrides},
                "secrets": list(self.secrets), "at": self.at}


def _view(action: Action | None, secrets: Sequence[str]) -> ConfigView | None:
    if action is None:
        return None
    config = action.config or {}
    moment = action.finished_at if action.state is ActionState.SUCCEEDED else action.created_at
    return ConfigView(action.id, action.kind, str(action.state), config.get("tag"), config.get("image"),
                      dict(config.get("app_overrides") or {}), dict(config.get("deployment_overrides") or {}),
                      tuple(secrets), moment.isoformat() if moment else None)


def requested_action(session: Session, deployment_id: int) -> Action | None:
    """The deployment's latest accepted create/update/restore (a superseded one was replaced, so not it)."""
    return session.scalars(select(Action).where(
        Action.deployment_id == deployment_id, Action.kind.in_(DEPLOY_KINDS),
        Action.state != ActionState.SUPERSEDED).order_by(Action.id.desc()).limit(1)).first()


def config_views(session: Session, deployment: Deployment, secrets: Sequence[str] = ()) -> dict[str, Any]:
    """Requested, deployed and running of ``deployment``, and its drift, as the API and the page show them."""
    requested = _view(requested_action(session, deployment.id), secrets)
    deployed = _view(deployed_action(session, deployment.id), secrets)
    return {
        "requested": requested.to_dict() if requested else None,
        "deployed": deployed.to_dict() if deployed else None,
        "running": running_view(deployment),
        "drift": drift_view(deployment),
    }


def running_view(deployment: Deployment) -> dict[str, Any] | None:
    if deployment.running is None:
        return None
    components = [{k: c.get(k) for k in ("name", "image", "tag", "replicas", "running")}
                  for c in deployment.running.get("components") or []]
    return {"components": components, "at": deployment.running_at.isoformat() if deployment.running_at else None}


def drift_view(deployment: Deployment) -> dict[str, Any]:
    """``status``: ``unknown`` (no report), ``in_sync`` or ``drifted``, with the differences and since when."""
    differences = deployment.drift
    status = "unknown" if differences is None else ("drifted" if differences else "in_sync")
    return {"status": status, "differences": [{**d, "text": describe(d)} for d in differences or []],
            "summary": summary(differences),
            "since": deployment.drift_since.isoformat() if deployment.drift_since else None}
