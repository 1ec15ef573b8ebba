"""Blue-green releases with the built-in static_file scripts on a real folder served over HTTP on loopback:
a release deployed into the idle colour, switched while a loop of requests reads the entry (no request
fails; every answer before the switch comes from the old colour and every one after from the new), a
rollback under the same loop, and the previous colour archived once keep_previous has passed."""

from __future__ import annotations

import http.client
import json
import os
import threading
from datetime import UTC, datetime, timedelta
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from rq import Queue
from sqlalchemy import select

from bot.core.errors import Conflict, Invalid, NotAllowed
from bot.core.models import Deployment, Release
from bot.core.states import DeploymentState
from bot.services import releases, snapshots
from bot.services.tokens import Scopes, create_token
from bot.web import shared
from tests.web.conftest import csrf, sign_in_with_token
from workers.queue import ACTIONS_QUEUE
from workers.scheduler import Scheduler, TickReport

S = DeploymentState
WHO = {"requested_by": "token:release-manager", "origin": "cli"}
KEEP_PREVIOUS = 60
MIN_REQUESTS = 2_000
MAX_REQUESTS = 50_000


def write_release_repo(root: Path) -> Path:
    """A deployments repo whose production environment (one static site, the entry) is released blue-green."""
    folder = root / "services" / "site" / "static_file" / "production"
    (folder / "site").mkdir(parents=True)
    (folder / "site" / "index.html").write_text("<h1>site</h1>\n")
    manifest = {"version": "v1beta", "service_name": "site", "type": "static_file", "files": ["site"],
                "status_timeout": "20s", "url": "http://{name}.example.test"}
    (folder / "sami.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    (root / "environments").mkdir()
    (root / "environments" / "production.yaml").write_text(yaml.safe_dump({
        "version": "v1beta", "components": ["site"],
        "blue_green": {"entry": "site", "keep_previous": f"{KEEP_PREVIOUS}s",
                       "release_approvers": ["token:release-manager", "alice"]}}, sort_keys=False))
    return root


@pytest.fixture
def release_repo(tmp_path) -> Path:
    return write_release_repo(tmp_path / "release-deployments")


@pytest.fixture
def test_config(test_config, release_repo):
    return {**test_config, "deployments_repo": str(release_repo)}


class Handler(SimpleHTTPRequestHandler):
    """Serves the static root and says, in a header, which file it read (resolved from the open file)."""

    def send_head(self):
        path = self.translate_path(self.path)
        try:
            handle = open(path, "rb")  # noqa: SIM115 (handed to copyfile, closed by do_GET)
        except OSError:
            self.send_error(404)
            return None
        served = os.path.realpath(f"/proc/self/fd/{handle.fileno()}")
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(os.fstat(handle.fileno()).st_size))
        self.send_header("X-Served-From", served)
        self.end_headers()
        return handle

    def log_message(self, *args):
        pass


@pytest.fixture
def web(settings):
    root = Path(settings.static_root)
    root.mkdir(parents=True, exist_ok=True)
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


class Reader(threading.Thread):
    """Reads the entry's page in a bounded loop and records, in order, which colour answered each request."""

    def __init__(self, port: int, path: str):
        super().__init__(daemon=True)
        self.port, self.path = port, path
        self.answers: list[str] = []  # the colour, or "failed: ..."
        self.stop = threading.Event()
        self.progress = threading.Condition()

    def count(self) -> int:
        with self.progress:
            return len(self.answers)

    def wait_for(self, n: int) -> None:
        with self.progress:
            self.progress.wait_for(lambda: len(self.answers) >= n or not self.is_alive())

    def run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        while len(self.answers) < MAX_REQUESTS and not (self.stop.is_set() and len(self.answers) >= MIN_REQUESTS):
            try:
                connection.request("GET", self.path)
                answer = connection.getresponse()
                answer.read()
                served = answer.getheader("X-Served-From") or ""
                colour = next((c for c in ("blue", "green") if f"-{c}/" in served), None)
                seen = colour if answer.status == 200 and colour else f"failed: {answer.status} {served}"
            except (OSError, http.client.HTTPException) as exc:
                seen = f"failed: {exc!r}"
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            with self.progress:
                self.answers.append(seen)
                self.progress.notify_all()
        connection.close()


