"""``sami github check`` against GitHub's API description (Prism) and the recording fake."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.core.config import settings_from_mapping
from bot.github.check import github_check
from bot.manifests.store import ManifestStore
from tests.github.conftest import app_client, token_client
from tests.pipeline.probe_scripts import write_probe_repo
from tests.support.github_mock import ANSWER_TIMEOUT, Reply

ROOT = Path(__file__).resolve().parents[2]
SAMI = "https://sami.example.com"
HOOK = {"url": f"{SAMI}/webhooks/github", "content_type": "json", "secret": "********", "insecure_ssl": "0"}


@pytest.fixture
def settings(tmp_path):
    repo = write_probe_repo(tmp_path / "deployments", tmp_path / "record")
    return settings_from_mapping({"instance_dir": str(tmp_path / "instance"), "deployments_repo": str(repo),
                                  "public_url": SAMI, "webhook_secret": "s3cret", "mode": "test"})


def check(settings, client):
    return [(line.name, line.ok, line.detail) for line in github_check(settings, client,
                                                                         ManifestStore.from_settings(settings))]


def test_everything_in_order_is_one_ok_line_each(fake_github, app_key, settings):
    fake_github.on("GET", "/app", Reply(200, {"id": 4242, "slug": "sami-bot", "name": "Sami"}))
    fake_github.on("GET", "/repos/acme/probe/installation", Reply(200, {"id": 7}))
    fake_github.on("GET", "/app/hook/config", Reply(200, HOOK))
    assert check(settings, app_client(fake_github.url, app_key)) == [
        ("credentials", True, f"GitHub App 'sami-bot' (id 4242) at {fake_github.url}"),
        ("repository acme/probe", True, "the App is installed (installation 7)"),
        ("App webhook", True, f"posts JSON to {SAMI}/webhooks/github, signed with a secret"),
        ("webhook secret", True, "SAMI_WEBHOOK_SECRET is set"),
        ("deployments repo", True, f"{settings.deployments_repo} read: 2 valid manifests"),
    ]


def test_what_is_wrong_is_said_with_what_to_do(fake_github, app_key, settings, tmp_path):
    fake_github.on("GET", "/app", Reply(200, {"id": 4242, "slug": "sami-bot"}))
    fake_github.on("GET", "/app/hook/config", Reply(200, {**HOOK, "url": "https://old.example.com/hook"}))
    broken = settings.__class__(**{**settings.__dict__, "webhook_secret": "",
                                   "deployments_repo": str(tmp_path / "missing"),
                                   "github_repositories": ("acme/probe",)})
    lines = check(broken, app_client(fake_github.url, app_key))
    assert [(name, ok) for name, ok, _ in lines] == [("credentials", True), ("repository acme/probe", False),
                                                     ("App webhook", False), ("webhook secret", False),
                                                     ("deployments repo", False)]
    assert "the App is not installed on it" in lines[1][2]
    assert lines[2][2] == f"posts to https://old.example.com/hook, not to {SAMI}/webhooks/github " \
                          "(SAMI_PUBLIC_URL/webhooks/github)"
    assert "SAMI_WEBHOOK_SECRET is empty" in lines[3][2]


def test_refused_credentials_stop_there(fake_github, token_fake, settings):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    from bot.github.client import GitHubClient

    lines = check(settings, GitHubClient(fake_github.url, app_id=4242, private_key=other))
    assert lines[0][:2] == ("credentials", False) and "SAMI_GITHUB_APP_PRIVATE_KEY" in lines[0][2]
    assert [r.path for r in fake_github.requests] == ["/app"]
    token_fake.on("GET", "/user", Reply(401, {"message": "Bad credentials"}))
    lines = check(settings, token_client(token_fake.url))
    assert lines[0] == ("credentials", False, "GitHub refused SAMI_GITHUB_TOKEN: it is wrong, expired or revoked "
                                              "(GET /user: GitHub answered 401: Bad credentials)")
    assert [name for name, _, _ in lines] == ["credentials", "webhook secret", "deployments repo"]


def test_without_credentials_the_first_line_says_which_to_set(settings):
    assert check(settings, None)[0] == ("credentials", False, "none: set SAMI_GITHUB_APP_ID and "
                                        "SAMI_GITHUB_APP_PRIVATE_KEY (a GitHub App), or SAMI_GITHUB_TOKEN")


def test_a_token_needs_a_webhook_that_posts_to_sami(token_fake, settings):
    token_fake.on("GET", "/user", Reply(200, {"login": "sami-bot"}))
    token_fake.on("GET", "/repos/acme/probe", Reply(200, {"full_name": "acme/probe",
                                                          "permissions": {"admin": True, "push": True, "pull": True}}))
    token_fake.on("GET", "/repos/acme/probe/hooks", Reply(200, [{"id": 1, "config": {**HOOK, "secret": None}}]))
    lines = check(settings, token_client(token_fake.url))
    assert lines[:3] == [("credentials", True, f"token of 'sami-bot' at {token_fake.url}"),
                         ("repository acme/probe", True, "readable with the token (admin, push, pull)"),
                         ("webhook of acme/probe", False, "has no secret: give it the one in SAMI_WEBHOOK_SECRET")]


# -- GitHub's API description --------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["app", "token"])
def test_check_requests_match_githubs_description(github_mock, app_key, settings, mode):
    client = app_client(github_mock.url, app_key) if mode == "app" else token_client(github_mock.url)
    lines = check(settings, client)
    assert lines[0][:2] == ("credentials", True)
    assert lines[1][:2] == ("repository acme/probe", True)
    # The description's example webhook posts to https://example.com/webhook, not to Sami.
    assert lines[2][1] is False
    assert lines[2][2].startswith("posts to https://example.com/webhook" if mode == "app" else "none posts to")


# -- the command ---------------------------------------------------------------------------------


def sami(tmp_path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """Run ``sami ARGS`` as a user does, with only ``env`` of Sami's settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SAMI_")}
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], env={**clean, **env}, capture_output=True,
                          text=True, timeout=60, cwd=ROOT)


