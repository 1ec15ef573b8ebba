"""Rollback, clone and cancel through the real pipeline: services, the API, the queue, a worker and
the probe control scripts on PostgreSQL and Redis; a running action is cancelled in a real
`sami worker` process."""

from __future__ import annotations

import json
import os
import re
import shutil
from datetime import UTC, datetime, timedelta

import jsonschema
import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bot.core.errors import Conflict, Invalid, NotFound
from bot.core.models import Action, ActionStep, Deployment
from bot.core.states import ActionState, DeploymentState, FailureReason
from bot.services import actions, deployments, history
from bot.services.tokens import Scopes, create_token
from bot.web import openapi
from tests.pipeline.conftest import read_record
from tests.pipeline.test_processes import pid_file, stack  # noqa: F401  (fixtures)
from tests.support.procs import alive
from workers.scheduler import Scheduler

S = DeploymentState
WHO = dict(requested_by="test", origin="cli")


def request(db_session, worker_ctx, services_ctx, tag="v1", environment="stage", **overrides):
    req = deployments.DeploymentRequest(service="probe", environment=environment, tag=tag, requested_by="test",
                                     origin="cli", app_overrides=overrides)
    return deployments.request_deployment(db_session, worker_ctx.manifests.current(), req, services_ctx)


def deployment(db_session, name="probe-stage") -> Deployment:
    db_session.expire_all()
    return db_session.scalars(select(Deployment).where(Deployment.name == name)).one()


def action(db_session, action_id) -> Action:
    db_session.expire_all()
    return db_session.get(Action, action_id)


@pytest.fixture
def qa_manifest(probe_repo, worker_ctx):
    """A ``qa`` environment of the probe service, like its stage."""
    services_dir = probe_repo / "services/probe/swarm"
    shutil.copytree(services_dir / "stage", services_dir / "qa")
    worker_ctx.manifests.current(refresh=True)


# --- rollback --------------------------------------------------------------------------------

def test_rollback_restores_the_previous_good_config(db_session, worker_ctx, services_ctx, work, record):
    first = request(db_session, worker_ctx, services_ctx, "v1", LOG_LEVEL="debug")
    work()
    request(db_session, worker_ctx, services_ctx, "v2", LOG_LEVEL="warning")
    work()
    assert deployment(db_session).tag == "v2"

    accepted = history.rollback_deployment(db_session, worker_ctx.manifests.current(), "probe-stage",
                                            services_ctx, **WHO)
    assert accepted.kind == "update" and accepted.state == "UpdatePending"
    rollback = action(db_session, accepted.action_id)
    assert rollback.config["rollback_to"] == first.action_id
    assert rollback.config["tag"] == "v1" and rollback.config["app_overrides"]["LOG_LEVEL"] == "debug"
    work()
    d = deployment(db_session)
    assert d.state is S.RUNNING, d.status_message
    assert d.tag == "v1" and d.image == "local/probe:v1"
    assert d.app_overrides == {"LOG_LEVEL": "debug"}
    assert read_record(record)[-5:-2] == [
        "config_check probe-stage v1", "update probe-stage v1", "check probe-stage v1"]
    assert action(db_session, accepted.action_id).state is ActionState.SUCCEEDED

    # Rolling back again goes back to v2: the previous good config is the one before the current.
    again = history.rollback_deployment(db_session, worker_ctx.manifests.current(), "probe-stage",
                                         services_ctx, **WHO)
    assert action(db_session, again.action_id).config["tag"] == "v2"


