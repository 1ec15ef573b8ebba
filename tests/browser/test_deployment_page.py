"""The deployment page in a real browser (Chromium driven by Playwright against a real `sami serve`): what asks
before it writes, with and without JavaScript; each action's view, its whole log and the #action-N anchors;
the action in progress on top with its clock and a live log that follows its tail; compact history rows;
no link to an app that does not serve.

Screenshots (1440x900 and 390 px wide, light and dark) go to test-artifacts/screenshots/deployment-*.png.
"""

from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from bot.core.models import Action, ActionStep, Deployment
from tests.browser.test_status_page import (  # noqa: F401  (browser: the module's Chromium fixture)
    CANARY,
    SCREENSHOTS,
    Site,
    axe_violations,
    browser,
    running_site,
    sign_in,
    wait_state,
)

pytestmark = pytest.mark.slow
DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def site(postgres, tmp_path_factory):
    """A server whose deployments repo has the probe service in stage, production and pull requests."""
    with running_site(postgres, tmp_path_factory.mktemp("deployment-page"),
                      environments=("stage", "production", "pull_request")) as running:
        yield running


def new_page(browser, site: Site, viewport=DESKTOP, javascript: bool = True, scheme: str = "light"):  # noqa: F811
    context = browser.new_context(viewport=viewport, java_script_enabled=javascript, color_scheme=scheme,
                                  accept_downloads=True)
    page = context.new_page()
    sign_in(page, site)
    return page


def shoot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"deployment-{name}.png"), full_page=True)


def shoot_both_schemes(page, name: str) -> None:
    """Screenshots in light and dark, each checked by axe-core; the page is left light."""
    for scheme in ("dark", "light"):
        page.emulate_media(color_scheme=scheme)
        shoot(page, name + ("-dark" if scheme == "dark" else ""))
        assert axe_violations(page) == [], f"{name} ({scheme})"


def archived(site: Site, name: str = "probe-stage") -> None:
    site.deploy(tag="v1")
    wait_state(site, name, "Running")
    status, answer = site.api("POST", f"/api/v1/deployments/{name}/archive")
    assert status == 202, answer
    wait_state(site, name, "Archived")


def settled(site: Site, name: str, state: str, timeout: float = 60) -> None:
    """Wait for ``name`` to be ``state`` in the database (a removed deployment is gone from the API)."""
    deadline = time.monotonic() + timeout
    while True:
        with site.sessions() as session:
            now = session.scalars(select(Deployment.state).where(Deployment.name == name)).one()
        if now == state:
            return
        assert time.monotonic() < deadline, f"{name} still {now}"
        time.sleep(0.3)


def state_of(site: Site, name: str) -> str:
    return site.api("GET", f"/api/v1/deployments/{name}")[1]["deployment"]["state"]


def add_deployment(site: Site, name: str, state: str, actions: list[dict], **fields) -> list[int]:
    """A deployment and its actions as the worker leaves them in the database (no script runs for these)."""
    with site.sessions() as session:
        deployment = Deployment(name=name, service=name.rsplit("-", 1)[0], environment="stage", type="swarm",
                                state=state, tag="v2", **fields)
        session.add(deployment)
        session.flush()
        ids = []
        for spec in actions:
            steps = spec.pop("steps", ())
            action = Action(deployment_id=deployment.id, requested_by="token:admin", origin="api", **spec)
            session.add(action)
            session.flush()
            for position, (operation, exit_code) in enumerate(steps, 1):
                start = spec.get("started_at") or datetime.now(UTC)
                session.add(ActionStep(action_id=action.id, position=position, operation=operation, attempts=1,
                                       started_at=start, exit_code=exit_code,
                                       finished_at=None if exit_code is None else start + timedelta(seconds=2)))
            ids.append(action.id)
        session.commit()
    return ids


def finished(minutes_ago: int, state: str = "succeeded", **fields) -> dict:
    start = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    return {"kind": "update", "state": state, "config": {"tag": f"v{minutes_ago}"}, "created_at": start,
            "started_at": start, "finished_at": start + timedelta(seconds=9), "duration_ms": 9000,
            "exit_code": 0 if state == "succeeded" else 1,
            "steps": [("config_check", 0), ("update", 0 if state == "succeeded" else 1)] +
                     ([("check", 0)] if state == "succeeded" else []), **fields}