def test_sami_github_check_prints_a_line_each_and_exits_by_them(fake_github, app_key, settings, tmp_path):
    fake_github.on("GET", "/app", Reply(200, {"id": 4242, "slug": "sami-bot"}))
    fake_github.on("GET", "/repos/acme/probe/installation", Reply(200, {"id": 7}))
    fake_github.on("GET", "/app/hook/config", Reply(200, HOOK))
    env = {"SAMI_INSTANCE_DIR": settings.instance_dir, "SAMI_DEPLOYMENTS_REPO": settings.deployments_repo,
           "SAMI_PUBLIC_URL": SAMI, "SAMI_WEBHOOK_SECRET": "s3cret", "SAMI_GITHUB_API_URL": fake_github.url,
           "SAMI_GITHUB_APP_ID": "4242", "SAMI_GITHUB_APP_PRIVATE_KEY": app_key[0],
           "SAMI_GITHUB_TIMEOUT": str(ANSWER_TIMEOUT)}
    passed = sami(tmp_path, env, "github", "check")
    assert passed.returncode == 0, passed.stderr
    assert [line.split()[0] for line in passed.stdout.splitlines()] == ["ok"] * 5
    assert passed.stdout.splitlines()[0] == f"ok    credentials: GitHub App 'sami-bot' (id 4242) at {fake_github.url}"
    failed = sami(tmp_path, {**env, "SAMI_WEBHOOK_SECRET": ""}, "github", "check")
    assert failed.returncode == 1
    assert "FAIL  webhook secret: SAMI_WEBHOOK_SECRET is empty" in failed.stdout
    assert app_key[0].splitlines()[1] not in failed.stdout + failed.stderr
    half = sami(tmp_path, {**env, "SAMI_GITHUB_APP_PRIVATE_KEY": ""}, "github", "check")
    assert half.returncode == 2
    assert half.stderr.startswith("sami: configuration error: SAMI_GITHUB_APP_PRIVATE_KEY:")
