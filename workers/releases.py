"""The switch of a blue-green release: run the entry's ``switch`` control script, then settle the release.

``switch <common args> --name <entry> --colour blue|green --backend HOST:PORT|PATH`` runs on the entry
component's script set, with the stable entry's name (``<entry>-<environment>``) and, as ``--backend``,
the endpoint of the colour's entry deployment: the ``endpoint`` it recorded (``host:port``, Swarm), or
for ``static_file`` the folder it serves (``<static root>/<deployment>/current``), for ``k8s`` the
colour's release and its Service port (``<deployment>:<service.port, default 80>``), for ``swarm`` the
``port`` its deployment config gives it (``blue_green.colours``) on ``advertise`` (default 127.0.0.1), else
the host and port of the URL it recorded (a Swarm entry's router reaches the colour there). The switch
script gets the colour's entry's config: its tag, image and overrides as its last deploy ran them.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from bot.core.errors import SamiError
from bot.services import deployments, releases
from workers.context import WorkerContext
from workers.executor import ExecutorError, Target, prepare_manifest_dir

log = logging.getLogger(__name__)
OPERATION = "switch"
K8S_SERVICE_PORT = 80  # the example chart's service.port
SWARM_HOST = "127.0.0.1"  # where the router (on the node's network) reaches a colour without ``advertise``


def backend_of(ctx: WorkerContext, plan: releases.SwitchPlan, manifest, runs_on: str | None,
               deployed: Mapping[str, str] | None = None) -> str:
    """Where the entry sends traffic once switched: the colour's entry deployment's endpoint.
    ``deployed`` is the deployment config the colour's entry runs with (its last succeeded deploy)."""
    outputs = dict(plan.backend_deployment.outputs or {})
    deployed = dict(deployed if deployed is not None else plan.backend_deployment.deployment_overrides or {})
    if outputs.get("endpoint"):
        return str(outputs["endpoint"]).split(",")[0]
    if str(manifest.type) == "static_file":
        platform = ctx.settings.target(runs_on)
        root = platform.static_root or ctx.settings.static_root
        return str(Path(root) / plan.backend_deployment.name / "current")
    if str(manifest.type) == "k8s":  # the colour's release: its pods carry its name, its Service the port
        return f"{plan.backend_deployment.name}:{deployed.get('service.port') or K8S_SERVICE_PORT}"
    if str(manifest.type) == "swarm" and str(deployed.get("port") or "").isdigit():
        # A stack on a host's network listens on the port its colour gives it (blue_green.colours).
        return f"{deployed.get('advertise') or SWARM_HOST}:{int(deployed['port'])}"
    url = urlsplit(str(outputs.get("url") or ""))
    if url.scheme in ("http", "https") and url.hostname:  # Swarm: where the colour's entry answers
        return f"{url.hostname}:{url.port or (443 if url.scheme == 'https' else 80)}"
    raise ExecutorError(f"{plan.backend_deployment.name} records no endpoint or URL to switch the entry to")


def run_switch(release_id: int, *, ctx: WorkerContext) -> bool | None:
    """Run the switch of ``release_id`` and settle it (live, or failed with the script's words).
    None when it is not switching any more (settled by another run of the job)."""
    repo = ctx.manifests.current()
    with ctx.session() as session:
        try:
            plan = releases.plan(session, repo, release_id)
        except SamiError as exc:
            releases.switched(session, release_id, ok=False, message=str(exc))
            return False
        if plan is None:
            return None
        try:
            ok, message = _run(ctx, repo, plan, session)
        except (ExecutorError, SamiError, ValueError, KeyError) as exc:
            ok, message = False, f"switch could not run: {exc}"
        releases.switched(session, release_id, ok=ok, message=message)
    log.info("release %s: switch to %s %s", release_id, plan.colour, "done" if ok else f"failed ({message})")
    return ok


def _run(ctx: WorkerContext, repo, plan: releases.SwitchPlan, session) -> tuple[bool, str]:
    manifest = repo.find(plan.entry_service, plan.environment)
    if manifest is None:
        raise ExecutorError(f"no manifest for {plan.entry_service} {plan.environment} in the deployments repo")
    if not ctx.executor.has(repo, manifest, OPERATION):
        raise ExecutorError(f"the control scripts of {plan.entry_service} have no {OPERATION!r} operation: the "
                            "entry cannot be switched (control_scripts/README.md, blue-green)")
    runs_on = repo.target_of(plan.environment)
    backend = plan.backend_deployment
    s = ctx.settings
    url = manifest.render_url(name=plan.entry_deployment, base_domain=s.base_domain, namespace=s.namespace,
                              project_name=s.project_name, pr=None)
    # The config the colour's entry runs with (manifest, release and colour overrides together).
    deployed = deployments.deployed_action(session, backend.id)
    config = dict(deployed.config or {}) if deployed is not None else deployments.action_config(
        backend, manifest, repo)
    target = Target(name=plan.entry_deployment, service=plan.entry_service, environment=plan.environment,
                    tag=config.get("tag") or backend.tag or "latest", image=config.get("image") or backend.image,
                    app_overrides=dict(config.get("app_overrides") or {}),
                    deployment_overrides=dict(config.get("deployment_overrides") or {}), url=url, manifest=manifest,
                    runs_on=runs_on)
    address = backend_of(ctx, plan, manifest, runs_on, target.deployment_overrides)
    with tempfile.TemporaryDirectory(prefix=f"sami-switch-{plan.release_id}-") as temp:
        manifest_dir = prepare_manifest_dir(repo, manifest, target.image, Path(temp))
        result = ctx.executor.run(OPERATION, repo, target, manifest_dir,
                                  extra=("--colour", plan.colour, "--backend", address))
    if result.ok:
        return True, f"{plan.entry_deployment} -> {plan.colour} ({address})"
    said = (result.stderr or result.stdout or "").strip().splitlines()[-1:]
    status = "timed out" if result.timed_out else f"exit {result.exit_code}"
    return False, f"switch {status}" + (f": {said[0]}" if said else "")