def test_cleanup_needs_the_name_typed_out_even_without_javascript(browser, site):  # noqa: F811
    archived(site)
    page = new_page(browser, site, javascript=False)
    page.goto(site.url + "/deployments/probe-stage")
    page.get_by_role("button", name="Clean up…").click()
    expect(page.get_by_role("heading", name="Clean up probe-stage?")).to_be_visible()
    expect(page.get_by_text("This cannot be undone.")).to_be_visible()
    page.get_by_label("Type probe-stage to confirm").fill("probe-stag")
    page.get_by_role("button", name="Clean up probe-stage").click()
    expect(page.get_by_role("alert")).to_contain_text("'probe-stag' is not 'probe-stage': nothing was done")
    assert state_of(site, "probe-stage") == "Archived"
    shoot(page, "cleanup-refused-desktop")
    page.get_by_label("Type probe-stage to confirm").fill("probe-stage")
    page.get_by_role("button", name="Clean up probe-stage").click()
    expect(page.get_by_role("status")).to_contain_text("cleanup of probe-stage accepted")
    with site.sessions() as session:
        cleanups = session.scalars(select(Action.origin).join(Deployment).where(
            Deployment.name == "probe-stage", Action.kind == "cleanup")).all()
    assert cleanups == ["page"]
    settled(site, "probe-stage", "Removed")
    page.context.close()


def test_with_javascript_the_cleanup_button_waits_for_the_name(browser, site):  # noqa: F811
    archived(site)
    page = new_page(browser, site)
    page.goto(site.url + "/deployments/probe-stage")
    page.get_by_role("button", name="Clean up…").click()
    button = page.get_by_role("button", name="Clean up probe-stage")
    expect(button).to_be_disabled()
    field = page.get_by_label("Type probe-stage to confirm")
    expect(field).to_be_focused()
    field.fill("probe-stage")
    expect(button).to_be_enabled()
    field.fill("probe-stage2")
    expect(button).to_be_disabled()
    assert axe_violations(page) == []
    page.get_by_role("link", name="Cancel").click()
    expect(page).to_have_url(re.compile(r"/deployments/probe-stage$"))
    assert state_of(site, "probe-stage") == "Archived"
    page.get_by_role("button", name="Restore").click()
    wait_state(site, "probe-stage", "Running")
    page.context.close()


def test_a_production_deploy_asks_first_and_the_form_offers_the_running_tag(browser, site):  # noqa: F811
    site.deploy(tag="v6")
    wait_state(site, "probe-stage", "Running")
    page = new_page(browser, site)
    page.goto(site.url + "/services")
    stage = page.locator("tr", has=page.get_by_role("cell", name="stage", exact=True))
    production = page.locator("tr", has=page.get_by_role("cell", name="production", exact=True))
    expect(stage.get_by_role("textbox")).to_have_value("v6")  # what runs now, not an invented tag
    expect(production.get_by_role("textbox")).to_have_value("")  # nothing runs in production yet
    production.get_by_role("textbox").fill("v6")
    production.get_by_role("button", name="Deploy probe…").click()
    expect(page.get_by_role("heading", name="Deploy probe v6 to production?")).to_be_visible()
    expect(page.locator("dl")).to_contain_text("nothing yet")
    assert site.api("GET", "/api/v1/deployments/probe-production")[0] == 404
    shoot(page, "confirm-production-desktop")
    page.get_by_role("button", name="Deploy v6 to production").click()
    expect(page).to_have_url(re.compile(r"/deployments/probe-production$"))
    wait_state(site, "probe-production", "Running")
    page.goto(site.url + "/services")
    expect(production.get_by_role("textbox")).to_have_value("v6")
    page.goto(site.url + "/deployments/probe-production")
    page.get_by_label("Tag").fill("v7")
    page.get_by_role("button", name="Update…").click()
    expect(page.get_by_role("heading", name="Deploy v7 to probe-production in production?")).to_be_visible()
    page.get_by_role("link", name="Cancel").click()
    assert state_of(site, "probe-production") == "Running"
    page.context.close()