def repo_of(app):
    with app.app_context():
        return shared.manifests().current()


def release_row(db_session, release_id: int) -> Release:
    db_session.expire_all()
    return db_session.get(Release, release_id)


def deploy_idle(db_session, repo, services_ctx, work, tag: str) -> Release:
    release = releases.prepare(db_session, repo, "production", services_ctx, versions={"site": tag}, **WHO)
    assert release.state == "deploying"
    work()
    release = release_row(db_session, release.id)
    assert release.state == "awaiting"  # the worker that settled the colour's last component moved it on
    return release


def switch_under_load(port: int, do_switch, work) -> tuple[list[str], int, int, Release]:
    """Start the loop, switch once at least a quarter of the minimum has been answered, and let it
    run on to at least the minimum: (answers, answers before the switch began, answers once it ended,
    the release or rollback switched)."""
    reader = Reader(port, "/site-production/current/index.html")
    reader.start()
    reader.wait_for(MIN_REQUESTS // 4)
    before = reader.count()
    release = do_switch()
    work()
    after = reader.count()
    reader.wait_for(after + MIN_REQUESTS // 4)
    reader.stop.set()
    reader.join()
    return reader.answers, before, after, release


def assert_switched(answers: list[str], before: int, after: int, old: str, new: str) -> None:
    failed = [a for a in answers if a.startswith("failed")]
    assert failed == [], failed[:5]
    assert len(answers) >= MIN_REQUESTS
    assert set(answers[:before]) == {old}  # before the switch began: the old colour only
    assert set(answers[after:]) == {new}  # once it ended: the new colour only
    first_new = answers.index(new)
    assert set(answers[first_new:]) == {new}  # in between, one switch: never the old colour again


def test_a_release_switches_the_entry_with_no_failed_request_and_a_rollback_switches_it_back(
        db_session, worker_ctx, services_ctx, work, settings, web):
    repo = worker_ctx.manifests.current()
    first = deploy_idle(db_session, repo, services_ctx, work, "v1")
    assert (first.state, first.from_colour, first.to_colour) == ("awaiting", None, "blue")
    releases.switch(db_session, repo, "production", services_ctx, **WHO)
    work()
    assert release_row(db_session, first.id).state == "live"
    entry = Path(settings.static_root) / "site-production"
    assert os.readlink(entry / "current") == str(Path(settings.static_root) / "site-production-blue" / "current")

    second = deploy_idle(db_session, repo, services_ctx, work, "v2")
    assert (second.from_colour, second.to_colour) == ("blue", "green")
    status = releases.status(db_session, repo, "production")
    assert status["live"]["colour"] == "blue" and status["idle"]["colour"] == "green"
    assert status["idle"]["tag"] == "v2" and status["release_approvers"] == ["token:release-manager", "alice"]
    assert status["idle"]["preview_url"] == "http://site-production-green.example.test"  # where QA tests it
    assert status["live"]["preview_url"] == "http://site-production-blue.example.test"

    answers, before, after, switched = switch_under_load(
        web, lambda: releases.switch(db_session, repo, "production", services_ctx, **WHO), work)
    assert_switched(answers, before, after, "blue", "green")
    assert switched.id == second.id and release_row(db_session, second.id).state == "live"
    assert release_row(db_session, first.id).state == "replaced"
    assert (entry / "colour").read_text().strip() == "green"

    answers, before, after, rolled = switch_under_load(
        web, lambda: releases.rollback(db_session, repo, "production", services_ctx, **WHO), work)
    assert_switched(answers, before, after, "green", "blue")
    rolled = release_row(db_session, rolled.id)
    assert (rolled.kind, rolled.state, rolled.from_colour, rolled.to_colour) == ("rollback", "live", "green", "blue")
    assert rolled.switched_by == "token:release-manager" and rolled.switched_at is not None
    history = [(r.kind, r.from_colour, r.to_colour, r.state) for r in releases.history(db_session, "production")]
    assert history == [("rollback", "green", "blue", "live"), ("release", "blue", "green", "replaced"),
                       ("release", None, "blue", "replaced")]

    # keep_previous: green (the colour rolled back from) keeps running until it has passed, then is archived.
    step = Scheduler(worker_ctx).steps["releases"]
    report = TickReport()
    step(report, rolled.switched_at + timedelta(seconds=KEEP_PREVIOUS - 1))
    assert report.releases_archived == []
    report = TickReport()
    step(report, rolled.switched_at + timedelta(seconds=KEEP_PREVIOUS + 1))
    assert report.releases_archived == [rolled.id]
    work()
    db_session.expire_all()
    green = db_session.scalars(select(Deployment).where(Deployment.name == "site-production-green")).one()
    blue = db_session.scalars(select(Deployment).where(Deployment.name == "site-production-blue")).one()
    assert green.state is S.ARCHIVED and blue.state is S.RUNNING
    assert (Path(settings.static_root) / "site-production-green" / "archived").is_symlink()  # data kept
    assert (entry / "current" / "index.html").read_text() == "<h1>site</h1>\n"  # the entry still serves blue
    report = TickReport()
    step(report, rolled.switched_at + timedelta(seconds=KEEP_PREVIOUS + 2))
    assert report.releases_archived == []  # once only
    with pytest.raises(Conflict, match="archived after keep_previous"):
        releases.rollback(db_session, repo, "production", services_ctx, **WHO)


def test_only_release_approvers_may_release_or_roll_back(db_session, worker_ctx, services_ctx, work, redis_client):
    repo = worker_ctx.manifests.current()
    deploy_idle(db_session, repo, services_ctx, work, "v1")
    for who in ("token:ci", "github:mallory"):
        with pytest.raises(NotAllowed, match="only token:release-manager, alice may"):
            releases.switch(db_session, repo, "production", services_ctx, requested_by=who, origin="api")
        with pytest.raises(NotAllowed):
            releases.rollback(db_session, repo, "production", services_ctx, requested_by=who, origin="api")
    assert releases.status(db_session, repo, "production")["awaiting_release"]
    done = releases.switch(db_session, repo, "production", services_ctx, requested_by="github:Alice", origin="page")
    # The queue loses the switch (Redis flushed, a worker gone): the scheduler's step queues it again.
    Queue(ACTIONS_QUEUE, connection=redis_client).empty()
    report = TickReport()
    Scheduler(worker_ctx).steps["releases"](report, datetime.now(UTC))
    assert report.switches == [done.id]
    work()
    assert release_row(db_session, done.id).state == "live"
    report = TickReport()
    Scheduler(worker_ctx).steps["releases"](report, datetime.now(UTC))
    assert report.switches == []


def test_a_switch_needs_a_release_awaiting_and_a_failed_switch_leaves_the_entry(
        db_session, worker_ctx, services_ctx, work, settings):
    repo = worker_ctx.manifests.current()
    with pytest.raises(Conflict, match="nothing of 'production' awaits release"):
        releases.switch(db_session, repo, "production", services_ctx, **WHO)
    with pytest.raises(Conflict, match="no previous colour"):
        releases.rollback(db_session, repo, "production", services_ctx, **WHO)
    with pytest.raises(Invalid, match="no version for site: nothing of 'production' is live yet"):
        releases.prepare(db_session, repo, "production", services_ctx, **WHO)
    with pytest.raises(Invalid, match="has no component web"):
        releases.prepare(db_session, repo, "production", services_ctx, versions={"web": "v1"}, **WHO)
    assert releases.history(db_session, "production") == []
    release = deploy_idle(db_session, repo, services_ctx, work, "v1")
    # The colour's served folder is gone by the time the switch runs: the switch fails, nothing changes.
    (Path(settings.static_root) / "site-production-blue" / "current").unlink()
    releases.switch(db_session, repo, "production", services_ctx, **WHO)
    work()
    failed = release_row(db_session, release.id)
    assert failed.state == "failed" and "serves nothing" in failed.message
    assert not (Path(settings.static_root) / "site-production" / "current").exists()
    assert releases.live(db_session, "production") is None


@pytest.fixture
def api(app, db_session):
    scopes = Scopes(services=("*",), environments=("*",), actions=("read", "deploy"))
    tokens = {name: create_token(db_session, name, scopes) for name in ("release-manager", "ci")}
    db_session.commit()
    client = app.test_client()

    def call(method, path, body=None, token="release-manager"):  # noqa: S107 (a token's name)
        return client.open(path, method=method, data=None if body is None else json.dumps(body),
                           headers={"Authorization": f"Bearer {tokens[token]}"}, content_type="application/json")

    return call


def test_the_api_deploys_the_idle_colour_and_only_an_approver_switches_it(api, work, db_session, settings):
    prepared = api("POST", "/api/v1/environments/production/release", {"versions": {"site": "v1"}}, token="ci")
    assert prepared.status_code == 202, prepared.json
    assert (prepared.json["state"], prepared.json["to_colour"]) == ("deploying", "blue")
    work()
    shown = api("GET", "/api/v1/environments/production/releases", token="ci").json
    assert shown["awaiting_release"] is True and shown["live"] is None and shown["idle"]["colour"] == "blue"
    assert shown["release_approvers"] == ["token:release-manager", "alice"]

    refused = api("POST", "/api/v1/environments/production/release/switch", token="ci")
    assert refused.status_code == 403
    assert refused.json["error"].startswith("token:ci may not release 'production'")
    assert refused.json["approvers"] == ["token:release-manager", "alice"]
    assert api("POST", "/api/v1/environments/production/rollback", token="ci").status_code == 403

    switched = api("POST", "/api/v1/environments/production/release/switch")
    assert switched.status_code == 202, switched.json
    work()
    shown = api("GET", "/api/v1/environments/production/releases").json
    assert shown["live"]["colour"] == "blue" and shown["awaiting_release"] is False
    assert [(r["kind"], r["state"], r["requested_by"], r["switched_by"]) for r in shown["releases"]] == [
        ("release", "live", "token:ci", "token:release-manager")]
    assert (Path(settings.static_root) / "site-production" / "current" / "index.html").is_file()
    again = api("POST", "/api/v1/environments/production/release/switch")
    assert again.status_code == 409 and "awaits release" in again.json["error"]


def test_the_page_shows_what_awaits_release_and_refuses_a_writer_who_is_not_an_approver(
        app, api, work, db_session):
    assert api("POST", "/api/v1/environments/production/release", {"versions": {"site": "v1"}}).status_code == 202
    work()
    tokens = {name: create_token(db_session, f"{name}-page", Scopes(services=("*",), environments=("*",),
                                                                     actions=("read", "deploy")))
              for name in ("writer",)}
    db_session.commit()
    client = app.test_client()
    sign_in_with_token(client, tokens["writer"])
    page = client.get("/environments/production").get_data(as_text=True)
    assert "Awaiting release: blue" in page and "token:release-manager, alice may release it" in page
    assert "Only token:release-manager, alice may release or roll back production." in page
    token = csrf(client, "/environments/production")
    asked = client.post("/environments/production/release", data={"csrf_token": token})
    assert asked.status_code == 200 and "Release production?" in asked.get_data(as_text=True)
    refused = client.post("/environments/production/release", data={"csrf_token": token, "confirmed": "yes"},
                          follow_redirects=True)
    assert "token:writer-page may not release &#39;production&#39;" in refused.get_data(as_text=True)
    assert releases.live(db_session, "production") is None
    assert releases.status(db_session, repo_of(app), "production")["awaiting_release"]
    assert client.post("/environments/production/release", data={"confirmed": "yes"}).status_code in (400, 403)


def test_a_snapshot_is_released_exactly_and_recorded(db_session, worker_ctx, services_ctx, work):
    repo = worker_ctx.manifests.current()
    deploy_idle(db_session, repo, services_ctx, work, "v1")
    releases.switch(db_session, repo, "production", services_ctx, **WHO)
    work()
    good = snapshots.create(db_session, repo, "production-blue", name="blue-v1", created_by="test")
    deploy_idle(db_session, repo, services_ctx, work, "v2")
    releases.switch(db_session, repo, "production", services_ctx, **WHO)
    work()
    again = releases.prepare(db_session, repo, "production", services_ctx, snapshot="blue-v1", **WHO)
    work()
    again = release_row(db_session, again.id)
    assert (again.state, again.to_colour, again.snapshot_id) == ("awaiting", "blue", good.id)
    shown = releases.status(db_session, repo, "production")
    assert shown["idle"]["tag"] == "v1" and shown["live"]["tag"] == "v2"
    assert shown["history"][0]["snapshot_id"] == good.id
