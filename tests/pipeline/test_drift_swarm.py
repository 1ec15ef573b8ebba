"""Drift on a real single-node Swarm: the example web stack deployed by Sami, then changed by hand
(`docker service update --image`, the stack removed); the periodic check shows it as drift, not as a
Failure, and `reconcile` puts the deployed config back."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from bot.core.models import Action
from bot.core.states import ActionState, DeploymentState
from bot.services import deployments, drift, history
from tests.pipeline.test_swarm import example_repo, port, state, swarm, test_config  # noqa: F401
from tests.support.docker import DockerSwarm
from workers.scheduler import Scheduler, TickReport

pytestmark = [pytest.mark.swarm, pytest.mark.slow]
S = DeploymentState
STACK = "web-stage"


def web_image(cluster: DockerSwarm) -> str:
    return cluster.output("service", "inspect", "--format", "{{.Spec.TaskTemplate.ContainerSpec.Image}}",
                        f"{STACK}_web").strip().split("@")[0]


def periodic_check(db_session, worker_ctx, work, intervals: int = 1) -> TickReport:
    """One scheduler tick's checks step, ``intervals`` check intervals after the last check, then the worker."""
    d = state(db_session)
    now = d.checked_at + timedelta(seconds=worker_ctx.settings.check_interval * intervals + 1)
    report = TickReport()
    Scheduler(worker_ctx).steps["checks"](report, now)
    work()
    return report


def test_an_image_changed_by_hand_is_drift_and_reconcile_puts_it_back(swarm, db_session, worker_ctx,  # noqa: F811
                                                                      services_ctx, work, port):  # noqa: F811
    swarm.retag("local/web:tag-a")
    swarm.retag("local/web:by-hand")
    repo = worker_ctx.manifests.current()
    req = deployments.DeploymentRequest(service="web", environment="stage", tag="tag-a", requested_by="test",
                                        origin="cli", deployment_overrides={"port": str(port)})
    try:
        deployments.request_deployment(db_session, repo, req, services_ctx)
        work()
        d = state(db_session)
        assert d.state is S.RUNNING, d.status_message
        assert d.drift == []  # the create's check reported what runs: in sync
        create = db_session.scalars(select(Action).where(Action.deployment_id == d.id)).one()
        baseline = {c["name"]: c for c in create.running["components"]}
        assert baseline[f"{STACK}_web"]["image"] == "local/web:tag-a"
        assert baseline[f"{STACK}_web"]["replicas"] == 1
        assert baseline[f"{STACK}_web"]["env"] == {"PORT": str(port)}  # the override Sami passed, as the target has it

        # Someone changes the image on the swarm by hand.
        swarm.run("service", "update", "--no-resolve-image", "--image", "local/web:by-hand",
                  f"{STACK}_web")
        assert web_image(swarm) == "local/web:by-hand"
        report = periodic_check(db_session, worker_ctx, work)
        assert report.checks == [d.id]
        d = state(db_session)
        assert d.state is S.RUNNING, (d.state, d.failure_reason, d.status_message)  # drift is not a Failure
        assert d.failure_reason is None
        view = drift.drift_view(d)
        assert view["status"] == "drifted"
        assert {"component": f"{STACK}_web", "field": "image", "deployed": "local/web:tag-a",
                "running": "local/web:by-hand"} in d.drift
        assert "local/web:by-hand" in view["summary"] and "local/web:tag-a" in view["summary"]
        assert d.drift_since is not None
        running = {c["name"]: c for c in d.running["components"]}
        assert running[f"{STACK}_web"]["image"] == "local/web:by-hand"

        # Reconcile: an update back to the deployed config.
        accepted = history.reconcile_deployment(db_session, worker_ctx.manifests.current(), STACK, services_ctx,
                                                requested_by="test", origin="cli")
        work()
        action = db_session.get(Action, accepted.action_id)
        db_session.refresh(action)
        assert action.kind == "update" and action.state is ActionState.SUCCEEDED, action.error
        assert action.config["reconcile_of"] == create.id and action.config["tag"] == "tag-a"
        assert web_image(swarm) == "local/web:tag-a"
        d = state(db_session)
        assert d.state is S.RUNNING and d.drift == [] and d.drift_since is None

        # A periodic check after it agrees: in sync.
        periodic_check(db_session, worker_ctx, work)
        d = state(db_session)
        assert d.drift == [] and d.state is S.RUNNING

        # The stack removed by hand is drift too.
        swarm.run("stack", "rm", STACK)
        periodic_check(db_session, worker_ctx, work)
        d = state(db_session)
        assert d.state is S.RUNNING, d.status_message
        assert d.drift == [{"component": None, "field": "present", "deployed": "2 component(s)",
                            "running": "nothing"}]
        assert d.running["components"] == []
    finally:
        swarm.run("stack", "rm", STACK, check=False)