def test_archive_asks_first_and_an_archived_app_is_not_linked(browser, site):  # noqa: F811
    site.deploy(tag="v1")
    wait_state(site, "probe-stage", "Running")
    page = new_page(browser, site)
    page.goto(site.url + "/deployments/probe-stage")
    expect(page.get_by_role("link", name="Open app")).to_be_visible()
    page.get_by_role("button", name="Archive…").click()
    expect(page.get_by_text("probe-stage stops serving at its links until it is restored.")).to_be_visible()
    assert state_of(site, "probe-stage") == "Running"
    page.get_by_role("button", name="Archive probe-stage").click()
    expect(page.locator(".head .state")).to_have_text(re.compile("Archived"), timeout=30000)
    expect(page.get_by_role("link", name="Open app")).to_have_count(0)
    expect(page.locator(".head")).to_contain_text("Not serving while Archived: restore it to open it again")
    page.get_by_role("button", name="Restore").click()
    expect(page.locator(".head .state")).to_have_text(re.compile("Running"), timeout=30000)
    expect(page.get_by_role("link", name="Open app")).to_be_visible()
    page.context.close()


def long_log(count: int) -> str:
    return "".join(f"line {n:04d} using token ******** " + "." * 40 + "\n" for n in range(count))


def test_an_older_actions_log_opens_from_its_anchor_cut_at_a_line_and_whole_as_text(browser, site):  # noqa: F811
    name = f"logs-{uuid.uuid4().hex[:4]}"
    whole = long_log(900)
    older, newer = add_deployment(site, f"{name}-stage", "Running", [
        finished(30, "failed", log=whole, error="update failed: exit 1"), finished(5, log="all good\n")])
    page = new_page(browser, site)
    page.goto(f"{site.url}/deployments/{name}-stage#action-{older}")
    row = page.locator(f"#action-{older}")
    expect(row.locator("details")).to_have_attribute("open", "")  # the anchor opens the action's steps
    expect(row.get_by_text("update failed: exit 1")).to_be_visible()
    assert page.evaluate("() => document.querySelector(':target') && document.querySelector(':target').id") \
        == f"action-{older}"
    row.get_by_role("link", name="Log and details").click()
    expect(page).to_have_url(re.compile(rf"/deployments/{name}-stage/actions/{older}$"))
    log = page.locator("#log")
    shown = log.inner_text()
    assert shown.startswith("line ") and whole.endswith(shown) and len(shown) <= 20000
    left_out = whole[:len(whole) - len(shown)].count("\n")
    expect(page.get_by_text(f"Earlier output omitted ({left_out} lines).")).to_be_visible()
    with page.expect_download() as download:
        page.get_by_role("link", name="Download all of it").click()
    assert download.value.suggested_filename == f"{name}-stage-action-{older}.log"
    assert Path(download.value.path()).read_text(encoding="utf-8") == whole
    assert page.evaluate("() => { const l = document.getElementById('log'); "
                         "return l.scrollTop + l.clientHeight >= l.scrollHeight - 4; }")  # it opens at the end
    assert axe_violations(page) == []
    shoot(page, "action-desktop")
    page.goto(f"{site.url}/deployments/{name}-stage#action-{newer}")
    expect(page.locator(f"#action-{newer}")).to_have_class(re.compile(r"\bcurrent\b"))  # the last action, on top
    expect(page.locator(f"#action-{newer} #log")).to_have_text("all good\n")
    page.context.close()


