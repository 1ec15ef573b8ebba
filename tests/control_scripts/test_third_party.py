"""The built-in third-party sets (redis, postgres) against a real single-node Docker Swarm."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.control_scripts.helpers import contract_args, run_script, wait_for
from tests.support import images
from tests.support.docker import DockerSwarm

pytestmark = pytest.mark.swarm


@pytest.fixture(scope="module")
def redis_image(swarm_session: DockerSwarm) -> str:
    reason = images.unavailable_reason()
    if reason:
        pytest.skip(reason)
    images.redis_image(swarm_session, "local/redis:1")
    swarm_session.run("tag", "local/redis:1", "local/redis:2")
    return "local/redis"


def _members(swarm: DockerSwarm, name: str) -> list[str]:
    out = swarm.output("service", "ls", "--filter", f"label=com.docker.stack.namespace={name}",
                       "--format", "{{.Name}} {{.Replicas}}")
    return sorted(out.split("\n")[:-1])


def _volumes(swarm: DockerSwarm, name: str) -> list[str]:
    return sorted(swarm.output("volume", "ls", "-q", "--filter", f"label=com.docker.stack.namespace={name}").split())


def _redis(swarm: DockerSwarm, name: str, member: int, *command: str) -> str:
    container = swarm.output("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={name}_m{member}",
                             "--filter", "status=running").split()[0]
    return swarm.output("exec", container, "redis-cli", *command).strip()


@pytest.mark.timeout(900)  # the first test builds the image (once per machine) and imports it
def test_redis_lifecycle_sizes_and_data(swarm_session: DockerSwarm, redis_image: str, tmp_path: Path) -> None:
    swarm = swarm_session
    name = "cache-tp"
    manifest = tmp_path / "manifest"
    manifest.mkdir()

    def run(op: str, tag: str = "1", size: int = 1, *extra: str) -> subprocess.CompletedProcess:
        args = contract_args(name, tag=tag, manifest_dir=manifest, service="cache") + list(extra)
        return run_script("redis", op, args, env=swarm.env({"SAMI_IMAGE": f"{redis_image}:{tag}",
                                                            "SAMI_SIZE": str(size)}))

    def healthy(tag: str = "1", size: int = 1) -> subprocess.CompletedProcess:
        return wait_for(lambda: run("check", tag, size), timeout=120)

    assert run("config_check", size=100).returncode != 0
    created = run("create")
    assert created.returncode == 0, created.stderr
    assert healthy().returncode == 0
    assert _redis(swarm, name, 0, "set", "greeting", "hello") == "OK"
    assert run("info").stdout == f"endpoint,{name}_m0:6379\n"

    grown = run("update", "2", 2)
    assert grown.returncode == 0, grown.stderr
    assert "growing cache-tp from 1 to 2 members" in grown.stderr
    assert healthy("2", 2).returncode == 0, "both members answer PING at the new tag"
    assert _members(swarm, name) == [f"{name}_m0 1/1", f"{name}_m1 1/1"]
    replica = wait_for(lambda: subprocess.CompletedProcess(
        [], 0 if _redis(swarm, name, 1, "get", "greeting") == "hello" else 1), timeout=180)
    assert replica.returncode == 0, ("member 1 replicates member 0", _redis(swarm, name, 1, "info", "replication"),
                                     _redis(swarm, name, 0, "get", "greeting"))
    assert _redis(swarm, name, 0, "get", "greeting") == "hello", "an update keeps the data"

    refused = run("update", "2", 1)
    assert refused.returncode == 1
    assert "resize of cache-tp from 2 to 1 members refused" in refused.stderr
    assert len(_members(swarm, name)) == 2
    forced = run("update", "2", 1, "--force")
    assert forced.returncode == 0, forced.stderr
    assert _members(swarm, name) == [f"{name}_m0 1/1"]

    assert run("archive", "2").returncode == 0
    assert wait_for(lambda: run("archive_check", "2")).returncode == 0
    assert _volumes(swarm, name) == [f"{name}_data-0", f"{name}_data-1"], "archive keeps the data volumes"
    assert run("unarchive", "2").returncode == 0
    assert healthy("2").returncode == 0
    assert _redis(swarm, name, 0, "get", "greeting") == "hello", "restored with its data"

    kept = run("cleanup", "2")
    assert kept.returncode == 0, kept.stderr
    assert "data volumes kept:" in kept.stdout and "--delete-data" in kept.stdout
    assert _members(swarm, name) == []
    assert _volumes(swarm, name) == [f"{name}_data-0", f"{name}_data-1"]
    # Deployed again, it finds its data.
    assert run("create", "2").returncode == 0
    assert healthy("2").returncode == 0
    assert _redis(swarm, name, 0, "get", "greeting") == "hello"

    deleted = run("cleanup", "2", 1, "--delete-data")
    assert deleted.returncode == 0, deleted.stderr
    assert "data volumes deleted:" in deleted.stdout
    assert _volumes(swarm, name) == []
    again = run("cleanup", "2", 1, "--delete-data")
    assert again.returncode == 0 and "no data volumes of cache-tp are left" in again.stdout


def test_redis_on_the_host_network_reports_its_port(swarm_session: DockerSwarm, redis_image: str,
                                                    tmp_path: Path) -> None:
    from tests.support.docker import free_port

    swarm = swarm_session
    port = free_port()
    args = contract_args("cache-host", tag="1", manifest_dir=tmp_path, service="cache",
                         deployment_config={"network": "host", "port": str(port)})
    env = swarm.env({"SAMI_IMAGE": f"{redis_image}:1", "SAMI_SIZE": "1"})
    try:
        assert run_script("redis", "create", args, env=env).returncode == 0
        assert wait_for(lambda: run_script("redis", "check", args, env=env), timeout=120).returncode == 0
        assert run_script("redis", "info", args, env=env).stdout == f"endpoint,127.0.0.1:{port}\n"
        import socket

        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"PING\r\n")
            assert sock.recv(64) == b"+PONG\r\n"
    finally:
        run_script("redis", "cleanup", [*args, "--delete-data"], env=env)


def _psql(swarm: DockerSwarm, name: str, user: str, database: str, sql: str) -> str:
    """``sql`` run by psql in member 0's container, over its local socket; the rows unaligned."""
    container = swarm.output("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={name}_m0",
                             "--filter", "status=running").split()[0]
    return swarm.output("exec", container, "psql", "-X", "-q", "-A", "-t", "-U", user, "-d", database,
                        "-c", sql).strip()


