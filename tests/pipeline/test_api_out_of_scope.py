"""A deployment or action outside a token's read scope is answered exactly like one that does not
exist (404), on every route that names one: the API must not confirm that ``evil-stage`` or action
N exists, nor say its service, environment or state. A token that may read it but not change it
gets the 403 that names the missing scope. On the real database and Redis."""

from __future__ import annotations

import json
import shutil

import pytest

from bot.core.models import Action, Deployment
from bot.core.states import ActionState, DeploymentState
from bot.services.tokens import Scopes, create_token
from bot.web import shared

MISSING_NAME, MISSING_ACTION = "nope-stage", 999999


@pytest.fixture
def evil(db_session):
    """A deployment of service ``evil`` (outside the probe tokens' scope) with a queued action."""
    deployment = Deployment(name="evil-stage", service="evil", environment="stage", type="swarm",
                            state=DeploymentState.RUNNING, tag="v0")
    db_session.add(deployment)
    db_session.flush()
    action = Action(deployment_id=deployment.id, kind="update", state=ActionState.QUEUED, requested_by="test",
                    origin="api", config={"tag": "v0"})
    db_session.add(action)
    db_session.commit()
    return deployment.name, action.id


def token(db_session, name: str, scopes: Scopes) -> str:
    value = create_token(db_session, name, scopes)
    db_session.commit()
    return value


@pytest.fixture
def probe_token(db_session):
    """Every action on service probe, nothing on other services."""
    return token(db_session, "probe-all", Scopes(services=("probe",), actions=(
        "deploy", "read", "archive", "restore", "cleanup")))


def call(client, value, method, path, body=None):
    return client.open(path, method=method, headers={"Authorization": f"Bearer {value}"},
                       data=None if body is None else json.dumps(body), content_type="application/json")


DEPLOYMENT_ROUTES = [
    ("GET", "/api/v1/deployments/{}", None),
    ("GET", "/api/v1/deployments/{}/actions", None),
    ("POST", "/api/v1/deployments/{}/archive", None),
    ("POST", "/api/v1/deployments/{}/restore", None),
    ("POST", "/api/v1/deployments/{}/cleanup", None),
    ("POST", "/api/v1/deployments/{}/rollback", {}),
    ("POST", "/api/v1/deployments/{}/clone", {"name": "probe-copy"}),
    ("DELETE", "/api/v1/deployments/{}", None),
]
ACTION_ROUTES = [
    ("GET", "/api/v1/actions/{}", None),
    ("GET", "/api/v1/actions/{}/log", None),
    ("POST", "/api/v1/actions/{}/cancel", None),
]


@pytest.mark.parametrize(("method", "template", "body"), DEPLOYMENT_ROUTES)
def test_a_deployment_out_of_read_scope_is_answered_like_a_missing_one(client, probe_token, evil, method,
                                                                       template, body):
    name, _ = evil
    hidden = call(client, probe_token, method, template.format(name), body)
    missing = call(client, probe_token, method, template.format(MISSING_NAME), body)
    assert hidden.status_code == missing.status_code, (hidden.json, missing.json)
    assert hidden.json == json.loads(json.dumps(missing.json).replace(MISSING_NAME, name))
    assert "evil/" not in hidden.json["error"] and "Running" not in hidden.json["error"]
    if method != "DELETE":  # deleting is for admins: 403 before anything is looked up
        assert hidden.status_code == 404
        assert hidden.json["error"] == f"no deployment named {name!r} (list them: GET /api/v1/deployments)"


@pytest.mark.parametrize(("method", "template", "body"), ACTION_ROUTES)
def test_an_action_out_of_read_scope_is_answered_like_a_missing_one(client, probe_token, evil, db_session, method,
                                                                    template, body):
    _, action_id = evil
    hidden = call(client, probe_token, method, template.format(action_id), body)
    missing = call(client, probe_token, method, template.format(MISSING_ACTION), body)
    assert hidden.status_code == missing.status_code, (hidden.json, missing.json)
    assert hidden.json == json.loads(json.dumps(missing.json).replace(str(MISSING_ACTION), str(action_id)))
    assert "evil" not in hidden.json["error"]
    if not template.endswith("/log"):  # the log is for admins: 403 before anything is looked up
        assert hidden.status_code == 404 and hidden.json["error"] == f"no action {action_id}"
    db_session.expire_all()
    assert db_session.get(Action, action_id).state is ActionState.QUEUED  # not cancelled


