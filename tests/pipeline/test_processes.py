"""The pipeline with real processes: `sami worker` and `sami scheduler` subprocesses on a database
and a Redis server of this module's own; concurrency, a killed worker, Redis going away."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from sqlalchemy import create_engine, select, text
from sqlalchemy.orm import Session, undefer

from bot.core.models import Action, Deployment
from bot.core.states import ActionState, DeploymentState
from bot.manifests import load_deployments_repo
from bot.services import deployments
from bot.services.tokens import Scopes, create_token
from bot.web import create_app
from tests.pipeline.probe_scripts import write_probe_repo
from tests.support.procs import alive, wait_until
from tests.support.servers import RedisServer
from workers.queue import RQBroker

pytestmark = pytest.mark.slow


class Stack:
    """A web app (in this process), worker and scheduler processes on one database and Redis."""

    def __init__(self, tmp_path, database_url, redis: RedisServer):
        self.record = tmp_path / "record"
        self.logs = tmp_path
        self.repo = write_probe_repo(tmp_path / "deployments", self.record, timeout="60s", status_timeout="5s")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SAMI_")}
        # Working copies go to a folder of the test's own, so what a run leaves behind shows.
        self.tmp = tmp_path / "tmp"
        self.tmp.mkdir()
        self.env.update({
            "TMPDIR": str(self.tmp),
            "SAMI_DATABASE_URL": database_url, "SAMI_REDIS_URL": redis.url(0),
            "SAMI_DEPLOYMENTS_REPO": str(self.repo), "SAMI_INSTANCE_DIR": str(tmp_path / "instance"),
            "SAMI_BASE_DOMAIN": "example.test", "SAMI_LOG_LEVEL": "warning",
        })
        self.config = {"mode": "test", "database_url": database_url, "redis_url": redis.url(0),
                       "deployments_repo": str(self.repo), "instance_dir": str(tmp_path / "instance"),
                       "base_domain": "example.test"}
        self.app = create_app(self.config)
        self.engine = create_engine(database_url)
        self.processes: list[subprocess.Popen] = []
        with Session(self.engine) as session:
            self.token = create_token(session, "ci", Scopes(admin=True))
            session.commit()

    def start(self, *args) -> subprocess.Popen:
        with open(self.logs / f"{args[0]}-{len(self.processes)}.log", "wb") as sink:
            process = subprocess.Popen([sys.executable, "-m", "bot.cli", *args], env=self.env,
                                       stdout=sink, stderr=subprocess.STDOUT)
        self.processes.append(process)
        return process

    def request(self, tag: str, **overrides) -> tuple[int, dict]:
        body = {"service": "probe", "environment": "stage", "tag": tag}
        if overrides:
            body["overrides"] = {"deployment": overrides}
        response = self.app.test_client().post("/deployment_request", data=json.dumps(body),
                                               content_type="application/json",
                                               headers={"Authorization": f"Bearer {self.token}"})
        return response.status_code, response.json

    def actions(self) -> list[Action]:
        with Session(self.engine) as session:
            return list(session.scalars(select(Action).options(undefer(Action.log)).order_by(Action.id)))

    def deployment(self) -> Deployment:
        with Session(self.engine) as session:
            return session.scalars(select(Deployment)).one()

    def wait(self, predicate, timeout: float, what: str):
        return wait_until(predicate, timeout, what)

    def settled(self) -> bool:
        return all(a.state.finished for a in self.actions())

    def stop(self):
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.engine.dispose()


@pytest.fixture
def stack(tmp_path, own_database_url, own_redis):
    stack = Stack(tmp_path, own_database_url, own_redis)
    yield stack
    stack.stop()


def overlaps(record) -> list[str]:
    return [line for line in record.read_text().splitlines() if line.startswith("OVERLAP")] \
        if record.exists() else []


def test_fifty_concurrent_requests_never_run_two_scripts_at_once(stack):
    for _ in range(3):
        stack.start("worker")
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda n: stack.request(f"v{n}", sleep="0.1"), range(50)))
    assert [code for code, _ in results].count(202) == 50, [body for code, body in results if code != 202]
    stack.wait(stack.settled, 120, "every action to finish")
    assert overlaps(stack.record) == []
    actions = stack.actions()
    assert {a.state for a in actions} <= {ActionState.SUCCEEDED, ActionState.SUPERSEDED}
    newest = max(actions, key=lambda a: a.id)
    assert newest.state is ActionState.SUCCEEDED
    deployment = stack.deployment()
    assert deployment.state is DeploymentState.RUNNING
    assert deployment.tag == newest.config["tag"]
    # The last worker lets the lease go once its info and notifications scripts are done.
    stack.wait(lambda: stack.deployment().lease_owner is None, 30, "the lease to be let go")
    ran = [line for line in stack.record.read_text().splitlines() if line.split()[0] in ("create", "update")]
    assert len(ran) == sum(1 for a in actions if a.state is ActionState.SUCCEEDED)


def pid_file(stack, name: str) -> int:
    path = stack.record.parent / name
    return int(stack.wait(lambda: path.exists() and path.read_text().strip(), 10, name))


def working_copies(stack) -> list[str]:
    return sorted(p.name for p in stack.tmp.iterdir() if p.name.startswith(("sami-action-", "sami-check-")))


def test_a_worker_killed_mid_action_is_reaped_within_a_minute(stack):
    worker = stack.start("worker")
    code, _ = stack.request("v1", hang="create")
    assert code == 202
    stack.wait(lambda: stack.actions()[0].script_started_at is not None, 30, "the script to start")
    script_pid = pid_file(stack, "record.pid")
    child_pid = pid_file(stack, "record.child")  # `sleep 300 &`, started by the script
    # What the script printed reaches the log while it runs, not only when it ends.
    stack.wait(lambda: "probe create of probe-stage at v1" in stack.actions()[0].log, 5, "the output in the log")
    assert working_copies(stack)
    os.kill(worker.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    stack.start("scheduler", "--interval", "1")
    stack.wait(lambda: stack.actions()[0].state is ActionState.FAILED, 60, "the reaper")
    took = time.monotonic() - killed_at
    assert took < 60
    assert stack.deployment().state is DeploymentState.FAILURE
    assert stack.actions()[0].error == "the worker running this action stopped responding"
    # The script and what it started died with their worker (they cannot race a retry).
    stack.wait(lambda: not alive(script_pid), 10, "the script to die")
    stack.wait(lambda: not alive(child_pid), 10, "the script's child to die")
    assert "probe create of probe-stage at v1" in stack.actions()[0].log
    # The reaper, on the worker's host, removed the dead action's working copy.
    assert working_copies(stack) == []


def test_a_worker_that_lost_its_lease_stops_its_script(stack):
    stack.start("worker")
    code, _ = stack.request("v1", hang="create")
    assert code == 202
    stack.wait(lambda: stack.actions()[0].script_started_at is not None, 30, "the script to start")
    script_pid = pid_file(stack, "record.pid")
    child_pid = pid_file(stack, "record.child")
    # Another worker takes the deployment over (as after a long stall of this one).
    with Session(stack.engine) as session:
        session.execute(text("UPDATE deployments SET lease_owner = 'another-worker', "
                             "lease_expires_at = now() + interval '1 hour'"))
        session.commit()
    # The next heartbeat (every 10 s) finds the lease gone and stops the script and its child.
    stack.wait(lambda: not alive(script_pid) and not alive(child_pid), 30, "the script group to be stopped")
    action = stack.actions()[0]
    assert action.state is ActionState.RUNNING  # settling it is no longer this worker's business
    assert stack.deployment().lease_owner == "another-worker"


def test_a_worker_starts_an_update_that_waited_when_its_time_comes(stack):
    stack.start("worker")
    assert stack.request("v1")[0] == 202
    stack.wait(lambda: stack.deployment().state is DeploymentState.RUNNING, 60, "Running")
    # An update that may start a second from now, as a push to a pull request is accepted; no
    # `sami scheduler` runs, so RQ's scheduler in the worker process is what queues it.
    broker = RQBroker(redis.Redis.from_url(stack.config["redis_url"]))
    with Session(stack.engine) as session:
        accepted = deployments.request_deployment(
            session, load_deployments_repo(stack.repo),
            deployments.DeploymentRequest(service="probe", environment="stage", tag="v2", requested_by="test",
                                       origin="webhook", debounce_seconds=1),
            deployments.Context("sami", "example.test", "sami", broker))
    assert accepted.queued
    stack.wait(lambda: stack.actions()[-1].state.finished, 60, "the update")
    update = stack.actions()[-1]
    assert (update.id, update.state) == (accepted.action_id, ActionState.SUCCEEDED)
    assert update.script_started_at >= update.retry_at
    assert stack.deployment().tag == "v2"


def test_a_worker_takes_its_next_job_while_notifications_run_and_the_deployment_waits_for_them(stack):
    """Info and notifications run beside the worker's next job, holding the deployment's lease: the
    worker is free at once, and the next action of the same deployment starts only after they end."""
    stack.start("worker")
    assert stack.request("v1", hang="notifications")[0] == 202
    child = stack.record.parent / "record.child"  # notifications runs, held by `sleep 300 &`
    child_pid = int(stack.wait(lambda: child.exists() and child.read_text().strip(), 60, "the notifications"))
    first = stack.actions()[0]
    assert first.state is ActionState.SUCCEEDED
    assert stack.deployment().state is DeploymentState.RUNNING
    assert stack.deployment().lease_owner is not None  # its after-work holds the deployment
    assert stack.request("v2", hang="none")[0] == 202
    actions = RQBroker(redis.Redis.from_url(stack.config["redis_url"])).actions
    # The one worker took the update's job while the notifications still run, and left the update queued.
    stack.wait(lambda: actions.count == 0 and not actions.started_job_registry.get_job_ids(), 30,
               "the worker to take the update's job")
    assert stack.actions()[-1].state is ActionState.QUEUED
    assert alive(child_pid)
    os.kill(child_pid, signal.SIGKILL)  # notifications ends: the lease is let go, the update queued again
    stack.wait(lambda: stack.actions()[-1].state.finished, 60, "the update")
    assert stack.actions()[-1].state is ActionState.SUCCEEDED
    assert overlaps(stack.record) == []
    lines = stack.record.read_text().splitlines()
    assert lines.index("notifications probe-stage v1") < lines.index("update probe-stage v2")
    assert (stack.record.parent / "record.notified").read_text().splitlines()[0] == \
        "probe-stage CreatePending Running"
    stack.wait(lambda: stack.deployment().lease_owner is None, 30, "the lease to be let go")


def test_green_runs_leave_no_working_copies(stack):
    stack.start("worker")
    assert stack.request("v1")[0] == 202
    stack.wait(lambda: stack.deployment().state is DeploymentState.RUNNING, 60, "Running")
    stack.wait(lambda: stack.deployment().lease_owner is None, 30, "the lease to be let go")
    assert working_copies(stack) == []


def test_requests_made_while_redis_is_down_run_when_it_returns(stack, own_redis):
    own_redis.stop()
    results = [stack.request(f"v{n}") for n in range(5)]
    assert [code for code, _ in results] == [202] * 5
    own_redis.start()
    stack.start("worker")
    stack.start("scheduler", "--interval", "1")
    stack.wait(stack.settled, 60, "every action to finish")
    actions = stack.actions()
    assert actions[0].state is ActionState.SUCCEEDED  # the create
    assert actions[-1].state is ActionState.SUCCEEDED  # the newest update
    assert stack.deployment().state is DeploymentState.RUNNING
    assert stack.deployment().tag == "v4"


def test_two_schedulers_clean_up_an_expired_deployment_once(stack):
    stack.start("worker")
    code, _ = stack.request("v1")
    assert code == 202
    stack.wait(lambda: stack.deployment().state is DeploymentState.RUNNING, 60, "Running")
    archived = stack.app.test_client().post("/api/v1/deployments/probe-stage/archive",
                                            headers={"Authorization": f"Bearer {stack.token}"})
    assert archived.status_code == 202
    stack.wait(lambda: stack.deployment().state is DeploymentState.ARCHIVED, 60, "Archived")
    with Session(stack.engine) as session:
        session.execute(text("UPDATE deployments SET archived_at = archived_at - interval '15 days'"))
        session.commit()
    stack.start("scheduler", "--interval", "0.5")
    stack.start("scheduler", "--interval", "0.5")
    stack.wait(lambda: stack.deployment().state is DeploymentState.REMOVED, 60, "the retention cleanup")
    time.sleep(2)  # give a second scheduler every chance to add another cleanup
    cleanups = [a for a in stack.actions() if a.kind == "cleanup"]
    assert len(cleanups) == 1
    assert cleanups[0].requested_by == "schedule:retention"
    assert cleanups[0].state is ActionState.SUCCEEDED
