"""Creating Sami's GitHub App with GitHub's App-manifest flow: the manifest, the state check, the
conversion (against GitHub's API description served by Prism, and GitHub's errors from a recording
fake), the files it writes, the page on the server and ``sami github setup`` end to end."""

from __future__ import annotations

import html
import json
import os
import re
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from bot.core.config import load_settings
from bot.github import setup
from bot.github.client import GitHubClient, GitHubError, convert_app_manifest
from bot.web import create_app
from tests.support.github_mock import ANSWER_TIMEOUT, Reply
from tests.support.sami_server import PRODUCTION_SECRET_KEY, PRODUCTION_WEBHOOK_SECRET
from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
PUBLIC_URL = "https://sami.example.com"
# Prism answers with the example of GitHub's description: its App, client secret and key.
EXAMPLE_CLIENT_SECRET = "1726be1638095a19edd134c77bde3aa2ece1e5d8"
EXAMPLE_WEBHOOK_SECRET = "e340154128314309424b7c8e90325147d99fdafa"


def page_app(tmp_path, api_url="https://api.github.com", **config):
    return create_app({"mode": "development", "instance_dir": str(tmp_path / "instance"),
                       "database_url": f"sqlite:///{tmp_path / 'sami.sqlite3'}", "webhook_secret": "s",
                       "secret_key": "k", "public_url": PUBLIC_URL, "github_api_url": api_url,
                       "github_timeout": ANSWER_TIMEOUT, **config})


def form_of(page: str) -> tuple[str, dict]:
    """The form's action and the manifest it posts, as a browser would read them."""
    action = html.unescape(re.search(r'<form[^>]* action="([^"]+)"', page).group(1))
    manifest = json.loads(html.unescape(re.search(r'name="manifest" value="([^"]+)"', page).group(1)))
    return action, manifest


def state_of(action: str) -> str:
    return re.search(r"[?&]state=([^&]+)", action).group(1)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def env_values(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))


# -- the manifest --------------------------------------------------------------------------------


def test_manifest_asks_for_what_sami_needs_and_points_at_sami():
    manifest = setup.app_manifest(PUBLIC_URL + "/", name="Sami (sami.example.com)",
                                  redirect_url=PUBLIC_URL + "/github/setup/done")
    assert manifest["default_permissions"] == {
        "metadata": "read", "contents": "read", "pull_requests": "read", "checks": "read",
        "deployments": "write", "statuses": "write", "issues": "write"}
    assert sorted(manifest["default_events"]) == sorted(
        ["pull_request", "push", "issue_comment", "check_suite", "workflow_run", "status"])
    assert manifest["url"] == PUBLIC_URL
    assert manifest["hook_attributes"] == {"url": PUBLIC_URL + "/webhooks/github", "active": True}
    assert manifest["redirect_url"] == PUBLIC_URL + "/github/setup/done"
    assert manifest["public"] is False
    assert len(setup.default_name("https://" + "a" * 60 + ".example.com")) <= 34


@pytest.mark.parametrize("api_url, web", [
    ("https://api.github.com", "https://github.com"),
    ("https://api.github.com/", "https://github.com"),
    ("https://github.example.com/api/v3", "https://github.example.com"),
    ("https://code.example.com:8443/api/v3/", "https://code.example.com:8443"),
    ("https://api.acme.ghe.com", "https://acme.ghe.com"),
])
def test_web_host_of_github_and_enterprise_servers(api_url, web):
    assert setup.web_host(api_url) == web


def test_new_app_url_for_a_user_or_an_organization():
    assert setup.new_app_url("https://api.github.com", "s" * 20) == (
        "https://github.com/settings/apps/new?state=" + "s" * 20)
    assert setup.new_app_url("https://github.example.com/api/v3", "s" * 20, "acme-inc") == (
        "https://github.example.com/organizations/acme-inc/settings/apps/new?state=" + "s" * 20)
    for bad in ("acme/../x", "-acme", "a" * 40, "acme?x=1"):
        with pytest.raises(setup.SetupError, match="not a GitHub organization"):
            setup.new_app_url("https://api.github.com", "s" * 20, bad)


def test_loopback_public_url_is_warned_about():
    assert "cannot reach" in setup.loopback_warning("http://127.0.0.1:8000")
    assert "cannot reach" in setup.loopback_warning("http://localhost:8000")
    assert "cannot reach" in setup.loopback_warning("http://10.1.2.3")
    assert setup.loopback_warning(PUBLIC_URL) is None


# -- the state -----------------------------------------------------------------------------------


