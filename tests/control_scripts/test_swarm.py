"""swarm, cron and compose scripts against a real single-node Docker Swarm."""

from __future__ import annotations

import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.control_scripts.helpers import (
    EXAMPLES,
    contract_args,
    prepare_manifest,
    run_script,
    wait_for,
)
from tests.support.docker import DockerSwarm, free_port

pytestmark = pytest.mark.swarm


def _stack_env(swarm: DockerSwarm, image: str, port: int | None = None) -> dict[str, str]:
    extra = {"SAMI_IMAGE": image, "SAMI_HEALTH_TIMEOUT": "5"}
    if port:
        extra["SAMI_HEALTH_URL"] = f"http://127.0.0.1:{port}/healthz"
        extra["SAMI_URL"] = f"http://127.0.0.1:{port}/"
    return swarm.env(extra)


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def test_web_stack_lifecycle(swarm_session: DockerSwarm, tmp_path: Path):
    swarm = swarm_session
    name = "web-e2e"
    port = free_port()
    image_a = swarm.retag("local/web:tag-a")
    image_b = swarm.retag("local/web:tag-b")

    def args(tag: str, manifest: Path) -> list[str]:
        return contract_args(name, tag=tag, manifest_dir=manifest, deployment_config={"port": str(port)})

    manifest_a = prepare_manifest(
        EXAMPLES / "web" / "swarm" / "stage", tmp_path / "a", ("services", "web", "image"), image_a
    )
    env_a = _stack_env(swarm, image_a, port)
    assert run_script("swarm", "config_check", args("tag-a", manifest_a), env=env_a).returncode == 0
    created = run_script("swarm", "create", args("tag-a", manifest_a), env=env_a)
    assert created.returncode == 0, created.stderr
    check = wait_for(lambda: run_script("swarm", "check", args("tag-a", manifest_a), env=env_a))
    assert check.returncode == 0, check.stderr
    assert "<h1>web tag-a</h1>" in _get(f"http://127.0.0.1:{port}/")
    unhealthy = dict(env_a, SAMI_HEALTH_URL=f"http://127.0.0.1:{port}/no-such-page")
    failed = run_script("swarm", "check", args("tag-a", manifest_a), env=unhealthy)
    assert failed.returncode == 1, "a failing health URL is a generic failure"
    assert "health check" in failed.stderr
    services = swarm.output("service", "ls", "--format", "{{.Name}} {{.Image}}").split("\n")
    assert f"{name}_worker {image_a}" in services  # worker follows ${IMAGE}

    manifest_b = prepare_manifest(
        EXAMPLES / "web" / "swarm" / "stage", tmp_path / "b", ("services", "web", "image"), image_b
    )
    env_b = _stack_env(swarm, image_b, port)
    updated = run_script("swarm", "update", args("tag-b", manifest_b), env=env_b)
    assert updated.returncode == 0, updated.stderr
    check = wait_for(lambda: run_script("swarm", "check", args("tag-b", manifest_b), env=env_b))
    assert check.returncode == 0, check.stderr
    assert "<h1>web tag-b</h1>" in _get(f"http://127.0.0.1:{port}/")
    mismatch = run_script("swarm", "check", args("tag-a", manifest_b), env=env_a)
    assert mismatch.returncode == 3, mismatch.stderr
    assert "expected tag tag-a" in mismatch.stderr

    assert run_script("swarm", "archive", args("tag-b", manifest_b), env=env_b).returncode == 0
    archived = wait_for(lambda: run_script("swarm", "archive_check", args("tag-b", manifest_b), env=env_b))
    assert archived.returncode == 0, archived.stderr
    replicas = swarm.output(
        "service", "ls", "--filter", f"label=com.docker.stack.namespace={name}", "--format", "{{.Replicas}}"
    ).split()
    assert replicas == ["0/0", "0/0"]
    assert run_script("swarm", "check", args("tag-b", manifest_b), env=env_b).returncode == 2
    # archiving twice keeps the recorded replicas
    assert run_script("swarm", "archive", args("tag-b", manifest_b), env=env_b).returncode == 0
    volumes = swarm.output("volume", "ls", "-q", "--filter", f"label=com.docker.stack.namespace={name}")
    assert volumes.split() == [f"{name}_worker-data"], "archive keeps volumes"

    assert run_script("swarm", "unarchive", args("tag-b", manifest_b), env=env_b).returncode == 0
    check = wait_for(lambda: run_script("swarm", "check", args("tag-b", manifest_b), env=env_b))
    assert check.returncode == 0, check.stderr
    replicas = swarm.output(
        "service", "ls", "--filter", f"label=com.docker.stack.namespace={name}", "--format", "{{.Replicas}}"
    ).split()
    assert replicas == ["1/1", "1/1"]

    info = run_script("swarm", "info", args("tag-b", manifest_b), env=env_b)
    assert info.stdout == f"app,http://127.0.0.1:{port}/\n"

    cleaned = run_script("swarm", "cleanup", args("tag-b", manifest_b), env=env_b)
    assert cleaned.returncode == 0, cleaned.stderr
    label = f"label=com.docker.stack.namespace={name}"
    assert swarm.output("service", "ls", "-q", "--filter", label) == ""
    assert swarm.output("volume", "ls", "-q", "--filter", label) == ""
    assert swarm.output("network", "ls", "-q", "--filter", label) == ""
    assert run_script("swarm", "cleanup", args("tag-b", manifest_b), env=env_b).returncode == 0
    assert run_script("swarm", "archive_check", args("tag-b", manifest_b), env=env_b).returncode == 0
    assert run_script("swarm", "check", args("tag-b", manifest_b), env=env_b).returncode == 1


