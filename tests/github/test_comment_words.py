"""The sticky comment speaks the words of the status page and the CLI: a failure's short reason (a
generic failure says which script failed), and a deployment that still runs after its last deploy
failed says so beside its state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from bot import outbox
from bot.core.models import Deployment
from bot.core.states import DeploymentState, FailureReason
from bot.github import senders
from bot.services import deployments
from tests.pipeline import conftest as pipeline
from workers.scheduler import Scheduler

probe_repo, record, settings = pipeline.probe_repo, pipeline.record, pipeline.settings
worker_ctx, services_ctx, work = pipeline.worker_ctx, pipeline.services_ctx, pipeline.work
test_config = pipeline.test_config
REPOSITORY, NUMBER = "acme/probe", 7
S = DeploymentState


def deploy(db_session, worker_ctx, services_ctx, work, tag: str, **overrides: str | None) -> Deployment:
    req = deployments.DeploymentRequest(service="probe", environment="pull_request", tag=tag, requested_by="test",
                                        origin="cli", pull_request=NUMBER, source_repo=REPOSITORY,
                                        deployment_overrides=overrides)
    deployments.request_deployment(db_session, worker_ctx.manifests.current(), req, services_ctx)
    work()
    db_session.expire_all()
    return db_session.scalars(select(Deployment).where(Deployment.name == f"probe-pr-{NUMBER}")).one()


def state_cell(db_session) -> str:
    db_session.expire_all()
    found = outbox.pull_request_record(db_session, REPOSITORY, NUMBER)
    body = senders.render_comment(db_session, REPOSITORY, NUMBER, found, senders.Sender(None, "https://sami.test"),
                                  datetime.now(UTC))
    (line,) = [line for line in body.splitlines() if line.startswith("| probe |")]
    return line.split(" | ")[1]


def test_a_failed_update_says_which_script_failed_then_that_the_running_deployment_did_not_take_it(
        db_session, worker_ctx, services_ctx, work):
    assert deploy(db_session, worker_ctx, services_ctx, work, "v1").state is S.RUNNING
    assert state_cell(db_session) == "🟢 Running"

    # The update's script fails; its checks would pass (check=0): what ran before still runs.
    failed = deploy(db_session, worker_ctx, services_ctx, work, "v2", fail="update", check="0")
    assert failed.state is S.FAILURE and failed.failure_reason is FailureReason.GENERIC
    assert state_cell(db_session) == "🔴 Failed (update exit 1)"

    # The next periodic check passes: Running again, but the last deploy did not take.
    db_session.execute(update(Deployment).where(Deployment.id == failed.id)
                       .values(checked_at=failed.checked_at - timedelta(hours=1)))
    db_session.commit()
    assert Scheduler(worker_ctx).tick().checks == [failed.id]
    work()
    assert state_cell(db_session) == "🟢 Running · ❌ last deploy: update failed (`v2`)"

    # A deploy that succeeds clears it.
    assert deploy(db_session, worker_ctx, services_ctx, work, "v3", fail=None, check=None).state is S.RUNNING
    assert state_cell(db_session) == "🟢 Running"