def test_a_state_is_taken_once_and_only_before_it_expires(tmp_path):
    now = [1000.0]
    store = setup.StateStore(tmp_path / "states", clock=lambda: now[0])
    state = store.issue()
    assert mode_of(next((tmp_path / "states").iterdir())) == 0o600
    assert state not in "".join(p.name for p in (tmp_path / "states").iterdir())  # files are named by hash
    store.take(state)
    with pytest.raises(setup.StateRejected, match="used already"):
        store.take(state)
    late = store.issue()
    now[0] += setup.STATE_TTL + 1
    with pytest.raises(setup.StateRejected, match="longer than 10 minutes"):
        store.take(late)
    for bad in (None, "", "../../etc/passwd", "x" * 30):
        with pytest.raises(setup.StateRejected):
            store.take(bad)
    store.issue()  # prunes the expired ones
    assert len(list((tmp_path / "states").iterdir())) == 1


# -- the page on the server ----------------------------------------------------------------------


def test_the_page_posts_the_manifest_to_the_enterprise_servers_organization(tmp_path):
    client = page_app(tmp_path, "https://github.example.com/api/v3").test_client()
    answer = client.get("/github/setup?org=acme")
    assert answer.status_code == 200 and answer.mimetype == "text/html"
    action, manifest = form_of(answer.get_data(as_text=True))
    assert action.startswith("https://github.example.com/organizations/acme/settings/apps/new?state=")
    assert manifest["redirect_url"] == PUBLIC_URL + "/github/setup/done"
    assert manifest["hook_attributes"]["url"] == PUBLIC_URL + "/webhooks/github"
    assert manifest["name"] == "Sami (sami.example.com)"
    assert client.get("/github/setup?org=a/b").status_code == 400


@pytest.mark.parametrize("spoil", ["missing", "wrong", "expired", "replayed"])
def test_a_bad_state_is_refused_and_nothing_is_converted(tmp_path, token_fake, spoil):
    token_fake.on("POST", "/app-manifests/abc/conversions", Reply(201, {"id": 1, "pem": "x"}))
    app = page_app(tmp_path, token_fake.url)
    client = app.test_client()
    state = state_of(form_of(client.get("/github/setup").get_data(as_text=True))[0])
    query = {"code": "abc", "state": state}
    if spoil == "missing":
        del query["state"]
    elif spoil == "wrong":
        query["state"] = state[:-4] + "AAAA"
    elif spoil == "expired":
        (state_file,) = (tmp_path / "instance" / setup.STATE_FOLDER).iterdir()
        state_file.write_text(f"{time.time() - 1}\n")
    elif spoil == "replayed":
        client.get("/github/setup/done", query_string=query)
        token_fake.requests.clear()
    answer = client.get("/github/setup/done", query_string=query)
    assert answer.status_code == 400
    assert "start the setup again" in answer.get_data(as_text=True)
    assert token_fake.calls() == []


def test_the_conversion_writes_the_app_to_private_files(tmp_path, github_mock, caplog):
    caplog.set_level("DEBUG")
    client = page_app(tmp_path, github_mock.url).test_client()
    state = state_of(form_of(client.get("/github/setup").get_data(as_text=True))[0])
    answer = client.get("/github/setup/done", query_string={"code": "the-code-1", "state": state})
    page = answer.get_data(as_text=True)
    assert answer.status_code == 200, page
    assert answer.headers["Cache-Control"] == "no-store"
    instance = tmp_path / "instance"
    env_file, key_file = instance / "github-app.env", instance / "github-app-1.pem"
    assert mode_of(env_file) == 0o600 and mode_of(key_file) == 0o600
    values = env_values(env_file)
    assert values == {"SAMI_GITHUB_APP_ID": "1", "SAMI_GITHUB_APP_PRIVATE_KEY": str(key_file.resolve()),
                      "SAMI_WEBHOOK_SECRET": EXAMPLE_WEBHOOK_SECRET}
    load_pem_private_key(key_file.read_bytes(), password=None)
    # The file is what Sami's settings read: it gives a working App client.
    settings = load_settings({**values, "SAMI_INSTANCE_DIR": str(instance)})
    assert GitHubClient.from_settings(settings).app_id == 1
    assert EXAMPLE_WEBHOOK_SECRET in page  # shown once, here
    assert "PRIVATE KEY" not in page and EXAMPLE_CLIENT_SECRET not in page
    assert "https://github.com/apps/octoapp/installations/new" in page
    assert EXAMPLE_CLIENT_SECRET not in env_file.read_text()
    for secret in ("PRIVATE KEY", EXAMPLE_CLIENT_SECRET, EXAMPLE_WEBHOOK_SECRET):
        assert secret not in caplog.text
    # Only urllib3's debug line of the request names the code, once GitHub has taken it (it works once).
    assert "the-code-1" not in " ".join(r.getMessage() for r in caplog.records if r.levelno > 10)
    # Created: the page now refuses to make a second App until this one is loaded.
    again = client.get("/github/setup")
    assert again.status_code == 409 and "github-app.env" in again.get_data(as_text=True)


