"""The embedded default as a newcomer runs it: `sami serve` with no services configured (SQLite,
in-process queue, worker and scheduler, the example repo), then a static site deployed through it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.support.sami_server import SamiServer, call, sami, sami_env
from tests.support.servers import free_port

pytestmark = pytest.mark.slow


@pytest.fixture
def embedded(tmp_path):
    port = free_port()
    # Working copies go to a folder of the test's own, so what the server leaves behind shows.
    (tmp_path / "tmp").mkdir()
    env = sami_env(SAMI_INSTANCE_DIR=str(tmp_path / "instance"), SAMI_BASE_DOMAIN=f"127.0.0.1:{port}",
                   SAMI_PUBLIC_URL=f"http://127.0.0.1:{port}", TMPDIR=str(tmp_path / "tmp"))
    sami("db", "upgrade", env=env)
    token = sami("token", "create", "newcomer", "--admin", env=env).stdout.strip()
    with SamiServer(env, tmp_path / "serve.log", port=port) as server:
        yield server.url, token, tmp_path
    leftovers = [p.name for p in (tmp_path / "tmp").iterdir() if p.name.startswith(("sami-action-", "sami-check-"))]
    assert leftovers == [], leftovers


def test_static_site_is_deployed_and_served_within_a_minute(embedded):
    base, token, tmp_path = embedded
    started = time.monotonic()
    status, body = call(f"{base}/deployment_request", token, {"service": "docs", "environment": "stage",
                                                              "tag": "v1"})
    assert status == 202, body
    accepted = json.loads(body)
    while True:
        status, body = call(f"{base}/api/v1/deployments/docs-stage", token)
        state = json.loads(body)["deployment"]["state"]
        if state in ("Running", "Failure"):
            break
        assert time.monotonic() - started < 60, f"still {state} after a minute"
        time.sleep(0.3)
    detail = json.loads(body)
    assert state == "Running", detail["deployment"]["status_message"]
    status, page = call(f"{base}/sites/docs-stage/")
    assert status == 200
    assert "<html" in page.lower()
    assert (tmp_path / "instance" / "sites" / "docs-stage" / "current").is_symlink()
    status, body = call(f"{base}/api/v1/actions/{accepted['action_id']}", token)
    assert json.loads(body)["state"] == "succeeded"
    status, body = call(f"{base}/readyz")
    assert status == 200 and json.loads(body)["checks"]["database"] == "ok"


def test_a_pull_request_from_github_gets_its_environment_on_the_embedded_default(embedded):
    """The README's newcomer flow: the server made a webhook secret; `sami github send` signs the
    example pull_request.opened delivery with it; the pull request's docs site is deployed."""
    base, token, tmp_path = embedded
    secret = (tmp_path / "instance" / "webhook-secret").read_text().strip()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAMI_")}
    env["SAMI_WEBHOOK_SECRET"] = secret
    sent = subprocess.run([sys.executable, "-m", "bot.cli", "github", "send", "pull_request",
                           "examples/github/pull_request.opened.json", "--url", base],
                          env=env, capture_output=True, text=True, timeout=60)
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.startswith("202"), sent.stdout
    started = time.monotonic()
    while True:
        status, body = call(f"{base}/api/v1/deployments/docs-pr-2", token)
        state = json.loads(body)["deployment"]["state"] if status == 200 else None
        if state in ("Running", "Failure"):
            break
        assert time.monotonic() - started < 60, f"docs-pr-2 is {state} after a minute"
        time.sleep(0.3)
    detail = json.loads(body)["deployment"]
    assert state == "Running", detail["status_message"]
    assert detail["source"]["pull_request"] == 2
    assert detail["tag"] == "ec26c3e57ca3a959ca5aad62de7213c562f8c821"
    status, page = call(f"{base}/sites/docs-pr-2/")
    assert status == 200 and "<html" in page.lower()
    # The same pull request, closed (`--action closed` makes the payload say so, as GitHub's does).
    closed = subprocess.run([sys.executable, "-m", "bot.cli", "github", "send", "pull_request",
                             "examples/github/pull_request.opened.json", "--action", "closed", "--url", base],
                            env=env, capture_output=True, text=True, timeout=60)
    assert closed.returncode == 0, closed.stderr
    started = time.monotonic()
    while (state := json.loads(call(f"{base}/api/v1/deployments/docs-pr-2", token)[1])["deployment"]["state"]) \
            != "Archived":
        assert time.monotonic() - started < 60, f"docs-pr-2 is {state} a minute after the pull request closed"
        time.sleep(0.3)
