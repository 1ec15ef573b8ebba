"""schemathesis against a real `sami serve` (gunicorn, PostgreSQL, Redis) and the document it serves:
no answer is a server error, and every answer's status, content type and body are the document's.

Examples per operation are bounded so the run stays short; SCHEMATHESIS_EXAMPLES=500 searches harder.
"""

from __future__ import annotations

import json
import os
import urllib.parse
import urllib.request
import uuid

import hypothesis
import hypothesis.strategies as st
import pytest
import redis as redis_lib
import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.config._checks import NEGATIVE_DATA_REJECTION_EXPECTED_STATUSES
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import create_engine, text

from bot.core import db
from bot.web import openapi
from tests.conftest import create_database
from tests.support.sami_server import SamiServer, post, sami, sami_env
from tests.support.servers import free_port

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "25"))
REDIS_DB = 3  # its own index: the per-test fixtures flush index 1


def negative_data_rejection_as_sent(ctx, response, case):
    """schemathesis' negative_data_rejection, skipped when what was negated reaches the server valid:
    a query that is valid after serialization (``["1"]`` is sent as ``all=1``; schemathesis spots
    most such cases itself, not all), checked against the document's own schemas, or an extra
    header where the operation declares none (HTTP allows any header; the API reads only its own)."""
    meta = case.meta
    if meta is not None:
        operation = openapi.spec()["paths"][case.path][case.method.lower()]
        declares_headers = any(p["in"] == "header" for p in operation.get("parameters", []))
        if not any(meta.is_negative_at(location) for location in (ParameterLocation.PATH, ParameterLocation.BODY)) \
                and not (declares_headers and meta.is_negative_at(ParameterLocation.HEADER)):
            if not meta.is_negative_at(ParameterLocation.QUERY):
                return None
            declared = openapi.query_parameters(case.method, case.path) or {}
            sent = urllib.parse.parse_qs(urllib.parse.urlsplit(response.request.url).query, keep_blank_values=True)
            if set(sent) <= set(declared) and not any(openapi.query_problem(name, declared[name], values)
                                                      for name, values in sent.items()):
                return None
    return negative_data_rejection(ctx, response, case)


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection_as_sent]


@pytest.fixture(scope="module")
def server(tmp_path_factory, postgres, redis_server):
    """`sami serve` on a database of its own, with an admin token and one requested deployment."""
    tmp_path = tmp_path_factory.mktemp("conformance")
    name = f"sami_conformance_{uuid.uuid4().hex[:8]}"
    database_url = create_database(postgres, name)
    db.upgrade(database_url)
    redis_url = redis_server.url(REDIS_DB)
    redis_lib.Redis.from_url(redis_url).flushdb()
    port = free_port()
    env = sami_env(SAMI_INSTANCE_DIR=str(tmp_path / "instance"), SAMI_DATABASE_URL=database_url,
                   SAMI_REDIS_URL=redis_url, SAMI_BASE_DOMAIN="example.test",
                   SAMI_PUBLIC_URL=f"http://127.0.0.1:{port}", SAMI_WEBHOOK_SECRET="conformance",
                   SAMI_SECRET_KEY="conformance")
    token = sami("token", "create", "conformance", "--admin", env=env).stdout.strip()
    try:
        with SamiServer(env, tmp_path / "serve.log", port=port) as running:
            # web-stage (the document's example name) exists, with action 1 (its example id)
            status, body = post(running.url, "/deployment_request", json.dumps(
                {"service": "web", "environment": "stage", "tag": "v1"}).encode(),
                {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
            assert status == 202, body
            yield running, token
            assert "Traceback" not in running.output(), running.output()[-5000:]
    finally:
        redis_lib.Redis.from_url(redis_url).flushdb()
        admin = create_engine(postgres.url(), isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="module")
def api_schema(server):
    """The document as the server serves it, loaded by schemathesis."""
    running, _ = server
    with urllib.request.urlopen(f"{running.url}/api/v1/openapi.json", timeout=30) as response:
        assert response.status == 200
    # A request line past gunicorn's limit (huge generated queries) is refused before the app: 414.
    rejections = [*NEGATIVE_DATA_REJECTION_EXPECTED_STATUSES, "414"]
    config = schemathesis.Config.from_dict({"checks": {"negative_data_rejection": {"expected-statuses": rejections}}})
    return schemathesis.openapi.from_url(f"{running.url}/api/v1/openapi.json", config=config)


# schemathesis' own pytest integration (from_fixture) does not run on this pytest, so each operation
# of the document is a parameter and hypothesis drives schemathesis' strategies for it.
OPERATIONS = sorted((method.upper(), path) for path, item in openapi.spec()["paths"].items() for method in item)


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_answers_follow_the_document(server, api_schema, method, path):
    running, token = server
    operation = api_schema[path][method]
    strategy = st.one_of(operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE))

    @hypothesis.given(case=strategy)
    @hypothesis.settings(max_examples=EXAMPLES, deadline=None, database=None,
                         suppress_health_check=list(hypothesis.HealthCheck))
    def check(case):
        response = case.call_and_validate(base_url=running.url, headers={"Authorization": f"Bearer {token}"},
                                          checks=CHECKS, timeout=30)
        statuses.append(response.status_code)

    statuses: list[int] = []
    check()
    print(f"{method} {path}: {len(statuses)} requests, statuses {sorted(set(statuses))}")
    has_inputs = "parameters" in openapi.spec()["paths"][path][method.lower()] or method != "GET"
    assert len(statuses) >= (min(EXAMPLES, 5) if has_inputs else 1), "hypothesis ran (almost) no examples"


@pytest.mark.parametrize(("method", "path", "parameters", "status"), [
    ("GET", "/api/v1/deployments/{name}", {"name": "web-stage"}, 200),
    ("GET", "/api/v1/actions/{action_id}", {"action_id": 1}, 200),
    ("GET", "/api/v1/actions/{action_id}/log", {"action_id": 1}, 200),
    ("GET", "/api/v1/deployments", {}, 200),
    ("GET", "/api/v1/services", {}, 200),
    ("POST", "/deployment_request", {"service": "docs", "environment": "stage", "tag": "v2"}, 202),
    ("POST", "/api/v1/deployments", {"service": "docs", "environment": "stage", "tag": "v3"}, 202),
])
def test_answers_about_existing_things_follow_the_document(server, api_schema, method, path, parameters, status):
    """Random names rarely hit the one deployment there is: its answers are checked on purpose."""
    running, token = server
    operation = api_schema[path][method]
    case = operation.Case(body=parameters) if method == "POST" else operation.Case(path_parameters=parameters)
    response = case.call_and_validate(base_url=running.url, headers={"Authorization": f"Bearer {token}"},
                                      checks=CHECKS[:4], timeout=30)
    assert response.status_code == status, response.text
