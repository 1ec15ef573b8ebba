"""Settings from SAMI_* variables, and bad configuration stopping the process with one line."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from sqlalchemy.engine import make_url

from bot.core import db
from bot.core.config import MIN_SECRET_LENGTHS, ConfigError, database_url, load_settings
from tests.support.sami_server import PRODUCTION_SECRET_KEY, PRODUCTION_WEBHOOK_SECRET, SamiServer, sami, sami_env

PRODUCTION = {"SAMI_MODE": "production", "SAMI_DATABASE_URL": "postgresql://sami@db/sami",
              "SAMI_SECRET_KEY": PRODUCTION_SECRET_KEY, "SAMI_WEBHOOK_SECRET": PRODUCTION_WEBHOOK_SECRET}
MAKE_ONE = "(make one: python3 -c 'import secrets; print(secrets.token_hex(32))')"


def test_defaults_are_the_embedded_default(tmp_path):
    settings = load_settings({"SAMI_INSTANCE_DIR": str(tmp_path)})
    assert settings.embedded
    assert settings.database_url == f"sqlite:///{tmp_path / 'sami.sqlite3'}"
    assert settings.static_root == str(tmp_path / "sites")
    assert settings.mode == "development"


def test_variables_are_parsed():
    settings = load_settings({
        "SAMI_DATABASE_URL": "postgresql://sami@db/sami",
        "SAMI_REDIS_URL": "redis://redis:6379/2",
        "SAMI_SCRIPT_TIMEOUT": "120",
        "SAMI_LOG_FORMAT": "JSON",
        "SAMI_NAMESPACE": "staging",
        "SAMI_PR_DEBOUNCE_SECONDS": "0",
    })
    assert settings.database_url == "postgresql+psycopg2://sami@db/sami"
    assert not settings.embedded
    assert settings.script_timeout == 120
    assert settings.log_format == "json"
    assert settings.namespace == "staging"
    assert settings.pr_debounce_seconds == 0
    assert load_settings({}).pr_debounce_seconds == 5


def test_the_github_rounds_intervals_are_settings():
    defaults = load_settings({})
    assert (defaults.reconcile_interval, defaults.redeliver_interval) == (300, 600)
    settings = load_settings({"SAMI_RECONCILE_INTERVAL": "120", "SAMI_REDELIVER_INTERVAL": "3600"})
    assert (settings.reconcile_interval, settings.redeliver_interval) == (120, 3600)


@pytest.mark.parametrize(("variable", "value", "problem"), [
    ("SAMI_DATABASE_URL", "::not a url::", "not a database URL"),
    ("SAMI_DATABASE_URL", "mysql://x/y", "unsupported database 'mysql'"),
    ("SAMI_DATABASE_URL", "postgresql+psycopg://x@y/z", "the database driver 'psycopg' is not installed"),
    ("SAMI_DATABASE_URL", "postgresql+asyncpg://x@y/z", "'asyncpg' is an asyncio driver"),
    ("SAMI_DATABASE_URL", "postgresql+nosuch://x@y/z", "unknown postgresql driver 'nosuch'"),
    ("SAMI_REDIS_URL", "localhost:6379", "not a Redis URL"),
    ("SAMI_SCRIPT_TIMEOUT", "soon", "expected a whole number"),
    ("SAMI_SCRIPT_TIMEOUT", "0", "must be between 1 and 86400"),
    ("SAMI_PR_DEBOUNCE_SECONDS", "-1", "must be between 0 and 3600"),
    ("SAMI_MODE", "staging", "must be one of development, production, test"),
    ("SAMI_NAMESPACE", "Bad_Name", "lowercase letters"),
    ("SAMI_RECONCILE_INTERVAL", "10", "must be between 60 and 86400"),
    ("SAMI_REDELIVER_INTERVAL", "100000", "must be between 60 and 86400"),
])
def test_bad_values_name_the_variable(variable, value, problem):
    with pytest.raises(ConfigError) as info:
        load_settings({variable: value})
    assert info.value.variable == variable
    assert problem in str(info.value)
    assert str(info.value).startswith(f"{variable}: ")


@pytest.mark.parametrize(("raw", "used"), [
    # SQLAlchemy 2.1 would pick psycopg 3 for a bare postgresql://; Sami installs psycopg2.
    ("postgresql://sami@db/sami", "postgresql+psycopg2://sami@db/sami"),
    ("postgresql://sami:p%40ss%2Fw%25rd@db:6543/sami?sslmode=require",
     "postgresql+psycopg2://sami:p%40ss%2Fw%25rd@db:6543/sami?sslmode=require"),
    ("postgresql+psycopg2://sami@db/sami", "postgresql+psycopg2://sami@db/sami"),
    ("sqlite:///var/sami.sqlite3", "sqlite:///var/sami.sqlite3"),
])
def test_database_url_names_the_installed_driver(raw, used):
    assert database_url(raw) == used
    assert load_settings({"SAMI_DATABASE_URL": raw}).database_url == used
    # Migrations and engines go through the same mapping, whatever URL they are handed.
    assert db.alembic_config(raw).get_main_option("sqlalchemy.url") == used
    assert make_url(used).get_dialect().import_dbapi()


def test_postgresql_without_any_driver_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg2", None)
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(ConfigError, match=r"^SAMI_DATABASE_URL: no PostgreSQL driver is installed: install psycopg2"):
        load_settings({"SAMI_DATABASE_URL": "postgresql://sami@db/sami"})


@pytest.mark.parametrize("missing", ["SAMI_DATABASE_URL", "SAMI_SECRET_KEY", "SAMI_WEBHOOK_SECRET"])
def test_production_requires_its_secrets(missing):
    environ = {
        "SAMI_MODE": "production",
        "SAMI_DATABASE_URL": "postgresql://sami@db/sami",
        "SAMI_SECRET_KEY": PRODUCTION_SECRET_KEY,
        "SAMI_WEBHOOK_SECRET": PRODUCTION_WEBHOOK_SECRET,
    }
    del environ[missing]
    with pytest.raises(ConfigError, match=f"^{missing}: required in production mode"):
        load_settings(environ)


@pytest.mark.parametrize(("variable", "minimum"), [
    ("SAMI_SECRET_KEY", 32), ("SAMI_WEBHOOK_SECRET", 20), ("SAMI_METRICS_TOKEN", 20)])
def test_production_refuses_short_secrets_saying_how_to_make_one(variable, minimum):
    assert MIN_SECRET_LENGTHS[variable] == minimum
    with pytest.raises(ConfigError) as refused:
        load_settings({**PRODUCTION, variable: "s" * (minimum - 1)})
    assert str(refused.value) == (f"{variable}: must be at least {minimum} characters in production {MAKE_ONE}")
    settings = load_settings({**PRODUCTION, variable: "s" * minimum})
    assert len(getattr(settings, variable.removeprefix("SAMI_").lower())) == minimum


@pytest.mark.parametrize("mode", ["development", "test"])
def test_other_modes_keep_short_secrets(mode):
    settings = load_settings({"SAMI_MODE": mode, "SAMI_SECRET_KEY": "k", "SAMI_WEBHOOK_SECRET": "w",
                              "SAMI_METRICS_TOKEN": "m"})
    assert (settings.secret_key, settings.webhook_secret, settings.metrics_token) == ("k", "w", "m")


def test_sami_serve_in_production_refuses_a_short_webhook_secret(tmp_path):
    env = sami_env(**{**PRODUCTION, "SAMI_DATABASE_URL": f"sqlite:///{tmp_path / 'sami.sqlite3'}",
                      "SAMI_INSTANCE_DIR": str(tmp_path), "SAMI_WEBHOOK_SECRET": "abc"})
    result = sami("serve", "--bind", "127.0.0.1:0", env=env, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"sami: configuration error: SAMI_WEBHOOK_SECRET: must be at least 20 characters in production {MAKE_ONE}"]
    assert "abc" not in result.stderr.replace("SAMI_WEBHOOK_SECRET", "")


@pytest.mark.parametrize("token", ["", "m" * 32])
def test_production_serve_says_once_when_metrics_are_open(tmp_path, token):
    env = sami_env(**{**PRODUCTION, "SAMI_DATABASE_URL": f"sqlite:///{tmp_path / 'sami.sqlite3'}",
                      "SAMI_INSTANCE_DIR": str(tmp_path), "SAMI_METRICS_TOKEN": token})
    with SamiServer(env, tmp_path / "serve.log", "--migrate") as server:
        for _ in range(3):  # scrapes add no warning: it is said once, at start
            try:
                status = urllib.request.urlopen(f"{server.url}/metrics", timeout=10).status
            except urllib.error.HTTPError as exc:
                status = exc.code
            assert status == (401 if token else 200)
    warnings = [line for line in server.output().splitlines() if "/metrics is open" in line]
    if token:
        assert warnings == []
    else:
        assert len(warnings) == 1, server.output()
        assert "WARNING" in warnings[0] and "SAMI_METRICS_TOKEN" in warnings[0]


def _run_sami(args, env_overrides):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAMI_")}
    env.update(env_overrides)
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], env=env, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize(("env", "variable"), [
    ({"SAMI_DATABASE_URL": "::nonsense::"}, "SAMI_DATABASE_URL"),
    ({"SAMI_DATABASE_URL": "postgresql+asyncpg://sami@db/sami"}, "SAMI_DATABASE_URL"),
    ({"SAMI_DATABASE_URL": "postgresql+psycopg://sami@db/sami"}, "SAMI_DATABASE_URL"),
    ({"SAMI_DATABASE_URL": "mysql://sami@db/sami"}, "SAMI_DATABASE_URL"),
    ({"SAMI_MODE": "production", "SAMI_DATABASE_URL": "postgresql://x@y/z",
      "SAMI_SECRET_KEY": PRODUCTION_SECRET_KEY}, "SAMI_WEBHOOK_SECRET"),
    ({**PRODUCTION, "SAMI_SECRET_KEY": "short"}, "SAMI_SECRET_KEY"),
])
@pytest.mark.parametrize("command", [["serve"], ["db", "upgrade"]])
def test_bad_configuration_stops_the_process_with_one_line(env, variable, command):
    result = _run_sami(command, env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"sami: configuration error: {variable}: ")
    assert "Traceback" not in result.stderr


def test_the_deployments_token_reaches_git_and_stays_out_of_reprs(tmp_path):
    from bot.manifests.store import ManifestStore

    settings = load_settings({"SAMI_DEPLOYMENTS_TOKEN": "ghp_canary_token_value",
                              "SAMI_INSTANCE_DIR": str(tmp_path)})
    assert "ghp_canary_token_value" not in repr(settings)
    store = ManifestStore.from_settings(settings)
    assert store.credentials.token == "ghp_canary_token_value"
    assert "ghp_canary_token_value" not in repr(store.credentials)


PEM = ("-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n"
       "-----END RSA PRIVATE KEY-----\n")


def test_github_settings_are_parsed_and_secrets_stay_out_of_reprs(tmp_path):
    key_file = tmp_path / "app.pem"
    key_file.write_text(PEM)
    settings = load_settings({"SAMI_GITHUB_API_URL": "https://github.example.com/api/v3/",
                              "SAMI_GITHUB_TOKEN": "ghp_canary1234567890", "SAMI_GITHUB_APP_ID": "12345",
                              "SAMI_GITHUB_APP_PRIVATE_KEY": str(key_file),
                              "SAMI_GITHUB_REPOSITORIES": "acme/web, acme/*",
                              "SAMI_WEBHOOK_SECRET": "whsec-canary-0987", "SAMI_SECRET_KEY": "sk-canary-5555"})
    assert settings.github_api_url == "https://github.example.com/api/v3"
    assert settings.github_app_id == 12345
    assert settings.github_app_private_key == PEM
    assert settings.github_repositories == ("acme/web", "acme/*")
    for canary in ("ghp_canary", "whsec-canary", "sk-canary", "PRIVATE KEY"):
        assert canary not in repr(settings)
    assert load_settings({}).github_api_url == "https://api.github.com"
    assert load_settings({}).github_timeout == 10
    assert load_settings({"SAMI_GITHUB_TIMEOUT": "45"}).github_timeout == 45


@pytest.mark.parametrize(("variable", "value", "problem"), [
    ("SAMI_GITHUB_API_URL", "api.github.com", "not an http(s) URL"),
    ("SAMI_GITHUB_APP_ID", "app", "expected a whole number"),
    ("SAMI_GITHUB_TIMEOUT", "0", "must be between 1 and 600"),
    ("SAMI_GITHUB_TIMEOUT", "ten", "expected a whole number"),
    ("SAMI_GITHUB_APP_PRIVATE_KEY", "/no/such/key.pem", "neither a PEM private key nor a readable file"),
    ("SAMI_GITHUB_APP_PRIVATE_KEY", "-----BEGIN CERTIFICATE-----", "not a PEM private key"),
    ("SAMI_GITHUB_REPOSITORIES", "acme", "'acme' is not owner/name or owner/*"),
    ("SAMI_GITHUB_REPOSITORIES", "acme/web;rm -rf", "is not owner/name or owner/*"),
])
def test_bad_github_settings_name_the_variable(variable, value, problem):
    with pytest.raises(ConfigError) as caught:
        load_settings({variable: value})
    assert caught.value.variable == variable
    assert problem in caught.value.problem
