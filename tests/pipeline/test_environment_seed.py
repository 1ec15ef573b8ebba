"""Seeding through the real pipeline with the probe control scripts and a recording ``seed``: a clone's
fresh internal third-party service is seeded once, after its first check passed, and its seed gets the
service's endpoint; an ordinary deploy and a later update never seed. (The built-in redis set's seed
against a real Swarm: test_environment_seed_swarm.py.)"""

from __future__ import annotations

import stat

import yaml

from bot.core.models import EnvironmentRun
from bot.services import environments
from bot.services.deployments import DeploymentRequest, request_deployment
from tests.pipeline.conftest import read_record
from tests.pipeline.environment_repo import EnvironmentManifests, Service, write_environment_repo

WHO = dict(requested_by="test", origin="cli")
SEED = """#!/bin/sh
# Records the call; fails when the deployment config says fail=seed.
echo "seed $*" >> "{record}"
case "$*" in *fail=seed*) echo "seed: the data file is broken" >&2; exit 1 ;; esac
exit 0
"""


def make_repo(tmp_path, record, worker_ctx):
    services = {"db": Service(third_party=True, endpoint="{name}.internal:5432"),
                "api": Service(depends_on=("db",), app_overrides={"DB": "${db.endpoint}"})}
    root = write_environment_repo(tmp_path / "seed-repo", record, services)
    seed = root / "scripts" / "probe" / "seed"
    seed.write_text(SEED.format(record=record))
    seed.chmod(seed.stat().st_mode | stat.S_IXUSR)
    path = root / "services" / "db" / "swarm" / "stage" / "sami.yaml"
    manifest = yaml.safe_load(path.read_text())
    manifest["seed"] = True
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    worker_ctx.manifests = EnvironmentManifests(root, services)
    return worker_ctx.manifests


def seeds(record) -> list[str]:
    return [line for line in read_record(record) if line.startswith("seed ")]


def components(db_session, run_id: int) -> dict[str, tuple]:
    db_session.expire_all()
    return {c.service: (c.status, c.data, c.message) for c in db_session.get(EnvironmentRun, run_id).components}


def test_a_clone_is_seeded_once_after_its_check_and_never_on_an_ordinary_deploy(tmp_path, record, worker_ctx,
                                                                                db_session, services_ctx, work):
    repo = make_repo(tmp_path, record, worker_ctx)
    run = environments.start_run(db_session, repo.current(), "stage", "deploy", services_ctx,
                                 versions={"db": "16", "api": "v1"}, **WHO)
    work()
    assert components(db_session, run.id)["db"] == ("succeeded", None, None)
    assert seeds(record) == [], "an ordinary deploy never seeds"

    cloned = environments.clone(db_session, repo.current(), "stage", "qa-1", services_ctx, **WHO)
    work()
    assert components(db_session, cloned.run.id) == {"db": ("succeeded", "seeded", None),
                                                      "api": ("succeeded", None, None)}
    (call,) = seeds(record)
    assert "--name db-qa-1 " in call and call.endswith("--endpoint db-qa-1.internal:5432")
    lines = read_record(record)
    assert lines.index("check db-qa-1 16") < lines.index(next(line for line in lines if line.startswith("seed "))) \
        < lines.index("create api-qa-1 v1"), "seeded after its check, before what depends on it"

    # The clone deployed again: an update, not seeded again.
    run = environments.start_run(db_session, repo.current(), "qa-1", "deploy", services_ctx, **WHO)
    work()
    assert components(db_session, run.id)["db"][0] == "succeeded"
    assert len(seeds(record)) == 1
    assert environments.status(db_session, repo.current(), "qa-1")["components"][0]["data"] == "seeded"


def test_a_failed_seed_fails_its_component_and_skips_its_dependents(tmp_path, record, worker_ctx, db_session,
                                                                    services_ctx, work):
    repo = make_repo(tmp_path, record, worker_ctx)
    run = environments.start_run(db_session, repo.current(), "stage", "deploy", services_ctx,
                                 versions={"db": "16", "api": "v1"}, **WHO)
    work()
    assert components(db_session, run.id)["db"][0] == "succeeded"
    # The clone keeps stage's overrides: stage's db is told to fail its seed (stage itself is never seeded).
    request_deployment(db_session, repo.current(), DeploymentRequest(
        service="db", environment="stage", tag="16", deployment_overrides={"fail": "seed"}, **WHO), services_ctx)
    work()
    assert seeds(record) == []
    cloned = environments.clone(db_session, repo.current(), "stage", "qa-2", services_ctx, **WHO)
    work()
    result = components(db_session, cloned.run.id)
    status, data, message = result["db"]
    assert status == "failed" and data == "seed failed: seed: the data file is broken (exit 1)"
    assert "seed failed: seed: the data file is broken" in message
    assert result["api"][0] == "skipped" and result["api"][2].startswith("not run: db failed")
    assert not [line for line in read_record(record) if "api-qa-2" in line]


