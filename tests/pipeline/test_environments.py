"""Whole-environment runs through the real pipeline: services, the queue, workers and the probe
control scripts on PostgreSQL and Redis. Components go in dependency order (reverse order to take
an environment down), a failure stops exactly what depends on it, and references are resolved from
the endpoints the environment's own third-party services recorded."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from bot.core.errors import Conflict, Invalid
from bot.core.models import Action, Deployment, EnvironmentRun
from bot.core.states import DeploymentState
from bot.services import actions, environments
from tests.pipeline.conftest import read_record
from tests.pipeline.environment_repo import EnvironmentManifests, Service, write_environment_repo
from workers.scheduler import Scheduler

S = DeploymentState
WHO = dict(requested_by="test", origin="cli")
VERSIONS = {"db": "16", "cache": "7", "api": "v1", "web": "v1"}


def product(**changes) -> dict[str, Service]:
    services = {
        "db": Service(third_party=True, endpoint="{name}.internal:5432"),
        "cache": Service(third_party=True, external=True, endpoint="cache.example.net:6379"),
        "api": Service(depends_on=("db", "cache"), app_overrides={"DB": "${db.endpoint}",
                                                                  "CACHE": "${cache.host}"}),
        "web": Service(depends_on=("api",)),
    }
    services.update(changes)
    return services


@pytest.fixture
def services():
    return product()


@pytest.fixture
def env_repo(tmp_path, record, services, worker_ctx):
    root = write_environment_repo(tmp_path / "environment-repo", record, services)
    worker_ctx.manifests = EnvironmentManifests(root, services)
    return worker_ctx.manifests


def run_of(db_session, run_id) -> EnvironmentRun:
    db_session.expire_all()
    return db_session.get(EnvironmentRun, run_id)


def statuses(run: EnvironmentRun) -> dict[str, str]:
    return {c.service: c.status for c in run.components}


def lines(record, op: str, name: str) -> list[int]:
    return [i for i, line in enumerate(read_record(record)) if line.split()[:2] == [op, name]]


def start(db_session, env_repo, services_ctx, operation="deploy", name="stage", **kw) -> EnvironmentRun:
    return environments.start_run(db_session, env_repo.current(), name, operation, services_ctx, **WHO, **kw)


def test_deploy_goes_in_dependency_order_and_resolves_references(db_session, env_repo, services_ctx, work,
                                                                  record):
    run = start(db_session, env_repo, services_ctx, versions=VERSIONS)
    # Only the components that wait for nothing are queued at first.
    assert statuses(run_of(db_session, run.id)) == {"db": "queued", "cache": "queued", "api": "waiting",
                                                    "web": "waiting"}
    work()
    run = run_of(db_session, run.id)
    assert run.state == "succeeded", run.message
    assert statuses(run) == dict.fromkeys(VERSIONS, "succeeded")
    # Each component was created only after the checks of what it depends on had passed.
    for service, deps in (("api", ("db",)), ("web", ("api",))):
        for dep in deps:
            assert lines(record, "create", f"{service}-stage")[0] > lines(record, "check", f"{dep}-stage")[-1]
    # The external cache is provisioned by nobody: none of its scripts ran (its endpoint has no check).
    assert [line for line in read_record(record) if "cache-stage" in line] == []
    api = db_session.get(Action, next(c.action_id for c in run.components if c.service == "api"))
    assert api.config["app_overrides"]["DB"] == "db-stage.internal:5432"
    assert api.config["app_overrides"]["CACHE"] == "cache.example.net"
    rows = {d.service: d for d in db_session.scalars(select(Deployment))}
    assert {s: (rows[s].state, rows[s].tag) for s in VERSIONS} == {s: (S.RUNNING, v) for s, v in VERSIONS.items()}
    assert rows["db"].outputs["endpoint"] == "db-stage.internal:5432"
    assert rows["cache"].outputs == {"endpoint": "cache.example.net:6379", "host": "cache.example.net",
                                     "port": "6379"}
    # The deployment keeps no resolved value: a clone resolves the reference to its own database.
    assert rows["api"].app_overrides == {}


@pytest.mark.parametrize("services", [product(db=Service(third_party=True, endpoint="{name}:5432",
                                                          deployment_overrides={"fail": "create"}))])
def test_a_failure_stops_exactly_its_dependents(db_session, env_repo, services_ctx, work, record):
    run = start(db_session, env_repo, services_ctx, versions=VERSIONS)
    work()
    run = run_of(db_session, run.id)
    assert run.state == "failed"
    assert statuses(run) == {"db": "failed", "cache": "succeeded", "api": "skipped", "web": "skipped"}
    messages = {c.service: c.message for c in run.components}
    assert "create failed" in messages["db"]
    assert messages["api"].startswith("not run: db failed")
    assert messages["web"].startswith("not run: api skipped")
    assert lines(record, "create", "api-stage") == [] and lines(record, "create", "web-stage") == []
    assert run.message == "1 succeeded, 1 failed, 2 skipped"


def test_archive_and_cleanup_go_in_reverse_order_and_restore_in_deploy_order(db_session, env_repo, services_ctx,
                                                                             work, record):
    start(db_session, env_repo, services_ctx, versions=VERSIONS)
    work()
    for operation, script, state in (("archive", "archive", S.ARCHIVED), ("restore", "unarchive", S.RUNNING),
                                     ("archive", "archive", S.ARCHIVED), ("cleanup", "cleanup", S.REMOVED)):
        before = len(read_record(record))
        run = start(db_session, env_repo, services_ctx, operation)
        first = "db" if operation == "restore" else "web"
        assert statuses(run_of(db_session, run.id))[first] == "queued"
        work()
        run = run_of(db_session, run.id)
        assert run.state == "succeeded", (operation, run.message)
        order = [line.split()[1] for line in read_record(record)[before:] if line.split()[0] == script]
        if operation == "restore":  # back up in deploy order: what an application uses comes first
            order.reverse()
        assert order.index("web-stage") < order.index("api-stage") < order.index("db-stage")
        assert "cache-stage" not in order, "an external service runs no script"
        db_session.expire_all()
        assert {d.state for d in db_session.scalars(select(Deployment))} == {state}
    # The internal third-party service's data was kept, and the run says so.
    assert {c.service: c.message for c in run.components}["db"].startswith("data volumes kept")
    # A later cleanup with --delete-data has no deployment to run a script for, and says what stays.
    again = start(db_session, env_repo, services_ctx, "cleanup", delete_data=True)
    notes = {c.service: c.message for c in run_of(db_session, again.id).components}
    assert notes["db"].startswith("not deployed: data volumes an earlier cleanup kept stay"), notes
    assert notes["web"] == "not deployed"


def test_cleanup_with_delete_data_removes_internal_services_data(db_session, env_repo, services_ctx, work):
    start(db_session, env_repo, services_ctx, versions=VERSIONS)
    work()
    start(db_session, env_repo, services_ctx, "archive")
    work()
    run = start(db_session, env_repo, services_ctx, "cleanup", delete_data=True)
    work()
    run = run_of(db_session, run.id)
    assert run.state == "succeeded", run.message
    configs = {c.service: db_session.get(Action, c.action_id).config for c in run.components}
    assert configs["db"]["delete_data"] is True  # its cleanup script got --delete-data
    assert "delete_data" not in configs["api"] and "delete_data" not in configs["cache"]  # not theirs to delete
    assert {c.service: c.message for c in run.components}["db"] == "data volumes deleted"


def test_one_run_at_a_time_and_unknown_components(db_session, env_repo, services_ctx, work):
    run = start(db_session, env_repo, services_ctx, versions=VERSIONS)
    with pytest.raises(Conflict, match=f"run {run.id} in progress"):
        start(db_session, env_repo, services_ctx, versions=VERSIONS)
    work()
    with pytest.raises(Invalid, match="no component nope"):
        start(db_session, env_repo, services_ctx, versions={"nope": "v1"})
    with pytest.raises(Invalid, match="unknown environment operation"):
        start(db_session, env_repo, services_ctx, "explode")
    # A version a component's deploy would refuse is refused before any run is recorded.
    runs_before = db_session.scalar(select(func.count()).select_from(EnvironmentRun))
    with pytest.raises(Invalid, match="version 'bad tag!' of web: tag 'bad tag!' is not a valid image tag"):
        start(db_session, env_repo, services_ctx, versions={"api": "v2", "web": "bad tag!"})
    db_session.rollback()
    assert db_session.scalar(select(func.count()).select_from(EnvironmentRun)) == runs_before


def test_a_component_without_a_version_fails_and_stops_its_dependents(db_session, env_repo, services_ctx, work):
    run = start(db_session, env_repo, services_ctx, versions={"db": "16", "cache": "7", "web": "v1"})
    work()
    run = run_of(db_session, run.id)
    assert statuses(run) == {"db": "succeeded", "cache": "succeeded", "api": "failed", "web": "skipped"}
    assert "no version for api" in next(c.message for c in run.components if c.service == "api")


def test_the_scheduler_moves_a_run_whose_action_was_settled_elsewhere(db_session, env_repo, services_ctx, worker_ctx,
                                                                      work):
    run = start(db_session, env_repo, services_ctx, versions=VERSIONS)
    db = next(c for c in run_of(db_session, run.id).components if c.service == "db")
    actions.cancel_action(db_session, db.action_id, services_ctx, **WHO)
    work()
    Scheduler(worker_ctx).tick()
    run = run_of(db_session, run.id)
    assert statuses(run) == {"db": "failed", "cache": "succeeded", "api": "skipped", "web": "skipped"}
    assert run.state == "failed"
    assert "cancelled" in next(c.message for c in run.components if c.service == "db")


# --- clone, snapshots, diff ----------------------------------------------------------------------

def test_a_clone_gets_its_own_components_and_its_own_endpoints(db_session, env_repo, services_ctx, work, record):
    start(db_session, env_repo, services_ctx, versions=VERSIONS)
    work()
    cloned = environments.clone(db_session, env_repo.current(), "stage", "qa-7", services_ctx, **WHO)
    assert cloned.data == {"db": "empty (provisioned fresh, no data copied)", "cache": "shared (external endpoint)",
                           "api": "application", "web": "application"}
    work()
    run = run_of(db_session, cloned.run.id)
    assert run.state == "succeeded", run.message
    rows = {d.name: d for d in db_session.scalars(select(Deployment).where(Deployment.environment == "qa-7"))}
    assert {n: (d.state, d.tag, d.manifest_environment) for n, d in rows.items()} == {
        f"{s}-qa-7": (S.RUNNING, v, "stage") for s, v in VERSIONS.items()}
    api = db_session.get(Action, next(c.action_id for c in run.components if c.service == "api"))
    assert api.config["app_overrides"]["DB"] == "db-qa-7.internal:5432"  # its own database, not stage's
    assert lines(record, "create", "db-qa-7") and lines(record, "create", "web-qa-7")
    # The clone is an environment of its own: taken down as a whole, its names never reused by another clone.
    with pytest.raises(Conflict, match="exists already"):
        environments.clone(db_session, env_repo.current(), "stage", "qa-7", services_ctx, **WHO)
    with pytest.raises(Invalid, match="characters"):
        environments.clone(db_session, env_repo.current(), "stage", "q" * 60, services_ctx, **WHO)
    archived = start(db_session, env_repo, services_ctx, "archive", name="qa-7")
    work()
    assert run_of(db_session, archived.id).state == "succeeded"
    db_session.expire_all()
    assert {d.state for d in db_session.scalars(select(Deployment).where(Deployment.environment == "qa-7"))} == {
        S.ARCHIVED}
    assert {d.state for d in db_session.scalars(select(Deployment).where(Deployment.environment == "stage"))} == {
        S.RUNNING}
    # Cleaned up, the name can be cloned again.
    cleaned = start(db_session, env_repo, services_ctx, "cleanup", name="qa-7")
    work()
    assert run_of(db_session, cleaned.id).state == "succeeded"
    again = environments.clone(db_session, env_repo.current(), "stage", "qa-7", services_ctx, **WHO)
    work()
    assert run_of(db_session, again.run.id).state == "succeeded"


def test_a_snapshot_is_deployed_back_exactly_and_diffs_show_what_changed(db_session, env_repo, services_ctx, work):
    start(db_session, env_repo, services_ctx, versions=VERSIONS)
    work()
    from bot.services import deployments, snapshots

    repo = env_repo.current()
    deployments.request_deployment(db_session, repo, deployments.DeploymentRequest(
        service="web", environment="stage", tag="v1", app_overrides={"LOG_LEVEL": "debug"}, **WHO), services_ctx)
    work()
    snap = snapshots.create(db_session, repo, "stage", name="before-v2", created_by="test")
    assert [c["service"] for c in snap.components] == ["cache", "db", "api", "web"]  # deploy order
    exported = snapshots.export_yaml(snap)
    assert "before-v2" in exported and "LOG_LEVEL: debug" in exported
    with pytest.raises(Conflict):
        snapshots.create(db_session, repo, "stage", name="before-v2", created_by="test")

    # Stage moves on: new versions, another override.
    start(db_session, env_repo, services_ctx, versions={"api": "v2", "web": "v2"})
    work()
    deployments.request_deployment(db_session, repo, deployments.DeploymentRequest(
        service="web", environment="stage", tag="v2", app_overrides={"LOG_LEVEL": "warn"}, **WHO), services_ctx)
    work()
    changed = snapshots.diff(db_session, repo, "snapshot:before-v2", "stage")
    assert {c["service"]: c["changes"] for c in changed["changed"]} == {
        "api": {"tag": {"left": "v1", "right": "v2"}, "image": {"left": "local/api:v1", "right": "local/api:v2"}},
        "web": {"tag": {"left": "v1", "right": "v2"}, "image": {"left": "local/web:v1", "right": "local/web:v2"},
                "app_overrides": {"left": {"LOG_LEVEL": "debug"}, "right": {"LOG_LEVEL": "warn"}}}}
    assert changed["same"] == ["cache", "db"] and changed["only_left"] == changed["only_right"] == []

    run = snapshots.deploy(db_session, repo, "stage", "before-v2", services_ctx, **WHO)
    work()
    assert run_of(db_session, run.id).state == "succeeded"
    assert snapshots.diff(db_session, repo, "snapshot:before-v2", "stage")["changed"] == []
    db_session.expire_all()
    web = db_session.scalars(select(Deployment).where(Deployment.name == "web-stage")).one()
    assert (web.tag, web.app_overrides) == ("v1", {"LOG_LEVEL": "debug"})


# --- pull request previews -----------------------------------------------------------------------

def test_a_pull_request_preview_is_a_whole_environment_of_its_own(db_session, env_repo, services_ctx, work):
    start(db_session, env_repo, services_ctx, versions=VERSIONS)
    work()
    name = environments.preview_name("acme/web", 5)
    assert name != environments.preview_name("other/web", 5)  # same number, another repository
    assert name.startswith("pr-5-") and len(f"{'s' * 40}-{environments.preview_name('a/b', 2**31 - 1)}") <= 63

    def sync(tag, is_open=True):
        return environments.sync_preview(db_session, env_repo.current(), "stage", {"web": tag} if tag else {},
                                         services_ctx, repository="acme/web", number=5, is_open=is_open, **WHO)

    run = sync("pr5-aaa")
    work()
    assert run_of(db_session, run.id).state == "succeeded"
    preview = {d.service: d for d in db_session.scalars(select(Deployment).where(Deployment.environment == name))}
    assert {s: d.tag for s, d in preview.items()} == {**VERSIONS, "web": "pr5-aaa"}
    api = db_session.get(Action, next(c.action_id for c in run_of(db_session, run.id).components
                                      if c.service == "api"))
    assert api.config["app_overrides"]["DB"] == f"db-{name}.internal:5432"  # its own database

    run = sync("pr5-bbb")  # a push: only the application moves
    assert {c.service: (c.status, c.request.get("tag")) for c in run_of(db_session, run.id).components} == {
        "web": ("queued", "pr5-bbb"), "db": ("succeeded", None), "cache": ("succeeded", None),
        "api": ("succeeded", None)}
    work()
    db_session.expire_all()
    assert {d.service: d.tag for d in db_session.scalars(select(Deployment).where(Deployment.environment == name))
            } == {**VERSIONS, "web": "pr5-bbb"}

    run = sync(None, is_open=False)  # closed: archived as a whole
    work()
    assert run_of(db_session, run.id).operation == "archive" and run_of(db_session, run.id).state == "succeeded"
    db_session.expire_all()
    assert {d.state for d in db_session.scalars(select(Deployment).where(Deployment.environment == name))} == {
        S.ARCHIVED}
    assert sync(None, is_open=False) is None



@pytest.mark.parametrize("services", [product(web=Service(depends_on=("api",), pull_requests="acme/web"))])
def test_a_pull_request_of_an_application_gets_the_whole_environment(db_session, env_repo, services_ctx, work):
    from datetime import UTC, datetime

    from bot import outbox
    from bot.core.config import Settings
    from bot.core.models import OutboxRow
    from bot.github import senders
    from bot.github.pulls import PullRequest, sync_pull_request
    from bot.manifests.topology import Topology

    env_repo.topologies = {"pull_request": Topology(name="pull_request", components=("web",), preview_of="stage",
                                                    path="environments/pull_request.yaml")}
    start(db_session, env_repo, services_ctx, versions=VERSIONS)
    work()
    head = "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d"

    def sync(state="open"):
        pr = PullRequest(repository="acme/web", number=7, state=state, merged=False, head_sha=head,
                         head_ref="feature/x", head_repository="acme/web", fork=False, labels=frozenset(),
                         author="octocat", updated_at=datetime.now(UTC))
        return [r.text for r in sync_pull_request(db_session, env_repo.current(), pr, services_ctx,
                                                  requested_by="github:octocat", origin="webhook",
                                                  settings=Settings(github_repositories=()))]

    name = environments.preview_name("acme/web", 7)
    said = sync()
    assert len(said) == 1 and said[0].startswith(f"deploying preview {name} of stage (4 components")
    work()
    db_session.expire_all()
    preview = {d.service: d for d in db_session.scalars(select(Deployment).where(Deployment.environment == name))}
    assert set(preview) == {"db", "cache", "api", "web"} and preview["web"].tag == head  # the pull request's head
    assert {s: preview[s].tag for s in ("db", "cache", "api")} == {s: VERSIONS[s] for s in ("db", "cache", "api")}
    # No single-service preview beside it.
    assert db_session.scalars(select(Deployment).where(Deployment.name == "web-pr-7")).first() is None

    # The sticky comment lists every component of the preview with its link and its result in the run.
    comment_rows = db_session.scalars(select(OutboxRow).where(OutboxRow.kind == "comment",
                                                              OutboxRow.repository == "acme/web",
                                                              OutboxRow.pull_request == 7)).all()
    assert comment_rows, "the preview's state changes refresh the pull request's comment"
    record = outbox.pull_request_record(db_session, "acme/web", 7)
    body = senders.render_comment(db_session, "acme/web", 7, record, senders.Sender(None, "https://sami.test"),
                                  datetime.now(UTC))
    assert "No environments for this pull request yet" not in body
    assert f"**Preview environment `{name}`** (like `stage`) · deploy run" in body and "✅ succeeded" in body
    assert f"[environment page](https://sami.test/environments/{name})" in body
    lines = {line.split(" | ")[0][2:]: line for line in body.splitlines() if line.startswith("| ")
             and not line.startswith(("| Component", "| ---"))}
    assert set(lines) == {"db", "cache", "api", "web"}
    # A third-party service shows its endpoint (and the link its scripts' info gives, here the probe's).
    assert f"[db-{name}.example.test](https://db-{name}.example.test) · `db-{name}.internal:5432`" in lines["db"]
    assert "data: empty" in lines["db"]
    assert "`cache.example.net:6379`" in lines["cache"] and "data: shared" in lines["cache"]
    assert f"[web-{name}.example.test](https://web-{name}.example.test)" in lines["web"]
    assert f"`{head}`" in lines["web"] or f"`{head[:7]}" in lines["web"] or "1a2b3c4" in lines["web"]
    assert all("🟢 Running" in line and "✅ succeeded" in line for line in lines.values()), lines
    said = sync("closed")
    assert said[0].startswith(f"archiving preview {name}")
    work()
    db_session.expire_all()
    assert {d.state for d in db_session.scalars(select(Deployment).where(Deployment.environment == name))} == {
        S.ARCHIVED}



def test_the_environment_files_overrides_go_to_every_application(db_session, env_repo, services_ctx, work):
    from bot.manifests.topology import Topology

    env_repo.topologies = {"stage": Topology(name="stage", components=("db", "cache", "api", "web"),
                                             overrides={"REGION": "eu-1", "CACHE_HOST": "${cache.host}"},
                                             path="environments/stage.yaml")}
    run = start(db_session, env_repo, services_ctx, versions=VERSIONS)
    work()
    run = run_of(db_session, run.id)
    assert run.state == "succeeded", run.message
    config = {c.service: db_session.get(Action, c.action_id).config["app_overrides"] for c in run.components}
    assert config["web"]["REGION"] == config["api"]["REGION"] == "eu-1"
    assert config["web"]["CACHE_HOST"] == "cache.example.net"  # a reference in them implies a dependency
    assert "cache" in environments.dependency_graph(env_repo.current(), env_repo.current().topology("stage"),
                                                    "stage")["web"]
    assert "REGION" not in config["db"] and "REGION" not in config["cache"]  # third-party services: not theirs
