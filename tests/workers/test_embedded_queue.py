"""The embedded default's in-process queue: an action that may not start yet waits on a timer, not
on a worker thread, and runs when its time comes; the sweep starts it if the timer is gone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from bot.core import db
from bot.core.config import settings_from_mapping
from bot.core.models import Action, Deployment
from bot.core.states import ActionState
from bot.services.deployments import Context, DeploymentRequest, request_deployment
from tests.pipeline.probe_scripts import write_probe_repo
from tests.support.procs import wait_until
from workers.context import build_context
from workers.queue import InProcessBroker
from workers.scheduler import Scheduler, TickReport


@pytest.fixture
def embedded(tmp_path):
    """A worker context on SQLite with the in-process queue and one worker thread."""
    repo = write_probe_repo(tmp_path / "deployments", tmp_path / "record")
    settings = settings_from_mapping({"mode": "test", "instance_dir": str(tmp_path / "instance"),
                                      "deployments_repo": str(repo), "base_domain": "example.test"})
    db.upgrade(settings.database_url)
    ctx = build_context(settings, broker=InProcessBroker(threads=1))
    yield ctx
    ctx.broker.shutdown(wait=True)


def request(ctx, tag: str, debounce: float = 0, pull_request: int | None = None) -> int:
    environment = "pull_request" if pull_request else "stage"
    with ctx.session() as session:
        return request_deployment(session, ctx.manifests.current(), DeploymentRequest(
            service="probe", environment=environment, tag=tag, requested_by="test", origin="webhook",
            pull_request=pull_request, debounce_seconds=debounce), Context.from_settings(ctx.settings, ctx.broker)
        ).action_id


def action(ctx, action_id: int) -> Action:
    with ctx.session() as session:
        return session.get(Action, action_id)


def finished(ctx, action_id: int) -> Action | None:
    found = action(ctx, action_id)
    return found if found.state.finished else None


def lease_free(ctx) -> bool:
    with ctx.session() as session:
        return session.scalar(select(Deployment.lease_owner)) is None


def test_a_waiting_update_holds_no_worker_thread_and_runs_when_due(embedded):
    created = request(embedded, "v1")
    assert wait_until(lambda: finished(embedded, created), 60, "the create").state is ActionState.SUCCEEDED
    # An hour's wait: a timer holds it, and the one worker thread runs other work meanwhile.
    later = request(embedded, "v2", debounce=3600)
    assert embedded.broker.job_is_live(str(later))
    assert not embedded.broker.job_is_live(str(later), scheduled_counts=False)
    other = request(embedded, "v1", pull_request=9)
    assert wait_until(lambda: finished(embedded, other), 60, "the other create").state is ActionState.SUCCEEDED
    assert action(embedded, later).state is ActionState.QUEUED

    # A short wait ends by itself, never before its time.
    soon = request(embedded, "v2", debounce=0.5, pull_request=9)
    done = wait_until(lambda: finished(embedded, soon), 60, "the update that waited half a second")
    assert done.state is ActionState.SUCCEEDED and done.started_at >= done.retry_at


def test_the_sweep_starts_a_due_update_whose_timer_has_not_fired(embedded):
    created = request(embedded, "v1")
    wait_until(lambda: finished(embedded, created), 60, "the create")
    wait_until(lambda: lease_free(embedded), 30, "the create's worker to let the deployment go")
    later = request(embedded, "v2", debounce=3600)
    with embedded.session() as session:  # its time comes (the timer does not know)
        session.execute(update(Action).where(Action.id == later)
                        .values(retry_at=datetime.now(UTC) - timedelta(seconds=1)))
        session.commit()
    report = TickReport()
    Scheduler(embedded).steps["sweep"](report, datetime.now(UTC) + timedelta(seconds=5))
    assert report.queued == [later]
    assert wait_until(lambda: finished(embedded, later), 60, "the update").state is ActionState.SUCCEEDED
    # Its job ends, and no timer is left to start it again an hour from now.
    wait_until(lambda: not embedded.broker.job_is_live(str(later)), 30, "the update's job and timer to be gone")
