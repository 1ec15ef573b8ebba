"""Targets: the targets file in the settings, and what control scripts get for the target they run on."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest

from bot.core.config import ConfigError, load_settings, settings_from_mapping
from bot.core.targets import DEFAULT_TARGET, SecretRef
from bot.manifests import Manifest, load_deployments_repo
from workers.executor import Executor, ExecutorError, Target
from workers.jobs import make_target

TARGETS = """\
default: swarm-a
targets:
  swarm-a:
    docker_host: unix://{sock_a}
  swarm-b:
    docker_host: unix://{sock_b}
    env:
      REGISTRY_PASSWORD: {{from_env: SWARM_B_PASSWORD}}
  eu:
    kubeconfig: {kubeconfig}
    kube_context: eu-prod
    kube_namespace: shop
  edge:
    static_root: {static}
    env:
      EDGE_KEY: {{from_file: {key_file}}}
"""


def listening_socket(path: Path) -> socket.socket:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(4)
    return server


@pytest.fixture
def targets_file(tmp_path: Path) -> Path:
    (tmp_path / "kubeconfig").write_text("apiVersion: v1\nkind: Config\n")
    (tmp_path / "sites").mkdir()
    (tmp_path / "edge-key").write_text("edge-secret-value\n")
    path = tmp_path / "targets.yaml"
    path.write_text(TARGETS.format(sock_a=tmp_path / "a.sock", sock_b=tmp_path / "b.sock",
                                   kubeconfig=tmp_path / "kubeconfig", static=tmp_path / "sites",
                                   key_file=tmp_path / "edge-key"))
    return path


def manifest(tmp_path: Path, environment: str = "stage") -> Manifest:
    return Manifest(
        path=f"services/web/swarm/{environment}/sami.yaml", directory=f"services/web/swarm/{environment}",
        version="v1beta", service_name="web", type="swarm", environment=environment, repository=None,
        image="local/web", url=None, health=None, timeout=None, status_timeout=None, app_overrides={},
        deployment_overrides={}, allowed_app_overrides=(), allowed_deployment_overrides=(), secrets=(),
        pr_deploy="false", deploy_label="sami:deploy", pr_tag="{sha}", pr_forks=False, ttl=None,
        require_checks=False, control_scripts=None, files=(), update_image=None,
    )


def target(tmp_path: Path, runs_on: str | None) -> Target:
    return Target(name="web-stage", service="web", environment="stage", tag="v1", image="local/web:v1",
                  app_overrides={}, deployment_overrides={}, url=None, manifest=manifest(tmp_path),
                  runs_on=runs_on)


def test_without_a_targets_file_the_default_target_is_todays_settings(tmp_path: Path) -> None:
    settings = settings_from_mapping({"instance_dir": str(tmp_path)})
    assert settings.target_names == (DEFAULT_TARGET,)
    default = settings.target(None)
    assert default.name == DEFAULT_TARGET and not default.configured
    assert default.static_root == settings.static_root and default.docker_host is None
    executor = Executor(settings, environ={"DOCKER_HOST": "unix:///run/own.sock", "KUBECONFIG": "/k",
                                           "PATH": "/bin"})
    env = executor.env(target(tmp_path, None), {})
    assert env["DOCKER_HOST"] == "unix:///run/own.sock" and env["KUBECONFIG"] == "/k"
    assert env["SAMI_STATIC_ROOT"] == settings.static_root and env["SAMI_TARGET"] == DEFAULT_TARGET
    argv = executor.argv("create", target(tmp_path, None), Path("/s/create"), Path("/m"))
    assert "--target" not in argv  # scripts written before targets get the argv they know


def test_the_targets_file_is_read_into_the_settings(tmp_path: Path, targets_file: Path) -> None:
    settings = load_settings({"SAMI_TARGETS": str(targets_file), "SAMI_INSTANCE_DIR": str(tmp_path)})
    assert settings.target_names == ("default", "edge", "eu", "swarm-a", "swarm-b")
    assert settings.default_target == "swarm-a" and settings.target(None).name == "swarm-a"
    assert settings.target("swarm-b").env == (("REGISTRY_PASSWORD", SecretRef(env="SWARM_B_PASSWORD")),)
    assert settings.target("default").static_root == settings.static_root
    with pytest.raises(KeyError, match="unknown target 'nowhere'"):
        settings.target("nowhere")
    # JSON is read the same way.
    as_json = tmp_path / "targets.json"
    as_json.write_text(json.dumps({"targets": {"b": {"docker_host": "tcp://10.0.0.2:2376"}}}))
    assert load_settings({"SAMI_TARGETS": str(as_json)}).target("b").docker_host == "tcp://10.0.0.2:2376"


@pytest.mark.parametrize(("text", "problem"), [
    ("targets:\n  b:\n    docker_host: 10.0.0.2\n", "expected unix://, tcp://"),
    ("targets:\n  b:\n    env:\n      TOKEN: hunter2-inline\n", "values are never written in the targets file"),
    ("targets:\n  b:\n    env:\n      DOCKER_HOST: {from_env: X}\n", "set by Sami itself"),
    ("targets:\n  B:\n    static_root: /srv\n", "a target name is lowercase"),
    ("targets:\n  b:\n    static_root: srv\n", "must be an absolute path"),
    ("targets:\n  b:\n    colour: blue\n", "unknown key 'colour'"),
    ("default: c\ntargets:\n  b:\n    static_root: /srv\n", "'c' is not one of the targets"),
    ("targets: [\n", "is not valid YAML or JSON"),
])
def test_a_bad_targets_file_names_the_variable_and_the_problem(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "targets.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings({"SAMI_TARGETS": str(path)})
    assert caught.value.variable == "SAMI_TARGETS"
    assert problem in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_scripts_get_the_target_in_their_environment_and_argv(tmp_path: Path, targets_file: Path) -> None:
    settings = load_settings({"SAMI_TARGETS": str(targets_file), "SAMI_INSTANCE_DIR": str(tmp_path)})
    environ = {"DOCKER_HOST": "unix:///run/own.sock", "DOCKER_CONTEXT": "mine", "KUBECONFIG": "/own",
               "SWARM_B_PASSWORD": "registry-password", "PATH": "/bin"}
    executor = Executor(settings, environ=environ)
    swarm_b = target(tmp_path, "swarm-b")
    env = executor.env(swarm_b, {})
    assert env["DOCKER_HOST"] == f"unix://{tmp_path / 'b.sock'}" and "DOCKER_CONTEXT" not in env
    assert env["REGISTRY_PASSWORD"] == "registry-password" and env["SAMI_TARGET"] == "swarm-b"
    argv = executor.argv("create", swarm_b, Path("/s/create"), Path("/m"))
    assert argv[-2:] == ["--target", "swarm-b"] and "registry-password" not in " ".join(argv)

    eu = target(tmp_path, "eu")
    env = executor.env(eu, {})
    assert env["KUBECONFIG"] == str(tmp_path / "kubeconfig") and env["SAMI_KUBE_CONTEXT"] == "eu-prod"
    argv = executor.argv("create", eu, Path("/s/create"), Path("/m"))
    assert argv[argv.index("--namespace") + 1] == "shop"

    edge = target(tmp_path, "edge")
    env = executor.env(edge, {})
    assert env["SAMI_STATIC_ROOT"] == str(tmp_path / "sites") and env["EDGE_KEY"] == "edge-secret-value"
    # The environment's own variable (swarm-a is the default here).
    assert executor.env(target(tmp_path, None), {})["SAMI_TARGET"] == "swarm-a"


def test_a_missing_secret_reference_fails_naming_the_reference_not_a_value(tmp_path: Path, targets_file: Path):
    settings = load_settings({"SAMI_TARGETS": str(targets_file), "SAMI_INSTANCE_DIR": str(tmp_path)})
    with pytest.raises(ExecutorError, match=r"target 'swarm-b': REGISTRY_PASSWORD comes from \$SWARM_B_PASSWORD"):
        Executor(settings, environ={}).env(target(tmp_path, "swarm-b"), {})


def scripts(tmp_path: Path) -> Path:
    """A deployments repo whose web service runs a create script that prints what it got."""
    root = tmp_path / "deployments"
    folder = root / "services" / "web" / "swarm" / "stage"
    folder.mkdir(parents=True)
    (folder / "sami.yaml").write_text("version: v1beta\nservice_name: web\ntype: swarm\ncontrol_scripts: scripts\n")
    (root / "scripts").mkdir()
    create = root / "scripts" / "create"
    create.write_text('#!/bin/sh\necho "target=$SAMI_TARGET host=$DOCKER_HOST args=$*"\n')
    create.chmod(0o755)
    return root


def test_an_unreachable_target_fails_the_run_naming_it(tmp_path: Path, targets_file: Path) -> None:
    settings = load_settings({"SAMI_TARGETS": str(targets_file), "SAMI_INSTANCE_DIR": str(tmp_path)})
    repo = load_deployments_repo(scripts(tmp_path), targets=settings.target_names)
    assert repo.ok, repo.errors
    executor = Executor(settings, environ={"SWARM_B_PASSWORD": "registry-password", "PATH": "/bin:/usr/bin"})
    web = target(tmp_path, "swarm-a")
    web = Target(**{**web.__dict__, "manifest": repo.find("web", "stage")})
    with pytest.raises(ExecutorError, match=r"target 'swarm-a' cannot be reached \(Docker at unix://.*a\.sock"):
        executor.run("create", repo, web, tmp_path)
    server = listening_socket(tmp_path / "a.sock")
    try:
        result = executor.run("create", repo, web, tmp_path, timeout=30)
    finally:
        server.close()
    assert result.ok, result.stderr
    assert f"target=swarm-a host=unix://{tmp_path / 'a.sock'}" in result.stdout
    assert "--target swarm-a" in result.stdout


def test_the_environment_file_chooses_the_target(tmp_path: Path, targets_file: Path) -> None:
    settings = load_settings({"SAMI_TARGETS": str(targets_file), "SAMI_INSTANCE_DIR": str(tmp_path)})
    root = scripts(tmp_path)
    (root / "environments").mkdir()
    (root / "environments" / "stage.yaml").write_text("version: v1beta\ntarget: swarm-b\n")
    repo = load_deployments_repo(root, targets=settings.target_names)
    assert repo.ok, repo.errors
    assert repo.target_of("stage") == "swarm-b" and repo.target_of("production") is None
    (root / "environments" / "stage.yaml").write_text("version: v1beta\ntarget: [swarm-b]\n")
    broken = load_deployments_repo(root, targets=settings.target_names)
    with pytest.raises(ValueError, match=r"environments/stage\.yaml has errors"):
        broken.target_of("stage")


def test_a_colour_or_a_clone_runs_on_the_target_of_the_environment_it_is_deployed_like(
        tmp_path: Path, targets_file: Path) -> None:
    settings = load_settings({"SAMI_TARGETS": str(targets_file), "SAMI_INSTANCE_DIR": str(tmp_path)})
    root = scripts(tmp_path)
    (root / "environments").mkdir()
    (root / "environments" / "stage.yaml").write_text("version: v1beta\ntarget: swarm-b\n")
    repo = load_deployments_repo(root, targets=settings.target_names)
    ctx = SimpleNamespace(settings=settings)
    web = repo.find("web", "stage")
    colour = make_target(ctx, "web-stage-blue", "web", "stage-blue", None, web,
                         {"tag": "v1", "manifest_environment": "stage"}, repo)
    assert colour.runs_on == "swarm-b"
    assert make_target(ctx, "web-stage", "web", "stage", None, web, {"tag": "v1"}, repo).runs_on == "swarm-b"
    assert make_target(ctx, "web-other", "web", "other", None, web, {"tag": "v1"}, repo).runs_on is None


@pytest.mark.swarm
def test_two_dockerds_one_environment_on_each(tmp_path: Path) -> None:
    """Two private dockerd's as two targets: each environment's service lands on its own daemon."""
    from tests.support.docker import start_swarm, stop_swarm, unavailable_reason

    reason = unavailable_reason()
    if reason:
        pytest.skip(f"needs a private dockerd: {reason}")
    first = start_swarm()
    try:
        second = start_swarm()
        try:
            _deploy_on_two(tmp_path, first, second)
        finally:
            stop_swarm(second)
    finally:
        stop_swarm(first)


def _deploy_on_two(tmp_path: Path, first, second) -> None:
    from bot.manifests.loader import load_tree
    from workers.executor import prepare_manifest_dir

    targets = tmp_path / "targets.yaml"
    targets.write_text(f"targets:\n  one:\n    docker_host: {first.host}\n  two:\n    docker_host: {second.host}\n")
    settings = load_settings({"SAMI_TARGETS": str(targets), "SAMI_INSTANCE_DIR": str(tmp_path)})
    root = tmp_path / "deployments"
    for environment in ("stage", "qa"):
        folder = root / "services" / "web" / "swarm" / environment
        folder.mkdir(parents=True)
        (folder / "sami.yaml").write_text("version: v1beta\nservice_name: web\ntype: swarm\nimage: local/busybox\n"
                                          "files: [stack.yml]\noob:\n  update-image:\n    file: stack.yml\n"
                                          "    path: services.web.image\n")
        (folder / "stack.yml").write_text('version: "3.8"\nservices:\n  web:\n    image: local/busybox:1\n'
                                          '    command: ["sleep", "3600"]\n')
    (root / "environments").mkdir()
    (root / "environments" / "stage.yaml").write_text("version: v1beta\ntarget: one\n")
    (root / "environments" / "qa.yaml").write_text("version: v1beta\ntarget: two\n")
    repo = load_tree(root, targets=settings.target_names)
    assert repo.ok, repo.errors
    environ = {"PATH": "/usr/local/bin:/usr/bin:/bin", "DOCKER": first.docker,
               "DOCKER_CONFIG": str(first.root / "client-config")}
    executor = Executor(settings, environ=environ)
    for environment in ("stage", "qa"):
        manifest_ = repo.find("web", environment)
        run_target = Target(name=f"web-{environment}", service="web", environment=environment, tag="1",
                            image="local/busybox:1", app_overrides={}, deployment_overrides={}, url=None,
                            manifest=manifest_, runs_on=repo.target_of(environment))
        work = tmp_path / environment
        work.mkdir()
        manifest_dir = prepare_manifest_dir(repo, manifest_, "local/busybox:1", work)
        result = executor.run("create", repo, run_target, manifest_dir, timeout=300)
        assert result.ok, result.stdout + result.stderr
    on_first = first.output("service", "ls", "--format", "{{.Name}}").split()
    on_second = second.output("service", "ls", "--format", "{{.Name}}").split()
    assert on_first == ["web-stage_web"] and on_second == ["web-qa_web"]


def test_a_built_in_third_party_set_gets_its_scripts_and_size(tmp_path: Path) -> None:
    from bot.manifests.topology import Kind, ThirdPartyMode
    from workers.executor import BUILTIN_SCRIPTS

    settings = settings_from_mapping({"instance_dir": str(tmp_path)})
    executor = Executor(settings, environ={"PATH": "/bin"})
    cache = Manifest(**{**manifest(tmp_path).__dict__, "service_name": "cache", "kind": Kind.THIRD_PARTY,
                        "mode": ThirdPartyMode.INTERNAL, "size": 3, "engine": "redis"})
    repo = load_deployments_repo(scripts(tmp_path))
    assert executor.scripts_dir(repo, cache) == BUILTIN_SCRIPTS / "redis"
    assert executor.has(repo, cache, "info") and executor.has(repo, cache, "cleanup")
    run_target = Target(**{**target(tmp_path, None).__dict__, "manifest": cache})
    assert executor.env(run_target, {})["SAMI_SIZE"] == "3"
    assert "SAMI_SIZE" not in executor.env(target(tmp_path, None), {})