@pytest.mark.parametrize("status, body, expected", [
    (404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}, "does not know the code"),
    (422, {"message": "Validation Failed", "documentation_url": "https://docs.github.com/rest"},
     "GitHub answered 422: Validation Failed"),
])
def test_githubs_refusal_is_one_line_and_writes_nothing(tmp_path, token_fake, status, body, expected):
    token_fake.on("POST", "/app-manifests/secret-code/conversions", Reply(status, body))
    client = page_app(tmp_path, token_fake.url).test_client()
    state = state_of(form_of(client.get("/github/setup").get_data(as_text=True))[0])
    answer = client.get("/github/setup/done", query_string={"code": "secret-code", "state": state})
    page = answer.get_data(as_text=True)
    assert answer.status_code == 502
    (line,) = re.findall(r'<p class="error">(.*)</p>', page)
    assert expected in line and "secret-code" not in page
    (call,) = token_fake.calls("POST")
    assert call.authorization == "" and call.headers["accept"] == "application/json"
    assert not list((tmp_path / "instance").glob("github-app*"))


@pytest.mark.parametrize("config, status, reason", [
    ({"mode": "test"}, 403, "development mode only"),
    ({"mode": "production", "database_url": "sqlite:///x.db", "secret_key": PRODUCTION_SECRET_KEY,
      "webhook_secret": PRODUCTION_WEBHOOK_SECRET}, 403, "development mode only"),
    ({"github_token": "ghp_x"}, 409, "configured already"),
    ({"github_app_id": 7}, 409, "configured already"),
])
def test_the_page_refuses_outside_development_or_with_credentials(tmp_path, token_fake, config, status, reason):
    client = page_app(tmp_path, token_fake.url, **config).test_client()
    for path in ("/github/setup", "/github/setup/done?code=abc&state=" + "s" * 43):
        answer = client.get(path)
        assert answer.status_code == status and reason in answer.get_data(as_text=True)
    assert token_fake.calls() == []


@pytest.mark.parametrize(("github_timeout", "waited"), [(5, 30), (120, 120)])
def test_the_conversion_waits_for_githubs_answer_as_long_as_sami_github_timeout_says_or_longer(
        tmp_path, app_key, github_timeout, waited):
    states = setup.StateStore(tmp_path / setup.STATE_FOLDER)
    asked: list[dict] = []

    def conversion(code, **options):
        asked.append(options)
        return {"id": 1, "slug": "a", "html_url": "https://github.com/apps/a", "client_id": "c", "pem": app_key[0]}

    setup.complete("the-code", states.issue(), states=states, api_url="https://github.example.com/api/v3",
                   instance_dir=tmp_path / "instance", timeout=github_timeout, convert=conversion)
    assert asked == [{"base_url": "https://github.example.com/api/v3", "timeout": waited}]


def test_a_malformed_code_is_not_sent(token_fake):
    with pytest.raises(GitHubError, match="malformed"):
        convert_app_manifest("../../user", base_url=token_fake.url)
    assert token_fake.calls() == []


def test_a_second_app_never_overwrites_the_first_ones_files(tmp_path):
    first = setup.CreatedApp(id=5, slug="a", html_url="https://github.com/apps/a", client_id="c", pem=(
        "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n"), webhook_secret=None)
    written = setup.write_app_files(tmp_path, first)
    assert "SAMI_WEBHOOK_SECRET" not in written.env_file.read_text()
    assert "GitHub made no webhook secret" in " ".join(written.next_steps())
    second = setup.write_app_files(tmp_path, setup.CreatedApp(**{**first.__dict__, "id": 6}))
    assert second.env_file.name == "github-app-6.env" and written.env_file.read_text().count("=5") == 1
    assert "pem" not in repr(first) and "AAAA" not in repr(first)


# -- sami github setup, as a person runs it ------------------------------------------------------


