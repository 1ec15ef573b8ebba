"""`sami list`, `sami info` and `sami reconcile` on drift, against a real `sami serve` whose docs site is
deployed for real: its release switched by hand on the host, found by the periodic check (run here as
the scheduler's worker would run it), shown, and put back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.client.exits import Exit
from bot.core.config import load_settings
from bot.core.models import Deployment
from tests.pipeline.test_drift_static_file import served_tag, switch_by_hand
from workers.checks import check_deployment
from workers.context import build_context
from workers.queue import InProcessBroker

pytestmark = pytest.mark.slow


def periodic_check(server, name: str) -> None:
    """The periodic check of ``name``, as a worker of the server runs it when the scheduler queues it."""
    ctx = build_context(load_settings(server.env), broker=InProcessBroker(threads=1))
    with ctx.session() as session:
        deployment_id = session.scalar(select(Deployment.id).where(Deployment.name == name))
    check_deployment(deployment_id, "check", ctx=ctx)


def static_base(server, name: str) -> Path:
    return Path(load_settings(server.env).static_root) / name


def test_drift_is_listed_explained_and_reconciled(server):
    for tag in ("v1", "v2"):
        assert server.run("request", "docs", "stage", "--tag", tag, "--wait").returncode == Exit.OK
    info = json.loads(server.run("info", "docs-stage", "--json").stdout)
    assert set(info) == {"deployment", "actions", "requested", "deployed", "running"}
    assert info["requested"]["tag"] == info["deployed"]["tag"] == "v2"
    assert info["running"]["components"] == [{"name": "current", "image": None, "tag": "v2", "replicas": None,
                                              "running": None}]
    assert info["deployment"]["drift"]["status"] == "in_sync"
    assert "drift:                in sync" in server.run("info", "docs-stage").stdout

    base = static_base(server, "docs-stage")
    switch_by_hand(base, "v1")
    periodic_check(server, "docs-stage")

    header, *rows = server.run("list", "--service", "docs").stdout.splitlines()
    assert header.split()[:3] == ["NAME", "STATE", "DRIFT"]
    assert next(r for r in rows if r.startswith("docs-stage ")).split()[1:3] == ["Running", "drift"]
    listed = json.loads(server.run("list", "--service", "docs", "--json").stdout)["deployments"]
    assert next(d for d in listed if d["name"] == "docs-stage")["drift"]["summary"] == "current: tag v1 (deployed v2)"
    shown = server.run("info", "docs-stage").stdout
    assert "current: tag v1 (deployed v2)" in shown
    assert "sami reconcile docs-stage" in shown
    assert "state:                Running" in shown  # drift is not a Failure

    done = server.run("reconcile", "docs-stage", "--wait")
    assert done.returncode == Exit.OK, done.stdout + done.stderr
    assert served_tag(base) == "v2"
    info = json.loads(server.run("info", "docs-stage", "--json").stdout)
    assert info["deployment"]["drift"]["status"] == "in_sync"
    assert info["actions"][0]["config"]["reconcile_of"] == info["actions"][1]["id"]


def test_reconcile_is_refused_with_the_reason_when_nothing_was_deployed(server):
    failed = server.run("request", "probe", "stage", "--tag", "v1", "--deployment-override", "fail=create", "--wait")
    assert failed.returncode == Exit.FAILED
    refused = server.run("reconcile", "probe-stage")
    assert refused.returncode == Exit.BAD_INPUT, refused.stderr
    assert "no deployed config" in refused.stderr
