"""A whole environment on a real single-node Swarm: a web app (busybox httpd) and its own internal
Redis (redis-server from the machine's Debian package, imported as an image), deployed in order,
cloned, snapshotted, updated, deployed back from the snapshot, archived and restored.

The web app's check proves it reaches *its* Redis through the endpoint Sami injected: its health
CGI sends ``PING`` to the address in its ``REDIS`` override (``${cache.endpoint}``) and the check
wants ``+PONG``. Each Redis takes a free port of the node when it is created and tells it through
``info`` (``endpoint,127.0.0.1:PORT``), so a clone's web app is given the clone's Redis.

The control scripts are the test's own (in its deployments repo): plain `docker service` calls.
"""

from __future__ import annotations

import shutil
import stat
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from bot.core.models import Deployment, EnvironmentRun
from bot.core.states import DeploymentState
from bot.services import environments, snapshots
from tests.pipeline.environment_repo import EnvironmentManifests, Service, topology_fields
from tests.support.docker import DockerSwarm

pytestmark = [pytest.mark.swarm, pytest.mark.slow]
S = DeploymentState
WHO = dict(requested_by="test", origin="cli")
OPERATIONS = ("create", "update", "archive", "unarchive", "check", "archive_check", "cleanup", "info")

SCRIPT = r"""#!/bin/bash
# Test control script: one swarm service per deployment on the host network, on a port of its own.
set -u
op=$(basename "$0"); name=""; tag=""; role=""; redis=""
while [ $# -gt 0 ]; do
  case "$1" in
    --name) name=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    --deployment-config) case "$2" in role=*) role=${2#role=} ;; esac; shift 2 ;;
    --application-config) case "$2" in REDIS=*) redis=${2#REDIS=} ;; esac; shift 2 ;;
    *) shift ;;
  esac
done
D=${DOCKER:-docker}
port() { "$D" service inspect "$name" --format '{{index .Spec.Labels "sami.port"}}' 2>/dev/null; }
read -r -d '' WEB <<'EOS'
mkdir -p /www/cgi-bin
{ echo '#!/bin/sh'; echo 'echo "Content-Type: text/plain"'; echo 'echo'
  echo "printf 'PING\r\nQUIT\r\n' | nc -w 2 ${REDIS%:*} ${REDIS##*:}"; } > /www/cgi-bin/health
chmod +x /www/cgi-bin/health
echo "web $TAG" > /www/index.html
exec httpd -f -p "127.0.0.1:$PORT" -h /www
EOS
case "$op" in
  create|update)
    p=$(port)
    [ -n "$p" ] || p=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')
    "$D" service rm "$name" >/dev/null 2>&1
    for _ in $(seq 100); do
      [ -z "$("$D" ps -q --filter "label=com.docker.swarm.service.name=$name")" ] && break; sleep 0.2
    done
    if [ "$role" = redis ]; then
      exec "$D" service create -d -q --name "$name" --network host --label "sami.port=$p" "local/redis:$tag" \
        /usr/bin/redis-server --port "$p" --bind 127.0.0.1 --save "" --appendonly no
    fi
    [ -n "$redis" ] || { echo "no REDIS endpoint given" >&2; exit 1; }
    exec "$D" service create -d -q --name "$name" --network host --label "sami.port=$p" \
      --env "REDIS=$redis" --env "PORT=$p" --env "TAG=$tag" "local/web-env:$tag" sh -c "$WEB" ;;
  archive) exec "$D" service scale -d "$name=0" ;;
  unarchive) exec "$D" service scale -d "$name=1" ;;
  archive_check)
    [ -z "$("$D" ps -q --filter "label=com.docker.swarm.service.name=$name")" ] ;;
  cleanup) "$D" service rm "$name" >/dev/null 2>&1; exit 0 ;;
  info)
    p=$(port)
    if [ "$role" = redis ]; then echo "endpoint,127.0.0.1:$p"; else echo "app,http://127.0.0.1:$p/"; fi ;;
  check)
    p=$(port)
    image=$("$D" service inspect "$name" --format '{{.Spec.TaskTemplate.ContainerSpec.Image}}')
    case "$image" in *":$tag"|*":$tag@"*) ;; *) echo "running $image, want $tag" >&2; exit 3 ;; esac
    if [ "$role" = redis ]; then
      answer=$(printf 'PING\r\nQUIT\r\n' | timeout 3 busybox nc 127.0.0.1 "$p")
    else
      answer=$(curl -fsS -m 3 "http://127.0.0.1:$p/cgi-bin/health")
    fi
    case "$answer" in *+PONG*) exit 0 ;; *) echo "no PONG from $role on $p: $answer" >&2; exit 1 ;; esac ;;
esac
"""


