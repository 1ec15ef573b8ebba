"""The environments API on the real database, Redis and workers: deploy, status, clone, snapshots,
diffs, and the scopes each needs."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from bot.services.tokens import Scopes, create_token
from tests.pipeline.test_environments import VERSIONS, env_repo, services  # noqa: F401  (fixtures)


@pytest.fixture
def api(app, env_repo, db_session):  # noqa: F811
    app.extensions["sami.manifests"] = env_repo
    value = create_token(db_session, "envs", Scopes(services=("*",), environments=("*",),
                                                    actions=("read", "deploy", "archive")))
    reader = create_token(db_session, "reader", Scopes(services=("*",), environments=("stage",), actions=("read",)))
    db_session.commit()
    client = app.test_client()

    def call(method, path, body=None, token=value):
        headers = {"Authorization": f"Bearer {token}"}
        data = None if body is None else json.dumps(body)
        return client.open(path, method=method, data=data, headers=headers, content_type="application/json")

    call.reader = reader
    return call


def test_deploy_status_clone_snapshot_and_diff(api, work):
    response = api("POST", "/api/v1/environments/stage/deploy", {"versions": VERSIONS})
    assert response.status_code == 202, response.json
    run = response.json
    assert run["operation"] == "deploy" and run["state"] == "running"
    assert {c["service"]: c["status"] for c in run["components"]} == {
        "cache": "queued", "db": "queued", "api": "waiting", "web": "waiting"}
    work()
    status = api("GET", "/api/v1/environments/stage").json
    assert status["waves"] == [["cache", "db"], ["api"], ["web"]]
    assert [(c["service"], c["state"], c["tag"], c["endpoint"]) for c in status["components"]] == [
        ("cache", "Running", "7", "cache.example.net:6379"), ("db", "Running", "16", "db-stage.internal:5432"),
        ("api", "Running", "v1", None), ("web", "Running", "v1", None)]
    assert status["last_run"]["id"] == run["id"] and status["last_run"]["state"] == "succeeded"
    assert api("GET", f"/api/v1/environments/stage/runs/{run['id']}").json["state"] == "succeeded"

    listed = api("GET", "/api/v1/environments").json["environments"]
    assert {"name": "stage", "template": "stage", "components": ["cache", "db", "api", "web"],
            "problem": None} in listed

    snapshot = api("POST", "/api/v1/environments/stage/snapshots", {"name": "good"})
    assert snapshot.status_code == 201, snapshot.json
    assert [s["name"] for s in api("GET", "/api/v1/environments/stage/snapshots").json["snapshots"]] == ["good"]
    exported = api("GET", "/api/v1/snapshots/good/export")
    assert exported.mimetype == "application/yaml"
    assert yaml.safe_load(exported.data)["snapshot"]["components"][2]["tag"] == "v1"

    cloned = api("POST", "/api/v1/environments/stage/clone", {"name": "qa-7"})
    assert cloned.status_code == 202, cloned.json
    assert cloned.json["data"]["db"].startswith("empty")
    work()
    qa = api("GET", "/api/v1/environments/qa-7").json
    assert qa["template"] == "stage"
    assert {c["deployment"]: c["state"] for c in qa["components"]} == {
        "cache-qa-7": "Running", "db-qa-7": "Running", "api-qa-7": "Running", "web-qa-7": "Running"}
    assert "qa-7" in [e["name"] for e in api("GET", "/api/v1/environments").json["environments"]]

    api("POST", "/api/v1/environments/stage/deploy", {"versions": {"web": "v2"}})
    work()
    diff = api("GET", "/api/v1/environments/stage/diff?with=snapshot:good").json
    assert [c["service"] for c in diff["changed"]] == ["web"]
    assert diff["changed"][0]["changes"]["tag"] == {"left": "v2", "right": "v1"}
    assert api("GET", "/api/v1/environments/qa-7/diff?with=stage").json["changed"][0]["service"] == "web"

    back = api("POST", "/api/v1/environments/stage/deploy", {"snapshot": "good"})
    assert back.status_code == 202 and back.json["snapshot_id"] is not None
    work()
    assert api("GET", "/api/v1/environments/stage/diff?with=snapshot:good").json["changed"] == []


def test_scopes_and_errors(api, work):
    # A token that may not deploy, or not see every component's environment, is refused.
    assert api("POST", "/api/v1/environments/stage/deploy", {"versions": VERSIONS}, token=api.reader).status_code \
        == 403
    assert api("GET", "/api/v1/environments/stage", token=api.reader).status_code == 200
    assert api("POST", "/api/v1/environments/stage/cleanup").status_code == 403  # no cleanup scope
    assert api("GET", "/api/v1/environments/nowhere").status_code == 404
    assert api("GET", "/api/v1/snapshots/nope").status_code == 404
    bad = api("POST", "/api/v1/environments/stage/archive", {"versions": {"web": "v1"}})
    assert bad.status_code == 400 and "unknown field(s) versions" in bad.json["error"]
    assert api("POST", "/api/v1/environments/stage/deploy", {"versions": {"nope": "1"}}).status_code == 400
    assert api("GET", "/api/v1/environments/stage/diff").status_code == 400
    first = api("POST", "/api/v1/environments/stage/deploy", {"versions": VERSIONS})
    again = api("POST", "/api/v1/environments/stage/deploy", {"versions": VERSIONS})
    assert again.status_code == 409 and f"run {first.json['id']}" in again.json["error"]
    work()
    clone = api("POST", "/api/v1/environments/stage/clone", {"name": "pr-12"})
    assert clone.status_code == 400 and "reserved" in clone.json["error"]


def test_the_page_shows_components_in_deploy_order_with_state_version_and_endpoint(api, app, work):
    api("POST", "/api/v1/environments/stage/deploy", {"versions": {**VERSIONS, "web": "v9"}})
    work()
    page = app.test_client().get("/environments/stage")
    assert page.status_code == 200, page.get_data(as_text=True)[:500]
    html = page.get_data(as_text=True)
    assert re.findall(r'<tr data-service="([a-z]+)"', html) == ["cache", "db", "api", "web"]
    row = html[html.index('data-service="db"'):html.index('data-service="api"')]
    assert 'data-state="Running"' in row and "<code>16</code>" in row and "db-stage.internal:5432" in row
    assert "<code>v9</code>" in html[html.index('data-service="web"'):]
    assert "Last run: deploy" in html and "4 succeeded" in html
    listing = app.test_client().get("/environments").get_data(as_text=True)
    assert 'href="/environments/stage"' in listing and "cache, db, api, web" in listing
    assert app.test_client().get("/environments/nowhere").status_code == 404
