"""POST /deployment_request and the /api/v1 endpoints, on the real database and Redis."""

from __future__ import annotations

import json

import pytest
from rq.job import Job
from sqlalchemy import select

from bot.core.models import Action, Deployment
from bot.core.states import ActionState, DeploymentState
from bot.services.tokens import Scopes, create_token
from bot.web import create_app, shared
from tests.support.servers import free_port


@pytest.fixture
def token(db_session):
    value = create_token(db_session, "ci-probe", Scopes(services=("probe",), environments=("stage",),
                                                        actions=("deploy", "read", "archive")))
    db_session.commit()
    return value


@pytest.fixture
def admin_token(db_session):
    value = create_token(db_session, "admin", Scopes(admin=True))
    db_session.commit()
    return value


def post(client, token, body, path="/deployment_request"):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(path, data=data, headers=headers, content_type="application/json")


def test_accepted_request_is_recorded_and_queued(client, token, db_session, redis_client):
    response = post(client, token, {"service": "probe", "environment": "stage", "tag": "v1",
                                    "overrides": {"app": {"LOG_LEVEL": "debug"}}})
    assert response.status_code == 202, response.json
    body = response.json
    assert body["deployment"] == "probe-stage"
    assert body["kind"] == "create"
    assert body["status_url"].endswith(f"/api/v1/actions/{body['action_id']}")
    action = db_session.get(Action, body["action_id"])
    assert action.state is ActionState.QUEUED
    assert action.requested_by == "token:ci-probe" and action.origin == "api"
    assert action.config["tag"] == "v1"
    assert action.config["image"] == "local/probe:v1"
    assert action.config["app_overrides"] == {"LOG_LEVEL": "debug"}
    deployment = db_session.scalars(select(Deployment)).one()
    assert deployment.state is DeploymentState.CREATE_PENDING
    assert deployment.links == [{"name": "app", "url": "https://probe-stage.example.test"}]
    job = Job.fetch(str(body["action_id"]), connection=redis_client)
    assert job.args == (body["action_id"],)


def test_second_request_is_an_update(client, token):
    post(client, token, {"service": "probe", "environment": "stage", "tag": "v1"})
    response = post(client, token, {"service": "probe", "environment": "stage", "image": "local/probe:v2"})
    assert response.status_code == 202
    assert response.json["kind"] == "update"
    assert response.json["state"] == "UpdatePending"


@pytest.mark.parametrize(("headers", "message"), [
    ({}, "missing token"),
    ({"Authorization": "Basic abc"}, "missing token"),
    ({"Authorization": "Bearer sami_000000000000_" + "x" * 43}, "invalid or revoked token"),
    ({"Authorization": "Bearer nonsense"}, "malformed token"),
])
def test_unauthenticated_requests_get_401(client, headers, message):
    response = client.post("/deployment_request", json={"service": "probe", "environment": "stage", "tag": "v1"},
                           headers=headers)
    assert response.status_code == 401
    assert message in response.json["error"]


@pytest.mark.parametrize("body", [
    {"service": "probe", "environment": "production", "tag": "v1"},
    {"service": "other", "environment": "stage", "tag": "v1"},
])
def test_out_of_scope_requests_get_403(client, token, body):
    response = post(client, token, body)
    assert response.status_code == 403
    assert "may not deploy" in response.json["error"]


@pytest.mark.parametrize(("body", "message"), [
    ("{not json", "must be a JSON object"),
    ("[1, 2]", "not a list"),
    ({"environment": "stage", "tag": "v1"}, "'service' is required"),
    ({"service": "probe", "environment": "stage"}, "give 'tag' or 'image'"),
    ({"service": "probe", "environment": "stage", "tag": "v1", "colour": "red"}, "unknown field(s) colour"),
    ({"service": "probe", "environment": "stage", "tag": "bad tag!"}, "not a valid image tag"),
    ({"service": "probe", "environment": "stage", "image": "evil/probe:v1"}, "is not this service's image"),
    ({"service": "probe", "environment": "stage", "tag": "v1", "overrides": {"deployment": {"record": "/x"}}},
     "deployment override 'record' is not allowed by the manifest (allowed: sleep, fail, hang, check"),
    ({"service": "probe", "environment": "stage", "tag": "v1", "overrides": {"app": {"A": {"b": 1}}}},
     "is not allowed"),
    ({"service": "probe", "environment": "stage", "tag": "v1", "pull_request": "7"},
     "'pull_request' must be a whole number from 1 to 2147483647"),
])
def test_malformed_requests_get_400(client, token, body, message):
    response = post(client, token, body)
    assert response.status_code == 400
    assert message in response.json["error"]