def start_setup(tmp_path, api_url, *args, **env):
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SAMI_")}
    environ.update(SAMI_INSTANCE_DIR=str(tmp_path / "instance"), SAMI_GITHUB_API_URL=api_url,
                   SAMI_PUBLIC_URL=PUBLIC_URL, SAMI_GITHUB_TIMEOUT=str(ANSWER_TIMEOUT), **env)
    process = subprocess.Popen([sys.executable, "-m", "bot.cli", "github", "setup", "--port", str(port), *args],
                               env=environ, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(base + "/", timeout=5) as answer:
                return process, base, answer.read().decode()
        except (urllib.error.URLError, ConnectionError):
            if process.poll() is not None or time.monotonic() > deadline:
                out, err = process.communicate(timeout=10)
                raise AssertionError(f"sami github setup did not listen:\n{out}\n{err}") from None
            time.sleep(0.1)


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_cli_creates_the_app_end_to_end(tmp_path, github_mock):
    process, base, form = start_setup(tmp_path, github_mock.url, "--org", "acme")
    try:
        action, manifest = form_of(form)
        assert "document.getElementById(\"manifest-form\").submit()" in form
        assert action.startswith(f"{github_mock.url}/organizations/acme/settings/apps/new?state=")
        assert manifest["redirect_url"] == f"{base}/done"
        assert manifest["hook_attributes"]["url"] == PUBLIC_URL + "/webhooks/github"
        # A return with another state is refused, and the wait goes on.
        assert get(f"{manifest['redirect_url']}?code=abc&state={'x' * 43}")[0] == 400
        # What the browser does after GitHub: back to redirect_url with the code and the form's state.
        status, page = get(f"{manifest['redirect_url']}?code=abc123&state={state_of(action)}")
        assert status == 200 and "installations/new" in page and EXAMPLE_WEBHOOK_SECRET not in page
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, err
    instance = (tmp_path / "instance").resolve()
    env_file, key_file = instance / "github-app.env", instance / "github-app-1.pem"
    assert mode_of(env_file) == 0o600 and mode_of(key_file) == 0o600
    assert env_values(env_file)["SAMI_GITHUB_APP_PRIVATE_KEY"] == str(key_file)
    load_pem_private_key(key_file.read_bytes(), password=None)
    assert f"Open {base}/ in a browser" in out
    assert f"Webhook secret (shown this once; it is in github-app.env too): {EXAMPLE_WEBHOOK_SECRET}" in out
    assert "https://github.com/apps/octoapp/installations/new" in out and str(env_file) in out
    assert "refused a return" in err
    for secret in ("PRIVATE KEY", EXAMPLE_CLIENT_SECRET, "abc123"):
        assert secret not in out + err


def test_cli_exits_1_with_one_line_when_github_refuses(tmp_path, token_fake):
    token_fake.on("POST", "/app-manifests/old/conversions", Reply(404, {"message": "Not Found"}))
    process, _, form = start_setup(tmp_path, token_fake.url)
    try:
        action, manifest = form_of(form)
        assert get(f"{manifest['redirect_url']}?code=old&state={state_of(action)}")[0] == 502
        _, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 1
    assert err.strip().splitlines() == ["sami: GitHub does not know the code (it is used already, or older than an "
                                        "hour): start the setup again"]
    assert not list((tmp_path / "instance").glob("github-app*"))


def test_cli_ends_cleanly_when_nothing_comes_back(tmp_path, token_fake):
    process, _, _ = start_setup(tmp_path, token_fake.url, "--timeout", "2")
    _, err = process.communicate(timeout=30)
    assert process.returncode == 1 and "no answer from GitHub within" in err
    assert token_fake.calls() == []


def test_cli_refuses_when_github_is_configured(tmp_path):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SAMI_")}
    environ.update(SAMI_INSTANCE_DIR=str(tmp_path / "instance"), SAMI_GITHUB_TOKEN="ghp_x")
    result = subprocess.run([sys.executable, "-m", "bot.cli", "github", "setup"], env=environ, cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "configured already" in result.stderr


def test_cli_serves_only_a_browser_on_this_machine(tmp_path, token_fake):
    """A page of another site whose name resolves to 127.0.0.1 (DNS rebinding) gets no form and no
    state; unknown paths are 404; nothing of a return's query string reaches the terminal."""
    process, base, _ = start_setup(tmp_path, token_fake.url, "--timeout", "5")
    try:
        port = base.rsplit(":", 1)[1]
        states = tmp_path / "instance" / "github-setup-states"
        assert len(list(states.iterdir())) == 1  # the form start_setup opened
        request = urllib.request.Request(base + "/", headers={"Host": f"rebound.example:{port}"})
        try:
            urllib.request.urlopen(request, timeout=30)
            raise AssertionError("a foreign Host was served")
        except urllib.error.HTTPError as exc:
            assert exc.code == 403 and "in a browser on this machine" in exc.read().decode()
        assert get(f"http://localhost:{port}/nope")[0] == 404
        assert get(f"{base}/done?code=secretcode123&state={'y' * 43}")[0] == 400
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert "secretcode123" not in out + err
    assert len(list(states.iterdir())) == 1  # the foreign request was issued no state
