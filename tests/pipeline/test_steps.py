"""An action's steps: each control-script call the worker makes for it (config_check, create, check, ...)
is a row with its times, its real exit code and whether its timeout stopped it, written by a real worker
running the probe control scripts; the action's exit code is its last step's."""

from __future__ import annotations

import itertools

from sqlalchemy import select

from bot.core.models import Action, ActionStep
from bot.core.states import ActionState, DeploymentState
from bot.services import deployments
from tests.pipeline.conftest import read_record

S = DeploymentState
WHO = dict(requested_by="test", origin="cli")


def request(db_session, worker_ctx, services_ctx, tag="v1", **overrides):
    req = deployments.DeploymentRequest(service="probe", environment="stage", tag=tag, requested_by="test",
                                        origin="cli", deployment_overrides=overrides)
    return deployments.request_deployment(db_session, worker_ctx.manifests.current(), req, services_ctx)


def action(db_session, action_id) -> Action:
    db_session.expire_all()
    return db_session.get(Action, action_id)


def steps(db_session, action_id) -> list[tuple]:
    db_session.expire_all()
    rows = db_session.scalars(select(ActionStep).where(ActionStep.action_id == action_id)
                              .order_by(ActionStep.position)).all()
    return [(s.position, s.operation, s.exit_code, s.timed_out, s.attempts) for s in rows]


def set_manifest(probe_repo, worker_ctx, old: str, new: str) -> None:
    manifest = probe_repo / "services/probe/swarm/stage/sami.yaml"
    manifest.write_text(manifest.read_text().replace(old, new))
    worker_ctx.manifests.current(refresh=True)


def test_each_script_call_is_a_step_in_the_order_it_ran(db_session, worker_ctx, services_ctx, work, record):
    created = request(db_session, worker_ctx, services_ctx).action_id
    work()
    assert read_record(record)[:3] == ["config_check probe-stage v1", "create probe-stage v1", "check probe-stage v1"]
    assert steps(db_session, created) == [(1, "config_check", 0, False, 1), (2, "create", 0, False, 1),
                                          (3, "check", 0, False, 1)]
    rows = action(db_session, created).steps
    assert all(s.started_at <= s.finished_at for s in rows)
    assert all(a.finished_at <= b.started_at for a, b in itertools.pairwise(rows))
    assert all(s.duration_seconds is not None and s.duration_seconds >= 0 for s in rows)

    # An archive makes two script calls: two steps.
    archived = deployments.archive_deployment(db_session, worker_ctx.manifests.current(), "probe-stage",
                                              services_ctx, **WHO).action_id
    work()
    assert action(db_session, archived).state is ActionState.SUCCEEDED
    assert steps(db_session, archived) == [(1, "archive", 0, False, 1), (2, "archive_check", 0, False, 1)]
    assert action(db_session, archived).exit_code == 0


def test_a_failed_step_keeps_its_code_and_the_action_takes_it(db_session, worker_ctx, services_ctx, work):
    failed = request(db_session, worker_ctx, services_ctx, fail="create").action_id
    work()
    a = action(db_session, failed)
    assert a.state is ActionState.FAILED
    # The steps stop at the one that failed, with the code the script exited with.
    assert steps(db_session, failed) == [(1, "config_check", 0, False, 1), (2, "create", 1, False, 1)]
    assert a.exit_code == a.steps[-1].exit_code == 1


def test_a_check_run_until_its_status_timeout_is_one_step_with_the_last_code(db_session, worker_ctx, services_ctx,
                                                                            work, probe_repo, record):
    set_manifest(probe_repo, worker_ctx, "status_timeout: 5s", "status_timeout: 2s")
    failed = request(db_session, worker_ctx, services_ctx, check="7").action_id
    work()
    a = action(db_session, failed)
    assert a.state is ActionState.FAILED
    calls = sum(1 for line in read_record(record) if line.startswith("check "))
    assert calls > 1
    assert steps(db_session, failed) == [(1, "config_check", 0, False, 1), (2, "create", 0, False, 1),
                                         (3, "check", 7, False, calls)]
    assert a.exit_code == 7
    check = a.steps[-1]
    assert check.duration_seconds >= 1.0  # from the first call's start to the last one's end