def test_unknown_service_and_environment_say_what_exists(client, admin_token):
    response = post(client, admin_token, {"service": "nope", "environment": "stage", "tag": "v1"})
    assert response.status_code == 400
    assert response.json["error"] == "unknown service 'nope' (known: probe)"
    response = post(client, admin_token, {"service": "probe", "environment": "qa", "tag": "v1"})
    assert response.json["error"] == "service 'probe' has no 'qa' environment (it has: pull_request, stage)"


def test_pull_request_environment_names(client, admin_token):
    response = post(client, admin_token, {"service": "probe", "environment": "pull_request", "tag": "v1",
                                          "pull_request": 42})
    assert response.status_code == 202
    assert response.json["deployment"] == "probe-pr-42"


def test_too_large_body_gets_413(client, token):
    response = post(client, token, json.dumps({"service": "probe", "environment": "stage", "tag": "v1",
                                               "padding": "x" * 2_000_000}))
    assert response.status_code == 413
    assert "too large" in response.json["error"]


def test_archiving_while_pending_is_a_conflict(client, token):
    post(client, token, {"service": "probe", "environment": "stage", "tag": "v1"})
    response = client.post("/api/v1/deployments/probe-stage/archive", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 409
    assert "in progress" in response.json["error"]


def test_request_is_accepted_when_redis_is_down(test_config, session_factory, token, db_session):
    app = create_app({**test_config, "redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    app.extensions["sami.db"] = session_factory
    response = post(app.test_client(), token, {"service": "probe", "environment": "stage", "tag": "v1"})
    assert response.status_code == 202
    action = db_session.get(Action, response.json["action_id"])
    assert action.state is ActionState.QUEUED  # recorded: the scheduler's sweep queues it once Redis is back


def test_read_endpoints(client, token, admin_token):
    accepted = post(client, token, {"service": "probe", "environment": "stage", "tag": "v1"}).json
    auth = {"Authorization": f"Bearer {token}"}
    listing = client.get("/api/v1/deployments?state=CreatePending", headers=auth).json
    assert [d["name"] for d in listing["deployments"]] == ["probe-stage"]
    assert client.get("/api/v1/deployments?state=Bogus", headers=auth).status_code == 400
    detail = client.get("/api/v1/deployments/probe-stage", headers=auth).json
    assert detail["deployment"]["tag"] == "v1"
    assert [a["id"] for a in detail["actions"]] == [accepted["action_id"]]
    action = client.get(f"/api/v1/actions/{accepted['action_id']}", headers=auth).json
    assert action["state"] == "queued" and "log" not in action
    assert client.get(f"/api/v1/actions/{accepted['action_id']}/log", headers=auth).status_code == 403
    log = client.get(f"/api/v1/actions/{accepted['action_id']}/log",
                     headers={"Authorization": f"Bearer {admin_token}"})
    assert log.status_code == 200 and log.json["log"] == ""
    services = client.get("/api/v1/services", headers=auth).json
    # The token may read probe in stage only: the pull_request manifest is not listed for it.
    assert {(m["service"], m["environment"]) for m in services["manifests"]} == {("probe", "stage")}
    assert client.get("/api/v1/deployments/nope", headers=auth).status_code == 404


@pytest.mark.parametrize(("field", "value", "message"), [
    ("sha", "not-a-sha", "'sha' must be a commit sha"),
    ("sha", "a" * 65, "'sha' must be a commit sha"),
    ("ref", "x" * 256, "is not a branch or tag name"),
    ("repository", "no-slash", "'repository' must be owner/name"),
    ("sha", "abcdef1\n", "'sha' must be a commit sha"),
    ("repository", "acme/web\n", "'repository' must be owner/name"),
])
def test_source_fields_are_checked(client, token, field, value, message):
    response = post(client, token, {"service": "probe", "environment": "stage", "tag": "v1", field: value})
    assert response.status_code == 400
    assert message in response.json["error"]


def test_read_scope_is_limited_to_the_tokens_services_and_environments(client, admin_token, db_session):
    post(client, admin_token, {"service": "probe", "environment": "stage", "tag": "v1"})
    accepted = post(client, admin_token, {"service": "probe", "environment": "pull_request", "tag": "v1",
                                          "pull_request": 3}).json
    pr_only = create_token(db_session, "pr-reader", Scopes(environments=("pull_request",), actions=("read",)))
    db_session.commit()
    auth = {"Authorization": f"Bearer {pr_only}"}
    names = [d["name"] for d in client.get("/api/v1/deployments", headers=auth).json["deployments"]]
    assert names == ["probe-pr-3"]
    # out of its scope is answered as unknown (404), not confirmed by a 403
    assert client.get("/api/v1/deployments/probe-stage", headers=auth).status_code == 404
    assert client.get("/api/v1/deployments/probe-pr-3", headers=auth).status_code == 200
    stage_action = client.get("/api/v1/deployments/probe-stage",
                              headers={"Authorization": f"Bearer {admin_token}"}).json["actions"][0]["id"]
    assert client.get(f"/api/v1/actions/{stage_action}", headers=auth).status_code == 404
    assert client.get(f"/api/v1/actions/{accepted['action_id']}", headers=auth).status_code == 200


def test_a_name_taken_by_another_service_is_a_conflict(client, admin_token, probe_repo, app, db_session):
    import shutil

    # The loader refuses two manifests that give one name; a row left by an earlier layout of the
    # repo (service "probe-extra" in "stage") must still not be taken over by "probe" in "extra-stage".
    shutil.copytree(probe_repo / "services/probe/swarm/stage", probe_repo / "services/probe/swarm/extra-stage")
    db_session.add(Deployment(name="probe-extra-stage", service="probe-extra", environment="stage", type="swarm",
                              state=DeploymentState.RUNNING, tag="v0"))
    db_session.commit()
    shared.init_app(app)  # a fresh manifest store: the repo changed on disk
    response = post(client, admin_token, {"service": "probe", "environment": "extra-stage", "tag": "v1"})
    assert response.status_code == 409
    assert "is taken by service 'probe-extra' in environment 'stage'" in response.json["error"]


def test_an_unreadable_deployments_repo_answers_503(test_config, session_factory, token, tmp_path):
    app = create_app({**test_config, "deployments_repo": str(tmp_path / "nowhere")})
    app.extensions["sami.db"] = session_factory
    response = post(app.test_client(), token, {"service": "probe", "environment": "stage", "tag": "v1"})
    assert response.status_code == 503
    assert "the deployments repo cannot be read right now" in response.json["error"]


def test_services_list_only_what_the_token_may_read(client, admin_token, probe_repo, app, db_session):
    import shutil

    import yaml

    for service, environment in (("other", "stage"), ("probe", "production")):
        folder = probe_repo / "services" / service / "swarm" / environment
        shutil.copytree(probe_repo / "services/probe/swarm/stage", folder)
        manifest = yaml.safe_load((folder / "sami.yaml").read_text())
        (folder / "sami.yaml").write_text(yaml.safe_dump({**manifest, "service_name": service}))
    for service in ("other", "probe"):
        folder = probe_repo / "services" / service / "swarm" / "qa"
        folder.mkdir()
        (folder / "sami.yaml").write_text("version: v0\n")
    shared.init_app(app)  # a fresh manifest store: the repo changed on disk

    def listing(scopes: Scopes | None):
        value = admin_token if scopes is None else create_token(db_session, f"reader-{hash(scopes)}", scopes)
        db_session.commit()
        body = client.get("/api/v1/services", headers={"Authorization": f"Bearer {value}"}).json
        return ({(m["service"], m["environment"]) for m in body["manifests"]},
                {e["path"].rsplit("/", 2)[0] for e in body["errors"]})

    assert listing(Scopes(services=("probe",), environments=("stage",), actions=("read",))) == (
        {("probe", "stage")}, set())
    assert listing(Scopes(services=("probe",), environments=("stage", "qa"), actions=("read",))) == (
        {("probe", "stage")}, {"services/probe/swarm"})
    assert listing(Scopes(services=("probe",), actions=("read",))) == (
        {("probe", "stage"), ("probe", "pull_request"), ("probe", "production")}, {"services/probe/swarm"})
    assert listing(None) == (
        {("probe", "stage"), ("probe", "pull_request"), ("probe", "production"), ("other", "stage")},
        {"services/probe/swarm", "services/other/swarm"})


@pytest.mark.parametrize("ref", ["a..b", "$(touch /tmp/x)", "--name=evil", "a|rm -rf /", "-x", "feature/", "/main",
                                 "a//b", "main.", "main.lock", "x/.hidden", "@", "a b", "a:b", "a~1", "a^", "a?",
                                 "a*", "a[1]", "a\\b", "a;b", "a&b", "a`b`", "a>b", "a'b", 'a"b', "a@{1}",
                                 "naïve", "x" * 256, "", "main\n", "main\x00"])
def test_a_ref_that_is_not_a_safe_git_ref_name_is_a_400(client, token, ref):
    response = post(client, token, {"service": "probe", "environment": "stage", "tag": "v1", "ref": ref})
    assert response.status_code == 400, (ref, response.json)
    assert f"ref {ref!r} is not a branch or tag name" in response.json["error"]


@pytest.mark.parametrize("ref", ["main", "feature/login-form", "refs/heads/main", "v1.2.3", "release/2024.01",
                                 "user@host/fix_1+2", "refs/pull/42/head"])
def test_git_ref_names_are_accepted(client, token, ref):
    response = post(client, token, {"service": "probe", "environment": "stage", "tag": "v1", "ref": ref})
    assert response.status_code == 202, (ref, response.json)


@pytest.mark.parametrize("image", ["local/probe:v2", "local/probe", "local/probe@sha256:" + "a" * 64])
def test_tag_and_image_together_are_refused(client, token, image):
    response = post(client, token, {"service": "probe", "environment": "stage", "tag": "v1", "image": image})
    assert response.status_code == 400
    assert response.json["error"] == ("give 'tag' or 'image', not both: an image carries its own tag "
                                      "(name:tag, name@sha256:... or name:tag@sha256:...)")


@pytest.mark.parametrize(("image", "tag"), [("local/probe:v2", "v2"), ("local/probe:v2@sha256:" + "b" * 64, "v2"),
                                            ("local/probe@sha256:" + "c" * 64, "c" * 12)])
def test_an_image_alone_gives_the_tag(client, token, db_session, image, tag):
    response = post(client, token, {"service": "probe", "environment": "stage", "image": image})
    assert response.status_code == 202, response.json
    assert db_session.get(Action, response.json["action_id"]).config["tag"] == tag


def test_an_image_without_tag_or_digest_is_a_400(client, token):
    response = post(client, token, {"service": "probe", "environment": "stage", "image": "local/probe"})
    assert response.status_code == 400
    assert "the image has no tag" in response.json["error"]


@pytest.mark.parametrize("path", ["/api/v1/deployments/nope", "/api/v1/deployments/nope/archive"])
def test_an_unknown_deployment_points_to_the_list(client, admin_token, path):
    method = client.post if path.endswith("archive") else client.get
    response = method(path, headers={"Authorization": f"Bearer {admin_token}"})
    assert response.status_code == 404
    assert response.json["error"] == "no deployment named 'nope' (list them: GET /api/v1/deployments)"
