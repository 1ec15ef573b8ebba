"""Seeding a clone's fresh third-party service on a real single-node Swarm: the cache is the built-in
redis set, the database the built-in postgres set (both from Debian's packages, imported as images), the
web app uses the probe scripts.

A clone gets an empty Redis of its own (stage's data is not copied); with ``seed: true`` the worker
runs the set's ``seed`` once its first check passed, which feeds ``seed.redis`` of the manifest folder
to it through redis-cli in its container (``seed.sql`` through psql, for postgres). An ordinary deploy
never seeds. A seed that fails fails its
component, and the app that depends on it is not deployed.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from bot.core.models import Action, Deployment, EnvironmentRun
from bot.core.states import DeploymentState
from bot.manifests import DeploymentsRepo, load_deployments_repo
from bot.services import environments
from tests.pipeline.conftest import read_record
from tests.pipeline.probe_scripts import write_probe_scripts
from tests.support import images
from tests.support.docker import DockerSwarm

pytestmark = [pytest.mark.swarm, pytest.mark.slow]
S = DeploymentState
WHO = dict(requested_by="test", origin="cli")


class Folder:
    """The deployments repo as the folder on disk is now (the test changes seed.redis between clones)."""

    def __init__(self, root: Path):
        self.root = root

    def current(self, refresh: bool = False) -> DeploymentsRepo:
        return load_deployments_repo(self.root)

    def at(self, sha: str | None) -> DeploymentsRepo:
        return self.current()


def write_repo(root: Path, record: Path) -> Path:
    write_probe_scripts(root / "scripts" / "probe")
    cache = root / "services" / "cache" / "swarm" / "stage"
    cache.mkdir(parents=True)
    (cache / "sami.yaml").write_text(yaml.safe_dump({
        "version": "v1beta", "service_name": "cache", "type": "swarm", "kind": "third_party", "mode": "internal",
        "engine": "redis", "image": "local/redis", "seed": True, "timeout": "2m", "status_timeout": "120s",
    }, sort_keys=False))
    write_web(root, record, "cache", "REDIS")
    return root


def write_web(root: Path, record: Path, uses: str, variable: str) -> None:
    """The web app (probe scripts), depending on ``uses`` and given its endpoint as ``variable``."""
    web = root / "services" / "web" / "swarm" / "stage"
    web.mkdir(parents=True)
    (web / "stack.yml").write_text(yaml.safe_dump({"version": "3.8", "services": {"app": {"image": "local/web"}}}))
    (web / "sami.yaml").write_text(yaml.safe_dump({
        "version": "v1beta", "service_name": "web", "type": "swarm", "files": ["stack.yml"],
        "oob": {"update-image": {"file": "stack.yml", "path": "services.app.image"}}, "image": "local/web",
        "timeout": "60s", "status_timeout": "5s", "control_scripts": "scripts/probe", "depends_on": [uses],
        "overrides": {"deployment": {"record": str(record)}, "app": {variable: f"${{{uses}.endpoint}}"}},
        "allowed_overrides": {"app": [variable], "deployment": []},
    }, sort_keys=False))


@pytest.fixture
def swarm(swarm_session: DockerSwarm, monkeypatch) -> DockerSwarm:
    reason = images.unavailable_reason()
    if reason:
        pytest.skip(reason)
    for key, value in swarm_session.env().items():
        if key.startswith("DOCKER"):
            monkeypatch.setenv(key, value)
    if swarm_session.run("image", "inspect", "local/redis:1", check=False).returncode != 0:
        images.redis_image(swarm_session, "local/redis:1")
    return swarm_session


@pytest.fixture
def seed_repo(swarm, tmp_path, record, worker_ctx) -> Folder:
    worker_ctx.manifests = Folder(write_repo(tmp_path / "seeded-environment", record))
    return worker_ctx.manifests


def redis_get(swarm: DockerSwarm, name: str, key: str) -> str:
    container = swarm.output("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={name}_m0",
                             "--filter", "status=running").split()[0]
    return swarm.output("exec", container, "redis-cli", "get", key).strip()


def redis_set(swarm: DockerSwarm, name: str, key: str, value: str) -> None:
    container = swarm.output("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={name}_m0",
                             "--filter", "status=running").split()[0]
    assert swarm.output("exec", container, "redis-cli", "set", key, value).strip() == "OK"


def remove_stacks(swarm: DockerSwarm, stacks: list[str]) -> None:
    """Remove the stacks and, once their containers are gone, their volumes."""
    for stack in stacks:
        swarm.run("stack", "rm", stack, check=False)
    for stack in stacks:
        for _ in range(100):
            if not swarm.output("ps", "-aq", "--filter", f"label=com.docker.stack.namespace={stack}"):
                break
            time.sleep(0.2)
        volumes = swarm.output("volume", "ls", "-q", "--filter", f"label=com.docker.stack.namespace={stack}")
        if volumes.split():
            swarm.run("volume", "rm", *volumes.split(), check=False)


def run_of(db_session, run_id: int) -> EnvironmentRun:
    db_session.expire_all()
    return db_session.get(EnvironmentRun, run_id)


def components(run: EnvironmentRun) -> dict[str, tuple[str, str | None, str | None]]:
    return {c.service: (c.status, c.data, c.message) for c in run.components}


@pytest.mark.timeout(900)  # the image is imported from the cached Debian tarball (built once per machine)
def test_a_clone_gets_a_fresh_seeded_redis_and_a_failing_seed_stops_its_app(swarm, seed_repo, db_session,
                                                                             services_ctx, work, record):
    seed_file = seed_repo.root / "services" / "cache" / "swarm" / "stage" / "seed.redis"
    stacks = ["cache-stage", "cache-qa-5", "cache-qa-6"]
    try:
        seed_file.write_text("SET seeded yes\nRPUSH fruits apple pear\n")
        run = environments.start_run(db_session, seed_repo.current(), "stage", "deploy", services_ctx,
                                     versions={"cache": "1", "web": "v1"}, **WHO)
        work()
        run = run_of(db_session, run.id)
        assert run.state == "succeeded", components(run)
        # An ordinary deploy provisions, but never seeds, and records nothing about data.
        assert components(run)["cache"] == ("succeeded", None, None)
        assert redis_get(swarm, "cache-stage", "seeded") == ""
        redis_set(swarm, "cache-stage", "stage-only", "kept in stage")

        cloned = environments.clone(db_session, seed_repo.current(), "stage", "qa-5", services_ctx, **WHO)
        assert cloned.data["cache"].startswith("seeded (provisioned fresh, no data copied")
        work()
        run = run_of(db_session, cloned.run.id)
        assert run.state == "succeeded", components(run)
        assert components(run)["cache"] == ("succeeded", "seeded", None)
        assert redis_get(swarm, "cache-qa-5", "seeded") == "yes"
        assert redis_get(swarm, "cache-qa-5", "stage-only") == "", "the source's data is not copied"
        assert redis_get(swarm, "cache-stage", "seeded") == "", "the source is not seeded"
        status = environments.status(db_session, seed_repo.current(), "qa-5")
        assert {c["service"]: c["data"] for c in status["components"]} == {"cache": "seeded", "web": None}
        assert "create web-qa-5 v1" in read_record(record)

        # A seed that fails: its component fails with the reason, and the app behind it is never deployed.
        seed_file.write_text("SET first 1\nNOSUCHCOMMAND x\n")
        cloned = environments.clone(db_session, seed_repo.current(), "stage", "qa-6", services_ctx, **WHO)
        work()
        run = run_of(db_session, cloned.run.id)
        assert run.state == "failed"
        status, data, message = components(run)["cache"]
        assert status == "failed"
        assert data.startswith("seed failed: ") and "NOSUCHCOMMAND" in data, data
        assert "seed failed" in message
        web_status, _, web_message = components(run)["web"]
        assert web_status == "skipped" and web_message.startswith("not run: cache failed"), web_message
        assert not [line for line in read_record(record) if "web-qa-6" in line]
        db_session.expire_all()
        cache = db_session.scalars(select(Deployment).where(Deployment.name == "cache-qa-6")).one()
        assert cache.state is S.FAILURE and "seed failed" in cache.status_message
        assert environments.status(db_session, seed_repo.current(), "qa-6")["components"][0]["data"] == data
    finally:
        remove_stacks(swarm, stacks)


def write_postgres_repo(root: Path, record: Path) -> Path:
    write_probe_scripts(root / "scripts" / "probe")
    db = root / "services" / "db" / "swarm" / "stage"
    db.mkdir(parents=True)
    (db / "sami.yaml").write_text(yaml.safe_dump({
        "version": "v1beta", "service_name": "db", "type": "swarm", "kind": "third_party", "mode": "internal",
        "engine": "postgres", "image": "local/postgres", "seed": True, "secrets": ["POSTGRES_PASSWORD"],
        "timeout": "2m", "status_timeout": "180s",
        "overrides": {"deployment": {"db-user": "shop_owner", "database": "shop"}},
        "allowed_overrides": {"app": [], "deployment": []},
    }, sort_keys=False))
    (db / "seed.sql").write_text("CREATE TABLE fruits (name text PRIMARY KEY);\n"
                                 "INSERT INTO fruits VALUES ('apple'), ('pear');\n")
    write_web(root, record, "db", "DB")
    return root


def psql(swarm: DockerSwarm, name: str, sql: str) -> str:
    container = swarm.output("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={name}_m0",
                             "--filter", "status=running").split()[0]
    return swarm.output("exec", container, "psql", "-X", "-q", "-A", "-t", "-U", "shop_owner", "-d", "shop",
                        "-c", sql).strip()


@pytest.mark.timeout(900)
def test_a_clone_gets_a_fresh_postgres_seeded_from_seed_sql(swarm, tmp_path, record, worker_ctx, db_session,
                                                            services_ctx, work, monkeypatch):
    """The built-in postgres set on the Swarm: stage's database runs empty; the clone's is a server of its own
    whose seed.sql is applied as the db-user, read back with psql from member 0."""
    images.postgres_image(swarm, "local/postgres:1")
    monkeypatch.setenv("SAMI_SCRIPT_SECRET_POSTGRES_PASSWORD", "a-long-password")
    repo = Folder(write_postgres_repo(tmp_path / "postgres-environment", record))
    worker_ctx.manifests = repo
    stacks = ["db-stage", "db-qa-8"]
    try:
        run = environments.start_run(db_session, repo.current(), "stage", "deploy", services_ctx,
                                     versions={"db": "1", "web": "v1"}, **WHO)
        work()
        run = run_of(db_session, run.id)
        assert run.state == "succeeded", components(run)
        assert psql(swarm, "db-stage", "SELECT count(*) FROM pg_tables WHERE tablename = 'fruits'") == "0", \
            "an ordinary deploy never seeds"

        cloned = environments.clone(db_session, repo.current(), "stage", "qa-8", services_ctx, **WHO)
        work()
        run = run_of(db_session, cloned.run.id)
        assert run.state == "succeeded", components(run)
        assert components(run)["db"] == ("succeeded", "seeded", None)
        assert psql(swarm, "db-qa-8", "SELECT string_agg(name, ',' ORDER BY name) FROM fruits") == "apple,pear"
        assert psql(swarm, "db-qa-8", "SELECT tableowner FROM pg_tables WHERE tablename = 'fruits'") == "shop_owner"
        assert psql(swarm, "db-stage", "SELECT count(*) FROM pg_tables WHERE tablename = 'fruits'") == "0"
        assert "create web-qa-8 v1" in read_record(record)
        db_session.expire_all()
        action_logs = " ".join(a.log or "" for a in db_session.scalars(select(Action)))
        assert "a-long-password" not in action_logs
    finally:
        remove_stacks(swarm, stacks)