def test_rollback_to_a_chosen_action_and_its_refusals(db_session, worker_ctx, services_ctx, work):
    repo = worker_ctx.manifests.current()
    first = request(db_session, worker_ctx, services_ctx, "v1")
    work()
    with pytest.raises(Conflict, match="no earlier successful config"):
        history.rollback_deployment(db_session, repo, "probe-stage", services_ctx, **WHO)
    failed = deployments.DeploymentRequest(service="probe", environment="stage", tag="v2", requested_by="test",
                                        origin="cli", deployment_overrides={"fail": "update"})
    bad = deployments.request_deployment(db_session, repo, failed, services_ctx)
    work()
    assert deployment(db_session).state is S.FAILURE
    with pytest.raises(Conflict, match=f"action {bad.action_id} is a failed update"):
        history.rollback_deployment(db_session, repo, "probe-stage", services_ctx, to_action_id=bad.action_id,
                                     **WHO)
    with pytest.raises(NotFound, match="has no action 999999"):
        history.rollback_deployment(db_session, repo, "probe-stage", services_ctx, to_action_id=999999, **WHO)
    accepted = history.rollback_deployment(db_session, repo, "probe-stage", services_ctx,
                                            to_action_id=first.action_id, **WHO)
    assert action(db_session, accepted.action_id).config["tag"] == "v1"
    work()
    d = deployment(db_session)
    assert d.state is S.RUNNING and d.tag == "v1"
    assert d.deployment_overrides == {}  # the failed request's override went with its config


# --- clone -----------------------------------------------------------------------------------

def test_clone_into_another_environment_creates_and_runs(db_session, worker_ctx, services_ctx, work, record,
                                                         qa_manifest):
    request(db_session, worker_ctx, services_ctx, "v7", LOG_LEVEL="debug")
    work()
    accepted = history.clone_deployment(db_session, worker_ctx.manifests.current(), "probe-stage", services_ctx,
                                         environment="qa", **WHO)
    assert accepted.deployment == "probe-qa" and accepted.kind == "create"
    assert action(db_session, accepted.action_id).config["clone_of"] == "probe-stage"
    work()
    clone = deployment(db_session, "probe-qa")
    assert clone.state is S.RUNNING, clone.status_message
    assert (clone.service, clone.environment, clone.tag) == ("probe", "qa", "v7")
    assert clone.app_overrides == {"LOG_LEVEL": "debug"}
    assert "create probe-qa v7" in read_record(record)
    assert deployment(db_session).state is S.RUNNING  # the source is untouched


def test_clone_under_a_new_name_and_its_refusals(db_session, worker_ctx, services_ctx, work):
    repo = worker_ctx.manifests.current()
    request(db_session, worker_ctx, services_ctx, "v1")
    work()
    accepted = history.clone_deployment(db_session, repo, "probe-stage", services_ctx, new_name="probe-demo",
                                         **WHO)
    work()
    assert deployment(db_session, "probe-demo").state is S.RUNNING
    assert accepted.deployment == "probe-demo"
    with pytest.raises(Conflict, match="'probe-demo' is taken"):
        history.clone_deployment(db_session, repo, "probe-stage", services_ctx, new_name="probe-demo", **WHO)
    db_session.rollback()
    with pytest.raises(Invalid, match="has no 'qa' environment"):
        history.clone_deployment(db_session, repo, "probe-stage", services_ctx, environment="qa", **WHO)
    with pytest.raises(Invalid, match="is not a deployment name"):
        history.clone_deployment(db_session, repo, "probe-stage", services_ctx, new_name="Bad_Name", **WHO)
    with pytest.raises(Invalid, match="pull request"):
        history.clone_deployment(db_session, repo, "probe-stage", services_ctx, environment="pull_request",
                                  **WHO)
    with pytest.raises(NotFound):
        history.clone_deployment(db_session, repo, "nothing-here", services_ctx, environment="qa", **WHO)
    # A removed deployment's name stays with its service and environment.
    deployments.archive_deployment(db_session, repo, "probe-demo", services_ctx, **WHO)
    work()
    deployments.cleanup_deployment(db_session, repo, "probe-demo", services_ctx, **WHO)
    work()
    assert deployment(db_session, "probe-demo").state is S.REMOVED
    again = history.clone_deployment(db_session, repo, "probe-stage", services_ctx, new_name="probe-demo", **WHO)
    assert again.kind == "create"
    # as if probe-demo had been a removed deployment of another environment
    db_session.execute(update(Deployment).where(Deployment.name == "probe-demo").values(state=S.REMOVED,
                                                                                        environment="qa"))
    db_session.commit()
    with pytest.raises(Conflict, match="belongs to service 'probe' in environment 'qa'"):
        history.clone_deployment(db_session, repo, "probe-stage", services_ctx, new_name="probe-demo", **WHO)