def test_cron_job_runs_and_exits(swarm_session: DockerSwarm, tmp_path: Path):
    swarm = swarm_session
    name = "nightly-report-e2e"
    image = swarm.retag("local/nightly-report:tag-c")
    manifest = prepare_manifest(
        EXAMPLES / "nightly-report" / "cron" / "stage", tmp_path / "m", ("services", "report", "image"), image
    )
    args = contract_args(
        name, tag="tag-c", manifest_dir=manifest, service="nightly-report", deployment_config={"interval": "1h"}
    )
    env = swarm.env({"SAMI_IMAGE": image})
    try:
        created = run_script("cron", "create", args, env=env)
        assert created.returncode == 0, created.stderr

        def completed() -> subprocess.CompletedProcess:
            states = swarm.output("service", "ps", "--format", "{{.CurrentState}}", f"{name}_report")
            return subprocess.CompletedProcess([], 0 if "Complete" in states else 1)

        assert wait_for(completed).returncode == 0, "the job ran once and exited"
        policy = swarm.output(
            "service",
            "inspect",
            "--format",
            "{{.Spec.TaskTemplate.RestartPolicy.Condition}} {{.Spec.TaskTemplate.RestartPolicy.Delay}}",
            f"{name}_report",
        ).strip()
        assert policy == "any 1h0m0s"
        assert run_script("cron", "check", args, env=env).returncode == 0
        bad_tag = contract_args(name, tag="other", manifest_dir=manifest)
        assert run_script("cron", "check", bad_tag, env=env).returncode == 3
        logs = swarm.run("service", "logs", "--raw", f"{name}_report").stdout.decode()
        assert "nightly report" in logs and "version tag-c" in logs

        assert run_script("cron", "archive", args, env=env).returncode == 0
        assert wait_for(lambda: run_script("cron", "archive_check", args, env=env)).returncode == 0
        assert run_script("cron", "unarchive", args, env=env).returncode == 0
        replicas = swarm.output(
            "service", "inspect", "--format", "{{.Spec.Mode.Replicated.Replicas}}", f"{name}_report"
        ).strip()
        assert replicas == "1"
    finally:
        assert run_script("cron", "cleanup", args, env=env).returncode == 0
    assert swarm.output("volume", "ls", "-q", "--filter", f"label=com.docker.stack.namespace={name}") == ""


def test_failing_cron_job_fails_check(swarm_session: DockerSwarm, tmp_path: Path):
    swarm = swarm_session
    name = "failing-job"
    image = swarm.retag("local/nightly-report:tag-f")
    manifest = tmp_path / "m"
    manifest.mkdir()
    (manifest / "stack.yml").write_text(
        "version: '3.8'\nservices:\n  job:\n    image: " + image + "\n"
        "    command: [sh, -c, 'echo failing; exit 4']\n"
        "    deploy:\n      restart_policy: {condition: any, delay: 1h}\n"
    )
    args = contract_args(name, tag="tag-f", manifest_dir=manifest)
    env = swarm.env({"SAMI_IMAGE": image})
    try:
        assert run_script("cron", "create", args, env=env).returncode == 0
        result = wait_for(lambda: run_script("cron", "check", args, env=env), want=1)
        assert result.returncode == 1
        assert "last run Failed" in result.stderr
    finally:
        assert run_script("cron", "cleanup", args, env=env).returncode == 0


