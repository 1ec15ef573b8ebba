"""The deployment page's safety and its logs, through Flask's test client on PostgreSQL and Redis: what asks
before it writes (and refuses a mistyped name), the tag a deploy form offers, the action in progress on
top, every action's own view and whole log, and links only while the app serves."""

from __future__ import annotations

import html as html_lib
import re
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from bot.core.models import Action, Deployment
from bot.core.states import ActionState
from bot.services.tokens import Scopes, create_token
from bot.web.pages import LOG_SHOWN, log_tail
from tests.pipeline.probe_scripts import write_probe_repo
from tests.web.conftest import csrf, request_deployment, sign_in_with_token


@pytest.fixture
def probe_repo(tmp_path, record):
    """The probe service in stage, production and pull requests."""
    return write_probe_repo(tmp_path / "deployments", record, secrets=("API_TOKEN",),
                            environments=("stage", "production", "pull_request"))


def api(client, token, path):
    response = client.post(path, json={}, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 202, response.json
    return response.json


def actions_of(db_session, kind):
    return db_session.scalars(select(Action).where(Action.kind == kind)).all()


def test_cleanup_asks_for_the_name_and_refuses_a_mistyped_one(client, admin_token, db_session, work):
    request_deployment(client, admin_token)
    work()
    api(client, admin_token, "/api/v1/deployments/probe-stage/archive")
    work()
    sign_in_with_token(client, admin_token)
    token = csrf(client, "/")
    asked = client.post("/deployments/probe-stage/cleanup", data={"csrf_token": token})
    page = asked.get_data(as_text=True)
    assert asked.status_code == 200 and "Clean up probe-stage?" in page and "cannot be undone" in page
    assert 'data-must-be="probe-stage"' in page and "Type <strong>probe-stage</strong> to confirm" in page
    for typed in ("", "probe-stag", "PROBE-STAGE", "probe-stage-x"):
        refused = client.post("/deployments/probe-stage/cleanup", data={"csrf_token": token, "confirm": typed})
        assert refused.status_code == 422, typed
        assert "nothing was done" in html_lib.unescape(refused.get_data(as_text=True))
    assert actions_of(db_session, "cleanup") == []
    assert db_session.scalars(select(Deployment.state).where(Deployment.name == "probe-stage")).one() == "Archived"
    done = client.post("/deployments/probe-stage/cleanup", data={"csrf_token": token, "confirm": " probe-stage "})
    assert done.status_code == 302
    assert [a.origin for a in actions_of(db_session, "cleanup")] == ["page"]


def test_archive_asks_first(client, admin_token, db_session, work):
    request_deployment(client, admin_token)
    work()
    sign_in_with_token(client, admin_token)
    asked = client.post("/deployments/probe-stage/archive", data={"csrf_token": csrf(client, "/")})
    page = asked.get_data(as_text=True)
    assert asked.status_code == 200 and "Archive probe-stage?" in page
    assert 'name="confirmed" value="yes"' in page and ">Archive probe-stage</button>" in page
    assert actions_of(db_session, "archive") == []


def test_production_deploys_ask_first_stage_ones_do_not(client, admin_token, db_session, work):
    sign_in_with_token(client, admin_token)
    token = csrf(client, "/services")
    form = {"service": "probe", "environment": "production", "tag": "v3", "csrf_token": token}
    asked = client.post("/services/deploy", data=form)
    page = html_lib.unescape(asked.get_data(as_text=True))
    assert asked.status_code == 200 and "Deploy probe v3 to production?" in page and "nothing yet" in page
    assert db_session.scalars(select(Deployment).where(Deployment.name == "probe-production")).first() is None
    assert client.post("/services/deploy", data={**form, "confirmed": "yes"}).status_code == 302
    work()
    update = client.post("/deployments/probe-production/update", data={"csrf_token": token, "tag": "v4"})
    page = update.get_data(as_text=True)
    assert update.status_code == 200 and "Deploy v4 to probe-production in production?" in page
    assert re.search(r"<dt>Runs now</dt><dd><code>v3</code>", page) and "<dt>Will run</dt><dd><code>v4</code>" in page
    assert len(actions_of(db_session, "update")) == 0
    staged = client.post("/services/deploy", data={**form, "environment": "stage"})
    assert staged.status_code == 302 and staged.location.endswith("/deployments/probe-stage")


def test_the_deploy_form_offers_the_running_tag_never_an_invented_one(client, admin_token, work):
    sign_in_with_token(client, admin_token)

    def offered() -> list[str]:
        page = client.get("/services").get_data(as_text=True)
        return re.findall(r'<input id="tag-\d+" name="tag"[^>]*value="([^"]*)"', page)

    assert offered() == ["", ""]  # production, stage: nothing runs yet
    request_deployment(client, admin_token, tag="v7")
    work()
    assert offered() == ["", "v7"]


def test_log_tail_starts_at_a_line_and_counts_what_it_left_out():
    assert log_tail("one\ntwo\n") == ("one\ntwo\n", 0)
    lines = [f"line {n:05d} " + "x" * 80 + "\n" for n in range(1000)]
    text = "".join(lines)
    tail, omitted = log_tail(text)
    assert len(tail) <= LOG_SHOWN and text.endswith(tail)
    assert tail.startswith("line ") and lines[-1 - (len(tail.splitlines()) - 1)] == tail.splitlines(True)[0]
    assert omitted == 1000 - len(tail.splitlines())
    exact = "a\n" * (LOG_SHOWN // 2 + 5)  # the cut falls just after a newline: no line is dropped needlessly
    assert log_tail(exact) == ("a\n" * (LOG_SHOWN // 2), 5)
    one_line = "y" * (LOG_SHOWN + 10)  # a single line longer than the view is shown from its end
    assert log_tail(one_line) == ("y" * LOG_SHOWN, 1)


def long_log(count: int = 600) -> str:
    return "".join(f"step {n:04d} using token ********, <b>not markup</b> " + "." * 30 + "\n" for n in range(count))


def test_every_action_has_its_view_and_its_whole_log(client, admin_token, db_session, work):
    first = request_deployment(client, admin_token)["action_id"]
    work()
    second = request_deployment(client, admin_token, tag="v2")["action_id"]
    work()
    text = long_log()
    older = db_session.get(Action, first)
    older.log = text
    db_session.commit()
    sign_in_with_token(client, admin_token)
    view = client.get(f"/deployments/probe-stage/actions/{first}")
    page = view.get_data(as_text=True)
    assert view.status_code == 200 and f"Action {first}: create" in page
    shown = html_lib.unescape(re.search(r'<pre class="log"[^>]*>(.*?)</pre>', page, re.S)[1])
    assert shown.startswith("step ") and text.endswith(shown) and len(shown) <= LOG_SHOWN
    left_out = text[:len(text) - len(shown)].count("\n")
    assert f"Earlier output omitted ({left_out} lines)." in page
    assert f'href="/deployments/probe-stage/actions/{first}/log.txt" download>Download all of it<' in page
    assert "<b>not markup</b>" not in page  # the log is text on the page
    raw = client.get(f"/deployments/probe-stage/actions/{first}/log.txt")
    assert raw.status_code == 200 and raw.get_data(as_text=True) == text
    assert raw.mimetype == "text/plain" and raw.headers["X-Content-Type-Options"] == "nosniff"
    assert raw.headers["Content-Disposition"] == f'attachment; filename="probe-stage-action-{first}.log"'
    # the deployment's page shows the newest action on top and anchors every action for the PR comment's links
    detail = client.get("/deployments/probe-stage").get_data(as_text=True)
    assert f'id="action-{second}"' in detail and f'id="action-{first}"' in detail
    assert detail.index(f'id="action-{second}"') < detail.index('id="history-h"') < detail.index(f'id="action-{first}"')
    assert f'href="/deployments/probe-stage/actions/{first}"' in detail
    # an action is read under its own deployment only
    assert client.get(f"/deployments/probe-production/actions/{first}").status_code == 404
    assert client.get(f"/deployments/probe-stage/actions/{second + 100}").status_code == 404


def test_the_whole_log_is_for_admins(client, admin_token, db_session, work):
    action_id = request_deployment(client, admin_token)["action_id"]
    work()
    assert client.get(f"/deployments/probe-stage/actions/{action_id}/log.txt").status_code == 403
    reader = create_token(db_session, "reader", Scopes(actions=("read", "deploy")))
    db_session.commit()
    sign_in_with_token(client, reader)
    assert client.get(f"/deployments/probe-stage/actions/{action_id}/log.txt").status_code == 403
    page = client.get(f"/deployments/probe-stage/actions/{action_id}").get_data(as_text=True)
    assert "Logs are for admins" in page and '<pre class="log"' not in page


def test_the_action_in_progress_is_on_top_with_its_steps_and_clock(client, admin_token, db_session, work):
    done = request_deployment(client, admin_token)["action_id"]
    work()
    running = request_deployment(client, admin_token, tag="v2")["action_id"]
    action = db_session.get(Action, running)
    action.state, action.started_at, action.log = ActionState.RUNNING, datetime.now(UTC), "pulling v2\n"
    db_session.commit()
    sign_in_with_token(client, admin_token)
    page = client.get("/deployments/probe-stage").get_data(as_text=True)
    top = page[page.index('id="action-'):page.index('id="history-h"')]
    assert f'id="action-{running}"' in top and "In progress: update" in top and "by <strong>token:admin</strong>" in top
    assert re.search(r'running for <span class="elapsed" data-since="[^"]+">\d+ s</span>', top)
    assert 'data-running="yes"' in top and "pulling v2" in top
    history = page[page.index('id="history-h"'):]
    assert history.index(f'data-action="{running}"') < history.index(f'data-action="{done}"')  # newest first


@pytest.mark.parametrize(("state", "word", "linked"), [("Running", "Running", True),
                                                       ("UpdatePending", "Updating", True),
                                                       ("Archived", "Archived", False),
                                                       ("CleanupFailed", "Cleanup failed", False),
                                                       ("CreatePending", "Creating", False)])
def test_only_a_serving_deployment_links_to_its_app(client, db_session, state, word, linked):
    db_session.add(Deployment(name="probe-stage", service="probe", environment="stage", type="swarm", state=state,
                              links=[{"name": "app", "url": "https://probe-stage.example.test"}]))
    db_session.commit()
    page = client.get("/deployments/probe-stage").get_data(as_text=True)
    assert ('href="https://probe-stage.example.test"' in page) is linked
    assert (f"Not serving while {word}" in page) is not linked  # the state in the lifecycle's words


def test_deleting_a_failed_cleanups_record_needs_admin_and_the_name(client, admin_token, db_session):
    db_session.add(Deployment(name="probe-stage", service="probe", environment="stage", type="swarm",
                              state="CleanupFailed"))
    db_session.commit()
    cleaner = create_token(db_session, "cleaner", Scopes(actions=("read", "cleanup")))
    db_session.commit()
    sign_in_with_token(client, cleaner)
    page = client.get("/deployments/probe-stage").get_data(as_text=True)
    assert ">Clean up…<" in page and ">Delete…<" not in page
    assert client.post("/deployments/probe-stage/delete", data={"csrf_token": csrf(client, "/"),
                                                                "confirm": "probe-stage"}).status_code == 403
    client.post("/logout", data={"csrf_token": csrf(client, "/")})
    sign_in_with_token(client, admin_token)
    token = csrf(client, "/")
    asked = client.post("/deployments/probe-stage/delete", data={"csrf_token": token})
    assert asked.status_code == 200 and "Delete the record of probe-stage?" in asked.get_data(as_text=True)
    assert client.post("/deployments/probe-stage/delete", data={"csrf_token": token,
                                                                "confirm": "probe"}).status_code == 422

    def state() -> str:
        db_session.expire_all()
        return db_session.scalars(select(Deployment.state).where(Deployment.name == "probe-stage")).one()

    assert state() == "CleanupFailed"
    done = client.post("/deployments/probe-stage/delete", data={"csrf_token": token, "confirm": "probe-stage"})
    assert done.status_code == 302 and state() == "Removed"


def test_a_production_roll_back_asks_first(client, admin_token, db_session, work):
    for tag in ("v1", "v2"):
        request_deployment(client, admin_token, environment="production", tag=tag)
        work()
    sign_in_with_token(client, admin_token)
    first = db_session.scalars(select(Action).order_by(Action.id)).first()
    page = client.get("/deployments/probe-production").get_data(as_text=True)
    assert ">Roll back to v1…</button>" in page and f'name="action_id" value="{first.id}"' in page
    token = csrf(client, "/")
    asked = client.post("/deployments/probe-production/rollback", data={"csrf_token": token,
                                                                        "action_id": str(first.id)})
    text = html_lib.unescape(asked.get_data(as_text=True))
    assert asked.status_code == 200 and "Roll back probe-production in production?" in text
    # the confirmation names the target the button sent, and sends it on
    assert f"v1 (the configuration of action {first.id})" in text and f'name="action_id" value="{first.id}"' in text
    assert [a.kind for a in db_session.scalars(select(Action).order_by(Action.id))] == ["create", "update"]
    done = client.post("/deployments/probe-production/rollback", data={"csrf_token": token, "confirmed": "yes"})
    assert done.status_code == 302
    db_session.expire_all()
    newest = db_session.scalars(select(Action).order_by(Action.id.desc())).first()
    assert newest.config["tag"] == "v1" and newest.config["rollback_to"] and newest.origin == "page"


def test_a_queued_action_is_on_top_as_queued_with_one_cancel_button(client, admin_token):
    queued = request_deployment(client, admin_token)["action_id"]
    sign_in_with_token(client, admin_token)
    page = client.get("/deployments/probe-stage").get_data(as_text=True)
    top = page[page.index(f'id="action-{queued}"'):page.index('id="history-h"')]
    assert "Queued: create <code>v1</code>" in top and "queued for" in top
    assert page.count(f'aria-label="Cancel action {queued}"') == 1 and f'aria-label="Cancel action {queued}"' in top


def test_action_views_and_services_speak_the_lifecycles_words(client, db_session):
    """An action's state reads as its words ("timed out", not timed_out) in the history and on its own page; a
    failed deployment reads "Failed" with its short reason beside its action's crumbs and on the services page."""
    row = Deployment(name="probe-stage", service="probe", environment="stage", type="swarm", state="Failure",
                     failure_reason="generic", status_message="update failed (exit 1): image probe:v2 not found")
    db_session.add(row)
    db_session.flush()
    action = Action(deployment_id=row.id, kind="update", state="timed_out", requested_by="ci", origin="api",
                    config={"tag": "v2"}, started_at=datetime.now(UTC), finished_at=datetime.now(UTC))
    db_session.add(action)
    db_session.commit()
    page = client.get("/deployments/probe-stage").get_data(as_text=True)
    history = page[page.index('id="history-h"'):]
    assert '<span class="state bad">timed out</span>' in history and "timed_out<" not in page
    assert ">Failed <small>(update exit 1)</small></span>" in page
    own = client.get(f"/deployments/probe-stage/actions/{action.id}").get_data(as_text=True)
    assert '<span class="state bad">timed out</span>' in own and ">Failed <small>(update exit 1)</small>" in own
    services = client.get("/services").get_data(as_text=True)
    listed = services[services.index('data-deployment="probe-stage"'):]
    assert ">Failed <small>(update exit 1)</small></span>" in listed[:listed.index("</li>")]


def test_a_pinned_deployment_shows_who_pinned_it_and_a_writer_unpins_it_after_a_confirmation(client, admin_token,
                                                                                           db_session, work):
    for tag in ("v1", "v2"):
        request_deployment(client, admin_token, tag=tag)
        work()
    api(client, admin_token, "/api/v1/deployments/probe-stage/rollback")
    work()
    # Signed out: the banner says who pinned it, when and why, and how to unpin; no button.
    page = html_lib.unescape(client.get("/deployments/probe-stage").get_data(as_text=True))
    banner = page[page.index('<section class="pinned"'):page.index("</section>", page.index('<section class="pinned"'))]
    assert 'data-pinned-by="token:admin"' in banner and "Pinned</span> by token:admin · <time" in banner
    assert "just now</time> after a rollback to v1 (the configuration of action" in banner
    assert "sami unpin probe-stage" in banner and "Unpin…" not in banner

    sign_in_with_token(client, admin_token)
    page = client.get("/deployments/probe-stage").get_data(as_text=True)
    assert ">Unpin…</button>" in page
    # The page's own update is refused while pinned, saying how to unpin.
    token = csrf(client, "/")
    refused = client.post("/deployments/probe-stage/update", data={"csrf_token": token, "tag": "v3"},
                          follow_redirects=True)
    assert "is pinned by token:admin" in html_lib.unescape(refused.get_data(as_text=True))
    asked = client.post("/deployments/probe-stage/unpin", data={"csrf_token": token})
    text = html_lib.unescape(asked.get_data(as_text=True))
    assert asked.status_code == 200 and "Unpin probe-stage?" in text and ">Unpin probe-stage</button>" in text
    assert "pinned by token:admin at " in text and 'name="confirmed" value="yes"' in text
    db_session.expire_all()
    assert db_session.scalars(select(Deployment.pinned_by).where(Deployment.name == "probe-stage")).one() \
        == "token:admin"
    done = client.post("/deployments/probe-stage/unpin", data={"csrf_token": token, "confirmed": "yes"},
                       follow_redirects=True)
    assert "probe-stage is unpinned" in done.get_data(as_text=True)
    assert '<section class="pinned"' not in done.get_data(as_text=True)
    db_session.expire_all()
    assert db_session.scalars(select(Deployment.pinned_by).where(Deployment.name == "probe-stage")).one() is None
    request_deployment(client, admin_token, tag="v3")


def test_a_reader_sees_the_pin_but_no_unpin_button_and_may_not_unpin(client, admin_token, db_session, work):
    for tag in ("v1", "v2"):
        request_deployment(client, admin_token, tag=tag)
        work()
    api(client, admin_token, "/api/v1/deployments/probe-stage/rollback")
    reader = create_token(db_session, "reader", Scopes(services=("*",), environments=("*",), actions=("read",)))
    db_session.commit()
    sign_in_with_token(client, reader)
    page = client.get("/deployments/probe-stage").get_data(as_text=True)
    assert '<section class="pinned"' in page and "Unpin…" not in page
    refused = client.post("/deployments/probe-stage/unpin", data={"csrf_token": csrf(client, "/"), "confirmed": "yes"})
    assert refused.status_code == 403
    db_session.expire_all()
    assert db_session.scalars(select(Deployment.pinned_by).where(Deployment.name == "probe-stage")).one() \
        == "token:admin"
