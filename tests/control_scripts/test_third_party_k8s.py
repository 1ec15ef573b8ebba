"""The built-in third-party charts (control_scripts/charts) for k8s: rendered by the real helm with
the values the scripts pass, validated against Kubernetes 1.31 schemas; what the scripts do
against a cluster (resize guard, kept PVCs, the endpoint) through recording stand-ins."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.control_scripts.helpers import RecordingStandIns, contract_args, run_script
from tests.control_scripts.test_k8s import real_helm  # noqa: F401 - the fixture

SCRIPTS = Path(__file__).resolve().parents[2] / "control_scripts"


def _render(env: dict[str, str], engine: str, size: int, extra: dict[str, str]) -> list[dict]:
    values = ["--set-string", "image.repository=local/" + engine, "--set-string", "image.tag=1",
              "--set", f"size={size}"]
    for key, value in extra.items():
        values += ["--set-string", f"{key}={value}"]
    rendered = subprocess.run([env["HELM"], "template", "cache-stage", str(SCRIPTS / "charts" / engine),
                               "--namespace", "shop", *values], env=env, capture_output=True, text=True, check=False)
    assert rendered.returncode == 0, rendered.stderr
    return [d for d in yaml.safe_load_all(rendered.stdout) if d]


@pytest.mark.parametrize(("engine", "size", "extra", "kinds"), [
    ("redis", 3, {}, ["Service", "StatefulSet"]),
    ("postgres", 1, {"secretEnv.POSTGRES_PASSWORD": "a-long-password"}, ["Secret", "Service", "StatefulSet"]),
])
def test_charts_render_and_validate(real_helm, engine, size, extra, kinds):  # noqa: F811
    import kubernetes_validate

    docs = _render(real_helm, engine, size, extra)
    assert sorted(d["kind"] for d in docs) == kinds
    for doc in docs:
        kubernetes_validate.validate(doc, "1.31.0", strict=True)
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == "cache-stage"
    statefulset = next(d for d in docs if d["kind"] == "StatefulSet")
    assert statefulset["spec"]["replicas"] == size
    assert statefulset["spec"]["volumeClaimTemplates"][0]["metadata"]["labels"] == {
        "app.kubernetes.io/instance": "cache-stage"}
    assert statefulset["spec"]["template"]["spec"]["containers"][0]["image"] == f"local/{engine}:1"


def test_postgres_chart_takes_the_db_user_and_database(real_helm):  # noqa: F811
    """The user is the deployment config db-user (user= is refused by every set); the database defaults to it."""
    def env_of(extra: dict[str, str]) -> dict[str, str]:
        docs = _render(real_helm, "postgres", 1, {"secretEnv.POSTGRES_PASSWORD": "a-long-password", **extra})
        statefulset = next(d for d in docs if d["kind"] == "StatefulSet")
        return {e["name"]: e.get("value") for e in statefulset["spec"]["template"]["spec"]["containers"][0]["env"]}

    assert {k: v for k, v in env_of({}).items() if k in ("POSTGRES_USER", "POSTGRES_DB")} == {
        "POSTGRES_USER": "postgres", "POSTGRES_DB": "postgres"}
    shop = env_of({"db-user": "shop_owner"})
    assert (shop["POSTGRES_USER"], shop["POSTGRES_DB"]) == ("shop_owner", "shop_owner")
    orders = env_of({"db-user": "shop_owner", "database": "orders"})
    assert (orders["POSTGRES_USER"], orders["POSTGRES_DB"]) == ("shop_owner", "orders")


def test_postgres_chart_refuses_more_members_and_a_missing_password(real_helm):  # noqa: F811
    for values in (["--set", "size=2", "--set-string", "secretEnv.POSTGRES_PASSWORD=a-long-password"],
                   ["--set", "size=1"]):
        rendered = subprocess.run([real_helm["HELM"], "template", "db", str(SCRIPTS / "charts" / "postgres"), *values],
                                  env=real_helm, capture_output=True, text=True, check=False)
        assert rendered.returncode != 0
    assert "one member" in subprocess.run(
        [real_helm["HELM"], "template", "db", str(SCRIPTS / "charts" / "postgres"), "--set", "size=2"],
        env=real_helm, capture_output=True, text=True, check=False).stderr


def test_config_check_renders_the_built_in_chart(real_helm, tmp_path):  # noqa: F811
    env = {**real_helm, "SAMI_ENGINE": "redis", "SAMI_SIZE": "2", "SAMI_IMAGE": "local/redis:1"}
    args = contract_args("cache-stage", tag="1", manifest_dir=tmp_path, service="cache")
    checked = run_script("k8s", "config_check", args, env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_scripts_guard_the_size_keep_the_data_and_report_the_endpoint(stand_ins: RecordingStandIns, tmp_path):
    args = contract_args("cache-stage", tag="1", manifest_dir=tmp_path, service="cache", namespace="shop")
    env = stand_ins.env({"SAMI_ENGINE": "redis", "SAMI_SIZE": "1", "SAMI_IMAGE": "local/redis:1"})
    stand_ins.respond([(["get", "statefulset"], "3", 0)])
    refused = run_script("k8s", "update", args, env=env)
    assert refused.returncode == 1 and "from 3 to 1 members refused" in refused.stderr
    assert stand_ins.calls("helm") == []
    forced = run_script("k8s", "update", [*args, "--force"], env=env)
    assert forced.returncode == 0, forced.stderr
    (call,) = stand_ins.calls("helm")
    assert call["argv"][:3] == ["upgrade", "--install", "cache-stage"]
    assert call["argv"][3].endswith("control_scripts/lib/../charts/redis")
    assert "size=1" in call["argv"]
    stand_ins.reset()

    kept = run_script("k8s", "cleanup", args, env=env)
    assert kept.returncode == 0 and "data volumes kept" in kept.stdout
    assert not any("pvc" in c["argv"] for c in stand_ins.calls("kubectl"))
    deleted = run_script("k8s", "cleanup", [*args, "--delete-data"], env=env)
    assert deleted.returncode == 0 and "data volumes deleted" in deleted.stdout
    assert any("pvc" in c["argv"] for c in stand_ins.calls("kubectl"))
    assert run_script("k8s", "info", args, env=env).stdout == "endpoint,cache-stage-0.cache-stage.shop.svc:6379\n"


def test_the_k8s_scripts_pass_db_user_to_the_postgres_chart_and_refuse_user(stand_ins: RecordingStandIns, tmp_path):
    env = stand_ins.env({"SAMI_ENGINE": "postgres", "SAMI_SIZE": "1", "SAMI_IMAGE": "local/postgres:1",
                         "SAMI_SECRET_POSTGRES_PASSWORD": "a-long-password"})
    args = contract_args("db-stage", tag="1", manifest_dir=tmp_path, service="db", namespace="shop",
                         deployment_config={"db-user": "shop_owner"})
    created = run_script("k8s", "create", args, env=env)
    assert created.returncode == 0, created.stderr
    (call,) = stand_ins.calls("helm")
    assert "db-user=shop_owner" in call["argv"]
    refused = run_script("k8s", "create", contract_args("db-stage", tag="1", manifest_dir=tmp_path, service="db",
                                                        namespace="shop", deployment_config={"user": "shop_owner"}),
                         env=env)
    assert refused.returncode == 64 and 'Override key "user" is reserved' in refused.stderr


@pytest.mark.parametrize(("engine", "file", "config", "client"), [
    ("redis", "seed.redis", {}, ["redis-cli", "--no-raw", "-p", "6379"]),
    ("postgres", "seed.sql", {"db-user": "shop_owner"},
     ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-p", "5432", "-U", "shop_owner", "-d", "shop_owner", "-f", "-"]),
])
def test_seed_feeds_the_seed_file_to_member_0s_client_in_its_pod(stand_ins: RecordingStandIns, tmp_path, engine,
                                                                 file, config, client):
    env = stand_ins.env({"SAMI_ENGINE": engine, "SAMI_SIZE": "1", "SAMI_IMAGE": f"local/{engine}:1"})
    args = contract_args("db-qa-7", tag="1", manifest_dir=tmp_path, service="db", namespace="shop",
                         deployment_config=config)
    empty = run_script("k8s", "seed", args, env=env)
    assert empty.returncode == 0 and f"no {file} in the manifest folder: db-qa-7 stays empty" in empty.stdout
    assert stand_ins.calls() == []
    (tmp_path / file).write_text("SET seeded yes\n" if engine == "redis" else "CREATE TABLE t (id int);\n")
    seeded = run_script("k8s", "seed", args, env=env)
    assert seeded.returncode == 0 and f"seeded db-qa-7 from {file}" in seeded.stdout, seeded.stderr
    (call,) = stand_ins.calls("kubectl")
    assert call["argv"] == ["exec", "-i", "--namespace", "shop", "db-qa-7-0", "--", *client]


def test_a_seed_that_fails_says_why(stand_ins: RecordingStandIns, tmp_path):
    (tmp_path / "seed.redis").write_text("SET a 1\nNOSUCH x\n")
    env = stand_ins.env({"SAMI_ENGINE": "redis", "SAMI_SIZE": "1", "SAMI_IMAGE": "local/redis:1"})
    args = contract_args("cache-qa-7", tag="1", manifest_dir=tmp_path, service="cache", namespace="shop")
    stand_ins.respond([(["exec"], "OK\n(error) ERR unknown command 'NOSUCH'\n", 0)])
    failed = run_script("k8s", "seed", args, env=env)
    assert failed.returncode == 1
    assert "1 command(s) failed, the first: ERR unknown command 'NOSUCH'" in failed.stderr
    stand_ins.respond([(["exec"], 'psql:<stdin>:1: ERROR:  relation "nosuch" does not exist\n', 3)])
    env["SAMI_ENGINE"] = "postgres"
    (tmp_path / "seed.sql").write_text("SELECT * FROM nosuch;\n")
    failed = run_script("k8s", "seed", args, env=env)
    assert failed.returncode == 1 and 'relation "nosuch" does not exist' in failed.stderr
    (tmp_path / "app.txt").write_text("x")
    assert run_script("k8s", "seed", contract_args("web-qa-7", tag="1", manifest_dir=tmp_path, service="web",
                                                   namespace="shop"),
                      env={k: v for k, v in env.items() if k != "SAMI_ENGINE"}).returncode == 64