def _compose_client() -> str | None:
    return shutil.which("docker-compose")


def test_compose_project_lifecycle(swarm_session: DockerSwarm, tmp_path: Path):
    """Real compose client against the private daemon (Debian's docker.io ships no compose
    v2 plugin; the docker-compose package provides v1, which the scripts fall back to)."""
    swarm = swarm_session
    probe = subprocess.run([swarm.docker, "compose", "version"], env=swarm.env(), capture_output=True, check=False)
    if probe.returncode != 0 and _compose_client() is None:
        pytest.skip("no compose client: apt-get install docker-compose (or the compose v2 plugin)")
    name = "notes-e2e"
    port = free_port()
    image = swarm.retag("local/notes:tag-n")
    manifest = prepare_manifest(
        EXAMPLES / "notes" / "compose" / "stage", tmp_path / "m", ("services", "notes", "image"), image
    )
    args = contract_args(
        name, tag="tag-n", manifest_dir=manifest, service="notes", deployment_config={"port": str(port)}
    )
    env = _stack_env(swarm, image, port)
    try:
        created = run_script("compose", "create", args, env=env)
        assert created.returncode == 0, created.stderr
        check = wait_for(lambda: run_script("compose", "check", args, env=env))
        assert check.returncode == 0, check.stderr
        assert "<h1>notes tag-n</h1>" in _get(f"http://127.0.0.1:{port}/")
        other = contract_args(name, tag="tag-x", manifest_dir=manifest)
        assert run_script("compose", "check", other, env=env).returncode == 3
        assert run_script("compose", "archive", args, env=env).returncode == 0
        assert run_script("compose", "archive_check", args, env=env).returncode == 0
        assert run_script("compose", "check", args, env=env).returncode == 2
        assert run_script("compose", "unarchive", args, env=env).returncode == 0
        assert wait_for(lambda: run_script("compose", "check", args, env=env)).returncode == 0
    finally:
        cleaned = run_script("compose", "cleanup", args, env=env)
        assert cleaned.returncode == 0, cleaned.stderr
    label = f"label=com.docker.compose.project={name}"
    assert swarm.output("ps", "-aq", "--filter", label) == ""
    assert swarm.output("volume", "ls", "-q", "--filter", label) == ""


def test_compose_one_shot_jobs_and_removed_manifest(swarm_session: DockerSwarm, tmp_path: Path):
    """A one-shot service (exits 0) and a one-off `run` container do not make `check` report
    partial availability; archive and cleanup work once the manifest folder is gone."""
    swarm = swarm_session
    probe = subprocess.run([swarm.docker, "compose", "version"], env=swarm.env(), capture_output=True, check=False)
    client = [swarm.docker, "compose"] if probe.returncode == 0 else [_compose_client() or ""]
    if not client[0]:
        pytest.skip("no compose client: apt-get install docker-compose (or the compose v2 plugin)")
    name = "notes-oneshot"
    port = free_port()
    image = swarm.retag("local/notes:tag-o")
    manifest = prepare_manifest(
        EXAMPLES / "notes" / "compose" / "stage", tmp_path / "m", ("services", "notes", "image"), image
    )
    compose = (manifest / "compose.yml").read_text()
    compose = compose.replace(
        "\nvolumes:\n",
        f"\n  migrate:\n    image: {image}\n    command: [sh, -c, 'echo migrated']\n"
        "    restart: 'no'\n    volumes:\n      - notes-data:/data\n\nvolumes:\n",
    )
    (manifest / "compose.yml").write_text(compose)
    args = contract_args(name, tag="tag-o", manifest_dir=manifest, deployment_config={"port": str(port)})
    env = _stack_env(swarm, image, port)
    label = f"label=com.docker.compose.project={name}"
    try:
        created = run_script("compose", "create", args, env=env)
        assert created.returncode == 0, created.stderr
        check = wait_for(lambda: run_script("compose", "check", args, env=env), timeout=30)
        assert check.returncode == 0, check.stderr
        assert "Exited (0)" in swarm.output("ps", "-a", "--filter", label, "--format", "{{.Status}}")
        one_off = subprocess.run(
            [*client, "-p", name, "-f", "compose.yml", "run", "migrate", "sh", "-c", "exit 3"],
            cwd=manifest,
            env=env,
            capture_output=True,
            check=False,
        )
        assert one_off.returncode == 3, one_off.stderr
        assert run_script("compose", "check", args, env=env).returncode == 0

        shutil.rmtree(manifest)
        archived = run_script("compose", "archive", args, env=env)
        assert archived.returncode == 0, archived.stderr
        assert run_script("compose", "archive_check", args, env=env).returncode == 0
        assert run_script("compose", "check", args, env=env).returncode == 2
    finally:
        cleaned = run_script("compose", "cleanup", args, env=env)
        assert cleaned.returncode == 0, cleaned.stderr
    assert swarm.output("ps", "-aq", "--filter", label) == ""
    assert swarm.output("volume", "ls", "-q", "--filter", label) == ""
    assert swarm.output("network", "ls", "-q", "--filter", label) == ""
    again = run_script("compose", "cleanup", args, env=env)
    assert again.returncode == 0, again.stderr