# --- cancel (queued) -------------------------------------------------------------------------

def test_a_cancelled_queued_create_never_runs(db_session, worker_ctx, services_ctx, work, record):
    accepted = request(db_session, worker_ctx, services_ctx, "v1")
    cancelled = actions.cancel_action(db_session, accepted.action_id, services_ctx, **WHO)
    assert cancelled.state is ActionState.CANCELLED
    d = deployment(db_session)
    assert d.state is S.FAILURE and d.failure_reason is FailureReason.CANCELLED
    assert "cancelled by test before it ran" in d.status_message
    work()  # its queued job finds it cancelled and skips it
    assert read_record(record) == []
    assert action(db_session, accepted.action_id).state is ActionState.CANCELLED
    assert action(db_session, accepted.action_id).started_at is None
    with pytest.raises(Conflict) as refused:
        actions.cancel_action(db_session, accepted.action_id, services_ctx, **WHO)
    assert refused.value.message == f"action {accepted.action_id} already ended (cancelled); there is nothing to cancel"


def test_a_cancelled_queued_restore_leaves_it_archived(db_session, worker_ctx, services_ctx, work, record):
    repo = worker_ctx.manifests.current()
    request(db_session, worker_ctx, services_ctx, "v1")
    work()
    deployments.archive_deployment(db_session, repo, "probe-stage", services_ctx, **WHO)
    work()
    restore = deployments.restore_deployment(db_session, repo, "probe-stage", services_ctx, **WHO)
    actions.cancel_action(db_session, restore.action_id, services_ctx, **WHO)
    assert deployment(db_session).state is S.ARCHIVED
    work()
    assert not any(line.startswith("unarchive") for line in read_record(record))


def test_cancelling_one_of_two_queued_actions_leaves_the_deployment_pending(db_session, worker_ctx,
                                                                            services_ctx, work, record):
    create = request(db_session, worker_ctx, services_ctx, "v1")
    update = request(db_session, worker_ctx, services_ctx, "v2")
    actions.cancel_action(db_session, update.action_id, services_ctx, **WHO)
    assert deployment(db_session).state is S.UPDATE_PENDING  # the create still settles it
    work()
    d = deployment(db_session)
    assert d.state is S.RUNNING and action(db_session, create.action_id).state is ActionState.SUCCEEDED
    assert "update probe-stage v2" not in read_record(record)


def test_a_cancel_requested_while_its_worker_died_ends_the_action_cancelled(db_session, worker_ctx, services_ctx,
                                                                              work, record):
    accepted = request(db_session, worker_ctx, services_ctx, "v1")
    long_ago = datetime.now(UTC) - timedelta(minutes=5)
    db_session.execute(update(Action).where(Action.id == accepted.action_id).values(
        state=ActionState.RUNNING, started_at=long_ago, heartbeat_at=long_ago, worker="dead-worker"))
    db_session.execute(update(Deployment).values(lease_owner="dead-worker", lease_expires_at=long_ago))
    db_session.commit()
    running = actions.cancel_action(db_session, accepted.action_id, services_ctx, **WHO)
    assert running.state is ActionState.RUNNING and running.cancel_requested_by == "test"
    report = Scheduler(worker_ctx).tick()
    assert report.reaped == [accepted.action_id] and report.requeued == []
    a = action(db_session, accepted.action_id)
    assert a.state is ActionState.CANCELLED and a.error == f"action {a.id} (create) cancelled by test"
    d = deployment(db_session)
    assert d.state is S.FAILURE and d.failure_reason is FailureReason.CANCELLED
    work()
    assert not any(line.startswith(("config_check", "create")) for line in read_record(record))  # not run again


# --- the API ---------------------------------------------------------------------------------

