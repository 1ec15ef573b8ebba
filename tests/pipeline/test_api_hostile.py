"""Hostile request bodies get a 400 or 413 with a message, never a 500: JSON nested too deeply,
overrides that are not flat KEY: value maps, numbers beyond the database's range, and streamed
(chunked) bodies longer than the limit."""

from __future__ import annotations

import io
import json

import pytest
from sqlalchemy import select

from bot.core.errors import Invalid
from bot.core.models import Deployment
from bot.services import deployments
from bot.services.tokens import Scopes, create_token

STAGE = {"service": "probe", "environment": "stage", "tag": "v1"}


@pytest.fixture
def token(db_session):
    value = create_token(db_session, "ci-probe", Scopes(services=("probe",), environments=("stage", "pull_request"),
                                                        actions=("deploy", "read")))
    db_session.commit()
    return value


def post(client, token, data: str | bytes | None, headers: dict | None = None, **kwargs):
    headers = {"Authorization": f"Bearer {token}", **(headers or {})}
    return client.post("/deployment_request", data=data, headers=headers, content_type="application/json", **kwargs)


def test_a_json_array_nested_100000_deep_is_a_400(client, token):
    response = post(client, token, "[" * 100_000 + "]" * 100_000)
    assert response.status_code == 400, response.data[:300]
    assert "nested too deeply" in response.json["error"]


def test_overrides_nested_5000_deep_are_a_400(client, token):
    deep = '{"LOG_LEVEL": ' * 5000 + '"debug"' + "}" * 5000
    body = json.dumps(STAGE)[:-1] + ', "overrides": {"app": ' + deep + "}}"
    response = post(client, token, body)
    assert response.status_code == 400, response.data[:300]
    assert "nested too deeply" in response.json["error"]


def test_an_override_value_that_is_an_object_is_a_400(client, token):
    value: object = "debug"
    for _ in range(50):
        value = {"LOG_LEVEL": value}
    response = post(client, token, json.dumps({**STAGE, "overrides": {"app": {"LOG_LEVEL": value}}}))
    assert response.status_code == 400
    assert "app override 'LOG_LEVEL' must be a string or a whole number" in response.json["error"]


@pytest.mark.parametrize("number", [2**31, 10**30, 0, -1, 1.5])
def test_a_pull_request_number_out_of_range_is_a_400(client, token, number):
    body = {"service": "probe", "environment": "pull_request", "tag": "v1", "pull_request": number}
    response = post(client, token, json.dumps(body))
    assert response.status_code == 400, response.data[:300]
    assert "'pull_request' must be a whole number from 1 to 2147483647" in response.json["error"]


def test_the_largest_pull_request_number_is_accepted(client, token):
    body = {"service": "probe", "environment": "pull_request", "tag": "v1", "pull_request": 2**31 - 1}
    response = post(client, token, json.dumps(body))
    assert response.status_code == 202, response.json
    assert response.json["deployment"] == "probe-pr-2147483647"


def streamed(client, token, data: bytes):
    """POST ``data`` as a server does with a chunked body: no Content-Length, a terminated stream."""
    return post(client, token, None, headers={"Transfer-Encoding": "chunked"}, input_stream=io.BytesIO(data),
                environ_overrides={"wsgi.input_terminated": True})


def test_a_streamed_body_over_the_limit_is_a_413(client, token, app):
    limit = app.config["MAX_CONTENT_LENGTH"]
    body = json.dumps({**STAGE, "padding": "x" * (5 * limit)}).encode()
    response = streamed(client, token, body)
    assert response.status_code == 413, response.json
    assert response.json["error"] == f"request body too large: at most {limit} bytes"


def test_a_streamed_body_of_exactly_the_limit_is_read_whole(client, token, app):
    limit = app.config["MAX_CONTENT_LENGTH"]
    body = json.dumps(STAGE).encode()
    response = streamed(client, token, body + b" " * (limit - len(body)))
    assert response.status_code == 202, response.json
    response = streamed(client, token, body + b" " * (limit - len(body) + 1))
    assert response.status_code == 413, response.json


