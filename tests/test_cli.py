"""The sami command as a user runs it (subprocesses on an SQLite database of the test's own, and
once on the test PostgreSQL)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from bot.core import db
from tests.conftest import create_database
from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
# The installed console script, as a user calls it: the one beside this interpreter.
SAMI = Path(sys.executable).parent / "sami"
HEAD = ScriptDirectory(str(db.MIGRATIONS_DIR)).get_current_head()


@pytest.fixture
def sami(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAMI_")}
    env["SAMI_INSTANCE_DIR"] = str(tmp_path / "instance")

    def run(*args, check=True):
        result = subprocess.run([sys.executable, "-m", "bot.cli", *args], env=env, capture_output=True, text=True,
                                timeout=60, cwd=ROOT)
        if check:
            assert result.returncode == 0, result.stderr
        return result

    run("db", "upgrade")
    return run


def test_token_create_list_revoke(sami):
    created = sami("token", "create", "ci-web", "--service", "web", "--environment", "stage", "--action", "deploy")
    value = created.stdout.strip()
    assert value.startswith("sami_")
    assert "store it now" in created.stderr
    listed = json.loads(sami("token", "list", "--json").stdout)
    assert listed == [{"name": "ci-web", "scopes": "actions=deploy services=web environments=stage",
                       "created_at": listed[0]["created_at"], "last_used_at": None, "revoked": False}]
    assert value not in sami("token", "list").stdout
    again = sami("token", "create", "ci-web", check=False)
    assert again.returncode == 1 and "exists already" in again.stderr
    assert "revoked" in sami("token", "revoke", "ci-web").stdout
    assert json.loads(sami("token", "list", "--json").stdout)[0]["revoked"] is True
    missing = sami("token", "revoke", "nope", check=False)
    assert missing.returncode == 1 and "no token named 'nope'" in missing.stderr


def test_token_create_before_migrating_says_what_to_run(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAMI_")}
    env["SAMI_INSTANCE_DIR"] = str(tmp_path / "instance")
    result = subprocess.run([str(SAMI), "token", "create", "me", "--admin"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip() == "Error: the database has no tables: run `sami db upgrade`"


@pytest.mark.parametrize("command", [["worker"], ["scheduler"], ["scheduler", "--once"]])
def test_worker_and_scheduler_on_a_database_never_migrated_stop_saying_what_to_run(command, postgres, redis_url,
                                                                                  tmp_path):
    """Not a worker waiting for a job it would fail, nor a scheduler logging a traceback every tick."""
    url = create_database(postgres, "sami_cli_never_migrated")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAMI_")}
    env.update(SAMI_DATABASE_URL=url, SAMI_REDIS_URL=redis_url, SAMI_INSTANCE_DIR=str(tmp_path / "instance"))
    result = subprocess.run([str(SAMI), *command], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert result.stderr.strip() == "Error: the database has no tables: run `sami db upgrade`"
    assert result.stdout == ""


def test_validate_through_the_main_command(sami, tmp_path):
    examples = sami("validate", str(ROOT / "examples" / "deployments")).stdout.strip()
    assert examples == "10 manifests and 1 environment file valid"
    broken = tmp_path / "broken" / "services" / "web" / "swarm" / "stage"
    broken.mkdir(parents=True)
    (broken / "sami.yaml").write_text("version: v1beta\nservice_name: web\ntype: swarm\nzigzag: 1\n")
    result = sami("validate", str(tmp_path / "broken"), "--format", "github", check=False)
    assert result.returncode == 1
    assert result.stdout.startswith("::error file=services/web/swarm/stage/sami.yaml,line=4,col=1,title=zigzag::"
                                    "unknown key 'zigzag' (allowed: version, service_name, type,")


def test_validate_json_lists_every_error_with_its_file_line_and_message(sami, tmp_path):
    broken = tmp_path / "broken" / "services" / "web" / "swarm" / "stage"
    broken.mkdir(parents=True)
    (broken / "sami.yaml").write_text("version: v1beta\nservice_name: web\ntype: swarm\nzigzag: 1\n")
    result = sami("validate", str(tmp_path / "broken"), "--json", check=False)
    assert result.returncode == 1
    document = json.loads(result.stdout)
    assert document["ok"] is False
    (error,) = [e for e in document["errors"] if e["field"] == "zigzag"]
    assert (error["path"], error["line"], error["column"]) == ("services/web/swarm/stage/sami.yaml", 4, 1)
    assert error["message"].startswith("unknown key 'zigzag'")
    assert json.loads(sami("validate", str(ROOT / "examples" / "deployments"), "--json").stdout)["ok"] is True
    # a repo that cannot be read is still one document, saying why
    missing = sami("validate", str(tmp_path / "nowhere"), "--json", check=False)
    assert missing.returncode == 2
    assert json.loads(missing.stdout)["errors"][0]["message"]
    both = sami("validate", ".", "--json", "--format", "github", check=False)
    assert both.returncode == 2 and "give one" in both.stderr


def test_db_current_names_the_head(sami):
    assert sami("db", "current").stdout.strip() == HEAD


def test_worker_without_redis_says_what_to_do(sami):
    result = sami("worker", check=False)
    assert result.returncode == 2
    assert "set SAMI_REDIS_URL" in result.stderr


def test_db_upgrade_takes_the_plain_postgresql_url(postgres, tmp_path):
    url = create_database(postgres, "sami_cli_plain_url")
    plain = "postgresql://" + url.split("://", 1)[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAMI_")}
    env.update(SAMI_DATABASE_URL=plain, SAMI_INSTANCE_DIR=str(tmp_path / "instance"))
    result = subprocess.run([str(SAMI), "db", "upgrade"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "database at head"
    engine = db.make_engine(url)
    try:
        assert {"deployments", "actions", "alembic_version"} <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    current = subprocess.run([str(SAMI), "db", "current"], env=env, capture_output=True, text=True, timeout=60)
    assert current.stdout.strip() == HEAD, current.stderr


@pytest.mark.parametrize("url", ["postgresql+asyncpg://sami@127.0.0.1/sami", "mysql://sami@127.0.0.1/sami"])
def test_db_upgrade_with_a_driver_sami_lacks_is_one_line(url, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAMI_")}
    env.update(SAMI_DATABASE_URL=url, SAMI_INSTANCE_DIR=str(tmp_path / "instance"))
    result = subprocess.run([str(SAMI), "db", "upgrade"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("sami: configuration error: SAMI_DATABASE_URL: ")


UNREACHABLE_DATABASE = ("sami: cannot reach the database at 127.0.0.1:{port} (none): Connection refused; check "
                        "SAMI_DATABASE_URL, that PostgreSQL runs there and accepts connections, and the user, password "
                        "and database name")


@pytest.mark.parametrize("command", [["db", "upgrade"], ["db", "current"], ["serve"], ["worker"], ["scheduler"],
                                     ["scheduler", "--once"], ["token", "list"]])
def test_a_database_that_does_not_answer_is_one_line_naming_it(command, tmp_path, redis_url):
    port = free_port()  # nothing listens there
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAMI_")}
    env.update(SAMI_DATABASE_URL=f"postgresql://nobody:hunter2-secret@127.0.0.1:{port}/none", SAMI_REDIS_URL=redis_url,
               SAMI_INSTANCE_DIR=str(tmp_path / "instance"))
    result = subprocess.run([str(SAMI), *command], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [UNREACHABLE_DATABASE.format(port=port)]
    assert "hunter2" not in result.stdout + result.stderr


def test_a_redis_that_does_not_answer_is_one_line_naming_it(sami, tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAMI_")}
    env.update(SAMI_INSTANCE_DIR=str(tmp_path / "instance"), SAMI_REDIS_URL=f"redis://127.0.0.1:{port}/0")
    result = subprocess.run([str(SAMI), "worker", "--burst"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [f"sami: cannot reach Redis at 127.0.0.1:{port}: Connection refused; check "
                                          "SAMI_REDIS_URL and that Redis runs there"]


@pytest.mark.parametrize("width", [40, 80, 120])
def test_the_help_of_each_server_command_is_its_own(width):
    """`sami --help` shows the server commands without importing them: the line it shows for each
    is the one the command itself would give."""
    import click

    from bot.cli import SERVER_COMMANDS, cli

    context = click.Context(cli)
    for name, (_module, _attribute, text) in SERVER_COMMANDS.items():
        command = cli.get_command(context, name)
        assert command.name == name or name in cli.commands
        assert click.Command(name, help=text).get_short_help_str(width) == command.get_short_help_str(width), name


def test_help_and_client_commands_load_no_server_library():
    probe = ("import sys\nfrom bot.cli import cli\n"
             "try:\n    cli.main(['--help'], standalone_mode=False)\nexcept SystemExit:\n    pass\n"
             "server = ('flask', 'sqlalchemy', 'gunicorn', 'github', 'rq', 'prometheus_client')\n"
             "print('loaded:', ','.join(sorted(m for m in server if m in sys.modules)))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert "Commands:" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "loaded:"
