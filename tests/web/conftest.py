"""Fixtures for the status page: the pipeline's probe deployments repo (with a secret), tokens, a
page client, and a helper that reads a form's CSRF token."""

from __future__ import annotations

import re

import pytest

from bot.services.tokens import Scopes, create_token
from tests.github.conftest import github_mock, prism_server  # noqa: F401
from tests.pipeline.conftest import probe_repo, record, services_ctx, settings, work, worker_ctx  # noqa: F401
from tests.pipeline.probe_scripts import write_probe_repo

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def probe_repo(tmp_path, record):  # noqa: F811  (the probe repo, its manifests naming a secret)
    return write_probe_repo(tmp_path / "deployments", record, secrets=("API_TOKEN",))


@pytest.fixture
def test_config(test_config, probe_repo, tmp_path):
    return {**test_config, "deployments_repo": str(probe_repo), "static_root": str(tmp_path / "sites"),
            "base_domain": "example.test"}


@pytest.fixture
def admin_token(db_session):
    value = create_token(db_session, "admin", Scopes(admin=True))
    db_session.commit()
    return value


def csrf(client, path="/login") -> str:
    """The CSRF token of the session, as a form on ``path`` carries it."""
    match = CSRF_RE.search(client.get(path).get_data(as_text=True))
    assert match, f"no CSRF token in the form of {path}"
    return match[1]


def sign_in_with_token(client, token: str) -> None:
    response = client.post("/login/token", data={"token": token, "csrf_token": csrf(client)})
    assert response.status_code == 302, response.get_data(as_text=True)


def request_deployment(client, admin_token, **body):
    body = {"service": "probe", "environment": "stage", "tag": "v1", **body}
    response = client.post("/api/v1/deployments", json=body, headers={"Authorization": f"Bearer {admin_token}"})
    assert response.status_code == 202, response.json
    return response.json


CANARY_SECRET = "canary-secret-4f7c9d"


@pytest.fixture(autouse=True)
def secret_value(monkeypatch):
    """The probe manifests' secret, as Sami's processes get it; scripts that print it must be masked."""
    monkeypatch.setenv("SAMI_SCRIPT_SECRET_API_TOKEN", CANARY_SECRET)
    return CANARY_SECRET