def build_redis_image(swarm: DockerSwarm, root: Path) -> None:
    """Import redis-server from the machine's Debian package, with the libraries it links, as local/redis."""
    rootfs = root / "redis-rootfs"
    server = Path(shutil.which("redis-server"))
    libraries = [line.split("=>")[-1].split("(")[0].strip() for line in
                 subprocess.run(["ldd", str(server)], capture_output=True, text=True, check=True).stdout.splitlines()]
    for path in [str(server), *[lib for lib in libraries if lib.startswith("/")]]:
        target = rootfs / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(Path(path).resolve(), target)
    (rootfs / "usr/bin/redis-server").chmod(0o755)
    (rootfs / "tmp").mkdir(exist_ok=True)
    tar = subprocess.run(["tar", "-C", str(rootfs), "-c", "."], capture_output=True, check=True)
    for tag in ("7", "7b"):
        swarm.run("import", "-", f"local/redis:{tag}", input=tar.stdout)


SERVICES = {
    "cache": Service(third_party=True, deployment_overrides={"role": "redis"}),
    "web": Service(depends_on=("cache",), app_overrides={"REDIS": "${cache.endpoint}"},
                   deployment_overrides={"role": "web"}),
}


def write_repo(root: Path) -> Path:
    scripts = root / "scripts" / "envtest"
    scripts.mkdir(parents=True)
    for operation in OPERATIONS:
        path = scripts / operation
        path.write_text(SCRIPT)
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    for name, service in SERVICES.items():
        folder = root / "services" / name / "swarm" / "stage"
        folder.mkdir(parents=True)
        image = "local/redis" if name == "cache" else "local/web-env"
        (folder / "stack.yml").write_text(yaml.safe_dump({"version": "3.8", "services": {"app": {"image": image}}}))
        (folder / "sami.yaml").write_text(yaml.safe_dump({
            "version": "v1beta", "service_name": name, "type": "swarm", "files": ["stack.yml"],
            "oob": {"update-image": {"file": "stack.yml", "path": "services.app.image"}},
            "image": image, "timeout": "2m", "status_timeout": "60s", "control_scripts": "scripts/envtest",
            "overrides": {"deployment": dict(service.deployment_overrides), "app": dict(service.app_overrides)},
            "allowed_overrides": {"app": sorted(service.app_overrides), "deployment": []},
            # kind, mode and depends_on on disk too: the loader checks the web app's ${cache.endpoint}
            **topology_fields(service),
        }, sort_keys=False))
    return root


@pytest.fixture
def swarm(swarm_session: DockerSwarm, monkeypatch, tmp_path) -> DockerSwarm:
    for key, value in swarm_session.env().items():
        if key.startswith("DOCKER"):
            monkeypatch.setenv(key, value)
    if swarm_session.run("image", "inspect", "local/redis:7", check=False).returncode != 0:
        build_redis_image(swarm_session, tmp_path)
    for tag in ("v1", "v2"):
        swarm_session.retag(f"local/web-env:{tag}")
    return swarm_session


@pytest.fixture
def env_repo(swarm, tmp_path, worker_ctx):
    worker_ctx.manifests = EnvironmentManifests(write_repo(tmp_path / "swarm-environment"), SERVICES)
    return worker_ctx.manifests


def rows(db_session, environment: str) -> dict[str, Deployment]:
    db_session.expire_all()
    return {d.service: d for d in db_session.scalars(select(Deployment).where(Deployment.environment == environment))}


def run_ends(db_session, run_id: int) -> EnvironmentRun:
    db_session.expire_all()
    run = db_session.get(EnvironmentRun, run_id)
    assert run.state == "succeeded", (run.message, [(c.service, c.status, c.message) for c in run.components])
    return run


