"""The list, services, deliveries, login and error pages in a real browser, as a newcomer with a few dozen
deployments in mixed states meets them: at desktop (1440x900) and phone (390 px) width, light and dark,
signed in and out. Screenshots go to test-artifacts/screenshots/ beside the other browser tests'.

The server, its database and the browser are this module's own (the fixtures of test_status_page), so the
first test sees a Sami with no deployments at all.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import expect
from sqlalchemy import delete, select

from bot.core.models import Delivery, Deployment
from tests.browser import test_status_page as status_page
from tests.browser.test_status_page import SCREENSHOTS, expect_live, sign_in, wait_state

# The other browser tests' fixtures; module-scoped ones (the server, the browser) are this module's own.
site, browser, page = status_page.site, status_page.browser, status_page.page

pytestmark = pytest.mark.slow
SHA = "3f2c1ab9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3"
DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}


def shot(page, name: str, full_page: bool = True) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full_page)


def both_schemes(page, name: str, full_page: bool = True) -> None:
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        shot(page, f"{name}-{scheme}", full_page)
    page.emulate_media(color_scheme="light")


def raw_get(url: str, accept: str | None) -> tuple[int, str, str]:
    """(status, content type, body) of a GET with this Accept header, as a program sends it."""
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()


def add_mixed(site, count: int = 34) -> list[str]:
    """``count`` deployments in mixed states: failures, pending ones, archived, pull requests at a commit's sha,
    long names and several links, changed over the last days."""
    states = ["Running", "Running", "Failure", "UpdatePending", "Archived", "Running", "CreatePending", "CleanupFailed"]
    now = datetime.now(UTC)
    names = []
    with site.sessions() as session:
        for number in range(count):
            service = ("shop", "blog", "search-indexer", "payments-gateway")[number % 4]
            pull = 100 + number if number % 3 == 0 else None
            environment = "pull_request" if pull else ("stage", "prod")[number % 2]
            name = f"{service}-pr-{pull}" if pull else f"{service}-{environment}-{number}"
            state = states[number % len(states)]
            session.add(Deployment(
                type="swarm", name=name, service=service, environment=environment, state=state,
                failure_reason="timed_out" if state == "Failure" else None,
                tag=SHA[number % 7:] + SHA[: number % 7] if pull else f"v1.{number}.0",
                sha=SHA if pull else None, source_repo="acme/shop" if pull else None, pull_request=pull,
                links=[{"name": "site", "url": f"https://{name}.example.test"},
                       {"name": "admin console", "url": f"https://admin-{name}.example.test/a/long/path"}],
                updated_at=now - timedelta(hours=number * 5, minutes=number)))
            names.append(name)
        session.commit()
    return names


def test_with_no_deployments_the_list_says_how_to_make_the_first(page, site):
    page.set_viewport_size(DESKTOP)
    page.goto(site.url + "/")
    first = page.get_by_role("region", name="No deployments yet")
    expect(first).to_be_visible()
    expect(first).to_contain_text("sami request SERVICE ENVIRONMENT --tag TAG")
    expect(first).to_contain_text("curl")
    expect(first).to_contain_text("/api/v1/deployments")
    expect(first).to_contain_text("sami token create NAME")
    expect(first.get_by_role("link", name="sign in")).to_be_visible()  # signed out: the Deploy button needs it
    expect(page.get_by_text("No deployments match")).to_have_count(0)
    both_schemes(page, "list-empty-desktop")
    first.get_by_role("link", name="Services").click()
    expect(page.get_by_role("heading", name="Services")).to_be_visible()
    # a filter that finds nothing is a filter's answer, with the way back
    page.goto(site.url + "/?q=nothing-like-this")
    expect(page.get_by_text("No deployments match these filters.")).to_be_visible()
    expect(page.get_by_role("region", name="No deployments yet")).to_have_count(0)
    page.get_by_role("link", name="Show all deployments").click()
    expect(page.get_by_role("region", name="No deployments yet")).to_be_visible()


def test_signed_out_services_and_login_say_how_to_get_in(page, site):
    page.set_viewport_size(DESKTOP)
    page.goto(site.url + "/services")
    expect(page.get_by_role("button", name="Deploy probe")).to_have_count(0)
    hint = page.locator("#sign-in-to-deploy")
    expect(hint).to_contain_text("Sign in to deploy")
    both_schemes(page, "services-signed-out-desktop")
    hint.get_by_role("link", name="Sign in to deploy").click()
    expect(page).to_have_url(re.compile(r"/login\?next=(/|%2F)services$"))
    help_ = page.get_by_role("region", name="Where a token comes from")
    expect(help_).to_contain_text("sami token create NAME")
    expect(help_).to_contain_text("one-time sign-in link")
    both_schemes(page, "login-desktop")
    page.get_by_label("Sami token").fill(site.admin_token)
    page.get_by_role("button", name="Sign in with token").click()
    expect(page).to_have_url(re.compile(r"/services$"))
    expect(page.get_by_role("button", name="Deploy probe")).to_be_visible()
    expect(page.locator("#sign-in-to-deploy")).to_have_count(0)


def test_an_unknown_path_is_a_page_for_a_browser_and_json_for_a_program(page, site):
    page.set_viewport_size(DESKTOP)
    answer = page.goto(site.url + "/nope")
    assert answer.status == 404
    assert answer.headers["content-type"].startswith("text/html")
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    expect(page.get_by_text("There is no page at /nope.")).to_be_visible()
    sections = page.get_by_role("navigation", name="Sections")
    expect(sections.get_by_role("link", name="Services")).to_be_visible()
    expect(page.get_by_role("link", name="Sign in")).to_be_visible()
    both_schemes(page, "not-found-desktop")
    page.get_by_role("link", name="Back to the deployments").click()
    expect(page.get_by_role("heading", name="Deployments", exact=True)).to_be_visible()
    # programs keep the API's error shape: curl's */*, an explicit JSON Accept, and any /api/ path
    for path, accept in (("/nope", None), ("/nope", "*/*"), ("/nope", "application/json"),
                         ("/api/v1/nope", "text/html,application/xhtml+xml,*/*;q=0.8")):
        status, kind, body = raw_get(site.url + path, accept)
        assert (status, kind.split(";")[0]) == (404, "application/json"), (path, accept, body[:200])
        assert json.loads(body) == {"error": "no such page or API endpoint", "status": 404}


def test_the_desktop_list_shows_a_line_a_deployment_and_18_above_the_fold(browser, site):
    add_mixed(site)
    context = browser.new_context(viewport=DESKTOP)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=site.url)
    page = context.new_page()
    page.goto(site.url + "/")
    rows = page.locator("table.deployments tbody tr")
    expect(rows).to_have_count(34)
    boxes = [rows.nth(i).bounding_box() for i in range(34)]
    above = [box for box in boxes if box["y"] + box["height"] <= DESKTOP["height"]]
    assert len(above) >= 18, f"{len(above)} rows above the fold"
    # one line each: every row as tall as a one-line row, whatever its name, links or tag
    line = page.evaluate("() => parseFloat(getComputedStyle(document.querySelector('table.deployments td'))"
                         ".lineHeight)")
    assert max(box["height"] for box in boxes) < 2 * line, boxes
    assert page.locator("table.deployments").bounding_box()["width"] > 1300  # the list uses the screen
    both_schemes(page, "list-desktop-fold", full_page=False)
    both_schemes(page, "list-desktop-34")
    # a pull request's tag is its commit's sha: 7 characters shown, all of it on hover, copied with a button
    pr = page.locator("tr[data-deployment='shop-pr-100']")
    tag = pr.locator("[data-label=Tag] code")
    expect(tag).to_have_text(SHA[:7] + "…")
    expect(tag).to_have_attribute("title", SHA)
    pr.hover()
    copy = pr.get_by_role("button", name="Copy the tag of shop-pr-100")
    copy.click()
    expect(copy).to_have_text("Copied")
    assert page.evaluate("() => navigator.clipboard.readText()") == SHA
    context.close()


def test_a_deployment_that_fails_live_says_the_order_changed_and_re_sorts(page, site):
    site.deploy(tag="v1")
    wait_state(site, "probe-stage", "Running")
    page.set_viewport_size(DESKTOP)
    page.goto(site.url + "/")  # needs attention first: the failures, then the latest changes
    expect_live(page)
    page.evaluate("() => { window.notReloaded = true; }")
    rows = page.locator("table.deployments tbody tr")
    failures = rows.filter(has=page.locator(".state.bad"))
    assert failures.count() > 0
    assert rows.first.get_attribute("data-deployment") != "probe-stage"
    notice = page.locator("#order-notice")
    expect(notice).to_be_hidden()
    site.deploy(tag="v2", overrides={"deployment": {"fail": "update"}})
    row = page.locator("tr[data-deployment='probe-stage']")
    expect(row.locator(".state")).to_have_text("Failed (update exit 1)", timeout=30000)  # the lifecycle's words
    expect(notice).to_be_visible()
    expect(notice).to_contain_text("probe-stage")
    shot(page, "list-order-changed-desktop", full_page=False)
    notice.get_by_role("button", name="Re-sort the list").click()
    expect(rows.first).to_have_attribute("data-deployment", "probe-stage")
    expect(row.get_by_role("link", name="probe-stage")).to_be_focused()
    expect(notice).to_be_hidden()
    assert page.evaluate("() => window.notReloaded") is True  # re-sorted in place, not reloaded
    site.deploy(tag="v3", overrides={"deployment": {"fail": None}})
    wait_state(site, "probe-stage", "Running")


def test_services_show_each_manifests_deployments(page, site):
    site.deploy(tag="v5", overrides={"deployment": {"fail": None}})
    wait_state(site, "probe-stage", "Running")
    page.set_viewport_size(DESKTOP)
    page.goto(site.url + "/services")
    stage = page.locator("tr[data-manifest='probe/stage']")
    made = stage.locator("[data-label=Deployments] li[data-deployment='probe-stage']")
    expect(made.get_by_role("link", name="probe-stage")).to_have_attribute("href", "/deployments/probe-stage")
    expect(made.locator(".state")).to_have_text("Running")
    expect(made.locator("code")).to_have_text("v5")
    expect(page.locator("tr[data-manifest='probe/pull_request'] [data-label=Deployments]")).to_contain_text(
        "none yet")
    both_schemes(page, "services-desktop")


def test_a_manifest_path_breaks_only_after_a_slash_on_a_phone(page, site):
    page.set_viewport_size(PHONE)
    page.goto(site.url + "/services")
    path = page.locator("tr[data-manifest='probe/stage'] [data-label=Manifest] code")
    expect(path).to_have_text("services/probe/swarm/stage/sami.yaml")
    # the characters that end a line of the path: each is a "/" (or the path's last one)
    ends = path.evaluate("""el => {
        const text = el.firstChild ? el.textContent : '';
        const range = document.createRange(); const ends = []; let offset = 0, top = null, last = '';
        const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
        for (let node = walker.nextNode(); node; node = walker.nextNode()) {
            for (let i = 0; i < node.length; i++) {
                range.setStart(node, i); range.setEnd(node, i + 1);
                const y = range.getBoundingClientRect().top;
                if (top !== null && Math.abs(y - top) > 2) { ends.push(last); }
                top = y; last = node.data[i];
            }
        }
        return ends;
    }""")
    assert all(end == "/" for end in ends), ends
    assert page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]
    both_schemes(page, "services-phone")


def test_deliveries_filter_tell_held_from_done_and_link_deployments(page, site):
    now = datetime.now(UTC)
    rows = [("d-held", "pull_request", "synchronize", "processed",
             "held probe-pr-7: waiting for CI at 3f2c1ab (2 of 3 checks running)"),
            ("d-done", "pull_request", "opened", "processed", "created probe-stage at 3f2c1ab"),
            ("d-ignored", "push", None, "ignored", "ignored: not a branch of a pull request"),
            ("d-failed", "issue_comment", "created", "failed", "failed: KeyError: 'comment'")]
    with site.sessions() as session:
        session.execute(delete(Delivery))
        for offset, (delivery_id, event, action, status, outcome) in enumerate(rows):
            session.add(Delivery(delivery_id=delivery_id, event=event, action=action, status=status, outcome=outcome,
                                 repository="acme/probe", sender="octocat",
                                 received_at=now - timedelta(minutes=offset)))
        session.commit()
    sign_in(page, site)
    page.set_viewport_size(DESKTOP)
    page.goto(site.url + "/deliveries")
    held = page.locator("tr[data-delivery='d-held'] .state")
    done = page.locator("tr[data-delivery='d-done'] .state")
    expect(held).to_have_text("held")
    expect(held).to_have_class(re.compile(r"\bbusy\b"))  # not the green of a delivery that was acted on
    expect(done).to_have_text("processed")
    expect(done).to_have_class(re.compile(r"\bok\b"))
    link = page.locator("tr[data-delivery='d-done'] [data-label=Outcome]").get_by_role("link", name="probe-stage")
    expect(link).to_have_attribute("href", "/deployments/probe-stage")
    # a name that is no deployment (never created) stays text
    expect(page.locator("tr[data-delivery='d-held'] [data-label=Outcome] a")).to_have_count(0)
    both_schemes(page, "deliveries-desktop")
    page.get_by_label("Status").select_option("ignored")
    page.get_by_role("button", name="Apply").click()
    expect(page).to_have_url(re.compile(r"status=ignored"))
    expect(page.locator("table.deliveries tbody tr")).to_have_count(1)
    expect(page.locator("tr[data-delivery='d-ignored']")).to_be_visible()
    page.goto(site.url + "/deliveries")
    page.get_by_label("Event").select_option("pull_request")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("table.deliveries tbody tr")).to_have_count(2)
    page.get_by_label("Status").select_option("failed")
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_text("No deliveries match these filters.")).to_be_visible()
    page.get_by_role("link", name="Show all deliveries").click()
    expect(page.locator("table.deliveries tbody tr")).to_have_count(4)
    page.set_viewport_size(PHONE)
    page.reload()
    both_schemes(page, "deliveries-phone")
    assert page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]


def test_a_phone_gets_the_list_first_pills_that_keep_their_shape_and_whole_config_keys(browser, site):
    with site.sessions() as session:
        made = session.scalars(select(Deployment.id).where(Deployment.name == "probe-stage")).first()
    if made is None:  # run alone, this test deploys first: "fail: update" fails an update, not a create
        site.deploy(tag="v3", overrides={"deployment": {"fail": None}})
        wait_state(site, "probe-stage", "Running")
    site.deploy(tag="v4", overrides={"deployment": {"fail": "update"}})
    wait_state(site, "probe-stage", "Failure")
    site.add(name="config-demo", service="cfg", environment="stage", state="Running", tag="v1",
             app_overrides={"PAYMENTS_WEBHOOK_SIGNING_KEY_ROTATION_DAYS": "30", "LOG_LEVEL": "debug"})
    context = browser.new_context(viewport=PHONE)
    page = context.new_page()
    page.goto(site.url + "/")
    # the controls fold into one line: the first deployments are in the first third of the screen
    summary = page.locator("details.controls > summary")
    expect(summary).to_be_visible()
    expect(page.get_by_label("Search", exact=True)).to_be_hidden()
    first = page.locator("table.deployments tbody tr").first
    assert first.bounding_box()["y"] < PHONE["height"] / 3, first.bounding_box()
    both_schemes(page, "list-phone-fold", full_page=False)
    summary.click()
    expect(page.get_by_label("Search", exact=True)).to_be_visible()
    page.get_by_label("Search", exact=True).fill("probe")
    page.get_by_label("Search", exact=True).press("Enter")
    expect(page.locator("table.deployments tbody tr")).to_have_count(1)
    expect(summary).to_contain_text("1 on")
    # a failed action's pill beside its exit code stays one line tall; its error text is one tap away, in its steps
    page.goto(site.url + "/deployments/probe-stage")
    failed = page.locator("table.history tbody tr").first
    state = failed.locator("[data-label=State]")
    expect(state.locator(".state")).to_have_text("failed")
    expect(state).to_contain_text("exit 1")
    pill = state.locator(".state").bounding_box()
    assert pill["height"] < 30, pill
    failed.locator("details.steps-more summary").click()
    expect(failed.locator(".steps-more .error-text")).to_be_visible()
    assert state.locator(".state").bounding_box()["height"] == pill["height"]  # opening the steps keeps its shape
    both_schemes(page, "detail-phone-history")
    # a config key keeps its letters together
    page.goto(site.url + "/deployments/config-demo")
    key = page.locator("table.config code", has_text="PAYMENTS_WEBHOOK")
    line = key.evaluate("el => parseFloat(getComputedStyle(el).lineHeight) || el.getBoundingClientRect().height")
    assert key.bounding_box()["height"] < 1.5 * line, key.bounding_box()
    both_schemes(page, "detail-phone-config")
    context.close()


@pytest.mark.parametrize("width", [1440, 390])
@pytest.mark.parametrize("path", ["/", "/services", "/deliveries", "/login", "/nope", "/?q=nothing-like-this"])
def test_axe_finds_no_serious_violations_on_these_pages(page, site, path, width):
    page.set_viewport_size({"width": width, "height": 900})
    if path != "/login":
        sign_in(page, site)  # signed in, so the Deploy forms and the deliveries are checked too
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        page.goto(site.url + path)
        assert status_page.axe_violations(page) == [], f"{path} ({scheme}, {width} px)"