@pytest.fixture
def tokens(db_session):
    made = {name: create_token(db_session, name, scopes) for name, scopes in {
        "admin": Scopes(admin=True),
        "reader": Scopes(actions=("read",)),
        "deployer": Scopes(services=("probe",), environments=("stage",), actions=("deploy", "read")),
        "archiver": Scopes(actions=("archive", "read")),
    }.items()}
    db_session.commit()
    return made


def call(client, token, method, path, body=None):
    """One API call; its answer is checked against the OpenAPI document's schema for its status."""
    response = client.open(path, method=method, headers={"Authorization": f"Bearer {token}"},
                           data=None if body is None else json.dumps(body), content_type="application/json")
    document = openapi.spec()
    template = next(t for t in document["paths"] if re.fullmatch(re.sub(r"{\w+}", "[^/]+", t), path.split("?")[0]))
    answers = document["paths"][template][method.lower()]["responses"]
    assert str(response.status_code) in answers, f"{method} {path}: {response.status_code} is not in the document"
    schema = answers[str(response.status_code)]["content"]["application/json"]["schema"]
    jsonschema.validate(response.json, {**schema, "components": document["components"]})
    return response


def test_api_rollback_clone_cancel_and_their_errors(client, tokens, db_session, worker_ctx, services_ctx, work,
                                                    qa_manifest):
    admin, deployer, reader = tokens["admin"], tokens["deployer"], tokens["reader"]
    first = call(client, deployer, "POST", "/deployment_request",
                 {"service": "probe", "environment": "stage", "tag": "v1"}).json
    work()
    call(client, deployer, "POST", "/deployment_request", {"service": "probe", "environment": "stage", "tag": "v2"})
    work()

    response = call(client, reader, "POST", "/api/v1/deployments/probe-stage/rollback", {})
    assert response.status_code == 403 and "may not deploy on probe/stage" in response.json["error"]
    response = call(client, deployer, "POST", "/api/v1/deployments/probe-stage/rollback", {"bogus": 1})
    assert response.status_code == 400 and "unknown field(s) bogus" in response.json["error"]
    response = call(client, deployer, "POST", "/api/v1/deployments/probe-stage/rollback")
    assert response.status_code == 202, response.json
    assert response.json["status_url"].endswith(f"/api/v1/actions/{response.json['action_id']}")
    rollback_id = response.json["action_id"]
    response = call(client, deployer, "POST", "/api/v1/deployments/probe-stage/rollback",
                    {"action_id": first["action_id"]})
    assert response.status_code == 202  # supersedes the queued rollback
    assert action(db_session, rollback_id).state is ActionState.SUPERSEDED

    # Cancel: the scope of the action's kind
    queued = response.json["action_id"]
    response = call(client, tokens["archiver"], "POST", f"/api/v1/actions/{queued}/cancel")
    assert response.status_code == 403 and "may not deploy" in response.json["error"]
    response = call(client, deployer, "POST", f"/api/v1/actions/{queued}/cancel")
    assert response.status_code == 200 and response.json["state"] == "cancelled"
    d = call(client, reader, "GET", "/api/v1/deployments/probe-stage").json["deployment"]
    assert d["state"] == "Failure" and d["failure_reason"] == "cancelled"
    response = call(client, deployer, "POST", f"/api/v1/actions/{queued}/cancel")
    assert response.status_code == 409
    assert response.json["error"] == f"action {queued} already ended (cancelled); there is nothing to cancel"
    response = call(client, deployer, "POST", f"/api/v1/actions/{first['action_id']}/cancel")
    assert response.status_code == 409
    assert response.json["error"] == (f"action {first['action_id']} already ended (succeeded); "
                                      "there is nothing to cancel")
    assert response.json["action_state"] == "succeeded"
    assert call(client, deployer, "POST", "/api/v1/actions/999999/cancel").status_code == 404

    # 409 with the transitions the state allows
    call(client, admin, "POST", "/api/v1/deployments/probe-stage/archive")
    response = call(client, deployer, "POST", "/api/v1/deployments/probe-stage/rollback")
    assert response.status_code == 409
    assert "from ArchivePending it can become: Archived, Failure" in response.json["error"]
    work()

    # Clone: deploy scope in the target environment
    response = call(client, deployer, "POST", "/api/v1/deployments/probe-stage/clone", {"environment": "qa"})
    assert response.status_code == 403 and "may not deploy on probe/qa" in response.json["error"]
    response = call(client, admin, "POST", "/api/v1/deployments/probe-stage/clone", {"environment": "qa"})
    assert response.status_code == 202 and response.json["deployment"] == "probe-qa"
    response = call(client, admin, "POST", "/api/v1/deployments/probe-stage/clone", {"environment": "qa"})
    assert response.status_code == 409 and "is taken" in response.json["error"]
    response = call(client, admin, "POST", "/api/v1/deployments/probe-stage/clone", {})
    assert response.status_code == 400
    assert call(client, admin, "POST", "/api/v1/deployments/nope/clone", {"name": "x"}).status_code == 404