def test_the_action_in_progress_is_on_top_and_its_log_follows_unless_scrolled_up(browser, site):  # noqa: F811
    name = f"tail-{uuid.uuid4().hex[:4]}-stage"
    started = datetime.now(UTC) - timedelta(seconds=20)
    _, running = add_deployment(site, name, "UpdatePending", [finished(60), {
        "kind": "update", "state": "running", "config": {"tag": "v3"}, "created_at": started, "started_at": started,
        "heartbeat_at": datetime.now(UTC) + timedelta(hours=1), "log": long_log(40),
        "steps": [("config_check", 0), ("update", None)]}])

    def append(lines: str) -> None:
        with site.sessions() as session:
            action = session.get(Action, running)
            action.log = (action.log or "") + lines
            session.commit()

    page = new_page(browser, site)
    page.goto(f"{site.url}/deployments/{name}")
    top = page.locator(f"#action-{running}")
    expect(top.get_by_role("heading")).to_contain_text("In progress: update v3")
    assert top.bounding_box()["y"] < page.locator("#history-h").bounding_box()["y"]
    expect(top).to_contain_text("by token:admin")
    expect(top.get_by_label(f"Steps of action {running}")).to_contain_text("running: update")
    clock = top.locator(".elapsed")
    clock.evaluate("(el, since) => { el.dataset.since = since; }",
                   (datetime.now(UTC) - timedelta(minutes=2, seconds=5)).isoformat())
    page.evaluate("() => window.samiTick()")  # what the page runs every second
    expect(clock).to_have_text(re.compile(r"^2 min 0[5-9] s$"))
    log = page.locator("#log")

    def at_end() -> bool:
        return log.evaluate("l => l.scrollTop + l.clientHeight >= l.scrollHeight - 4")

    assert at_end()
    append(long_log(80).replace("line", "more"))
    expect(log).to_contain_text("more 0079")
    assert at_end()  # it followed the tail
    log.evaluate("l => { l.scrollTop = 0; }")
    expect(log).to_have_attribute("data-follow", "no")
    append("after scrolling up\n")
    expect(log).to_contain_text("after scrolling up")
    assert log.evaluate("l => l.scrollTop") == 0  # the reader's place is kept
    log.evaluate("l => { l.dataset.mark = 'read here'; }")
    with site.sessions() as session:  # a change to the deployment refreshes the page around the log
        session.scalars(select(Deployment).where(Deployment.name == name)).one().status_message = "pulling v3"
        session.commit()
    expect(page.locator(".head .message")).to_have_text("pulling v3")
    assert log.evaluate("l => [l.dataset.mark, l.scrollTop, l.dataset.follow]") == ["read here", 0, "no"]
    log.evaluate("l => { l.scrollTop = l.scrollHeight; }")
    expect(log).to_have_attribute("data-follow", "yes")
    append(long_log(30).replace("line", "last"))
    expect(log).to_contain_text("last 0029")
    assert at_end()
    shoot_both_schemes(page, "in-progress-desktop")
    page.set_viewport_size(PHONE)
    shoot_both_schemes(page, "in-progress-phone")
    assert page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]
    with site.sessions() as session:  # the stand-in worker is done
        action = session.get(Action, running)
        action.state, action.finished_at, action.duration_ms = "failed", datetime.now(UTC), 1000
        session.commit()
    page.context.close()


def test_history_rows_are_one_line_on_a_desktop_and_short_cards_on_a_phone(browser, site):  # noqa: F811
    name = f"hist-{uuid.uuid4().hex[:4]}-stage"
    add_deployment(site, name, "Failure", [finished(90), finished(70), finished(50, "failed", error="exit 1"),
                                           finished(20)], links=[{"name": "app", "url": "https://a.example.test"}])
    page = new_page(browser, site)
    page.goto(f"{site.url}/deployments/{name}")
    rows = page.locator("table.history tbody tr")
    expect(rows).to_have_count(4)
    # measured in one step of the page's script: a live refresh (the scheduler checks this deployment) cannot
    # swap the rows between two measurements
    measure = """() => [...document.querySelectorAll('table.history tbody tr')].map(tr => ({
        action: Number(tr.dataset.action), height: tr.getBoundingClientRect().height,
        tops: [...new Set([...tr.cells].map(td => Math.round(td.getBoundingClientRect().top)))],
        line: parseFloat(getComputedStyle(tr.cells[0]).lineHeight)}))"""
    desktop = page.evaluate(measure)
    line = desktop[0]["line"]
    for row in desktop:
        assert len(row["tops"]) == 1, row  # every cell on one line
        assert row["height"] < 2 * line + 20, row
    newest_first = sorted((row["action"] for row in desktop), reverse=True)
    assert [row["action"] for row in desktop] == newest_first
    steps = rows.nth(1).locator("details")
    expect(steps.locator("ol")).to_be_hidden()
    steps.locator("summary").click()
    expect(steps.locator("ol")).to_be_visible()
    steps.locator("summary").click()
    shoot_both_schemes(page, "history-desktop")
    page.set_viewport_size(PHONE)
    for row in page.evaluate(measure):
        assert row["height"] < 3 * line, row  # a card of two lines
    assert page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]
    shoot_both_schemes(page, "history-phone")
    page.context.close()


