"""docker-compose.yml is valid for Docker Compose and runs commands the sami CLI has."""

from __future__ import annotations

import secrets
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from bot.cli import cli
from bot.core.config import ConfigError, load_settings

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def rendered(tmp_path):
    compose = shutil.which("docker-compose")
    if compose is None:
        pytest.fail("docker-compose is not installed (scripts/install-test-deps installs it)")
    for name in ("docker-compose.yml", ".env.example"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / ".env").write_text((ROOT / ".env.example").read_text())
    result = subprocess.run([compose, "-f", str(tmp_path / "docker-compose.yml"), "config"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_compose_file_has_every_process(rendered):
    assert set(rendered["services"]) == {"web", "worker", "scheduler", "postgres", "redis"}
    web = rendered["services"]["web"]
    assert web["environment"]["SAMI_MODE"] == "production"
    assert web["environment"]["SAMI_REDIS_URL"] == "redis://redis:6379/0"


def test_env_example_leaves_the_secrets_to_be_made(rendered):
    """A copied .env.example cannot run production on placeholder secrets; made ones run it."""
    environ = {k: "" if v is None else str(v) for k, v in rendered["services"]["web"]["environment"].items()}
    with pytest.raises(ConfigError, match=r"^SAMI_SECRET_KEY: required in production mode"):
        load_settings(environ)
    made = {**environ, "SAMI_SECRET_KEY": secrets.token_hex(32), "SAMI_WEBHOOK_SECRET": secrets.token_hex(32)}
    assert load_settings(made).mode == "production"


def test_compose_commands_exist_in_the_cli(rendered):
    for name in ("web", "worker", "scheduler"):
        command = rendered["services"][name]["command"]
        assert command[0] == "sami"
        assert command[1] in cli.commands, f"{name} runs 'sami {command[1]}', which the CLI does not have"


def test_compose_refuses_to_start_without_a_database_password(tmp_path):
    shutil.copy(ROOT / "docker-compose.yml", tmp_path / "docker-compose.yml")
    result = subprocess.run([shutil.which("docker-compose") or "docker-compose", "config", "-q"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "set POSTGRES_PASSWORD in .env" in result.stderr
