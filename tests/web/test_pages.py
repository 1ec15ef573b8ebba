"""The status page's views, sign-in and writes, on PostgreSQL and Redis through Flask's test client."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from bot.core import signing
from bot.core.models import Action, ActionStep, ApiToken, Deployment
from bot.core.states import ActionState
from bot.services.tokens import Scopes, create_token
from bot.web import pages
from tests.web.conftest import csrf, request_deployment, sign_in_with_token


def test_list_shows_state_words_links_and_filters_in_the_url(client, admin_token):
    request_deployment(client, admin_token)
    request_deployment(client, admin_token, environment="pull_request", pull_request=12, repository="acme/probe",
                       sha="abc1234")
    html = client.get("/").get_data(as_text=True)
    assert "probe-stage" in html and "probe-pr-12" in html
    assert 'data-state="CreatePending"' in html and ">Creating<" in html
    assert 'href="https://github.com/acme/probe/pull/12"' in html
    assert "https://probe-stage.example.test" in html
    assert 'title="20' in html and "UTC" in html  # the exact time on hover
    filtered = client.get("/?q=pr-12").get_data(as_text=True)
    assert "probe-pr-12" in filtered and "probe-stage" not in filtered
    assert 'value="pr-12"' in filtered  # the search stays in the form
    chip = client.get("/?state=Running").get_data(as_text=True)
    assert "No deployments match" in chip
    assert client.get("/?sort=size").status_code == 400


def test_list_pages_with_a_cursor_link(client, db_session):
    for i in range(3):
        db_session.add(Deployment(name=f"probe-pr-{i + 1}", service="probe", environment="pull_request",
                                  type="swarm", state="Running"))
    db_session.commit()
    html = client.get("/?limit=2&sort=name").get_data(as_text=True)
    assert "probe-pr-1" in html and "probe-pr-3" not in html
    next_link = html.split('rel="next"')[0].rsplit('href="', 1)[1].split('"')[0].replace("&amp;", "&")
    assert "cursor=" in next_link and "limit=2" in next_link and "sort=name" in next_link
    second = client.get(next_link).get_data(as_text=True)
    assert "probe-pr-3" in second and "probe-pr-1<" not in second


def test_detail_masks_secrets_and_shows_history(client, admin_token, db_session):
    accepted = request_deployment(client, admin_token, overrides={"app": {}})
    html = client.get("/deployments/probe-stage").get_data(as_text=True)
    assert "API_TOKEN" in html and "••••" in html
    assert f">{accepted['action_id']}<" in html and "token:admin" in html and ">api<" in html
    assert client.get("/deployments/nothing-here").status_code == 404


def shown_steps(html: str, action_id: int) -> list[str]:
    """The steps of action ``action_id`` as the history shows them, one text per step, tags taken out."""
    match = re.search(rf'<ol class="steps" aria-label="Steps of action {action_id}">(.*?)</ol>', html, re.S)
    assert match, f"no steps of action {action_id} on the page"
    return [" ".join(re.sub(r"<[^>]+>", " ", item).split()) for item in re.findall(r"<li.*?</li>", match[1], re.S)]


def test_detail_shows_each_actions_steps_in_its_history(client, admin_token, work):
    created = request_deployment(client, admin_token)["action_id"]
    work()
    failed = request_deployment(client, admin_token, tag="v2", overrides={"deployment": {"fail": "update"}})
    work()
    html = client.get("/deployments/probe-stage").get_data(as_text=True)
    took = r"\d+\.\d s"
    steps = shown_steps(html, created)
    assert [re.sub(took, "T", text) for text in steps] == [
        "✓ passed: config_check T", "✓ passed: create T", "✓ passed: check T"], steps
    steps = shown_steps(html, failed["action_id"])
    # the non-zero exit code is shown beside the step, and the mark has its word
    assert [re.sub(took, "T", text) for text in steps] == ["✓ passed: config_check T", "✗ failed: update T exit 1"]
    assert '<span class="mark" aria-hidden="true" title="failed">✗</span>' in html


def test_a_steps_mark_says_how_it_ended():
    started = datetime(2026, 1, 1, tzinfo=UTC)
    ended = datetime(2026, 1, 1, 0, 0, 2, tzinfo=UTC)
    running = Action(state=ActionState.RUNNING)
    failed = Action(state=ActionState.FAILED)

    def view(action, **fields):
        step = ActionStep(**{"operation": "check", "started_at": started, "attempts": 1, "timed_out": False,
                             **fields})
        shown = pages.step_view(step, action)
        return shown["mark"], shown["word"], shown["took"], shown["note"]

    assert view(failed, finished_at=ended, exit_code=0) == ("✓", "passed", "2.0 s", "")
    assert view(failed, finished_at=ended, exit_code=3, attempts=4) == ("✗", "failed", "2.0 s", "exit 3 · 4 tries")
    assert view(failed, finished_at=ended, exit_code=None, timed_out=True) == ("⏱", "timed out", "2.0 s", "timed out")
    assert view(running, finished_at=None, exit_code=None) == ("◌", "running", "", "running")
    # no end, and the action is over: its worker died while it ran; no code: it was cancelled
    assert view(failed, finished_at=None, exit_code=None) == ("✗", "stopped", "", "stopped")
    assert view(failed, finished_at=ended, exit_code=None) == ("✗", "stopped", "2.0 s", "stopped")


def test_masked_config_hides_secret_names_and_secret_looking_keys():
    shown = dict(pages.masked_config({"LOG_LEVEL": "debug", "DB_PASSWORD": "hunter2", "API_TOKEN": "x"},
                                     ["API_TOKEN"]))
    assert shown == {"LOG_LEVEL": "debug", "DB_PASSWORD": "••••", "API_TOKEN": "••••"}


def test_logged_out_visitors_see_no_write_buttons_and_cannot_post(client, admin_token):
    request_deployment(client, admin_token)
    html = client.get("/deployments/probe-stage").get_data(as_text=True)
    assert "Archive" not in html and 'name="tag"' not in html
    refused = client.post("/deployments/probe-stage/archive", data={"csrf_token": csrf(client)})
    assert refused.status_code == 401


def test_a_post_without_the_csrf_token_is_refused(client, admin_token, db_session):
    request_deployment(client, admin_token)
    sign_in_with_token(client, admin_token)
    assert client.post("/deployments/probe-stage/archive").status_code == 403
    assert client.post("/deployments/probe-stage/archive", data={"csrf_token": "forged"}).status_code == 403
    assert client.post("/deployments/probe-stage/archive", data={"csrf_token": "fälscht"}).status_code == 403
    assert db_session.scalars(select(Action).where(Action.kind == "archive")).first() is None


def test_signed_in_token_archives_from_the_page(client, admin_token, db_session, work, record):
    request_deployment(client, admin_token)
    work()
    sign_in_with_token(client, admin_token)
    page = client.get("/deployments/probe-stage").get_data(as_text=True)
    assert "Signed in as <strong>admin</strong>" in page and ">Archive<" in page
    response = client.post("/deployments/probe-stage/archive", data={"csrf_token": csrf(client, "/")})
    assert response.status_code == 302
    followed = client.get(response.location).get_data(as_text=True)
    assert "archive of probe-stage accepted" in followed and "ArchivePending" in followed
    action = db_session.scalars(select(Action).where(Action.kind == "archive")).one()
    assert action.requested_by == "token:admin" and action.origin == "page"
    work()
    assert "Archived" in client.get("/deployments/probe-stage").get_data(as_text=True)


def test_a_scoped_token_sees_and_changes_only_its_scope(client, admin_token, db_session):
    request_deployment(client, admin_token)
    reader = create_token(db_session, "reader", Scopes(services=("other",), actions=("read", "archive")))
    db_session.commit()
    sign_in_with_token(client, reader)
    assert "probe-stage" not in client.get("/").get_data(as_text=True)
    assert client.get("/deployments/probe-stage").status_code == 404
    refused = client.post("/deployments/probe-stage/archive", data={"csrf_token": csrf(client, "/")})
    assert refused.status_code == 403


def test_revoking_the_token_signs_the_session_out(client, admin_token, db_session):
    sign_in_with_token(client, admin_token)
    assert "Signed in as" in client.get("/").get_data(as_text=True)
    db_session.scalars(select(ApiToken).where(ApiToken.name == "admin")).one().revoked_at = datetime.now(UTC)
    db_session.commit()
    assert "Signed in as" not in client.get("/").get_data(as_text=True)


def test_a_wrong_token_does_not_sign_in(client):
    response = client.post("/login/token", data={"token": "sami_000000000000_" + "x" * 43, "csrf_token": csrf(client)})
    assert response.status_code == 302
    assert "not valid" in client.get(response.location).get_data(as_text=True)


def test_session_cookie_is_httponly_and_lax(client, admin_token):
    client.get("/login")
    cookie = client.get_cookie("sami_session")
    assert cookie is not None and cookie.http_only and cookie.same_site == "Lax"


def test_admins_see_the_log_non_admins_do_not(client, admin_token, db_session):
    request_deployment(client, admin_token)
    action = db_session.scalars(select(Action)).one()
    action.log = "starting\nsecret is ********\n"
    action.state = ActionState.RUNNING
    action.started_at = datetime.now(UTC)
    db_session.commit()
    reader = create_token(db_session, "reader", Scopes(actions=("read", "deploy")))
    db_session.commit()
    sign_in_with_token(client, reader)
    assert "secret is" not in client.get("/deployments/probe-stage").get_data(as_text=True)
    assert client.get(f"/deployments/probe-stage/log?action={action.id}&offset=0").status_code == 403
    client.post("/logout", data={"csrf_token": csrf(client, "/")})
    sign_in_with_token(client, admin_token)
    assert "secret is ********" in client.get("/deployments/probe-stage").get_data(as_text=True)
    tail = client.get(f"/deployments/probe-stage/log?action={action.id}&offset=9").json
    assert tail["log"] == "secret is ********\n" and tail["finished"] is False


def test_read_can_require_login(app, client, admin_token):
    app.config["SAMI"] = app.config["SAMI"].__class__(**{**app.config["SAMI"].__dict__, "page_read": "login"})
    response = client.get("/")
    assert response.status_code == 302 and "/login" in response.location
    assert client.get("/events").status_code == 302
    # the way back after signing in is the page asked for, without a dangling '?'
    assert client.get("/deployments/probe-stage").location == "/login?next=/deployments/probe-stage"
    assert client.get("/?q=a").location == "/login?next=/?q%3Da"
    sign_in_with_token(client, admin_token)
    assert client.get("/").status_code == 200


def test_one_time_code_signs_in_once(app, client, tmp_path):
    instance = app.config["SAMI"].instance_dir
    code = signing.make_one_time_code(instance)
    assert code not in (tmp_path / "instance" / signing.ONE_TIME_FILE).read_text()  # only its hash is kept
    assert client.post("/login/once", data={"code": "wrong", "csrf_token": csrf(client)}).status_code == 403
    first = client.post("/login/once", data={"code": code, "csrf_token": csrf(client)})
    assert first.status_code == 302
    assert "(admin)" in client.get("/").get_data(as_text=True)
    other = app.test_client()
    assert other.post("/login/once", data={"code": code, "csrf_token": csrf(other)}).status_code == 403


def test_one_time_code_expires(tmp_path):
    code = signing.make_one_time_code(str(tmp_path), now=1000.0)
    assert not signing.redeem_one_time_code(str(tmp_path), code, now=1000.0 + signing.ONE_TIME_TTL + 1)


@pytest.mark.parametrize("path", ["https://evil.example/", "//evil.example/x", "/\t/evil.example/x",
                                  "/\\evil.example/x", "/\n/evil.example/x", "/\r\nSet-Cookie: x=1",
                                  "/\x00/evil.example"])
def test_sign_in_returns_only_to_this_site(client, admin_token, path):
    # Browsers drop tabs and newlines from URLs and read '\\' as '/': '/<TAB>/evil' is '//evil'.
    response = client.post("/login/token", data={"token": admin_token, "csrf_token": csrf(client), "next": path})
    assert response.status_code == 302
    assert response.location == "/"


def test_sign_in_returns_to_the_page_it_came_from(client, admin_token):
    path = "/deployments/probe-stage?x=%C3%BC&y=1"
    response = client.post("/login/token", data={"token": admin_token, "csrf_token": csrf(client), "next": path})
    assert response.location == path


def test_events_answer_one_event_outside_gunicorn(client):
    response = client.get("/events")
    assert response.mimetype == "text/event-stream"
    assert response.get_data(as_text=True).startswith("retry: 3000\n\nevent: hello\n")


def test_services_page_deploys_for_a_signed_in_writer(client, admin_token, db_session):
    assert "Deploy probe" not in client.get("/services").get_data(as_text=True)
    sign_in_with_token(client, admin_token)
    html = client.get("/services").get_data(as_text=True)
    assert "Deploy probe" in html and "services/probe/swarm/stage/sami.yaml" in html
    response = client.post("/services/deploy", data={"service": "probe", "environment": "stage", "tag": "v7",
                                                     "csrf_token": csrf(client, "/services")})
    assert response.status_code == 302 and response.location.endswith("/deployments/probe-stage")
    deployment = db_session.scalars(select(Deployment).where(Deployment.name == "probe-stage")).one()
    assert deployment.tag == "v7"
    refused = client.post("/services/deploy", data={"service": "probe", "environment": "pull_request", "tag": "x",
                                                    "csrf_token": csrf(client, "/services")})
    assert refused.status_code == 404


def test_services_page_shows_manifest_errors_at_file_and_line(client, probe_repo):
    broken = probe_repo / "services" / "broken" / "swarm" / "stage"
    broken.mkdir(parents=True)
    (broken / "sami.yaml").write_text("version: v1beta\nservice_name: broken\ntype: swarm\nbogus: 1\n")
    html = client.get("/services").get_data(as_text=True)
    assert "services/broken/swarm/stage/sami.yaml:" in html


def test_only_http_links_become_anchors(client, db_session):
    db_session.add(Deployment(name="probe-stage", service="probe", environment="stage", type="swarm", state="Running",
                              links=[{"name": "app", "url": "javascript:alert(1)"},
                                     {"name": "docs", "url": "https://docs.example.test"}]))
    db_session.commit()
    for path in ("/", "/deployments/probe-stage"):
        html = client.get(path).get_data(as_text=True)
        assert "javascript:" not in html and 'href="https://docs.example.test"' in html


def test_roll_back_from_the_page(client, admin_token, db_session, work):
    request_deployment(client, admin_token, tag="v1")
    work()
    sign_in_with_token(client, admin_token)
    assert ">Roll back" not in client.get("/deployments/probe-stage").get_data(as_text=True)  # nothing earlier
    request_deployment(client, admin_token, tag="v2")
    work()
    first = db_session.scalars(select(Action).order_by(Action.id)).first()
    html = client.get("/deployments/probe-stage").get_data(as_text=True)
    # The button names where it goes, and sends that very target.
    assert ">Roll back to v1</button>" in html
    assert f'title="back to v1 (the configuration of action {first.id})"' in html
    assert f'name="action_id" value="{first.id}"' in html
    response = client.post("/deployments/probe-stage/rollback",
                           data={"csrf_token": csrf(client, "/"), "action_id": str(first.id)})
    assert response.status_code == 302
    followed = client.get(response.location).get_data(as_text=True)
    assert f"rollback of probe-stage to v1 (the configuration of action {first.id}) accepted" in followed
    action = db_session.scalars(select(Action).order_by(Action.id.desc())).first()
    assert action.config["tag"] == "v1" and action.config["rollback_to"] == first.id and action.origin == "page"
    assert f"(roll back to #{action.config['rollback_to']})" in followed


def test_cancel_a_queued_action_from_the_page(client, admin_token, db_session):
    accepted = request_deployment(client, admin_token)
    sign_in_with_token(client, admin_token)
    html = client.get("/deployments/probe-stage").get_data(as_text=True)
    assert f'aria-label="Cancel action {accepted["action_id"]}"' in html
    response = client.post(f"/deployments/probe-stage/actions/{accepted['action_id']}/cancel",
                           data={"csrf_token": csrf(client, "/")})
    assert response.status_code == 302
    assert "is cancelled" in client.get(response.location).get_data(as_text=True)
    assert db_session.get(Action, accepted["action_id"]).state is ActionState.CANCELLED
    again = client.post(f"/deployments/probe-stage/actions/{accepted['action_id']}/cancel",
                        data={"csrf_token": csrf(client, "/")})
    assert "already ended (cancelled); there is nothing to cancel" in client.get(again.location).get_data(as_text=True)


def test_logged_out_visitors_cannot_cancel(client, admin_token):
    accepted = request_deployment(client, admin_token)
    assert "Cancel action" not in client.get("/deployments/probe-stage").get_data(as_text=True)
    refused = client.post(f"/deployments/probe-stage/actions/{accepted['action_id']}/cancel",
                          data={"csrf_token": csrf(client)})
    assert refused.status_code == 401


@pytest.mark.parametrize("number", ["²", "-1", "1.0", "9" * 40])
def test_page_numbers_that_are_not_whole_numbers_are_refused(client, admin_token, db_session, number):
    # str.isdigit() holds for '²', which int() cannot read: such input is a 400, never a 500.
    request_deployment(client, admin_token)
    sign_in_with_token(client, admin_token)
    log = client.get("/deployments/probe-stage/log", query_string={"action": number, "offset": "0"})
    assert log.status_code in (400, 404), log.get_data(as_text=True)
    offset = client.get("/deployments/probe-stage/log", query_string={"action": "1", "offset": number})
    assert offset.status_code in (400, 404), offset.get_data(as_text=True)
    rollback = client.post("/deployments/probe-stage/rollback",
                           data={"csrf_token": csrf(client, "/"), "action_id": number})
    assert rollback.status_code == 302, rollback.get_data(as_text=True)
    flashed = client.get(rollback.location).get_data(as_text=True)
    assert "action_id" in flashed or "no action" in flashed


@pytest.mark.parametrize("path", ["/", "/login", "/services", "/deployments/probe-stage"])
def test_pages_cannot_be_framed_by_another_page(client, admin_token, path):
    # Its buttons change deployments: another page (a preview environment on a sibling host is same-site,
    # so the Lax session cookie goes along) must not lay them under a decoy and catch a click.
    request_deployment(client, admin_token)
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