def ping_through_web(deployment: Deployment) -> str:
    with urllib.request.urlopen(deployment.links[0]["url"] + "cgi-bin/health", timeout=5) as response:
        return response.read().decode()


def service_env(swarm: DockerSwarm, name: str) -> str:
    return swarm.output("service", "inspect", name, "--format", "{{json .Spec.TaskTemplate.ContainerSpec.Env}}")


def test_web_and_its_own_redis_deployed_cloned_snapshotted_and_taken_down(swarm, env_repo, db_session, services_ctx,
                                                                         work):
    names = ["cache-stage", "web-stage", "cache-qa-3", "web-qa-3"]
    try:
        run = environments.start_run(db_session, env_repo.current(), "stage", "deploy", services_ctx,
                                     versions={"cache": "7", "web": "v1"}, **WHO)
        work()
        run_ends(db_session, run.id)
        stage = rows(db_session, "stage")
        assert {s: d.state for s, d in stage.items()} == {"cache": S.RUNNING, "web": S.RUNNING}
        endpoint = stage["cache"].outputs["endpoint"]
        assert endpoint.startswith("127.0.0.1:")  # from the Redis' info, its own port
        assert f"REDIS={endpoint}" in service_env(swarm, "web-stage")
        assert "+PONG" in ping_through_web(stage["web"])

        # A clone: its own Redis on its own port, and its web app given that one.
        cloned = environments.clone(db_session, env_repo.current(), "stage", "qa-3", services_ctx, **WHO)
        assert cloned.data["cache"] == "empty (provisioned fresh, no data copied)"
        work()
        run_ends(db_session, cloned.run.id)
        qa = rows(db_session, "qa-3")
        qa_endpoint = qa["cache"].outputs["endpoint"]
        assert qa_endpoint != endpoint
        assert f"REDIS={qa_endpoint}" in service_env(swarm, "web-qa-3")
        # Stage's Redis down: the clone's app still answers, through its own.
        swarm.run("service", "scale", "cache-stage=0")
        assert "+PONG" in ping_through_web(qa["web"])
        swarm.run("service", "scale", "cache-stage=1")

        # Snapshot, update, and the snapshot deployed back.
        snapshots.create(db_session, env_repo.current(), "stage", name="stage-v1", created_by="test")
        run = environments.start_run(db_session, env_repo.current(), "stage", "deploy", services_ctx,
                                     versions={"cache": "7b", "web": "v2"}, **WHO)
        work()
        run_ends(db_session, run.id)
        assert "local/web-env:v2" in swarm.output("service", "inspect", "web-stage", "--format",
                                                  "{{.Spec.TaskTemplate.ContainerSpec.Image}}")
        changed = snapshots.diff(db_session, env_repo.current(), "stage", "snapshot:stage-v1")["changed"]
        assert sorted(c["service"] for c in changed) == ["cache", "web"]
        run = snapshots.deploy(db_session, env_repo.current(), "stage", "stage-v1", services_ctx, **WHO)
        work()
        run_ends(db_session, run.id)
        assert snapshots.diff(db_session, env_repo.current(), "stage", "snapshot:stage-v1")["changed"] == []
        assert "local/web-env:v1" in swarm.output("service", "inspect", "web-stage", "--format",
                                                  "{{.Spec.TaskTemplate.ContainerSpec.Image}}")
        assert "+PONG" in ping_through_web(rows(db_session, "stage")["web"])

        # Archived (the app first) and restored.
        run = environments.start_run(db_session, env_repo.current(), "stage", "archive", services_ctx, **WHO)
        assert {c.service: c.status for c in run.components} == {"web": "queued", "cache": "waiting"}
        work()
        run_ends(db_session, run.id)
        assert {d.state for d in rows(db_session, "stage").values()} == {S.ARCHIVED}
        run = environments.start_run(db_session, env_repo.current(), "stage", "restore", services_ctx, **WHO)
        work()
        run_ends(db_session, run.id)
        stage = rows(db_session, "stage")
        assert {d.state for d in stage.values()} == {S.RUNNING}
        assert "+PONG" in ping_through_web(stage["web"])
    finally:
        for name in names:
            swarm.run("service", "rm", name, check=False)
