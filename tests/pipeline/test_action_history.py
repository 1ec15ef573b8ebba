"""A deployment's action history, logs included, stays in the database while requests are
decided: accepting a request does not load the earlier actions, and lists never select logs."""

from __future__ import annotations

import contextlib
import json
import re

import pytest
from sqlalchemy import event, select, update

from bot.core.models import Action, Deployment
from bot.core.states import ActionState, DeploymentState
from bot.services.tokens import Scopes, create_token

LOG = "x" * 100_000


@pytest.fixture
def admin_token(db_session):
    value = create_token(db_session, "admin", Scopes(admin=True))
    db_session.commit()
    return value


@contextlib.contextmanager
def statements(engine):
    """The SQL statements run on ``engine`` inside the block, with the number of rows each returned."""
    seen: list[tuple[str, int]] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        seen.append((statement, cursor.rowcount if cursor.description else 0))

    event.listen(engine, "after_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "after_cursor_execute", record)


def request(client, token, tag):
    return client.post("/deployment_request", data=json.dumps({"service": "probe", "environment": "stage",
                                                               "tag": tag}),
                       headers={"Authorization": f"Bearer {token}"}, content_type="application/json")


def running_with_history(client, token, db_session, name: str, actions: int) -> Deployment:
    """A Running deployment with ``actions`` finished actions of 100 KB of log each."""
    assert request(client, token, "v0").status_code == 202
    deployment = db_session.scalars(select(Deployment).where(Deployment.name == name)).one()
    db_session.execute(update(Action).where(Action.deployment_id == deployment.id)
                       .values(state=ActionState.SUCCEEDED, log=LOG))
    db_session.add_all(Action(deployment_id=deployment.id, kind="update", state=ActionState.SUCCEEDED,
                              requested_by="test", origin="api", config={}, log=LOG) for _ in range(actions - 1))
    deployment.state = DeploymentState.RUNNING
    db_session.commit()
    db_session.expunge_all()
    return deployment


def selects_log(statement: str) -> bool:
    is_select = statement.lstrip().upper().startswith("SELECT")
    return is_select and re.search(r"\bactions\.log\b(?!_)", statement) is not None


def test_accepting_a_request_does_not_load_the_history(client, admin_token, db_session, engine):
    running_with_history(client, admin_token, db_session, "probe-stage", actions=200)
    with statements(engine) as seen:
        response = request(client, admin_token, "v1")
    assert response.status_code == 202, response.json
    assert not [s for s, _ in seen if selects_log(s)], "a statement selected actions.log"
    assert sum(rows for _, rows in seen) < 10, seen
    body = response.json
    assert (body["deployment"], body["kind"], body["state"]) == ("probe-stage", "update", "UpdatePending")
    assert body["status_url"].endswith(f"/api/v1/actions/{body['action_id']}")
    action = db_session.get(Action, body["action_id"])
    assert (action.kind, action.state, action.config["tag"], action.log) == ("update", ActionState.QUEUED, "v1", "")
    assert action.deployment.name == "probe-stage"
    assert db_session.scalar(select(Action.id).where(Action.deployment_id == action.deployment_id)
                             .order_by(Action.id.desc()).limit(1)) == action.id


def test_the_work_of_a_request_does_not_grow_with_the_history(client, admin_token, db_session, engine):
    counts = []
    for actions in (1, 100):
        running_with_history(client, admin_token, db_session, "probe-stage", actions=actions)
        with statements(engine) as seen:
            assert request(client, admin_token, "v1").status_code == 202
        counts.append((len(seen), sum(rows for _, rows in seen)))
        db_session.execute(update(Deployment).values(state=DeploymentState.REMOVED))
        db_session.execute(Action.__table__.delete())
        db_session.commit()
    assert counts[0] == counts[1], counts


def test_lists_leave_logs_out_and_the_log_endpoints_still_return_them(client, admin_token, db_session, engine):
    running_with_history(client, admin_token, db_session, "probe-stage", actions=60)
    auth = {"Authorization": f"Bearer {admin_token}"}
    with statements(engine) as seen:
        detail = client.get("/api/v1/deployments/probe-stage", headers=auth)
    assert detail.status_code == 200 and len(detail.json["actions"]) == 50
    assert not [s for s, _ in seen if selects_log(s)]
    action_id = detail.json["actions"][0]["id"]
    with statements(engine) as seen:
        shown = client.get(f"/api/v1/actions/{action_id}", headers=auth).json
    assert shown["log"] == LOG
    # Loaded with the action itself, not by a second query.
    assert [s for s, _ in seen if selects_log(s) and "WHERE actions.id =" in s] == \
        [s for s, _ in seen if re.search(r"FROM actions\b", s)], seen
    assert client.get(f"/api/v1/actions/{action_id}/log?offset=99990", headers=auth).json["log"] == "x" * 10