def clone_failing(tmp_path, record, worker_ctx, db_session, services_ctx, work, operation: str, name: str):
    """stage deployed, its db then told to fail ``operation`` (which stage itself never runs again), and
    cloned as ``name``: the clone keeps stage's overrides, so its db's ``operation`` fails."""
    repo = make_repo(tmp_path, record, worker_ctx)
    environments.start_run(db_session, repo.current(), "stage", "deploy", services_ctx,
                           versions={"db": "16", "api": "v1"}, **WHO)
    work()
    request_deployment(db_session, repo.current(), DeploymentRequest(
        service="db", environment="stage", tag="16", deployment_overrides={"fail": operation}, **WHO), services_ctx)
    work()
    cloned = environments.clone(db_session, repo.current(), "stage", name, services_ctx, **WHO)
    work()
    return repo, cloned


def test_a_clone_whose_create_failed_before_its_seed_is_seeded_by_the_next_deploy_once(
        tmp_path, record, worker_ctx, db_session, services_ctx, work):
    # The clone keeps stage's overrides: its db's create fails (stage's own update does not).
    repo, cloned = clone_failing(tmp_path, record, worker_ctx, db_session, services_ctx, work, "create", "qa-3")
    result = components(db_session, cloned.run.id)
    assert result["db"][:2] == ("failed", "empty"), result
    assert result["api"][0] == "skipped"
    assert seeds(record) == []

    # Deployed again: the db's update passes its check, and the seed it asked for runs then, before the api.
    again = environments.start_run(db_session, repo.current(), "qa-3", "deploy", services_ctx,
                                   versions={"api": "v1"}, **WHO)
    work()
    assert components(db_session, again.id) == {"db": ("succeeded", "seeded", None), "api": ("succeeded", None, None)}
    (call,) = seeds(record)
    assert "--name db-qa-3 " in call and call.endswith("--endpoint db-qa-3.internal:5432")
    lines = read_record(record)
    seeded_at = lines.index(next(line for line in lines if line.startswith("seed ")))
    assert lines.index("update db-qa-3 16") < seeded_at < lines.index("create api-qa-3 v1")
    assert environments.status(db_session, repo.current(), "qa-3")["components"][0]["data"] == "seeded"

    # Once: a later deploy of the clone does not seed again.
    third = environments.start_run(db_session, repo.current(), "qa-3", "deploy", services_ctx, **WHO)
    work()
    assert components(db_session, third.id)["db"] == ("succeeded", None, None)
    assert len(seeds(record)) == 1


def test_a_failed_seed_runs_again_with_the_next_deploy_until_it_passes(tmp_path, record, worker_ctx, db_session,
                                                                         services_ctx, work):
    repo, cloned = clone_failing(tmp_path, record, worker_ctx, db_session, services_ctx, work, "seed", "qa-4")
    assert components(db_session, cloned.run.id)["db"][1].startswith("seed failed: ")
    # An update of the db alone (outside a run of its environment) fixes what made the seed fail; it does not seed.
    request_deployment(db_session, repo.current(), DeploymentRequest(
        service="db", environment="qa-4", tag="16", deployment_overrides={"fail": None}, manifest_environment="stage",
        **WHO), services_ctx)
    work()
    assert len(seeds(record)) == 1
    # The next deploy of the environment seeds it, once.
    again = environments.start_run(db_session, repo.current(), "qa-4", "deploy", services_ctx,
                                   versions={"api": "v1"}, **WHO)
    work()
    assert components(db_session, again.id) == {"db": ("succeeded", "seeded", None), "api": ("succeeded", None, None)}
    assert len(seeds(record)) == 2 and "fail=seed" not in seeds(record)[-1]
    third = environments.start_run(db_session, repo.current(), "qa-4", "deploy", services_ctx, **WHO)
    work()
    assert components(db_session, third.id)["db"][1] is None
    assert len(seeds(record)) == 2
