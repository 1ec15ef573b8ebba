"""Releasing from the environment view in a real browser: Debian's Chromium driven by Playwright against
a real `sami serve` (the embedded default) with a blue-green static site. The view says what awaits
release and who may release it; a release approver releases after the confirmation, and the view then
shows the live colour, the history and a rollback button, at desktop and phone width, axe-clean."""

from __future__ import annotations

import json
import re
import time
import urllib.request

import pytest
from playwright.sync_api import expect

from tests.browser.test_status_page import SCREENSHOTS, axe_violations, browser  # noqa: F401  (fixture)
from tests.pipeline.test_releases_static_file import write_release_repo
from tests.support.sami_server import SamiServer, sami, sami_env

pytestmark = pytest.mark.slow


def call(server, token: str, method: str, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(server.url + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=15) as answer:
        return json.loads(answer.read())


def until(server, token: str, done, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        shown = call(server, token, "GET", "/api/v1/environments/production/releases")
        if done(shown):
            return shown
        assert time.monotonic() < deadline, shown
        time.sleep(0.3)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("release-page")
    repo = write_release_repo(tmp / "repo")
    (tmp / "sites").mkdir()
    env = sami_env(SAMI_INSTANCE_DIR=str(tmp / "instance"), SAMI_DEPLOYMENTS_REPO=str(repo),
                   SAMI_STATIC_ROOT=str(tmp / "sites"), SAMI_BASE_DOMAIN="example.test", SAMI_LOG_LEVEL="warning")
    sami("db", "upgrade", env=env)
    manager = sami("token", "create", "release-manager", "--admin", env=env).stdout.strip()
    with SamiServer(env, tmp / "serve.log") as server:
        server.manager = manager
        call(server, manager, "POST", "/api/v1/environments/production/release", {"versions": {"site": "v1"}})
        until(server, manager, lambda shown: shown["awaiting_release"])
        yield server


def test_a_release_approver_releases_from_the_page(browser, site):  # noqa: F811
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        page.goto(site.url + "/login")
        page.get_by_label("Sami token").fill(site.manager)
        page.get_by_role("button", name="Sign in with token").click()
        page.goto(site.url + "/environments/production")
        expect(page.locator("#awaiting")).to_contain_text("Awaiting release: blue")
        expect(page.locator("#awaiting")).to_contain_text("token:release-manager, alice may release it")
        assert axe_violations(page) == []
        page.get_by_role("button", name="Release blue").click()
        expect(page.get_by_role("heading", name="Release production?")).to_be_visible()
        page.get_by_role("button", name="Release production").click()
        expect(page.get_by_text(re.compile(r"release \d+ accepted: the entry switches to blue"))).to_be_visible()
        until(site, site.manager, lambda shown: shown["live"] is not None)
        page.reload()
        expect(page.locator("#releases tbody tr")).to_have_count(1)
        expect(page.locator("#releases tbody tr").first).to_contain_text("live")
        expect(page.locator("#release")).to_contain_text("Live")
        assert axe_violations(page) == []
        page.set_viewport_size({"width": 390, "height": 900})
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "release-390.png"), full_page=True)
    finally:
        context.close()


def test_a_rollback_pins_the_environment_and_the_page_unpins_it(browser, site):  # noqa: F811
    manager = site.manager
    call(site, manager, "POST", "/api/v1/environments/production/release", {"versions": {"site": "v2"}})
    until(site, manager, lambda shown: shown["awaiting_release"])
    call(site, manager, "POST", "/api/v1/environments/production/release/switch")
    until(site, manager, lambda shown: shown["live"] is not None and shown["live"]["colour"] == "green")
    rolled = call(site, manager, "POST", "/api/v1/environments/production/rollback")
    until(site, manager, lambda shown: shown["live"]["colour"] == "blue" and len(shown["pinned"]) == 2)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        page.goto(site.url + "/login")
        page.get_by_label("Sami token").fill(manager)
        page.get_by_role("button", name="Sign in with token").click()
        page.goto(site.url + "/environments/production")
        expect(page.locator("#pinned")).to_contain_text("Pinned by token:release-manager")
        expect(page.locator("#pinned")).to_contain_text(f"rollback {rolled['id']} of production from green to blue")
        assert axe_violations(page) == []
        page.set_viewport_size({"width": 390, "height": 900})
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
        page.get_by_role("button", name="Unpin production").click()
        expect(page.get_by_role("heading", name="Unpin production?")).to_be_visible()
        page.get_by_role("button", name="Unpin production").click()
        expect(page.get_by_text("site-production-blue, site-production-green unpinned")).to_be_visible()
        expect(page.locator("#pinned")).to_have_count(0)
        assert call(site, manager, "GET", "/api/v1/environments/production/releases")["pinned"] == []
    finally:
        context.close()