def test_a_token_that_may_read_but_not_change_gets_the_403_naming_the_scope(client, db_session, evil):
    name, action_id = evil
    reader = token(db_session, "evil-reader", Scopes(services=("evil",), actions=("read",)))
    assert call(client, reader, "GET", f"/api/v1/deployments/{name}").status_code == 200
    assert call(client, reader, "GET", f"/api/v1/actions/{action_id}").status_code == 200
    for kind in ("archive", "restore", "cleanup"):
        response = call(client, reader, "POST", f"/api/v1/deployments/{name}/{kind}")
        assert response.status_code == 403
        assert f"may not {kind} on evil/stage" in response.json["error"]
    response = call(client, reader, "POST", f"/api/v1/deployments/{name}/rollback", {})
    assert response.status_code == 403 and "may not deploy on evil/stage" in response.json["error"]
    response = call(client, reader, "POST", f"/api/v1/actions/{action_id}/cancel")
    assert response.status_code == 403 and "may not deploy on evil/stage" in response.json["error"]


def test_a_token_that_may_change_but_not_read_still_can(client, db_session, evil):
    """Hiding is for what a token may neither read nor do: a deploy-only CI token may cancel the
    updates it asked for (its 200 says no more than its deploy request's 202 did)."""
    name, action_id = evil
    deployer = token(db_session, "evil-ci", Scopes(services=("evil",), actions=("deploy",)))
    assert call(client, deployer, "GET", f"/api/v1/deployments/{name}").status_code == 404
    assert call(client, deployer, "GET", f"/api/v1/actions/{action_id}").status_code == 404
    response = call(client, deployer, "POST", f"/api/v1/actions/{action_id}/cancel")
    assert response.status_code == 200 and response.json["state"] == "cancelled"
    # the archive scope it lacks and the read scope it lacks: the deployment is unknown to it there
    assert call(client, deployer, "POST", f"/api/v1/deployments/{name}/archive").status_code == 404


def test_a_clone_name_taken_out_of_read_scope_is_only_not_available(client, probe_token, admin_token, evil, db_session):
    call(client, admin_token, "POST", "/deployment_request", {"service": "probe", "environment": "stage", "tag": "v1"})
    response = call(client, probe_token, "POST", "/api/v1/deployments/probe-stage/clone", {"name": "evil-stage"})
    assert response.status_code == 409, response.json
    assert response.json == {"status": 409, "error": "deployment name 'evil-stage' is not available; choose another "
                                                     "'name'"}
    # a removed deployment of another service keeps its name, and says no more
    db_session.add(Deployment(name="evil-old", service="evil", environment="qa", type="swarm",
                              state=DeploymentState.REMOVED))
    db_session.commit()
    response = call(client, probe_token, "POST", "/api/v1/deployments/probe-stage/clone", {"name": "evil-old"})
    assert response.status_code == 409
    assert response.json == {"status": 409, "error": "deployment name 'evil-old' is not available; choose another "
                                                     "'name'"}
    # one the token may read is named with its state, as before
    call(client, probe_token, "POST", "/api/v1/deployments/probe-stage/clone", {"name": "probe-copy"})
    response = call(client, probe_token, "POST", "/api/v1/deployments/probe-stage/clone", {"name": "probe-copy"})
    assert response.status_code == 409
    assert "'probe-copy' is taken (it is CreatePending)" in response.json["error"]
    assert response.json["state"] == "CreatePending"


def test_a_deployment_name_taken_out_of_read_scope_is_only_not_available(client, db_session, probe_repo, app):
    # service "probe" in "extra-stage" and a row of service "probe-extra" in "stage" share a name
    shutil.copytree(probe_repo / "services/probe/swarm/stage", probe_repo / "services/probe/swarm/extra-stage")
    db_session.add(Deployment(name="probe-extra-stage", service="probe-extra", environment="stage", type="swarm",
                              state=DeploymentState.RUNNING, tag="v0"))
    db_session.commit()
    shared.init_app(app)  # a fresh manifest store: the repo changed on disk
    ci = token(db_session, "probe-ci", Scopes(services=("probe",), actions=("deploy", "read")))
    response = call(client, ci, "POST", "/deployment_request",
                    {"service": "probe", "environment": "extra-stage", "tag": "v1"})
    assert response.status_code == 409, response.json
    assert response.json["error"] == ("deployment name 'probe-extra-stage' is not available; rename the environment "
                                      "or the service")


@pytest.fixture
def admin_token(db_session):
    return token(db_session, "admin", Scopes(admin=True))
