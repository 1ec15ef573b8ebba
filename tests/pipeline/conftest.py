"""Fixtures for the pipeline: a probe deployments repo, a worker context on the test database
and the test Redis, and a burst worker that runs what is queued (RQ's SimpleWorker)."""

from __future__ import annotations

import pytest
from rq.job import Job
from rq.registry import FailedJobRegistry

from bot.core.config import settings_from_mapping
from bot.services.deployments import Context
from tests.pipeline.probe_scripts import write_probe_repo
from workers.context import ContextWorker, build_context
from workers.queue import ACTIONS_QUEUE, CHECKS_QUEUE, RQBroker


@pytest.fixture
def record(tmp_path):
    """The file the probe scripts append their calls to."""
    return tmp_path / "record"


@pytest.fixture
def probe_repo(tmp_path, record):
    return write_probe_repo(tmp_path / "deployments", record)


@pytest.fixture
def test_config(test_config, probe_repo, tmp_path):
    return {**test_config, "deployments_repo": str(probe_repo), "static_root": str(tmp_path / "sites"),
            "base_domain": "example.test"}


@pytest.fixture
def settings(test_config):
    return settings_from_mapping(test_config)


@pytest.fixture
def worker_ctx(settings, session_factory, redis_client):
    """The context jobs run with in this process; jobs see the test's transaction."""
    ctx = build_context(settings, broker=RQBroker(redis_client), session_factory=session_factory)
    yield ctx


@pytest.fixture
def services_ctx(worker_ctx):
    return Context.from_settings(worker_ctx.settings, worker_ctx.broker)


@pytest.fixture
def work(worker_ctx, redis_client):
    """Run every queued job in this process until the queues are empty."""

    def run() -> None:
        ContextWorker([ACTIONS_QUEUE, CHECKS_QUEUE], connection=redis_client, context=worker_ctx).work(
            burst=True, logging_level="WARNING")
        # A job that raised is a bug in the job, not an outcome: make it fail the test.
        for name in (ACTIONS_QUEUE, CHECKS_QUEUE):
            failed = FailedJobRegistry(name, connection=redis_client)
            for job_id in failed.get_job_ids():
                job = Job.fetch(job_id, connection=redis_client)
                raise AssertionError(f"job {job_id} raised:\n{job.latest_result().exc_string}")

    return run


def read_record(record) -> list[str]:
    return record.read_text().splitlines() if record.exists() else []