@pytest.mark.timeout(900)
def test_postgres_runs_one_member_as_its_db_user_and_is_seeded(swarm_session: DockerSwarm, tmp_path: Path) -> None:
    """The server really runs (its socket folder is in the image), as the configured db-user on the configured
    database; seed.sql is applied by psql in member 0's container and its rows are read back there."""
    reason = images.unavailable_reason()
    if reason:
        pytest.skip(reason)
    swarm = swarm_session
    images.postgres_image(swarm, "local/postgres:1")
    name = "db-tp"
    manifest = tmp_path / "manifest"
    manifest.mkdir()
    args = contract_args(name, tag="1", manifest_dir=manifest, service="db",
                         deployment_config={"db-user": "shop_owner", "database": "shop"})
    env = swarm.env({"SAMI_IMAGE": "local/postgres:1", "SAMI_SIZE": "1",
                     "SAMI_SECRET_POSTGRES_PASSWORD": "a-long-password"})
    try:
        too_big = run_script("postgres", "config_check", args, env={**env, "SAMI_SIZE": "2"})
        assert too_big.returncode != 0 and "runs at most 1 member" in too_big.stdout
        no_password = run_script("postgres", "config_check", args,
                                 env={k: v for k, v in env.items() if k != "SAMI_SECRET_POSTGRES_PASSWORD"})
        assert no_password.returncode != 0 and "POSTGRES_PASSWORD" in no_password.stdout
        user_key = run_script("postgres", "config_check", contract_args(
            name, tag="1", manifest_dir=manifest, service="db", deployment_config={"user": "shop_owner"}), env=env)
        assert user_key.returncode != 0 and 'Override key "user" is reserved' in user_key.stdout, user_key.stdout
        bad_user = run_script("postgres", "config_check", contract_args(
            name, tag="1", manifest_dir=manifest, service="db", deployment_config={"db-user": "Shop"}), env=env)
        assert bad_user.returncode != 0 and 'db-user="Shop" must be lowercase' in bad_user.stdout, bad_user.stdout
        assert run_script("postgres", "config_check", args, env=env).returncode == 0

        created = run_script("postgres", "create", args, env=env)
        assert created.returncode == 0, created.stderr
        assert "a-long-password" not in created.stderr + created.stdout
        checked = wait_for(lambda: run_script("postgres", "check", args, env=env), timeout=180)
        assert checked.returncode == 0, checked.stderr
        assert run_script("postgres", "info", args, env=env).stdout == f"endpoint,{name}_m0:5432\n"
        assert list(manifest.iterdir()) == [], "the scripts leave the manifest folder as it was"
        assert _psql(swarm, name, "shop_owner", "shop", "SELECT current_user || ' ' || current_database()") == \
            "shop_owner shop"

        (manifest / "seed.sql").write_text("CREATE TABLE fruits (name text PRIMARY KEY);\n"
                                           "INSERT INTO fruits VALUES ('apple'), ('pear');\n")
        seeded = run_script("postgres", "seed", [*args, "--endpoint", f"{name}_m0:5432"], env=env)
        assert seeded.returncode == 0, seeded.stderr
        assert f"seeded {name} from seed.sql" in seeded.stdout
        assert _psql(swarm, name, "shop_owner", "shop", "SELECT name FROM fruits ORDER BY name") == "apple\npear"
        assert _psql(swarm, name, "shop_owner", "shop", "SELECT tableowner FROM pg_tables WHERE tablename = "
                                                        "'fruits'") == "shop_owner", "seeded as the db-user"

        (manifest / "seed.sql").write_text("INSERT INTO fruits VALUES ('plum');\nINSERT INTO nosuch VALUES (1);\n")
        failed = run_script("postgres", "seed", args, env=env)
        assert failed.returncode == 1
        assert 'relation "nosuch" does not exist' in failed.stderr, failed.stderr
        assert "a-long-password" not in failed.stderr + failed.stdout
    finally:
        cleaned = run_script("postgres", "cleanup", args, env=env)
        assert "data volumes kept:" in cleaned.stdout
        run_script("postgres", "cleanup", [*args, "--delete-data"], env=env)
