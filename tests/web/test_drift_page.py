"""Requested, deployed and running on the status page and in the API, the drift badge, the Reconcile
button for writers, and the drift gauge. The verdict is recorded as the periodic check records it
(bot.core.states.note_running); how checks find drift is tested against the real targets elsewhere."""

from __future__ import annotations

from sqlalchemy import select

from bot import outbox
from bot.core import metrics
from bot.core.models import Action, Deployment
from bot.core.states import note_running
from bot.services.tokens import Scopes, create_token
from tests.web.conftest import csrf, request_deployment, sign_in_with_token

HAND = [{"component": "probe-stage_app", "field": "image", "deployed": "local/probe:v1",
         "running": "local/probe:by-hand"}]
REPORT = {"components": [{"name": "probe-stage_app", "image": "local/probe:by-hand", "tag": "by-hand", "replicas": 1,
                          "running": 1, "env": {}}]}


def drifted(db_session) -> Deployment:
    d = db_session.scalars(select(Deployment).where(Deployment.name == "probe-stage")).one()
    note_running(d, REPORT, HAND)
    outbox.commit(db_session)
    return d


def test_the_detail_shows_requested_deployed_and_running_and_a_failed_request_as_such(client, admin_token, work):
    request_deployment(client, admin_token, tag="v1")
    work()
    page = client.get("/deployments/probe-stage").get_data(as_text=True)
    assert "Deployed and running" in page
    assert "its control script does not report what runs" in page
    request_deployment(client, admin_token, tag="v2", overrides={"deployment": {"fail": "update"}})
    work()
    page = client.get("/deployments/probe-stage").get_data(as_text=True)
    block = page[page.index('id="deployed-h"'):page.index('id="config-h"')]
    requested = block[block.index("Requested"):block.index("Deployed</th>")]
    deployed = block[block.index("Deployed</th>"):block.index("Running</th>")]
    assert "local/probe:v2" in requested and "update failed" in requested and "fail=update" in requested
    assert "local/probe:v1" in deployed and "succeeded" in deployed and "the last good config" in deployed
    assert "API_TOKEN=••••" in block and "canary-secret" not in block

    answer = client.get("/api/v1/deployments/probe-stage", headers={"Authorization": f"Bearer {admin_token}"}).json
    assert answer["requested"]["tag"] == "v2" and answer["requested"]["state"] == "failed"
    assert answer["deployed"]["tag"] == "v1" and answer["deployed"]["state"] == "succeeded"
    assert answer["deployed"]["secrets"] == ["API_TOKEN"]
    assert answer["running"] is None and answer["deployment"]["drift"]["status"] == "unknown"


def test_drift_is_badged_explained_and_reconciled_by_a_writer(client, admin_token, db_session, work):
    request_deployment(client, admin_token, tag="v1")
    work()
    drifted(db_session)
    listed = client.get("/").get_data(as_text=True)
    row = listed[listed.index('data-deployment="probe-stage"'):]
    assert 'data-drift="drifted"' in row[:row.index("</tr>")]
    page = client.get("/deployments/probe-stage").get_data(as_text=True)
    assert "probe-stage_app: image local/probe:by-hand (deployed local/probe:v1)" in page
    assert 'data-state="Running"' in page  # drift is not a Failure
    assert ">Reconcile<" not in page  # logged out

    reader = create_token(db_session, "reader", Scopes(actions=("read",)))
    db_session.commit()
    sign_in_with_token(client, reader)
    assert ">Reconcile<" not in client.get("/deployments/probe-stage").get_data(as_text=True)
    client.post("/logout", data={"csrf_token": csrf(client, "/")})
    sign_in_with_token(client, admin_token)
    assert ">Reconcile<" in client.get("/deployments/probe-stage").get_data(as_text=True)
    response = client.post("/deployments/probe-stage/reconcile", data={"csrf_token": csrf(client, "/")})
    assert response.status_code == 302
    assert "reconcile of probe-stage accepted" in client.get(response.location).get_data(as_text=True)
    action = db_session.scalars(select(Action).order_by(Action.id.desc())).first()
    assert action.kind == "update" and action.origin == "page" and action.config["tag"] == "v1"
    assert action.config["reconcile_of"] is not None


def test_the_api_reconciles_with_the_deploy_scope_and_answers_drift(client, admin_token, db_session, work):
    request_deployment(client, admin_token, tag="v1")
    work()
    drifted(db_session)
    auth = {"Authorization": f"Bearer {admin_token}"}
    answer = client.get("/api/v1/deployments/probe-stage", headers=auth).json
    assert answer["deployment"]["drift"]["status"] == "drifted"
    assert answer["deployment"]["drift"]["differences"][0]["text"] == (
        "probe-stage_app: image local/probe:by-hand (deployed local/probe:v1)")
    assert answer["running"]["components"] == [{"name": "probe-stage_app", "image": "local/probe:by-hand",
                                                "tag": "by-hand", "replicas": 1, "running": 1}]
    listed = client.get("/api/v1/deployments?sort=attention", headers=auth).json["deployments"]
    assert listed[0]["name"] == "probe-stage"

    reader = create_token(db_session, "reader", Scopes(actions=("read",)))
    db_session.commit()
    refused = client.post("/api/v1/deployments/probe-stage/reconcile", headers={"Authorization": f"Bearer {reader}"})
    assert refused.status_code == 403
    accepted = client.post("/api/v1/deployments/probe-stage/reconcile", headers=auth)
    assert accepted.status_code == 202, accepted.json
    busy = client.post("/api/v1/deployments/probe-stage/reconcile", headers=auth)
    assert busy.status_code == 409
    work()
    db_session.expire_all()
    d = db_session.scalars(select(Deployment).where(Deployment.name == "probe-stage")).one()
    # The probe's check reports nothing: after the reconcile there is no verdict any more.
    assert d.drift is None and d.drift_since is None


def test_the_drift_gauge_counts_drifted_deployments_by_service_and_environment(client, admin_token, db_session,
                                                                              work, session_factory):
    request_deployment(client, admin_token, tag="v1")
    work()

    def gauge() -> dict:
        families = metrics.StateCollector(session_factory, lambda: None).collect()
        drifted_family = next(f for f in families if f.name == "sami_deployments_drifted")
        return {tuple(sorted(s.labels.items())): s.value for s in drifted_family.samples}

    assert gauge() == {}
    drifted(db_session)
    assert gauge() == {(("environment", "stage"), ("service", "probe")): 1}
