"""The environment view in a real browser: Debian's Chromium driven by Playwright against a real
`sami serve` (the embedded default) whose environment of two probe services was deployed through the
API. Components show in deploy order with state and version, at desktop and phone width, and axe
finds no serious violations."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest
from playwright.sync_api import expect

from tests.browser.test_status_page import SCREENSHOTS, axe_violations, browser  # noqa: F401  (fixture)
from tests.pipeline.environment_repo import Service, write_environment_repo
from tests.support.sami_server import SamiServer, sami, sami_env

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("env-page")
    repo = write_environment_repo(tmp / "repo", tmp / "record", {"db": Service(third_party=True), "web": Service()},
                                  environments=("demo",))
    env = sami_env(SAMI_INSTANCE_DIR=str(tmp / "instance"), SAMI_DEPLOYMENTS_REPO=str(repo),
                   SAMI_BASE_DOMAIN="example.test", SAMI_LOG_LEVEL="warning")
    sami("db", "upgrade", env=env)
    token = sami("token", "create", "env-admin", "--admin", env=env).stdout.strip()
    with SamiServer(env, tmp / "serve.log") as server:
        _finished(server, token, "demo/deploy", {"versions": {"db": "16", "web": "v3"}})
        # A clone: its internal third-party service is provisioned empty, and the view says so.
        _finished(server, token, "demo/clone", {"name": "demo-copy"})
        yield server


def _finished(server, token: str, path: str, body: dict) -> None:
    call = urllib.request.Request(server.url + f"/api/v1/environments/{path}", method="POST",
                                  data=json.dumps(body).encode(),
                                  headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(call, timeout=15) as answer:
        run = json.loads(answer.read())
    run = run.get("run", run)
    deadline = time.monotonic() + 120
    while run["state"] == "running":
        assert time.monotonic() < deadline, run
        time.sleep(0.3)
        status = urllib.request.Request(server.url + f"/api/v1/environments/{run['environment']}/runs/{run['id']}",
                                        headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(status, timeout=15) as answer:
            run = json.loads(answer.read())
    assert run["state"] == "succeeded", run


@pytest.mark.parametrize("width", [1280, 390])
def test_the_environment_view(browser, site, width):  # noqa: F811
    context = browser.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    try:
        page.goto(site.url + "/environments")
        page.get_by_role("link", name="demo", exact=True).click()
        expect(page.get_by_role("heading", name="Environment demo")).to_be_visible()
        rows = page.locator("#components tbody tr")
        expect(rows).to_have_count(2)
        assert [rows.nth(i).get_attribute("data-service") for i in range(2)] == ["db", "web"]
        expect(rows.nth(1).locator("[data-state]")).to_have_text("Running")
        expect(rows.nth(1)).to_contain_text("v3")
        expect(page.get_by_role("heading", name="Last run: deploy")).to_contain_text("succeeded")
        assert page.evaluate("() => document.documentElement.scrollWidth") <= width
        assert axe_violations(page) == []
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"environment-{width}.png"), full_page=True)
    finally:
        context.close()


def test_a_clone_says_what_its_third_party_service_holds(browser, site):  # noqa: F811
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        page.goto(site.url + "/environments/demo-copy")
        components = page.locator("#components")
        expect(components.locator("thead")).to_contain_text("Data")
        expect(components.locator("tr[data-service=db] td[data-label=Data]")).to_have_text("empty")
        expect(components.locator("tr[data-service=web] td[data-label=Data]")).to_have_text("—")
        expect(page.locator("#last-run thead")).to_contain_text("Data")
        page.goto(site.url + "/environments/demo")
        expect(page.locator("#components thead")).not_to_contain_text("Data")
        assert axe_violations(page) == []
    finally:
        context.close()
