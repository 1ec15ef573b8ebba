"""Environment files and the rules that span manifests: one case per error, with file:line."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from bot.manifests import Kind, ThirdPartyMode, load_deployments_repo
from bot.manifests.cli import validate
from bot.manifests.loader import load_tree
from bot.manifests.topology import BlueGreen

from .conftest import STACK

APP = """\
version: v1beta
service_name: {service}
type: swarm
image: local/{service}
url: "http://{{name}}.example.test"
files: [stack.yml]
"""

REDIS = """\
version: v1beta
service_name: {service}
type: swarm
kind: third_party
size: 1
endpoint: "{{name}}:6379"
files: [stack.yml]
"""

PAYMENTS = """\
version: v1beta
service_name: {service}
type: swarm
kind: third_party
mode: external
endpoint: [pay.example.com:443]
files: [stack.yml]
"""

TEMPLATES = {"app": APP, "redis": REDIS, "payments": PAYMENTS, "bare": APP.replace("image: local/{service}\n", "")}


def write(root: Path, files: dict[str, str]) -> None:
    """Write a deployments repo: 'svc/env' keys are manifests (template: extra YAML), others plain files."""
    (root / "services").mkdir(parents=True, exist_ok=True)
    for key, text in files.items():
        if key.startswith("environments/"):
            path = root / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text))
            continue
        service, environment = key.split("/")
        template, _, extra = text.partition("\n")
        folder = root / "services" / service / "swarm" / environment
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "stack.yml").write_text(STACK)
        (folder / "sami.yaml").write_text(TEMPLATES[template].format(service=service) + textwrap.dedent(extra))


def manifest(service: str, environment: str) -> str:
    return f"services/{service}/swarm/{environment}/sami.yaml"


STAGE = {"web/stage": "app", "cache/stage": "redis", "pay/stage": "payments"}

# (id, files, targets, [(path, line, field, message part)])
CASES = [
    (
        "mode-only-with-third-party",
        {"web/stage": "app\nmode: internal\n"},
        None,
        [(manifest("web", "stage"), 7, "mode", "only third-party services have a mode")],
    ),
    (
        "size-only-for-internal-on-an-application",
        {"web/stage": "app\nsize: 3\n"},
        None,
        [(manifest("web", "stage"), 7, "size", "only internal third-party services have a size")],
    ),
    (
        "size-only-for-internal-on-an-external-one",
        {"pay/stage": "payments\nsize: 3\n"},
        None,
        [(manifest("pay", "stage"), 8, "size", "external ones are not provisioned")],
    ),
    (
        "external-needs-an-endpoint",
        {"pay/stage": "app\nkind: third_party\nmode: external\n"},
        None,
        [(manifest("pay", "stage"), 8, "mode", "needs endpoint: a host:port list")],
    ),
    (
        "external-endpoint-must-be-host-port",
        {"pay/stage": "app\nkind: third_party\nmode: external\nendpoint: pay.example.com, [::1]:99999\n"},
        None,
        [
            (manifest("pay", "stage"), 9, "endpoint", "'pay.example.com' is not host:port"),
            (manifest("pay", "stage"), 9, "endpoint", "'[::1]:99999' has a port outside 1-65535"),
        ],
    ),
    (
        "internal-endpoint-template-placeholders",
        {"cache/stage": "app\nkind: third_party\nendpoint: '{host}:6379'\n"},
        None,
        [(manifest("cache", "stage"), 8, "endpoint", "unknown placeholder {host}")],
    ),
    (
        "endpoint-only-for-third-party",
        {"web/stage": "app\nendpoint: web:80\n"},
        None,
        [(manifest("web", "stage"), 7, "endpoint", "only third-party services have an endpoint")],
    ),
    (
        "check-only-for-external",
        {"cache/stage": "redis\ncheck: {type: tcp}\n"},
        None,
        [(manifest("cache", "stage"), 8, "check", "only external third-party services have a check")],
    ),
    (
        "http-check-needs-a-path",
        {"pay/stage": "payments\ncheck: {type: http}\n"},
        None,
        [(manifest("pay", "stage"), 8, "check", "an http check needs path")],
    ),
    (
        "seed-only-for-internal",
        {"web/stage": "app\nseed: true\n"},
        None,
        [(manifest("web", "stage"), 7, "seed", "only internal third-party services are seeded")],
    ),
    (
        "engine-only-for-internal",
        {"pay/stage": "payments\nengine: redis\n"},
        None,
        [(manifest("pay", "stage"), 8, "engine", "only internal third-party services are provisioned")],
    ),
    (
        "engine-needs-an-image",
        {"cache/stage": "bare\nkind: third_party\nengine: redis\n"},
        None,
        [(manifest("cache", "stage"), 7, "engine", "needs image")],
    ),
    (
        "engine-and-control-scripts-exclude-each-other",
        {"cache/stage": "redis\nengine: redis\ncontrol_scripts: services\n"},
        None,
        [(manifest("cache", "stage"), 8, "engine", "exclude each other")],
    ),
    (
        "depends-on-itself",
        {"web/stage": "app\ndepends_on: [web]\n"},
        None,
        [(manifest("web", "stage"), 7, "depends_on[0]", "cannot depend on itself")],
    ),
    (
        "depends-on-an-unknown-service",
        {"web/stage": "app\ndepends_on: [cache, nosuch]\n", "cache/stage": "redis"},
        None,
        [(manifest("web", "stage"), 7, "depends_on[1]", "unknown service 'nosuch'")],
    ),
    (
        "depends-on-a-service-without-a-manifest-for-the-environment",
        {"web/stage": "app\ndepends_on: [cache]\n", "cache/production": "redis"},
        None,
        [(manifest("web", "stage"), 7, "depends_on[0]",
          "'cache' is not a component of environment 'stage': it has no manifest for it "
          "(it has services/cache/.../production)")],
    ),
    (
        "depends-on-a-service-the-environment-file-leaves-out",
        {**STAGE, "web/stage": "app\ndepends_on:\n  - cache\n",
         "environments/stage.yaml": "version: v1beta\ncomponents: [web, pay]\n"},
        None,
        [(manifest("web", "stage"), 8, "depends_on[0]",
          "'cache' is not a component of environment 'stage' (environments/stage.yaml does not list it)")],
    ),
    (
        "a-cycle-names-the-files-on-it",
        {"web/stage": "app\ndepends_on: [api]\n", "api/stage": "app\ndepends_on: [web]\n"},
        None,
        [
            (manifest("api", "stage"), 7, "depends_on[0]",
             "dependency cycle in environment 'stage': api -> web -> api (files: services/api/swarm/stage/sami.yaml, "
             "services/web/swarm/stage/sami.yaml)"),
            (manifest("web", "stage"), 7, "depends_on[0]", "dependency cycle in environment 'stage': api -> web"),
        ],
    ),
    (
        "a-reference-implies-a-dependency-and-may-close-a-cycle",
        {"web/stage": "app\noverrides:\n  app:\n    API: ${api.url}\n", "api/stage": "app\ndepends_on: [web]\n"},
        None,
        [
            (manifest("api", "stage"), 7, "depends_on[0]", "dependency cycle in environment 'stage'"),
            (manifest("web", "stage"), 9, "overrides.app.API", "dependency cycle in environment 'stage'"),
        ],
    ),
    (
        "a-reference-to-a-service-missing-from-the-environment",
        {"web/stage": "app\noverrides:\n  app:\n    REDIS: redis://${cache.endpoint}/0\n",
         "cache/production": "redis"},
        None,
        [(manifest("web", "stage"), 9, "overrides.app.REDIS", "${cache.endpoint} names 'cache', which is not a "
                                                             "component of environment 'stage'")],
    ),
    (
        "a-reference-to-an-unknown-service",
        {"web/stage": "app\noverrides:\n  deployment:\n    REDIS: ${nosuch.endpoint}\n"},
        None,
        [(manifest("web", "stage"), 9, "overrides.deployment.REDIS", "names an unknown service 'nosuch'")],
    ),
    (
        "a-reference-to-an-output-the-service-does-not-record",
        {"web/stage": "app\noverrides:\n  app:\n    REDIS: ${cache.url}\n", "cache/stage": "redis"},
        None,
        [(manifest("web", "stage"), 9, "overrides.app.REDIS",
          "${cache.url}: services/cache/swarm/stage/sami.yaml records no 'url' (it records: endpoint, host, port)")],
    ),
    (
        "environment-file-unknown-component",
        {**STAGE, "environments/stage.yaml": "version: v1beta\ncomponents:\n  - web\n  - nosuch\n"},
        None,
        [("environments/stage.yaml", 4, "components[1]", "unknown service 'nosuch'")],
    ),
    (
        "environment-file-component-without-a-manifest-for-it",
        {**STAGE, "api/production": "app", "environments/stage.yaml": "version: v1beta\ncomponents: [web, api]\n"},
        None,
        [("environments/stage.yaml", 2, "components[1]", "'api' has no manifest for environment 'stage' "
                                                         "(it has: production)")],
    ),
    (
        "environment-file-component-whose-manifest-has-errors",
        {**STAGE, "web/stage": "app\nzigzag: 1\n", "environments/stage.yaml": "version: v1beta\ncomponents: [web]\n"},
        None,
        [("environments/stage.yaml", 2, "components[0]", "the manifest of 'web', services/web/swarm/stage/sami.yaml, "
                                                         "has errors"),
         (manifest("web", "stage"), 7, "zigzag", "unknown key 'zigzag'")],
    ),
    (
        "environment-file-reference-to-a-missing-output",
        {**STAGE, "environments/stage.yaml": "version: v1beta\noverrides:\n  app:\n    PAY: https://${pay.url}\n"},
        None,
        [("environments/stage.yaml", 4, "overrides.app.PAY", "records no 'url'")],
    ),
    (
        "environment-file-reference-to-a-service-not-in-it",
        {**STAGE, "environments/stage.yaml": "version: v1beta\ncomponents: [web]\noverrides:\n  app:\n"
                                             "    PAY: ${pay.endpoint}\n"},
        None,
        [("environments/stage.yaml", 5, "overrides.app.PAY", "which is not a component of environment 'stage'")],
    ),
    (
        "environment-file-unknown-target",
        {**STAGE, "environments/stage.yaml": "version: v1beta\ntarget: swarm-c\n"},
        ["default", "swarm-b"],
        [("environments/stage.yaml", 2, "target", "unknown target 'swarm-c' (known: default, swarm-b)")],
    ),
    (
        "preview-of-only-on-pull-request",
        {**STAGE, "environments/stage.yaml": "version: v1beta\npreview_of: production\n"},
        None,
        [("environments/stage.yaml", 2, "preview_of", "only the pull_request environment can be a preview")],
    ),
    (
        "preview-of-names-an-existing-environment",
        {**STAGE, "web/pull_request": "app", "environments/pull_request.yaml": "version: v1beta\npreview_of: qa\n"},
        None,
        [("environments/pull_request.yaml", 2, "preview_of", "names 'qa', which has no file and no manifest")],
    ),
    (
        "environment-file-schema-error",
        {**STAGE, "environments/stage.yaml": "version: v1beta\ncomponent: [web]\n"},
        None,
        [("environments/stage.yaml", 2, "component", "unknown key 'component'; did you mean 'components'?")],
    ),
    (
        "environment-file-bad-name",
        {**STAGE, "environments/Stage.yaml": "version: v1beta\n"},
        None,
        [("environments/Stage.yaml", 1, "", "environment 'Stage' is not a valid environment name")],
    ),
    (
        "environment-file-twice",
        {**STAGE, "environments/stage.yaml": "version: v1beta\n", "environments/stage.yml": "version: v1beta\n"},
        None,
        [
            ("environments/stage.yaml", 1, "", "has more than one file (also environments/stage.yml)"),
            ("environments/stage.yml", 1, "", "has more than one file (also environments/stage.yaml)"),
        ],
    ),
    (
        "environment-file-without-components",
        {**STAGE, "environments/qa.yaml": "version: v1beta\n"},
        None,
        [("environments/qa.yaml", 1, "", "environment 'qa' has no components")],
    ),
    (
        "environment-file-empty",
        {**STAGE, "environments/qa.yaml": ""},
        None,
        [("environments/qa.yaml", 1, "", "is empty")],
    ),
    (
        "blue-green-entry-not-a-component",
        {**STAGE, "environments/stage.yaml": "version: v1beta\ncomponents: [web]\nblue_green:\n  entry: api\n"},
        None,
        [("environments/stage.yaml", 4, "blue_green.entry", "'api' is not a component of environment 'stage' "
                                                            "(its components: web)")],
    ),
    (
        "blue-green-keep-previous-not-a-duration",
        {**STAGE, "environments/stage.yaml": "version: v1beta\nblue_green:\n  entry: web\n  keep_previous: 1 day\n"},
        None,
        [("environments/stage.yaml", 4, "blue_green.keep_previous", "")],
    ),
    (
        "blue-green-approver-not-a-login",
        {**STAGE, "environments/stage.yaml": "version: v1beta\nblue_green:\n  entry: web\n"
                                             "  release_approvers: [alice, \"bob smith\"]\n"},
        None,
        [("environments/stage.yaml", 4, "blue_green.release_approvers[1]", "")],
    ),
    (
        "blue-green-team-without-a-slug",
        {**STAGE, "environments/stage.yaml": "version: v1beta\nblue_green:\n  entry: web\n"
                                             "  release_approvers: [alice, \"team:acme\"]\n"},
        None,
        [("environments/stage.yaml", 4, "blue_green.release_approvers[1]",
          "use a GitHub login, a GitHub team as team:<org>/<team slug>, or an API token as token:<name>")],
    ),
    (
        "blue-green-team-named-not-by-its-slug",
        {**STAGE, "environments/stage.yaml": "version: v1beta\nblue_green:\n  entry: web\n"
                                             "  release_approvers:\n    - alice\n    - team:acme/Release-Managers\n"},
        None,
        [("environments/stage.yaml", 6, "blue_green.release_approvers[1]",
          "'team:acme/Release-Managers': GitHub's team names here are the team's slug, in lowercase as in its URL "
          "(team:acme/release-managers)")],
    ),
    (
        "blue-green-approver-twice",
        {**STAGE, "environments/stage.yaml": "version: v1beta\nblue_green:\n  entry: web\n"
                                             "  release_approvers:\n    - alice\n    - team:acme/ops\n    - Alice\n"},
        None,
        [("environments/stage.yaml", 7, "blue_green.release_approvers[2]",
          "'Alice' is listed already (release_approvers[0])")],
    ),
    (
        "blue-green-without-entry",
        {**STAGE, "environments/stage.yaml": "version: v1beta\nblue_green: {keep_previous: 24h}\n"},
        None,
        [("environments/stage.yaml", 2, "blue_green", "entry")],
    ),
    (
        "blue-green-colour-overrides-of-no-component",
        {**STAGE, "environments/stage.yaml": "version: v1beta\ncomponents: [web]\nblue_green:\n  entry: web\n"
                                             "  colours:\n    blue: {web: {port: 18101}}\n"
                                             "    green:\n      api: {port: 18102}\n"},
        None,
        [("environments/stage.yaml", 8, "blue_green.colours.green.api",
          "blue_green.colours.green: 'api' is not a component of environment 'stage'")],
    ),
    (
        "blue-green-colour-not-blue-or-green",
        {**STAGE, "environments/stage.yaml": "version: v1beta\nblue_green:\n  entry: web\n"
                                             "  colours:\n    red: {web: {port: 18101}}\n"},
        None,
        [("environments/stage.yaml", 5, "blue_green.colours.red",
          "unknown key 'red' in blue_green.colours (allowed: blue, green)")],
    ),
    (
        "manifest-blue-green-beside-an-environment-file",
        {**STAGE, "web/stage": "app\nblue_green: {keep_previous: 1h}\n",
         "environments/stage.yaml": "version: v1beta\n"},
        None,
        [(manifest("web", "stage"), 7, "blue_green",
          "blue_green: environment 'stage' has a file (environments/stage.yaml): say blue_green there")],
    ),
    (
        "manifest-blue-green-twice-in-one-environment",
        {"web/stage": "app\nblue_green: {}\n", "api/stage": "app\nblue_green: {}\n"},
        None,
        [(manifest(service, "stage"), 7, "blue_green", "more than one manifest of environment 'stage' says it "
          f"({manifest('api', 'stage')}, {manifest('web', 'stage')})") for service in ("api", "web")],
    ),
    (
        "manifest-blue-green-of-pull-requests",
        {"web/pull_request": "app\nblue_green: {}\n"},
        None,
        [(manifest("web", "pull_request"), 7, "blue_green", "the pull_request environment is not released")],
    ),
    (
        "blue-green-names-too-long",
        {"a-very-long-service-name-for-this-check/production-europe-west": "app",
         "environments/production-europe-west.yaml": "version: v1beta\nblue_green:\n"
                                                     "  entry: a-very-long-service-name-for-this-check\n"},
        None,
        [("environments/production-europe-west.yaml", 3, "blue_green", "the colours add -blue and -green")],
    ),
    (
        "blue-green-not-for-pull-requests",
        {**STAGE, "web/pull_request": "app",
         "environments/pull_request.yaml": "version: v1beta\nblue_green: {entry: web}\n"},
        None,
        [("environments/pull_request.yaml", 2, "blue_green", "the pull_request environment is not released")],
    ),
]


@pytest.mark.parametrize(("files", "targets", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_rule_reports_its_error(tmp_path: Path, files, targets, expected) -> None:
    root = tmp_path / "deployments"
    write(root, files)
    repo = load_deployments_repo(root, targets=targets)
    got = [(e.path, e.line, e.field, e.message) for e in repo.errors]
    assert len(got) == len(expected), "\n".join(str(e) for e in repo.errors)
    left = list(repo.errors)
    for path, line, field, part in expected:
        match = [e for e in left if (e.path, e.line, e.field) == (path, line, field) and part in e.message]
        assert match, f"no {path}:{line} {field}: ...{part}... in:\n" + "\n".join(str(e) for e in left)
        left.remove(match[0])


def test_every_new_error_has_a_case() -> None:
    assert len(CASES) >= 30


def test_an_environment_file_becomes_a_topology(tmp_path: Path) -> None:
    root = tmp_path / "deployments"
    write(root, {
        **STAGE,
        "web/stage": "app\ndepends_on: [cache]\n",
        "environments/stage.yaml": """\
            version: v1beta
            target: swarm-b
            components: [cache, pay, web]
            overrides:
              app:
                REDIS_URL: redis://${cache.endpoint}/0
                RETRIES: 03
            """,
    })
    repo = load_deployments_repo(root, targets=["default", "swarm-b"])
    assert repo.ok, [str(e) for e in repo.errors]
    stage = repo.topology("stage")
    assert stage is not None and not stage.implicit
    assert stage.components == ("cache", "pay", "web")
    assert stage.target == "swarm-b"
    assert dict(stage.overrides) == {"REDIS_URL": "redis://${cache.endpoint}/0", "RETRIES": "03"}
    assert stage.path == "environments/stage.yaml"
    cache, pay, web = repo.find("cache", "stage"), repo.find("pay", "stage"), repo.find("web", "stage")
    assert cache.kind is Kind.THIRD_PARTY and cache.mode is ThirdPartyMode.INTERNAL and cache.size == 1
    assert cache.endpoint == "{name}:6379" and cache.outputs == ("endpoint", "host", "port")
    assert pay.mode is ThirdPartyMode.EXTERNAL and pay.size is None and pay.endpoint == "pay.example.com:443"
    assert web.kind is Kind.APPLICATION and web.depends_on == ("cache",) and web.outputs == ("url",)


def test_blue_green_becomes_part_of_the_topology(tmp_path: Path) -> None:
    root = tmp_path / "deployments"
    write(root, {**STAGE, "environments/stage.yaml": """\
        version: v1beta
        blue_green:
          entry: web
          keep_previous: 2h
          release_approvers: [alice, "token:release-manager", "team:acme/release-managers"]
        """})
    repo = load_deployments_repo(root)
    assert repo.ok, [str(e) for e in repo.errors]
    assert repo.topology("stage").blue_green == BlueGreen("web", 7200, ("alice", "token:release-manager",
                                                                         "team:acme/release-managers"))
    write(root, {"environments/stage.yaml": "version: v1beta\nblue_green: {entry: web}\n"})
    assert load_deployments_repo(root).topology("stage").blue_green == BlueGreen("web", 24 * 3600, ())


def test_a_file_without_components_takes_every_service_of_the_environment(tmp_path: Path) -> None:
    root = tmp_path / "deployments"
    write(root, {**STAGE, "api/production": "app", "environments/stage.yaml": "version: v1beta\n"})
    repo = load_deployments_repo(root)
    assert repo.ok, [str(e) for e in repo.errors]
    assert repo.topology("stage").components == ("cache", "pay", "web")
    assert repo.topology("production").implicit


def test_an_invalid_environment_has_no_topology(tmp_path: Path) -> None:
    root = tmp_path / "deployments"
    write(root, {**STAGE, "web/stage": "app\ndepends_on: [api]\n", "api/stage": "app\ndepends_on: [web]\n",
                 "web/production": "app", "environments/qa.yaml": "version: v1beta\ntarget: nowhere\n"})
    repo = load_deployments_repo(root, targets=["default"])
    assert repo.topology("stage") is None and repo.topology("qa") is None
    assert {"stage", "qa"} <= repo.invalid_environments
    assert repo.topology("production").components == ("web",)
    # A single deployment of a manifest in an invalid environment still works.
    assert repo.find("web", "stage") is not None


def test_targets_are_not_checked_without_settings(tmp_path: Path) -> None:
    root = tmp_path / "deployments"
    write(root, {**STAGE, "environments/stage.yaml": "version: v1beta\ntarget: anything\n"})
    assert load_deployments_repo(root).ok
    assert not load_deployments_repo(root, targets=["default"]).ok


def test_a_preview_takes_the_components_of_the_environment_it_copies(tmp_path: Path) -> None:
    root = tmp_path / "deployments"
    write(root, {**STAGE, "web/pull_request": "app\ndepends_on: [cache]\n",
                 "environments/pull_request.yaml": "version: v1beta\npreview_of: stage\n"})
    repo = load_deployments_repo(root)
    assert repo.ok, [str(e) for e in repo.errors]
    preview = repo.topology("pull_request")
    assert preview.preview_of == "stage" and preview.components == ("cache", "pay", "web")


def test_the_git_source_sees_environment_files(tmp_path: Path) -> None:
    root = tmp_path / "deployments"
    write(root, {**STAGE, "environments/stage.yaml": "version: v1beta\ntarget: swarm-b\ncomponents: [web]\n"})
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.test"]
    subprocess.run([*git, "init", "-q", "-b", "main"], cwd=root, check=True)
    subprocess.run([*git, "add", "."], cwd=root, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "stage"], cwd=root, check=True)
    repo = load_deployments_repo(root, ref="main", cache_dir=tmp_path / "cache", targets=["swarm-b"])
    assert repo.ok and repo.sha is not None
    assert repo.topology("stage").components == ("web",)
    # The known targets are part of the memo's key: a different set is judged again.
    again = load_deployments_repo(root, ref=repo.sha, cache_dir=tmp_path / "cache", targets=["default"])
    assert [e.field for e in again.errors] == ["target"]


def test_many_workers_give_the_same_result(tmp_path: Path) -> None:
    root = tmp_path / "deployments"
    files = {**STAGE, "web/stage": "app\ndepends_on: [cache]\noverrides:\n  app:\n    R: ${cache.host}\n"}
    for index in range(6):
        files[f"api{index}/stage"] = "app\ndepends_on: [web]\n" if index else "app\ndepends_on: [nosuch]\n"
    write(root, files)
    one = load_tree(root, workers=1)
    two = load_tree(root, workers=2)
    assert one.errors == two.errors and len(one.errors) == 1
    assert one.manifests == two.manifests
    assert two.find("web", "stage").depends_on == ("cache",)


def test_validate_reports_environment_files(tmp_path: Path) -> None:
    root = tmp_path / "deployments"
    write(root, {**STAGE, "environments/stage.yaml": "version: v1beta\ncomponents: [web, cache]\n"})
    text = CliRunner().invoke(validate, [str(root)])
    assert text.exit_code == 0, text.output
    assert text.output == "3 manifests and 1 environment file valid\n"
    report = json.loads(CliRunner().invoke(validate, [str(root), "--format", "json"]).output)
    assert report["environments"] == [{"name": "stage", "path": "environments/stage.yaml",
                                       "components": ["web", "cache"], "target": None, "overrides": {},
                                       "preview_of": None}]
    (root / "environments" / "qa.yaml").write_text("version: v1beta\ncomponents: [nosuch]\n")
    broken = CliRunner().invoke(validate, [str(root)])
    assert broken.exit_code == 1
    assert broken.output.splitlines() == [
        "environments/qa.yaml:2:14: components[0]: unknown service 'nosuch' (no manifest in services/ has that name)",
        "1 problem found; 3 valid manifests, 1 valid environment file",
    ]


def test_validate_output_is_unchanged_without_environment_files(tmp_path: Path) -> None:
    root = tmp_path / "deployments"
    write(root, STAGE)
    assert CliRunner().invoke(validate, [str(root)]).output == "3 manifests valid\n"
    report = json.loads(CliRunner().invoke(validate, [str(root), "--format", "json"]).output)
    assert list(report) == ["ok", "sha", "manifests", "errors"]


def test_validate_json_of_applications_keeps_its_keys(tmp_path: Path) -> None:
    root = tmp_path / "deployments"
    write(root, STAGE)
    report = json.loads(CliRunner().invoke(validate, [str(root), "--format", "json"]).output)
    by_name = {m["service_name"]: m for m in report["manifests"]}
    assert "engine" not in by_name["web"] and "seed" not in by_name["web"]
    assert by_name["cache"]["seed"] is False and by_name["pay"]["check"] is None


def test_validate_checks_target_names_with_a_targets_file(tmp_path: Path) -> None:
    root = tmp_path / "deployments"
    write(root, {**STAGE, "environments/stage.yaml": "version: v1beta\ntarget: swarm-b\n"})
    targets = tmp_path / "targets.yaml"
    targets.write_text("targets:\n  swarm-a:\n    docker_host: tcp://10.0.0.1:2376\n")
    assert CliRunner().invoke(validate, [str(root)]).exit_code == 0
    result = CliRunner().invoke(validate, [str(root), "--targets", str(targets)])
    assert result.exit_code == 1
    assert "environments/stage.yaml:2:9: target: unknown target 'swarm-b' (known: default, swarm-a)" in result.output
    targets.write_text("targets:\n  swarm-b:\n    docker_host: tcp://10.0.0.2:2376\n")
    assert CliRunner().invoke(validate, [str(root), "--targets", str(targets)]).exit_code == 0
    targets.write_text("targets: [\n")
    assert CliRunner().invoke(validate, [str(root), "--targets", str(targets)]).exit_code == 2


def test_a_manifest_releases_its_environment_blue_green_when_it_has_no_file(tmp_path: Path) -> None:
    root = tmp_path / "deployments"
    write(root, {"web/production": "app\nblue_green:\n  keep_previous: 2h\n  release_approvers: [alice]\n"
                                   "  colours: {blue: {port: 18182}, green: {port: 18192}}\n",
                 "api/production": "app", "web/stage": "app"})
    repo = load_deployments_repo(root)
    assert repo.errors == ()
    topology = repo.topology("production")
    assert topology.components == ("api", "web") and topology.path is None
    assert topology.blue_green.entry == "web" and topology.blue_green.keep_previous == 7200
    assert topology.blue_green.approvers == ("alice",)
    assert topology.blue_green.overrides_of("green", "web") == {"port": "18192"}
    assert topology.blue_green.overrides_of("green", "api") == {}
    assert repo.topology("stage").blue_green is None