def test_the_confirmations_read_well_on_a_phone(browser, site):  # noqa: F811
    archived(site)
    page = new_page(browser, site, viewport=PHONE)
    page.goto(site.url + "/deployments/probe-stage")
    page.get_by_role("button", name="Clean up…").click()
    page.get_by_label("Type probe-stage to confirm").fill("probe-stage")
    assert page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]
    shoot_both_schemes(page, "confirm-cleanup-phone")
    page.get_by_role("link", name="Cancel").click()
    page.get_by_role("button", name="Restore").click()
    wait_state(site, "probe-stage", "Running")
    page.context.close()


def test_no_secret_reaches_the_action_page_or_its_download(browser, site):  # noqa: F811
    accepted = site.deploy(tag="v4")
    wait_state(site, "probe-stage", "Running")
    page = new_page(browser, site)
    page.goto(f"{site.url}/deployments/probe-stage/actions/{accepted['action_id']}")
    expect(page.locator("#log")).to_contain_text("using token ********")
    assert CANARY not in page.content()
    raw = page.request.get(f"{site.url}/deployments/probe-stage/actions/{accepted['action_id']}/log.txt")
    assert raw.status == 200 and "using token ********" in raw.text() and CANARY not in raw.text()
    with site.sessions() as session:
        stored = session.scalars(select(Action.log).where(Action.id == accepted["action_id"])).one()
    assert raw.text() == stored  # masked exactly as the page shows it, and whole
    page.context.close()


def test_a_pinned_deployment_shows_its_pin_and_a_writer_unpins_it_after_a_confirmation(browser, site):  # noqa: F811
    name = "probe-pr-88"
    for tag in ("a1", "a2"):
        site.deploy(environment="pull_request", pull_request=88, tag=tag)
        wait_state(site, name, "Running")
    status, answer = site.api("POST", f"/api/v1/deployments/{name}/rollback")
    assert status == 202, answer
    wait_state(site, name, "Running")
    for viewport, label in ((DESKTOP, "desktop"), (PHONE, "phone")):
        page = new_page(browser, site, viewport=viewport)
        page.goto(f"{site.url}/deployments/{name}")
        banner = page.locator("section.pinned")
        expect(banner).to_contain_text(re.compile(r"Pinned by token:\S+ · just now after a rollback to a1 "
                                                  r"\(the configuration of action \d+\)"))
        expect(banner).to_contain_text(f"sami unpin {name}")
        expect(banner).to_contain_text("/sami unpin")
        expect(banner.get_by_role("button", name="Unpin…")).to_be_visible()
        shoot_both_schemes(page, f"pinned-{label}")
        page.context.close()
    refused_status, refused = site.api("POST", "/api/v1/deployments", {"service": "probe",
                                                                       "environment": "pull_request",
                                                                       "pull_request": 88, "tag": "a3"})
    assert refused_status == 409 and "is pinned by token:" in refused["error"]

    page = new_page(browser, site, javascript=False)
    page.goto(f"{site.url}/deployments/{name}")
    page.get_by_role("button", name="Unpin…").click()
    expect(page.get_by_role("heading", name=f"Unpin {name}?")).to_be_visible()
    expect(page.get_by_text("Once unpinned, the next CI request or push that changes it deploys over that "
                            "version.")).to_be_visible()
    assert site.api("GET", f"/api/v1/deployments/{name}")[1]["deployment"]["pin"] is not None
    page.get_by_role("button", name=f"Unpin {name}").click()
    expect(page).to_have_url(re.compile(rf"/deployments/{name}$"))
    expect(page.get_by_text(f"{name} is unpinned")).to_be_visible()
    expect(page.locator("section.pinned")).to_have_count(0)
    assert site.api("GET", f"/api/v1/deployments/{name}")[1]["deployment"]["pin"] is None
    page.context.close()
