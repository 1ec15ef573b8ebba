"""The client against Sami as it runs in production: `sami serve` (gunicorn, production mode) and a
separate `sami worker` process, on PostgreSQL and Redis of the test's own."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bot.client.exits import Exit
from tests.client.conftest import deployments_repo
from tests.support.sami_server import PRODUCTION_SECRET_KEY, ROOT, SamiServer, sami, sami_env
from tests.support.servers import free_port

pytestmark = pytest.mark.slow


def test_request_wait_with_postgresql_redis_and_a_worker_process(own_database_url, own_redis, tmp_path):
    port = free_port()
    env = sami_env(SAMI_MODE="production", SAMI_DATABASE_URL=own_database_url, SAMI_REDIS_URL=own_redis.url(0),
                   SAMI_SECRET_KEY=PRODUCTION_SECRET_KEY, SAMI_WEBHOOK_SECRET="client-test-webhook-secret",
                   SAMI_INSTANCE_DIR=str(tmp_path / "instance"),
                   SAMI_DEPLOYMENTS_REPO=str(deployments_repo(tmp_path / "repo")),
                   SAMI_BASE_DOMAIN=f"127.0.0.1:{port}", SAMI_PUBLIC_URL=f"http://127.0.0.1:{port}",
                   SAMI_LOG_LEVEL="warning")
    token = sami("token", "create", "ci", "--action", "deploy", "--action", "read", env=env).stdout.strip()
    client = sami_env(SAMI_URL=f"http://127.0.0.1:{port}", SAMI_TOKEN=token, XDG_CONFIG_HOME=str(tmp_path / "cfg"))

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "bot.cli", *args], env=client, capture_output=True, text=True,
                              timeout=120, cwd=ROOT)

    with open(tmp_path / "worker.log", "wb") as sink, \
            subprocess.Popen([sys.executable, "-m", "bot.cli", "worker"], env=env, stdout=sink,
                             stderr=subprocess.STDOUT, cwd=ROOT) as worker, \
            SamiServer(env, tmp_path / "serve.log", port=port):
        try:
            done = run("request", "docs", "stage", "--tag", "v1", "--wait", "--json")
            assert done.returncode == Exit.OK, done.stderr + (tmp_path / "worker.log").read_text()
            result = json.loads(done.stdout)["result"]
            assert result["deployment"]["state"] == "Running"
            assert result["log_tail"] is None, "a deploy-and-read token does not see logs"
            failed = run("request", "probe", "stage", "--tag", "t1", "--deployment-override", "fail=create", "--wait")
            assert failed.returncode == Exit.FAILED
            assert "probe-stage is Failed: create failed (exit 1): probe: create failed on purpose" in failed.stdout
            assert "--- the log's last lines" not in failed.stdout
            refused = run("archive", "docs-stage")
            assert refused.returncode == Exit.REFUSED and "--action archive --service docs" in refused.stderr
        finally:
            worker.terminate()
            worker.wait(30)
