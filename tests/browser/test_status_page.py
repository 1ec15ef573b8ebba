"""The status page in a real browser: Debian's Chromium driven by Playwright against a real `sami serve`
(gunicorn, the in-process worker, PostgreSQL), with the probe control scripts doing the deployments.

Screenshots of the list and a deployment, desktop and phone width, go to test-artifacts/screenshots/.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright
from sqlalchemy import create_engine, select, text
from sqlalchemy.orm import sessionmaker

from bot.core import db
from bot.core.models import Action, ApiToken, Deployment
from bot.services.tokens import Scopes, create_token
from bot.web.pages import ago
from tests.conftest import create_database
from tests.pipeline.probe_scripts import write_probe_repo
from tests.support.sami_server import ROOT, SamiServer, sami_env

pytestmark = pytest.mark.slow
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
AXE = ROOT / "tests" / "node" / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
CANARY = "canary-secret-7b2e41d9"


class Site:
    """The running server, an admin token for it and a session factory on its database."""

    def __init__(self, server: SamiServer, admin_token: str, sessions, record: Path):
        self.server = server
        self.url = server.url
        self.admin_token = admin_token
        self.sessions = sessions
        self.record = record

    def api(self, method: str, path: str, body: dict | None = None, token: str | None = None) -> tuple[int, dict]:
        request = urllib.request.Request(self.url + path, method=method,
                                         data=json.dumps(body).encode() if body is not None else None,
                                         headers={"Authorization": f"Bearer {token or self.admin_token}",
                                                  "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def deploy(self, **body) -> dict:
        status, answer = self.api("POST", "/api/v1/deployments", {"service": "probe", "environment": "stage",
                                                                  "tag": "v1", **body})
        assert status == 202, answer
        return answer

    def add(self, **fields) -> None:
        with self.sessions() as session:
            session.add(Deployment(type="swarm", **fields))
            session.commit()


@contextlib.contextmanager
def running_site(postgres, tmp: Path, environments: tuple[str, ...] = ("stage", "pull_request")):
    """A `sami serve` on a database of its own, its deployments repo the probe service in ``environments``."""
    name = f"sami_browser_{uuid.uuid4().hex[:8]}"
    url = create_database(postgres, name)
    db.upgrade(url)
    engine = db.make_engine(url)
    sessions = sessionmaker(bind=engine, expire_on_commit=False)
    with sessions() as session:
        token = create_token(session, "admin", Scopes(admin=True))
        session.commit()
    record = tmp / "record"
    repo = write_probe_repo(tmp / "deployments", record, secrets=("PROBE_TOKEN",), status_timeout="30s",
                            environments=environments)
    env = sami_env(SAMI_DATABASE_URL=url, SAMI_INSTANCE_DIR=str(tmp / "instance"), SAMI_MODE="development",
                   SAMI_DEPLOYMENTS_REPO=str(repo), SAMI_BASE_DOMAIN="example.test", SAMI_WEBHOOK_SECRET="w" * 24,
                   SAMI_SECRET_KEY="k" * 32, SAMI_SCRIPT_SECRET_PROBE_TOKEN=CANARY)
    server = SamiServer(env, tmp / "serve.log")
    server.start()
    try:
        yield Site(server, token, sessions, record)
    finally:
        server.stop()
        engine.dispose()
        admin = create_engine(postgres.url(), isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="module")
def site(postgres, tmp_path_factory):
    with running_site(postgres, tmp_path_factory.mktemp("browser")) as running:
        yield running


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    yield page
    context.close()


def sign_in(page, site: Site, token: str | None = None) -> None:
    page.goto(site.url + "/login")
    page.get_by_label("Sami token").fill(token or site.admin_token)
    page.get_by_role("button", name="Sign in with token").click()
    expect(page.get_by_text("Signed in as")).to_be_visible()


def tab_to(page, text: str, presses: int = 30) -> None:
    """Press Tab until the focused element reads ``text``."""
    for _ in range(presses):
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.textContent") == text:
            return
    raise AssertionError(f"{text!r} is not reachable with Tab")


def wait_state(site: Site, name: str, *states: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while True:
        _, body = site.api("GET", f"/api/v1/deployments/{name}")
        state = body.get("deployment", {}).get("state")
        if state in states:
            return state
        assert time.monotonic() < deadline, f"{name} still {state}"
        time.sleep(0.3)


def expect_live(page) -> None:
    """The page's script has run and its event stream is connected: it says "Live" on connecting, and "Updated …"
    once a change arrives (a deployment the test before started may still be sending its last ones)."""
    expect(page.locator("#live-status")).to_have_text(re.compile(r"^(Live|Updated .+)$"))


def axe_violations(page) -> list[dict]:
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("() => axe.run(document, {resultTypes: ['violations']})")
    return [{"id": v["id"], "impact": v["impact"], "help": v["help"],
             "nodes": [n["target"] for n in v["nodes"]][:3]}
            for v in result["violations"] if v["impact"] in ("serious", "critical")]


def test_the_list_loads_filters_and_searches(page, site):
    site.add(name="shop-stage", service="shop", environment="stage", state="Failure", tag="v9")
    site.add(name="shop-prod", service="shop", environment="prod", state="Running", tag="v8")
    site.add(name="blog-stage", service="blog", environment="stage", state="Archived", tag="v2")
    page.goto(site.url + "/")
    rows = page.locator("table.deployments tbody tr")
    expect(rows.first).to_contain_text("shop-stage")  # Failure first
    expect(page.locator("tr[data-deployment='blog-stage']")).to_contain_text("Archived")
    page.locator(".chips a", has_text="Failed").click()
    expect(page).to_have_url(re.compile(r"state=Failure"))
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("shop-stage")
    page.goto(site.url + "/")
    page.get_by_label("Search").fill("blog")
    page.get_by_label("Search").press("Enter")
    expect(page).to_have_url(re.compile(r"q=blog"))
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("blog-stage")
    page.locator("tr[data-deployment='blog-stage'] td[data-label=Environment] a").click()
    expect(page).to_have_url(re.compile(r"environment=stage"))


def test_a_change_made_through_the_api_shows_on_the_open_page(page, site):
    site.deploy(tag="v1")
    wait_state(site, "probe-stage", "Running")
    page.goto(site.url + "/deployments/probe-stage")
    expect(page.locator(".head .state")).to_have_text(re.compile("Running"))
    expect_live(page)
    page.evaluate("() => { window.notReloaded = true; }")
    site.deploy(tag="v2", overrides={"deployment": {"sleep": "2"}})
    expect(page.locator(".head .state")).to_have_text(re.compile("Updating"), timeout=10000)
    expect(page.locator(".head .state")).to_have_text(re.compile("Running"), timeout=30000)
    expect(page.locator("dd code").first).to_have_text("v2")
    assert page.evaluate("() => window.notReloaded") is True


def test_a_state_reads_as_words_with_its_reason_and_the_last_deploys_result(page, site):
    """One vocabulary (the comment's and the CLI's): a generic failure says what failed on the list, and a
    deployment still running after its last deploy failed says so beside its state, also when it changes live."""
    now = datetime.now(UTC)
    with site.sessions() as session:
        # Checked just now: the server's periodic checks leave them alone (their service has no manifest, so a
        # check would fail and reword the status this test reads).
        kept = Deployment(name="words-stage", service="words", environment="stage", type="swarm", state="Running",
                          tag="v2", checked_at=now)
        broken = Deployment(name="words-prod", service="words", environment="prod", type="swarm", state="Failure",
                            failure_reason="generic", tag="v7", checked_at=now,
                            status_message="update failed (exit 1): image local/words:v7 not found")
        session.add_all([kept, broken])
        session.flush()
        for deployment, tag in ((kept, "v2"), (broken, "v7")):
            session.add_all([
                Action(deployment_id=deployment.id, kind="create", state="succeeded", requested_by="ci", origin="api",
                       config={"tag": "v1"}, finished_at=now - timedelta(hours=2)),
                Action(deployment_id=deployment.id, kind="update", state="failed", requested_by="ci", origin="api",
                       config={"tag": tag}, finished_at=now - timedelta(minutes=5))])
        session.commit()
    page.goto(site.url + "/?service=words")
    stage, prod = page.locator("tr[data-deployment='words-stage']"), page.locator("tr[data-deployment='words-prod']")
    expect(stage.locator("[data-label=State]")).to_have_text("Running last deploy failed")
    expect(stage.locator(".state")).to_have_class(re.compile("ok"))
    expect(prod.locator(".state")).to_have_text("Failed (update exit 1)")
    expect(prod.locator(".state")).to_have_class(re.compile("bad"))
    expect(prod.locator(".last-deploy")).to_have_count(0)  # the reason says it already
    expect_live(page)
    page.evaluate("() => { window.notReloaded = true; }")
    # A periodic check finds words-prod healthy again: the open list says its last deploy did not take.
    with site.sessions() as session:
        row = session.scalars(select(Deployment).where(Deployment.name == "words-prod")).one()
        row.state, row.failure_reason, row.status_message = "Running", None, "check passed"
        row.updated_at = row.status_changed_at = datetime.now(UTC)
        session.commit()
    expect(prod.locator("[data-label=State]")).to_have_text("Running last deploy failed", timeout=10000)
    assert page.evaluate("() => window.notReloaded") is True
    page.goto(site.url + "/deployments/words-stage")
    expect(page.locator(".head .headline")).to_contain_text("Running last deploy: update to v2 failed 5 min ago")


def test_a_deployment_that_stops_serving_loses_its_app_links_live(page, site):
    """The list links to an app only while it serves (SERVING_STATES); an open list follows a change in place."""
    with site.sessions() as session:
        session.add_all([
            Deployment(name="links-stage", service="links", environment="stage", type="swarm", state="Running",
                       tag="v1", links=[{"name": "app", "url": "https://links-stage.example.test"}]),
            Deployment(name="links-prod", service="links", environment="prod", type="swarm", state="CleanupFailed",
                       tag="v1", links=[{"name": "app", "url": "https://links-prod.example.test"}])])
        session.commit()
    page.goto(site.url + "/?service=links")
    stage = page.locator("tr[data-deployment='links-stage'] [data-label=Links]")
    prod = page.locator("tr[data-deployment='links-prod'] [data-label=Links]")
    expect(stage.get_by_role("link", name="app")).to_have_attribute("href", "https://links-stage.example.test")
    expect(prod.get_by_role("link")).to_have_count(0)
    expect(prod).to_have_text("not serving")
    expect(prod.locator(".not-serving")).to_have_attribute("title", "Not serving while Cleanup failed")
    expect_live(page)
    page.evaluate("() => { window.notReloaded = true; }")
    with site.sessions() as session:
        row = session.scalars(select(Deployment).where(Deployment.name == "links-stage")).one()
        row.state = "Archived"  # its archive ran: the app no longer answers
        row.updated_at = row.status_changed_at = datetime.now(UTC)
        session.commit()
    expect(stage).to_have_text("not serving", timeout=10000)
    expect(stage.get_by_role("link")).to_have_count(0)
    expect(stage.locator(".not-serving")).to_have_attribute("title", "Not serving while Archived")
    assert page.evaluate("() => window.notReloaded") is True


def test_the_open_list_takes_changes_in_place(page, site):
    site.deploy(tag="v1")
    wait_state(site, "probe-stage", "Running")
    page.goto(site.url + "/?service=probe")
    expect_live(page)
    page.evaluate("() => { window.notReloaded = true; }")
    row = page.locator("tr[data-deployment='probe-stage']")
    site.deploy(tag="v5", overrides={"deployment": {"sleep": "2"}})
    expect(row.locator(".state")).to_have_text("Updating", timeout=10000)
    expect(row.locator("[data-label=Tag] code")).to_have_text("v5")
    expect(row.locator(".state")).to_have_text("Running", timeout=30000)
    expect(page.locator("#live-notice")).to_be_hidden()
    site.add(name="fresh-stage", service="fresh", environment="stage", state="CreatePending")
    expect(page.locator("#live-notice")).to_be_visible(timeout=10000)
    assert page.evaluate("() => window.notReloaded") is True


def test_relative_times_count_up_on_an_open_page(page, site):
    site.deploy(tag="v1")
    wait_state(site, "probe-stage", "Running")
    page.goto(site.url + "/")
    when = page.locator("tr[data-deployment='probe-stage'] [data-label=Updated] time")
    expect(when).to_have_text("just now")
    now = datetime.now(UTC)
    for back in (timedelta(seconds=10), timedelta(minutes=2, seconds=5), timedelta(hours=3, seconds=100),
                 timedelta(days=3, seconds=100)):
        then = now - back
        # Set, refresh (what the page runs every 30 s) and read in one step: a live update may redraw the
        # row at any time, and a redrawn row has the real time again.
        shown = when.evaluate("(el, value) => { el.setAttribute('datetime', value); window.samiRefreshTimes();"
                              " return el.textContent; }", then.isoformat())
        assert shown == ago(then, now), (back, shown)  # the same words as the server's
    assert ago(now - timedelta(minutes=2, seconds=5), now) == "2 min ago"


def test_a_phone_sees_each_deployment_as_a_dense_card(browser, site):
    site.deploy(tag="v1")
    wait_state(site, "probe-stage", "Running")
    site.add(name="bare-stage", service="bare", environment="stage", state="CreatePending")  # no tag, links or PR
    context = browser.new_context(viewport={"width": 390, "height": 900})
    page = context.new_page()
    page.goto(site.url + "/")
    card = page.locator("tr[data-deployment='probe-stage']")

    def top(label: str) -> float:
        return card.locator(f"[data-label='{label}']").bounding_box()["y"]

    def line(label: str) -> float:
        box = card.locator(f"[data-label='{label}']").bounding_box()
        return box["y"] + box["height"] / 2

    # three lines: state and name; service · environment · tag; links, updated
    assert abs(line("State") - line("Name")) < 6
    assert abs(line("Service") - line("Environment")) < 6 and abs(line("Service") - line("Tag")) < 6
    assert abs(line("Links") - line("Updated")) < 6
    assert top("Name") < top("Service") < top("Links")
    expect(card.locator("[data-label='Pull request']")).to_be_hidden()  # "—" is left out
    assert card.bounding_box()["height"] < 100, card.bounding_box()
    bare = page.locator("tr[data-deployment='bare-stage']")
    for label in ("Tag", "Links", "Pull request"):
        expect(bare.locator(f"[data-label='{label}']")).to_be_hidden()
    expect(bare).not_to_contain_text("—", use_inner_text=True)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "list-phone-sparse.png"), full_page=True)
    # the sort label stays with its select when the form wraps
    label, control = page.locator("label[for=sort]").bounding_box(), page.locator("#sort").bounding_box()
    assert abs((label["y"] + label["height"] / 2) - (control["y"] + control["height"] / 2)) < 6
    assert 0 < control["x"] - (label["x"] + label["width"]) < 20
    # the desktop keeps the table with every column, "—" included
    page.set_viewport_size({"width": 1280, "height": 900})
    expect(page.locator("table.deployments thead")).to_be_visible()
    expect(bare.locator("[data-label='Tag']")).to_have_text("—")
    tag_y, name_y = (bare.locator(f"[data-label='{label}']").bounding_box()["y"] for label in ("Tag", "Name"))
    assert abs(tag_y - name_y) < 2  # one table row, not a card
    with site.sessions() as session:
        session.delete(session.scalar(select(Deployment).where(Deployment.name == "bare-stage")))
        session.commit()
    context.close()


def test_sign_in_and_archive_from_the_page(page, site):
    site.deploy(tag="v1")
    wait_state(site, "probe-stage", "Running")
    sign_in(page, site)
    page.goto(site.url + "/deployments/probe-stage")
    page.get_by_role("button", name="Archive…").click()
    expect(page.get_by_role("heading", name="Archive probe-stage?")).to_be_visible()
    page.get_by_role("button", name="Archive probe-stage").click()
    expect(page.get_by_role("status")).to_contain_text("archive of probe-stage accepted")
    expect(page.locator(".head .state")).to_have_text(re.compile("Archived"), timeout=30000)
    page.get_by_role("button", name="Restore").click()
    expect(page.locator(".head .state")).to_have_text(re.compile("Running"), timeout=30000)


def test_the_page_works_from_the_keyboard(page, site):
    site.deploy(tag="v1")
    wait_state(site, "probe-stage", "Running")
    sign_in(page, site)
    page.goto(site.url + "/")
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    tab_to(page, "probe-stage", presses=60)  # from the skip link on, through the filters, to the deployment's link
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/deployments/probe-stage$"))
    tab_to(page, "Archive…")
    focus = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert focus != "none"  # where the focus is shows
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Archive probe-stage?")).to_be_visible()
    tab_to(page, "Archive probe-stage")  # the confirmation's button, from the keyboard too
    page.keyboard.press("Enter")
    expect(page.locator(".head .state")).to_have_text(re.compile("Archiving|Archived"))
    expect(page.locator(".head .state")).to_have_text(re.compile("Archived"), timeout=30000)
    site.api("POST", "/api/v1/deployments/probe-stage/restore")
    wait_state(site, "probe-stage", "Running")


def test_a_forged_post_without_the_csrf_token_is_refused(page, site):
    site.deploy(tag="v1")
    wait_state(site, "probe-stage", "Running")
    sign_in(page, site)
    forged = page.request.post(site.url + "/deployments/probe-stage/archive", form={"nothing": "here"},
                               max_redirects=0)
    assert forged.status == 403
    assert "security token" in forged.text()
    assert wait_state(site, "probe-stage", "Running", "UpdatePending") != "ArchivePending"


def test_an_admin_sees_the_log_with_the_secret_masked(page, site):
    site.deploy(tag="v3", overrides={"deployment": {"sleep": "3"}})
    sign_in(page, site)
    page.goto(site.url + "/deployments/probe-stage")
    log = page.locator("#log")
    expect(log).to_contain_text("using token ********", timeout=30000)
    assert CANARY not in page.content()
    wait_state(site, "probe-stage", "Running")
    page.reload()
    expect(page.locator("#log")).to_contain_text("probe")
    assert CANARY not in page.content()


def test_a_logged_out_visitor_sees_no_write_buttons_and_cannot_post(page, site):
    site.deploy(tag="v1")
    wait_state(site, "probe-stage", "Running")
    page.goto(site.url + "/deployments/probe-stage")
    expect(page.locator(".head .state")).to_be_visible()
    expect(page.get_by_role("button", name="Archive")).to_have_count(0)
    expect(page.get_by_role("button", name="Update")).to_have_count(0)
    expect(page.locator("#log")).to_have_count(0)
    page.goto(site.url + "/login")
    csrf = page.locator("input[name=csrf_token]").first.get_attribute("value")
    refused = page.request.post(site.url + "/deployments/probe-stage/archive", form={"csrf_token": csrf},
                                max_redirects=0)
    assert refused.status == 401


@pytest.mark.parametrize("width", [1280, 390])
@pytest.mark.parametrize("path", ["/", "/deployments/probe-stage"])
def test_axe_finds_no_serious_violations(page, site, path, width):
    site.deploy(tag="v1")
    wait_state(site, "probe-stage", "Running")
    page.set_viewport_size({"width": width, "height": 900})
    sign_in(page, site)  # signed in, so the forms are checked too
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        page.goto(site.url + path)
        assert axe_violations(page) == [], f"{path} ({scheme})"


def test_screenshots_of_list_and_detail(browser, site):
    site.deploy(tag="v1")
    wait_state(site, "probe-stage", "Running")
    site.deploy(environment="pull_request", pull_request=42, repository="acme/probe", sha="3f2c1ab9", tag="3f2c1ab")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for width, label in ((1280, "desktop"), (390, "phone")):
        context = browser.new_context(viewport={"width": width, "height": 900})
        page = context.new_page()
        sign_in(page, site)
        page.goto(site.url + "/")
        expect(page.locator("table.deployments")).to_be_visible()
        page.screenshot(path=str(SCREENSHOTS / f"list-{label}.png"), full_page=True)
        page.goto(site.url + "/deployments/probe-stage")
        expect(page.locator(".head .state")).to_be_visible()
        page.screenshot(path=str(SCREENSHOTS / f"detail-{label}.png"), full_page=True)
        # nothing wider than the screen: a phone needs no sideways scrolling of the page itself
        assert page.evaluate("() => document.documentElement.scrollWidth") <= width
        page.emulate_media(color_scheme="dark")
        page.screenshot(path=str(SCREENSHOTS / f"detail-{label}-dark.png"), full_page=True)
        page.emulate_media(color_scheme="light")
        page.goto(site.url + "/services")
        expect(page.get_by_role("heading", name="Services")).to_be_visible()
        page.screenshot(path=str(SCREENSHOTS / f"services-{label}.png"), full_page=True)
        assert page.evaluate("() => document.documentElement.scrollWidth") <= width
        context.close()
    assert {p.name for p in SCREENSHOTS.glob("*.png")} >= {"detail-desktop.png", "detail-phone.png", "list-desktop.png",
                                                           "list-phone.png", "detail-desktop-dark.png"}


def test_the_printed_one_time_link_signs_a_newcomer_in_to_deploy(browser, site):
    match = re.search(r"one-time link, valid \d+ minutes\): (http://\S+/login/once#\S+)", site.server.output())
    assert match, site.server.output()[-2000:]
    link = match[1].replace("http://127.0.0.1:8000", site.url)
    context = browser.new_context()
    page = context.new_page()
    page.goto(link)
    expect(page.get_by_text("Signed in as")).to_contain_text("(admin)")
    assert "#" not in page.url
    page.goto(site.url + "/services")
    page.get_by_role("button", name="Deploy probe").click()
    expect(page).to_have_url(re.compile(r"/deployments/probe-stage$"))
    expect(page.locator(".head .state")).to_have_text(re.compile("Running"), timeout=30000)
    again = browser.new_context()
    second = again.new_page()
    second.goto(link)
    expect(second.get_by_role("heading")).to_contain_text("Not allowed")
    again.close()
    # signing out revokes the admin token the link made: nobody else holds it, so they do not pile up
    with site.sessions() as session:
        made = session.scalars(select(ApiToken).where(ApiToken.created_by == "one-time sign-in link")).all()
    assert [(t.name.startswith("page-admin-"), t.revoked_at) for t in made] == [(True, None)]
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("link", name="Sign in")).to_be_visible()
    with site.sessions() as session:
        assert session.get(ApiToken, made[0].id).revoked_at is not None
    context.close()


def test_signing_out_keeps_a_token_that_was_typed_in(page, site):
    with site.sessions() as session:
        typed = create_token(session, f"typed-{uuid.uuid4().hex[:6]}", Scopes(actions=("read",)))
        session.commit()
    sign_in(page, site, typed)
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("link", name="Sign in")).to_be_visible()
    assert site.api("GET", "/api/v1/deployments", token=typed)[0] == 200
    sign_in(page, site, typed)


@pytest.mark.parametrize("path", ["/", "/deployments/probe-stage", "/services", "/deliveries", "/login"])
def test_a_page_load_logs_no_console_errors_and_its_icon_loads(page, site, path):
    site.deploy(tag="v1")
    wait_state(site, "probe-stage", "Running")
    errors = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    sign_in(page, site)
    errors.clear()
    page.goto(site.url + path)
    expect_live(page)  # the page's script has run and connected
    # Headless Chromium asks for no icon; a browser on a desktop asks for the one the page names, else /favicon.ico.
    icon = page.evaluate("""async () => {
        const link = document.querySelector('link[rel~="icon"]');
        const response = await fetch(link ? link.href : '/favicon.ico');
        return {named: !!link, status: response.status, type: response.headers.get('content-type'),
                body: await response.text()};
    }""")
    assert (icon["named"], icon["status"], icon["type"].split(";")[0]) == (True, 200, "image/svg+xml"), icon
    assert icon["body"].lstrip().startswith("<svg")
    assert errors == []