@pytest.mark.parametrize(("value", "status"), [(True, 400), (False, 400), (1.5, 400), ([1], 400), ("true", 202),
                                               (8080, 202), (None, 202)])
def test_override_values_are_text_or_whole_numbers(client, token, db_session, value, status):
    response = post(client, token, json.dumps({**STAGE, "overrides": {"app": {"LOG_LEVEL": value}}}))
    assert response.status_code == status, response.json
    if status == 400:
        assert "app override 'LOG_LEVEL' must be a string or a whole number (null removes it)" in \
            response.json["error"]
        assert 'e.g. "true"' in response.json["error"]
    else:
        stored = db_session.get(Deployment, db_session.scalar(select(Deployment.id))).app_overrides
        assert stored == ({} if value is None else {"LOG_LEVEL": str(value)})


def test_services_refuse_a_pull_request_number_beyond_the_database(db_session, worker_ctx, services_ctx):
    req = deployments.DeploymentRequest(service="probe", environment="pull_request", tag="v1", pull_request=2**31,
                                     requested_by="test", origin="webhook")
    with pytest.raises(Invalid, match="'pull_request' must be a whole number from 1 to 2147483647"):
        deployments.request_deployment(db_session, worker_ctx.manifests.current(), req, services_ctx)


@pytest.mark.parametrize(("field", "value", "words"), [
    ("service", 7, "'service' must be a string (text), not a whole number"),
    ("overrides", [], "'overrides' must be an object ({...}), not a list"),
    ("tag", True, "'tag' must be a string (text), not true or false"),
])
def test_a_field_of_the_wrong_type_is_named_in_words(client, token, field, value, words):
    response = post(client, token, json.dumps({**STAGE, field: value}))
    assert response.status_code == 400, response.data[:300]
    assert response.json["error"].startswith(words), response.json["error"]
    assert "must be a str" not in response.json["error"].replace("a string", "")


@pytest.mark.parametrize(("encoding", "problem"), [
    ("utf-16", "it is not UTF-8, the encoding JSON is sent in"),
    ("utf-32", "it is not UTF-8, the encoding JSON is sent in"),
    # Without a byte order mark, UTF-16 of ASCII text is valid UTF-8 (with NULs), and not JSON.
    ("utf-16-le", "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
])
def test_a_body_in_another_encoding_than_utf8_is_a_400(client, token, db_session, encoding, problem):
    response = post(client, token, json.dumps(STAGE).encode(encoding))
    assert response.status_code == 400, response.json
    assert response.json["error"] == f"the body must be a JSON object, and this is not valid JSON: {problem}"
    assert db_session.scalars(select(Deployment)).all() == []


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 10**400, -(10**400)],
                         ids=["2^63", "-2^63-1", "10^400", "-10^400"])
def test_an_override_number_beyond_64_bits_is_a_400_naming_it(client, token, db_session, value):
    response = post(client, token, json.dumps({**STAGE, "overrides": {"app": {"LOG_LEVEL": value}}}))
    assert response.status_code == 400, response.json
    assert response.json["error"].startswith("app override 'LOG_LEVEL' must be a whole number a script can take: "
                                             "from -9223372036854775808 to 9223372036854775807 (64 bits)")
    assert db_session.scalars(select(Deployment)).all() == []


@pytest.mark.parametrize("value", [2**63 - 1, -(2**63)])
def test_override_numbers_at_the_64_bit_limits_are_taken(client, token, db_session, value):
    response = post(client, token, json.dumps({**STAGE, "overrides": {"app": {"LOG_LEVEL": value}}}))
    assert response.status_code == 202, response.json
    assert db_session.scalar(select(Deployment.app_overrides)) == {"LOG_LEVEL": str(value)}


def test_an_action_id_beyond_64_bits_is_a_400_naming_it(client, token):
    response = client.post("/api/v1/deployments/probe-stage/rollback", data=json.dumps({"action_id": 2**63}),
                           headers={"Authorization": f"Bearer {token}"}, content_type="application/json")
    assert response.status_code == 400, response.json
    assert response.json["error"] == "'action_id' must be a whole number from -9223372036854775808 to " \
                                     "9223372036854775807 (64 bits)"
