"""The OpenAPI document and the app's routes agree: every /api/v1 and /deployment_request route (each
method) is described, and the document names no route the app lacks."""

from __future__ import annotations

import re

import pytest

from bot.web import create_app, openapi

DESCRIBED_PREFIXES = ("/api/v1/", "/deployment_request")


@pytest.fixture
def app(tmp_path):
    return create_app({"mode": "test", "database_url": f"sqlite:///{tmp_path}/sami.db",
                       "instance_dir": str(tmp_path / "instance"), "webhook_secret": "w", "secret_key": "k"})


def app_operations(app) -> set[tuple[str, str]]:
    operations = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith(DESCRIBED_PREFIXES):
            continue
        for path in openapi.rule_paths(rule.rule):
            operations |= {(method.lower(), path) for method in rule.methods - {"HEAD", "OPTIONS"}}
    return operations


def document_operations(document: dict) -> set[tuple[str, str]]:
    methods = {"get", "post", "put", "patch", "delete"}
    return {(method, path) for path, item in document["paths"].items() for method in item if method in methods}


def test_every_api_route_is_described_and_nothing_else(app):
    in_app = app_operations(app)
    described = document_operations(openapi.spec())
    assert in_app, "the app has no API routes?"
    assert sorted(in_app - described) == [], "routes missing from bot/web/openapi.py"
    assert sorted(described - in_app) == [], "bot/web/openapi.py describes routes the app does not have"


def test_the_comparison_sees_a_missing_route(app):
    document = openapi.spec()
    del document["paths"]["/api/v1/services"]
    assert ("get", "/api/v1/services") in app_operations(app) - document_operations(document)


def test_rule_arguments_become_openapi_paths():
    assert openapi.path_of("/api/v1/deployments/<name>/<any(archive, restore):kind>", {"kind": "restore"}) == \
        "/api/v1/deployments/{name}/restore"
    assert openapi.rule_paths("/api/v1/actions/<int:action_id>/log") == ["/api/v1/actions/{action_id}/log"]
    assert openapi.rule_paths("/api/v1/deployments/<name>/<any(archive, restore):kind>") == [
        "/api/v1/deployments/{name}/archive", "/api/v1/deployments/{name}/restore"]


def test_the_document_is_served_without_a_token(app):
    response = app.test_client().get("/api/v1/openapi.json")
    assert response.status_code == 200
    assert response.json["openapi"].startswith("3.1")
    assert response.json["paths"] == openapi.spec()["paths"]
    assert response.json["components"]["securitySchemes"]["bearerToken"]["scheme"] == "bearer"


def test_every_reference_resolves():
    document = openapi.spec()
    text = repr(document)
    names = set(re.findall(r"#/components/schemas/(\w+)", text))
    assert names <= set(document["components"]["schemas"]), names - set(document["components"]["schemas"])
    for path, item in document["paths"].items():
        for name in re.findall(r"{(\w+)}", path):
            for operation in item.values():
                assert any(p["name"] == name and p["in"] == "path" for p in operation.get("parameters", [])), \
                    f"{path}: parameter {name} is not declared"


@pytest.mark.parametrize(("query", "message"), [
    ("servce=web", "unknown query parameter(s) 'servce'"),
    ("state=Bogus", "cannot be 'Bogus' (choose from: CreatePending"),
    ("q=", "should be non-empty"),
    ("q=a&q=b", "is given 2 times"),
    ("q=a%00b", "control characters"),
])
def test_query_parameters_are_checked_against_the_document(app, query, message):
    response = app.test_client().get(f"/api/v1/deployments?{query}")
    assert response.status_code == 400, response.json
    assert message in response.json["error"]


def test_a_whole_number_parameter_is_read_from_its_text(app):
    client = app.test_client()
    assert "must be a whole number" in client.get("/api/v1/actions/1/log?offset=x").json["error"]
    assert "less than the minimum of 0" in client.get("/api/v1/actions/1/log?offset=-1").json["error"]
    assert client.get("/api/v1/actions/1/log?offset=3").status_code == 401  # valid: on to the token check
