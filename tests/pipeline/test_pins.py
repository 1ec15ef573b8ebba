"""Rollback pins through the real pipeline (PostgreSQL, Redis, a worker and the probe control scripts): a
rollback pins its deployment, CI's requests for it are refused with 409 naming who pinned it, when and how to
unpin, until it is unpinned; a rollback of an environment to a snapshot pins every component."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from bot import outbox
from bot.core.errors import Conflict, Pinned
from bot.core.models import Deployment, EnvironmentRun, OutboxRow
from bot.services import deployments, environments, history, pins, snapshots
from bot.services.tokens import Scopes, create_token
from tests.pipeline.test_environments import VERSIONS, env_repo, services  # noqa: F401  (fixtures)

WHO = dict(requested_by="test", origin="cli")


def ci(client, token, tag, service="probe", environment="stage", **extra):
    return client.post("/deployment_request", data=json.dumps({"service": service, "environment": environment,
                                                                "tag": tag, **extra}),
                       headers={"Authorization": f"Bearer {token}"}, content_type="application/json")


def call(client, token, method, path):
    return client.open(path, method=method, headers={"Authorization": f"Bearer {token}"})


@pytest.fixture
def tokens(db_session):
    made = {"ci": create_token(db_session, "ci", Scopes(services=("probe",), environments=("stage",),
                                                        actions=("deploy", "read"))),
            "ops": create_token(db_session, "ops", Scopes(services=("*",), environments=("*",),
                                                          actions=("deploy", "read"))),
            "reader": create_token(db_session, "reader", Scopes(services=("*",), environments=("*",),
                                                                actions=("read",)))}
    db_session.commit()
    return made


def row(db_session, name="probe-stage") -> Deployment:
    db_session.expire_all()
    return db_session.scalars(select(Deployment).where(Deployment.name == name)).one()


def test_a_rollback_pins_until_unpinned(client, tokens, db_session, work):
    assert ci(client, tokens["ci"], "v1").status_code == 202
    work()
    assert ci(client, tokens["ci"], "v2").status_code == 202
    work()
    shown = call(client, tokens["ci"], "GET", "/api/v1/deployments/probe-stage").json["deployment"]
    assert shown["pin"] is None

    rollback = call(client, tokens["ops"], "POST", "/api/v1/deployments/probe-stage/rollback")
    assert rollback.status_code == 202, rollback.json
    work()
    deployment = row(db_session)
    assert (deployment.tag, deployment.pinned_by, deployment.pinned_action_id) == (
        "v1", "token:ops", rollback.json["action_id"])

    # CI builds v3 and asks for it: refused, nothing written, and the answer says who, when and how to unpin.
    actions_before = len(call(client, tokens["ci"], "GET", "/api/v1/deployments/probe-stage/actions")
                         .json["actions"])
    refused = ci(client, tokens["ci"], "v3")
    assert refused.status_code == 409, refused.json
    body = refused.json
    assert "pinned by token:ops at " in body["error"]
    assert "rollback to v1 (the configuration of action" in body["error"]
    assert "sami unpin probe-stage" in body["error"] and "Unpin button" in body["error"]
    assert body["pinned"]["by"] == "token:ops" and body["pinned"]["at"].startswith(
        deployment.pinned_at.isoformat()[:16])
    assert body["pinned"]["unpin"] == {"cli": "sami unpin probe-stage", "page": "/deployments/probe-stage",
                                       "api": "POST /api/v1/deployments/probe-stage/unpin",
                                       "comment": "/sami unpin",
                                       "deploy": "sami update probe-stage --tag TAG --unpin"}
    assert len(call(client, tokens["ci"], "GET", "/api/v1/deployments/probe-stage/actions").json["actions"]) \
        == actions_before
    assert row(db_session).tag == "v1"

    # The deployment's JSON shows the pin; a reader may not unpin it.
    shown = call(client, tokens["reader"], "GET", "/api/v1/deployments/probe-stage").json["deployment"]
    assert shown["pin"]["by"] == "token:ops" and shown["pin"]["action_id"] == rollback.json["action_id"]
    assert call(client, tokens["reader"], "POST", "/api/v1/deployments/probe-stage/unpin").status_code == 403

    # A refused request with a bad body is still a 400 first.
    assert ci(client, tokens["ci"], "v3", unpin="yes").status_code == 400

    unpinned = call(client, tokens["ci"], "POST", "/api/v1/deployments/probe-stage/unpin")
    assert unpinned.status_code == 200, unpinned.json
    assert unpinned.json["name"] == "probe-stage" and unpinned.json["pin"] is None
    again = call(client, tokens["ci"], "POST", "/api/v1/deployments/probe-stage/unpin")
    assert again.status_code == 409 and "is not pinned" in again.json["error"]

    accepted = ci(client, tokens["ci"], "v3")
    assert accepted.status_code == 202, accepted.json
    work()
    assert (row(db_session).tag, row(db_session).pinned_by) == ("v3", None)


def test_a_rollback_of_a_pinned_deployment_pins_it_again(db_session, worker_ctx, services_ctx, work):
    repo = worker_ctx.manifests.current()
    for tag in ("v1", "v2", "v3"):
        deployments.request_deployment(db_session, repo, deployments.DeploymentRequest(
            service="probe", environment="stage", tag=tag, **WHO), services_ctx)
        work()
    first = history.rollback_deployment(db_session, repo, "probe-stage", services_ctx, requested_by="alice",
                                        origin="cli")
    work()
    second = history.rollback_deployment(db_session, repo, "probe-stage", services_ctx, requested_by="bob",
                                         origin="cli")
    work()
    deployment = row(db_session)
    assert first.action_id != second.action_id
    assert (deployment.pinned_by, deployment.pinned_action_id) == ("bob", second.action_id)
    assert deployment.pin_reason == f"rollback to v3 (the configuration of action {second.rollback_to['action_id']})"

    # A new release clears the pin (the call a release makes), and requests change it again.
    assert pins.clear(row(db_session)) is True
    outbox.commit(db_session)
    assert pins.clear(row(db_session)) is False
    deployments.request_deployment(db_session, repo, deployments.DeploymentRequest(
        service="probe", environment="stage", tag="v4", **WHO), services_ctx)
    work()
    assert row(db_session).tag == "v4"


def test_a_pin_and_an_unpin_refresh_the_pull_requests_comment(db_session, worker_ctx, services_ctx, work):
    repo = worker_ctx.manifests.current()
    for tag in ("a1", "a2"):
        deployments.request_deployment(db_session, repo, deployments.DeploymentRequest(
            service="probe", environment="pull_request", pull_request=7, source_repo="acme/probe", tag=tag,
            **WHO), services_ctx)
        work()

    def comments() -> int:
        db_session.expire_all()
        return len(db_session.scalars(select(OutboxRow).where(OutboxRow.kind == "comment")).all())

    db_session.execute(OutboxRow.__table__.delete())
    db_session.commit()
    history.rollback_deployment(db_session, repo, "probe-pr-7", services_ctx, **WHO)
    assert comments() == 1
    db_session.execute(OutboxRow.__table__.delete())
    db_session.commit()
    pins.unpin(db_session, "probe-pr-7", requested_by="test")
    assert comments() == 1
    with pytest.raises(Conflict, match="is not pinned"):
        pins.unpin(db_session, "probe-pr-7", requested_by="test")


def test_an_environment_rolled_back_to_a_snapshot_pins_every_component(db_session, env_repo, services_ctx,  # noqa: F811
                                                                       work, app):
    repo = env_repo.current()
    environments.start_run(db_session, repo, "stage", "deploy", services_ctx, versions=VERSIONS, **WHO)
    work()
    snapshots.create(db_session, repo, "stage", name="good", created_by="test")
    environments.start_run(db_session, repo, "stage", "deploy", services_ctx, versions={"api": "v2", "web": "v2"},
                           **WHO)
    work()

    run = snapshots.deploy(db_session, repo, "stage", "good", services_ctx, requested_by="carol", origin="cli")
    work()
    db_session.expire_all()
    assert db_session.get(EnvironmentRun, run.id).state == "succeeded"
    rows = {d.name: d for d in db_session.scalars(select(Deployment).where(Deployment.environment == "stage"))}
    assert sorted(rows) == ["api-stage", "cache-stage", "db-stage", "web-stage"]
    for deployment in rows.values():
        assert deployment.pinned_by == "carol", deployment.name
        assert deployment.pin_reason == "environment stage rolled back to snapshot good"
    assert (rows["api-stage"].tag, rows["web-stage"].tag) == ("v1", "v1")
    # Each component's pin names the action that deployed it.
    component_actions = {c.deployment: c.action_id for c in db_session.get(EnvironmentRun, run.id).components}
    assert {name: d.pinned_action_id for name, d in rows.items()} == component_actions

    # The environment's status and page show every component pinned.
    shown = environments.status(db_session, repo, "stage")["components"]
    assert {c["deployment"]: c["pin"]["by"] for c in shown} == dict.fromkeys(rows, "carol")
    app.extensions["sami.manifests"] = env_repo
    page = app.test_client().get("/environments/stage").get_data(as_text=True)
    assert page.count(">Pinned</span>") == 4 and "sami unpin web-stage" in page

    # CI's request for one component of the pinned environment is refused...
    with pytest.raises(Pinned, match=r"web-stage.* is pinned by carol"):
        deployments.request_deployment(db_session, repo, deployments.DeploymentRequest(
            service="web", environment="stage", tag="v3", **WHO), services_ctx)
    db_session.rollback()
    # ... and so is a whole-environment deploy, naming every pinned component and how to unpin them.
    with pytest.raises(Pinned) as refused:
        environments.start_run(db_session, repo, "stage", "deploy", services_ctx, versions={"web": "v3"}, **WHO)
    assert "sami unpin api-stage && sami unpin cache-stage" in refused.value.message
    assert sorted(refused.value.details["pinned"]) == sorted(rows)
    # Deploying the snapshot again (a rollback too) goes through and pins again.
    again = snapshots.deploy(db_session, repo, "stage", "good", services_ctx, requested_by="dave", origin="cli")
    work()
    db_session.expire_all()
    assert db_session.get(EnvironmentRun, again.id).state == "succeeded"
    assert {d.pinned_by for d in db_session.scalars(select(Deployment).where(Deployment.environment == "stage"))} \
        == {"dave"}

    pins.unpin(db_session, "web-stage", requested_by="test")
    deployments.request_deployment(db_session, repo, deployments.DeploymentRequest(
        service="web", environment="stage", tag="v3", **WHO), services_ctx)
    work()
    db_session.expire_all()
    assert db_session.scalars(select(Deployment).where(Deployment.name == "web-stage")).one().tag == "v3"

    # The rest at once, through the API: deploy scope on every component, then environment deploys go again.
    token = create_token(db_session, "envs", Scopes(services=("*",), environments=("stage",),
                                                    actions=("deploy", "read")))
    reader = create_token(db_session, "env-reader", Scopes(services=("*",), environments=("stage",),
                                                           actions=("read",)))
    db_session.commit()
    client = app.test_client()
    assert call(client, reader, "POST", "/api/v1/environments/stage/unpin").status_code == 403
    unpinned = call(client, token, "POST", "/api/v1/environments/stage/unpin")
    assert unpinned.status_code == 200, unpinned.json
    assert unpinned.json == {"environment": "stage", "unpinned": ["api-stage", "cache-stage", "db-stage"]}
    again = call(client, token, "POST", "/api/v1/environments/stage/unpin")
    assert again.status_code == 409 and "no component of environment 'stage' is pinned" in again.json["error"]
    run = environments.start_run(db_session, repo, "stage", "deploy", services_ctx, versions={"api": "v3"}, **WHO)
    work()
    db_session.expire_all()
    assert db_session.get(EnvironmentRun, run.id).state == "succeeded"


def test_a_person_deploys_over_a_pin_on_purpose_with_unpin(client, tokens, db_session, work):
    for tag in ("v1", "v2"):
        assert ci(client, tokens["ci"], tag).status_code == 202
        work()
    assert call(client, tokens["ops"], "POST", "/api/v1/deployments/probe-stage/rollback").status_code == 202
    work()
    assert row(db_session).pinned_by == "token:ops"
    assert ci(client, tokens["ci"], "v3").status_code == 409
    fixed = ci(client, tokens["ops"], "v3-fixed", unpin=True)
    assert fixed.status_code == 202, fixed.json
    work()
    assert (row(db_session).tag, row(db_session).pinned_by) == ("v3-fixed", None)
    assert ci(client, tokens["ci"], "v4").status_code == 202