def test_api_lists_a_deployments_actions_newest_first_a_page_at_a_time(client, tokens, db_session, worker_ctx,
                                                                       services_ctx, work):
    ids = [request(db_session, worker_ctx, services_ctx, f"v{n}").action_id for n in range(5)]
    pages, cursor = [], None
    while True:
        path = "/api/v1/deployments/probe-stage/actions?limit=2" + (f"&cursor={cursor}" if cursor else "")
        response = call(client, tokens["reader"], "GET", path)
        assert response.status_code == 200, response.json
        pages.append([a["id"] for a in response.json["actions"]])
        cursor = response.json["next_cursor"]
        if cursor is None:
            break
    assert pages == [ids[::-1][0:2], ids[::-1][2:4], ids[::-1][4:]]
    assert call(client, tokens["reader"], "GET", "/api/v1/deployments/nope/actions").status_code == 404
    assert call(client, tokens["reader"], "GET", "/api/v1/deployments/probe-stage/actions?limit=0").status_code == 400


# --- cancel (running, in a real worker process) ----------------------------------------------

def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.slow
def test_cancelling_a_running_action_stops_its_script_group(stack):  # noqa: F811
    stack.start("worker")
    code, accepted = stack.request("v1", hang="create")
    assert code == 202
    stack.wait(lambda: stack.actions()[0].script_pgid is not None and (stack.record.parent / "record.child").exists(),
               30, "the script to start")
    pgid = stack.actions()[0].script_pgid
    child_pid = pid_file(stack, "record.child")  # `sleep 300 &`, started by the script
    os.killpg(pgid, 0)  # the group is there

    response = stack.app.test_client().post(f"/api/v1/actions/{accepted['action_id']}/cancel",
                                            headers={"Authorization": f"Bearer {stack.token}"})
    assert response.status_code == 200, response.json
    assert response.json["state"] == "running" and response.json["cancel_requested_by"] == "token:ci"

    stack.wait(lambda: stack.actions()[0].state is ActionState.CANCELLED, 30, "the action to end cancelled")
    cancelled = stack.actions()[0]
    assert cancelled.error == f"action {cancelled.id} (create) cancelled by token:ci"
    assert "# cancelled by token:ci: the script was stopped" in cancelled.log
    d = stack.deployment()
    assert d.state is S.FAILURE and d.failure_reason is FailureReason.CANCELLED
    assert not alive(child_pid)
    # Its processes are stopped; the last ones (orphans) are reaped by init a moment later.
    stack.wait(lambda: group_gone(pgid), 10, "the script's process group to be gone")
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)
    with Session(stack.engine) as session:
        assert session.get(Action, cancelled.id).finished_at is not None
        # The stopped script's step has ended without an exit code.
        steps = session.scalars(select(ActionStep).where(ActionStep.action_id == cancelled.id)
                                .order_by(ActionStep.position)).all()
        assert [(s.operation, s.exit_code, s.timed_out, s.finished_at is not None) for s in steps] == [
            ("config_check", 0, False, True), ("create", None, False, True)]
