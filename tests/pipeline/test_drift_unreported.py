"""A control script that does not report what runs keeps working: no report, no drift verdict."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from bot.core.models import Deployment
from bot.core.states import DeploymentState
from bot.services import deployments, drift
from workers.scheduler import Scheduler, TickReport


def test_a_script_that_reports_nothing_gives_no_drift_verdict(db_session, worker_ctx, services_ctx, work):
    req = deployments.DeploymentRequest(service="probe", environment="stage", tag="v1", requested_by="test",
                                        origin="cli")
    deployments.request_deployment(db_session, worker_ctx.manifests.current(), req, services_ctx)
    work()
    d = db_session.scalars(select(Deployment).where(Deployment.name == "probe-stage")).one()
    assert d.state is DeploymentState.RUNNING
    report = TickReport()
    Scheduler(worker_ctx).steps["checks"](report, d.checked_at + timedelta(seconds=worker_ctx.settings.check_interval
                                                                          + 1))
    assert report.checks == [d.id] and report.check_batches == []  # its scripts have no check_batch
    work()
    db_session.expire_all()
    assert d.state is DeploymentState.RUNNING
    assert d.drift is None and d.running is None and d.drift_since is None
    assert drift.drift_view(d)["status"] == "unknown"
    views = drift.config_views(db_session, d)
    assert views["running"] is None and views["deployed"]["tag"] == views["requested"]["tag"] == "v1"