def test_a_timed_out_step_is_marked_and_has_no_exit_code(db_session, worker_ctx, services_ctx, work, probe_repo):
    set_manifest(probe_repo, worker_ctx, "timeout: 60s", "timeout: 2s")
    hung = request(db_session, worker_ctx, services_ctx, hang="create").action_id
    work()
    a = action(db_session, hung)
    assert a.state is ActionState.TIMED_OUT
    assert steps(db_session, hung) == [(1, "config_check", 0, False, 1), (2, "create", None, True, 1)]
    assert a.exit_code is None
    assert a.steps[-1].finished_at is not None and a.steps[-1].duration_seconds >= 2.0


def test_steps_go_with_their_action(db_session, worker_ctx, services_ctx, work):
    created = request(db_session, worker_ctx, services_ctx).action_id
    work()
    assert len(steps(db_session, created)) == 3
    db_session.execute(Action.__table__.delete().where(Action.id == created))
    db_session.commit()
    assert steps(db_session, created) == []


# --- the API -----------------------------------------------------------------------------------

def test_the_api_shows_each_actions_steps(client, db_session, worker_ctx, services_ctx, work):
    from bot.services.tokens import Scopes, create_token
    from tests.pipeline.test_rollback_clone_cancel import call  # checks each answer against the OpenAPI document

    admin = create_token(db_session, "admin", Scopes(admin=True))
    reader = create_token(db_session, "reader", Scopes(actions=("read",)))
    db_session.commit()
    created = request(db_session, worker_ctx, services_ctx).action_id
    work()
    failed = request(db_session, worker_ctx, services_ctx, tag="v2", fail="update").action_id
    work()

    detail = call(client, reader, "GET", "/api/v1/deployments/probe-stage").json
    by_id = {a["id"]: a for a in detail["actions"]}
    shown = [(s["operation"], s["exit_code"], s["timed_out"]) for s in by_id[created]["steps"]]
    assert shown == [("config_check", 0, False), ("create", 0, False), ("check", 0, False)]
    assert [(s["operation"], s["exit_code"]) for s in by_id[failed]["steps"]] == [("config_check", 0), ("update", 1)]
    assert by_id[failed]["exit_code"] == 1
    step = by_id[failed]["steps"][-1]
    assert set(step) == {"operation", "started_at", "finished_at", "exit_code", "timed_out", "duration_seconds",
                         "attempts"}
    assert step["started_at"] <= step["finished_at"] and step["duration_seconds"] >= 0

    history = call(client, reader, "GET", "/api/v1/deployments/probe-stage/actions").json["actions"]
    assert [a["steps"] for a in history] == [by_id[failed]["steps"], by_id[created]["steps"]]
    assert call(client, reader, "GET", f"/api/v1/actions/{failed}").json["steps"] == by_id[failed]["steps"]
    log = call(client, admin, "GET", f"/api/v1/actions/{failed}/log").json
    assert log["steps"] == by_id[failed]["steps"]
    # The document describes every field of these answers, the steps' too.
    from bot.web import openapi

    schemas = openapi.spec()["components"]["schemas"]
    assert set(by_id[failed]) <= set(schemas["Action"]["properties"])
    assert set(log) <= set(schemas["ActionLog"]["properties"])
    assert set(step) == set(schemas["ActionStep"]["properties"]) == set(schemas["ActionStep"]["required"])
    # A queued action has no steps yet.
    queued = request(db_session, worker_ctx, services_ctx, tag="v3").action_id
    assert call(client, reader, "GET", f"/api/v1/actions/{queued}").json["steps"] == []