def test_check_batch_answers_every_deployment_as_its_check_does(swarm_session: DockerSwarm, tmp_path: Path):
    """swarm/check_batch against the real Swarm: for a running stack, a tag mismatch, an unhealthy
    URL, an archived stack and one that does not exist, each answer line has the exit code, the
    report of what runs and the message that `check` of that deployment gives."""
    import json

    swarm = swarm_session
    image = swarm.retag("local/web:batch-a")
    ports = {"batch-up": free_port(), "batch-parked": free_port()}
    manifest = prepare_manifest(EXAMPLES / "web" / "swarm" / "stage", tmp_path / "m", ("services", "web", "image"),
                                image)
    for name, port in ports.items():
        args = contract_args(name, tag="batch-a", manifest_dir=manifest, deployment_config={"port": str(port)})
        assert run_script("swarm", "create", args, env=_stack_env(swarm, image, port)).returncode == 0
        env = _stack_env(swarm, image, port)
        assert wait_for(lambda args=args, env=env: run_script("swarm", "check", args, env=env)).returncode == 0
    parked = contract_args("batch-parked", tag="batch-a", manifest_dir=manifest,
                           deployment_config={"port": str(ports["batch-parked"])})
    assert run_script("swarm", "archive", parked, env=_stack_env(swarm, image)).returncode == 0
    assert wait_for(lambda: run_script("swarm", "archive_check", parked, env=_stack_env(swarm, image))).returncode == 0

    up = ports["batch-up"]
    cases = [  # name, tag, health URL
        ("batch-up", "batch-a", f"http://127.0.0.1:{up}/healthz"),
        ("batch-up", "batch-b", f"http://127.0.0.1:{up}/healthz"),
        ("batch-up", "batch-a", f"http://127.0.0.1:{up}/no-such-page"),
        ("batch-parked", "batch-a", ""),
        ("batch-missing", "batch-a", ""),
    ]
    batch = tmp_path / "batch.jsonl"
    batch.write_text("".join(json.dumps({
        "name": name, "service": "web", "environment": "stage", "tag": tag, "image": image, "health_url": url,
        "health_timeout": "5", "manifest_dir": str(manifest), "application_config": {},
        "deployment_config": {"port": str(ports.get(name, up))}}) + "\n" for name, tag, url in cases))
    done = run_script("swarm", "check_batch", ["--project-name", "p", "--base-domain", "d", "--namespace", "n",
                                               "--batch", str(batch)], env=swarm.env())
    assert done.returncode == 0, done.stderr
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert [a["name"] for a in answers] == [name for name, _, _ in cases]
    for (name, tag, url), answer in zip(cases, answers, strict=True):
        args = contract_args(name, tag=tag, manifest_dir=manifest,
                             deployment_config={"port": str(ports.get(name, up))})
        env = swarm.env({"SAMI_IMAGE": image, "SAMI_HEALTH_TIMEOUT": "5", "SAMI_HEALTH_URL": url})
        alone = run_script("swarm", "check", args, env=env)
        report = json.loads(next(line for line in alone.stdout.splitlines() if line.startswith('{"running"')))
        assert (answer["exit"], answer["running"]) == (alone.returncode, report["running"]), (name, tag, url)
        # What the script itself says (curl's own line about the 404 aside).
        said = [line for line in alone.stderr.splitlines() if line.startswith("sami[swarm/check]: ")]
        assert answer["message"].splitlines() == said, (name, tag, url)
    assert [a["exit"] for a in answers] == [0, 3, 1, 2, 1]
    for name in ports:
        assert run_script("swarm", "cleanup", contract_args(name, tag="batch-a", manifest_dir=manifest),
                          env=swarm.env()).returncode == 0


