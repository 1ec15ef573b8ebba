"""Fixtures for GitHub tests: Prism serving GitHub's API description, a recording fake GitHub, an
App key pair, and GitHub clients pointed at either."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bot.github.client import GitHubClient
from tests.support.github_mock import ANSWER_TIMEOUT, FakeGitHub, PrismServer, trimmed_spec

APP_ID = 4242
CANARY_TOKEN = "ghp_canaryTOKEN0123456789abcdefghijklmnop"


@pytest.fixture(scope="session")
def prism_server(request, tmp_path_factory):
    """Prism serving GitHub's description trimmed to what Sami calls, once per test run."""
    cache = getattr(request.config, "cache", None)  # None with -p no:cacheprovider
    spec = trimmed_spec(cache.mkdir("github-openapi") if cache else tmp_path_factory.mktemp("github-openapi"))
    server = PrismServer(spec, tmp_path_factory.mktemp("prism"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def github_mock(prism_server):
    """The Prism server; a test whose requests broke GitHub's description fails, even if the code
    under test swallowed the 422."""
    offset = len(prism_server.log())
    yield prism_server
    violations = prism_server.request_violations(offset)
    assert not violations, "requests broke GitHub's API description:\n" + "\n".join(violations)


@pytest.fixture(scope="session")
def app_key():
    """A GitHub App's RSA key pair: (private key PEM, public key)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption()).decode()
    return pem, key.public_key()


@pytest.fixture
def fake_github(app_key):
    """A recording fake GitHub that checks an App's JWTs and installation tokens."""
    with FakeGitHub(app_id=APP_ID, public_key=app_key[1]) as fake:
        yield fake


@pytest.fixture
def token_fake():
    """A recording fake GitHub for token authentication (it checks no credentials)."""
    with FakeGitHub() as fake:
        yield fake


def app_client(url: str, app_key) -> GitHubClient:
    return GitHubClient(url, app_id=APP_ID, private_key=app_key[0], seconds_between_writes=0, timeout=ANSWER_TIMEOUT)


def token_client(url: str) -> GitHubClient:
    return GitHubClient(url, token=CANARY_TOKEN, seconds_between_writes=0, timeout=ANSWER_TIMEOUT)


@pytest.fixture
def dispatch(db_session, worker_ctx, services_ctx):
    """Run a webhook event's handler as the delivery job would, in the test's session; its outcome line.
    (worker_ctx and services_ctx come from the modules that use the real pipeline's fixtures.)"""
    from bot.github import router

    def send(event: router.Event) -> str:
        ctx = router.HandlerContext(session=db_session, manifests=worker_ctx.manifests, services=services_ctx,
                                    settings=worker_ctx.settings, github=worker_ctx.github)
        return worker_ctx.router.dispatch(event, ctx).text

    return send