# An application that can share its port during a start-first update: haproxy (which binds with
# SO_REUSEPORT) answering its TAG, on the host's network. SIGUSR1 is haproxy's soft stop: it stops
# listening and finishes the requests in flight.
ROLLING_STACK = """\
version: "3.8"
services:
  web:
    image: "${IMAGE}"
    entrypoint: ["sh", "-c"]
    command:
      - |
        mkdir -p /run/app
        {
          printf 'defaults\\n  mode http\\n  timeout connect 5s\\n'
          printf '  timeout client 30s\\n  timeout server 30s\\n'
          printf 'frontend web\\n  bind 127.0.0.1:%s\\n' "$$PORT"
          printf '  http-request return status 200 content-type text/plain string %s\\n' "$$TAG"
        } > /run/app/haproxy.cfg
        exec haproxy -db -f /run/app/haproxy.cfg
    environment:
      PORT: "${PORT}"
      TAG: "${TAG}"
    networks: [hostnet]
    stop_signal: SIGUSR1
    stop_grace_period: 10s
    healthcheck:
      test: ["CMD", "curl", "-fsS", "-o", "/dev/null", "--max-time", "2", "http://127.0.0.1:${PORT}/"]
      interval: 1s
      timeout: 3s
      retries: 3
      start_period: 10s
    deploy:
      replicas: 1
      update_config: {order: start-first, failure_action: rollback, monitor: 5s}
      restart_policy: {condition: any, delay: 2s}
networks:
  hostnet:
    external: true
    name: host
"""


@pytest.mark.timeout(900)
def test_start_first_update_drops_no_request(swarm_session: DockerSwarm, router_image: str, tmp_path: Path,
                                            queued_connections_migrate):
    from tests.control_scripts.helpers import RequestLoop, wait_for_one_container

    swarm = swarm_session
    name = "rolling-stage"
    port = free_port()
    manifest = tmp_path / "manifest"
    manifest.mkdir()
    (manifest / "stack.yml").write_text(ROLLING_STACK)

    def run(op: str, tag: str) -> subprocess.CompletedProcess:
        args = contract_args(name, tag=tag, manifest_dir=manifest, deployment_config={"port": str(port)})
        return run_script("swarm", op, args, env=_stack_env(swarm, f"{router_image}:{tag}"))

    def update_and_converge() -> subprocess.CompletedProcess:
        updated = run("update", "2")
        assert updated.returncode == 0, updated.stderr
        converged = wait_for(lambda: run("check", "2"), timeout=180)
        # The old task stops once the new one is healthy; its container goes after the soft stop.
        assert wait_for_one_container(swarm.output, f"{name}_web"), "the old task's container is still there"
        return converged

    try:
        assert run("create", "1").returncode == 0
        assert wait_for(lambda: run("check", "1"), timeout=180).returncode == 0
        with RequestLoop(port) as loop:
            converged = loop.change(update_and_converge)
        assert converged.returncode == 0, converged.stderr
        assert loop.failures() == [], f"{len(loop.failures())} of {len(loop.answers)} requests failed"
        assert loop.answers[0] == "1" and loop.answers[-1] == "2"
        assert set(loop.answers) == {"1", "2"}
        # Start-first: the new task ran beside the old one, which was then stopped (one left).
        tasks = swarm.output("service", "ps", "--format", "{{.Image}} {{.DesiredState}}", f"{name}_web").split("\n")
        assert f"{router_image}:2 Running" in tasks and f"{router_image}:1 Shutdown" in tasks
    finally:
        run("cleanup", "2")
