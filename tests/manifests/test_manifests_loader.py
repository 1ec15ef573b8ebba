"""Loading folders: typed values, tree-wide rules, and hostile input that must not crash."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path

import pytest

from bot.manifests import (
    DeploymentsRepoError,
    Health,
    ImageUpdate,
    ManifestError,
    PrDeploy,
    ServiceType,
    load_deployments_repo,
    parse_duration,
    yamlsafe,
)
from bot.manifests.loader import load_tree
from bot.manifests.parallel import map_chunks

from .conftest import STACK, VALID, write_manifest_dir

FULL = """\
version: v1beta
service_name: web
type: swarm
repository: acme/web
image: ghcr.io/acme/web
url: "https://{name}.{base_domain}"
health:
  path: /healthz
timeout: 90
status_timeout: 12h
pr_deploy: label
deploy_label: preview
ttl: 7d
require_checks: true
control_scripts: scripts/web
files: [stack.yml]
oob:
  update-image:
    file: stack.yml
    path: services.worker.image
overrides:
  app:
    LOG_LEVEL: debug
    WORKERS: 4
    DEBUG: true
    RATIO: 0.5
  deployment:
    replicas: 2
allowed_overrides:
  app: [LOG_LEVEL]
  deployment: [replicas, port]
secrets: [DB_PASSWORD, API_KEY]
"""


def test_full_manifest_becomes_typed_values(repo_dir: Path) -> None:
    write_manifest_dir(repo_dir, "services/web/swarm/pull_request", FULL)
    repo = load_deployments_repo(repo_dir)
    assert repo.ok, [str(e) for e in repo.errors]
    manifest = repo.find("web", "pull_request")
    assert manifest is not None
    assert manifest.path == "services/web/swarm/pull_request/sami.yaml"
    assert manifest.directory == "services/web/swarm/pull_request"
    assert manifest.type is ServiceType.SWARM
    assert manifest.environment == "pull_request"
    assert manifest.health == Health(path="/healthz", timeout=10)
    assert (manifest.timeout, manifest.status_timeout, manifest.ttl) == (90, 43200, 604800)
    assert manifest.pr_deploy is PrDeploy.LABEL
    assert manifest.deploy_label == "preview"
    assert manifest.require_checks is True
    assert manifest.control_scripts == "scripts/web"
    assert dict(manifest.app_overrides) == {
        "LOG_LEVEL": "debug",
        "WORKERS": "4",
        "DEBUG": "true",
        "RATIO": "0.5",
    }
    assert dict(manifest.deployment_overrides) == {"replicas": "2"}
    assert manifest.allowed_deployment_overrides == ("replicas", "port")
    assert manifest.secrets == ("DB_PASSWORD", "API_KEY")
    assert manifest.update_image == ImageUpdate(file="stack.yml", path="services.worker.image")
    assert manifest.deployment_name(pr=12) == "web-pr-12"
    assert manifest.render_url(name="web-pr-12", base_domain="example.test") == ("https://web-pr-12.example.test")
    with pytest.raises(TypeError):
        manifest.app_overrides["LOG_LEVEL"] = "info"  # type: ignore[index]
    copy = pickle.loads(pickle.dumps(manifest))  # noqa: S301 - our own object
    assert copy == manifest and hash(copy) == hash(manifest)


def test_defaults_apply_when_fields_are_absent(add_manifest: Callable[..., Path], repo_dir: Path) -> None:
    add_manifest()
    manifest = load_deployments_repo(repo_dir).find("web", "stage")
    assert manifest is not None
    assert manifest.timeout is None and manifest.status_timeout is None  # the bot's settings apply
    assert manifest.pr_deploy is PrDeploy.OFF and manifest.deploy_label == "sami:deploy"
    assert manifest.ttl is None and manifest.health is None and manifest.repository is None
    assert manifest.require_checks is False and manifest.secrets == ()
    assert manifest.deployment_name() == "web-stage"


@pytest.mark.parametrize(("value", "seconds"), [(45, 45), ("90s", 90), ("30m", 1800), ("12h", 43200), ("7d", 604800)])
def test_parse_duration(value: int | str, seconds: int) -> None:
    assert parse_duration(value) == seconds


def test_find_and_services(add_manifest: Callable[..., Path], repo_dir: Path) -> None:
    add_manifest("web", "swarm", "stage")
    add_manifest("web", "swarm", "production")
    add_manifest("api", "k8s", "stage")
    repo = load_deployments_repo(repo_dir)
    assert repo.ok
    assert list(repo.services()) == ["api", "web"]
    assert [m.environment for m in repo.services()["web"]] == ["production", "stage"]
    assert repo.environments("web") == ("production", "stage")
    assert repo.find("web", "qa") is None
    assert repo.find("api", "stage").type is ServiceType.K8S  # type: ignore[union-attr]


def test_two_manifests_for_one_service_and_environment(add_manifest: Callable[..., Path], repo_dir: Path) -> None:
    add_manifest("web", "swarm", "stage")
    add_manifest("web", "compose", "stage")
    add_manifest("web", "swarm", "production")
    add_manifest("web", "swarm", "production", name="sami.yml")
    repo = load_deployments_repo(repo_dir)
    assert [(e.path, e.line, e.column, e.field) for e in repo.errors] == [
        ("services/web/compose/stage/sami.yaml", 2, 15, "service_name"),
        ("services/web/swarm/production/sami.yaml", 2, 15, "service_name"),
        ("services/web/swarm/production/sami.yml", 2, 15, "service_name"),
        ("services/web/swarm/stage/sami.yaml", 2, 15, "service_name"),
    ]
    assert "also services/web/swarm/stage/sami.yaml" in repo.errors[0].message
    assert "keep exactly one" in repo.errors[0].message
    assert repo.manifests == ()


def test_every_problem_in_a_file_is_reported(repo_dir: Path) -> None:
    text = VALID.format(service="web", type="swarm") + "zigzag: 1\ntimeout: soon\nsecrets: [x]\n"
    write_manifest_dir(repo_dir, "services/web/swarm/stage", text)
    repo = load_deployments_repo(repo_dir)
    assert [(e.line, e.field) for e in repo.errors] == [
        (11, "zigzag"),
        (12, "timeout"),
        (13, "secrets[0]"),
    ]


def test_error_string_has_file_line_and_column() -> None:
    error = ManifestError("services/web/swarm/stage/sami.yaml", 4, 3, "zigzag", "unknown key")
    assert str(error) == "services/web/swarm/stage/sami.yaml:4:3: unknown key"
    assert str(ManifestError("services/x", None, None, "", "no")) == "services/x: no"


def test_missing_services_folder(tmp_path: Path) -> None:
    repo = load_deployments_repo(tmp_path)
    assert not repo.ok
    assert repo.errors[0].path == "services"
    assert "no services/ folder" in repo.errors[0].message


def test_missing_source_raises(tmp_path: Path) -> None:
    with pytest.raises(DeploymentsRepoError, match="no such folder"):
        load_deployments_repo(tmp_path / "nope")


def test_merge_keys_and_anchors_are_supported(repo_dir: Path) -> None:
    text = VALID.format(service="web", type="swarm") + (
        "overrides:\n  app: &defaults\n    LOG_LEVEL: info\n  deployment:\n    <<: *defaults\n    port: 80\n"
    )
    write_manifest_dir(repo_dir, "services/web/swarm/stage", text)
    manifest = load_deployments_repo(repo_dir).find("web", "stage")
    assert manifest is not None
    assert dict(manifest.deployment_overrides) == {"port": "80", "LOG_LEVEL": "info"}


# --- files on disk ----------------------------------------------------------------------


def test_symlinked_manifest_is_refused(repo_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.yaml"
    outside.write_text(VALID.format(service="web", type="swarm"))
    folder = repo_dir / "services/web/swarm/stage"
    folder.mkdir(parents=True)
    (folder / "sami.yaml").symlink_to(outside)
    repo = load_deployments_repo(repo_dir)
    assert [(e.path, e.message) for e in repo.errors] == [
        ("services/web/swarm/stage/sami.yaml", "is a symlink; manifests must be regular files")
    ]


def test_symlinked_file_pointing_outside_the_repo_is_refused(repo_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "secret.yml").write_text(STACK)
    text = VALID.format(service="web", type="swarm").replace("[stack.yml]", "[stack.yml, x.yml]")
    path = write_manifest_dir(repo_dir, "services/web/swarm/stage", text)
    (path.parent / "x.yml").symlink_to(tmp_path / "secret.yml")
    (error,) = load_deployments_repo(repo_dir).errors
    assert (error.line, error.column, error.field) == (6, 20, "files[1]")
    secret = str(tmp_path / "secret.yml")
    assert f"'x.yml' is a symlink to {secret!r}, which leaves the deployments repo" in error.message


def test_symlinked_file_inside_the_repo_is_followed(repo_dir: Path) -> None:
    (repo_dir / "shared").mkdir()
    (repo_dir / "shared/stack.yml").write_text(STACK)
    folder = repo_dir / "services/web/swarm/stage"
    folder.mkdir(parents=True)
    (folder / "sami.yaml").write_text(VALID.format(service="web", type="swarm"))
    (folder / "stack.yml").symlink_to("../../../../shared/stack.yml")
    assert load_deployments_repo(repo_dir).ok


def test_symlinked_service_folder_is_reported(repo_dir: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    write_manifest_dir(elsewhere, "swarm/stage", VALID.format(service="web", type="swarm"))
    (repo_dir / "services/web").symlink_to(elsewhere)
    (error,) = load_deployments_repo(repo_dir).errors
    assert error.path == "services/web"
    assert "symlinked folder" in error.message


def test_control_scripts_symlink_outside_is_refused(repo_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "evil").mkdir()
    (repo_dir / "scripts/evil").symlink_to(tmp_path / "evil")
    text = VALID.format(service="web", type="swarm") + "control_scripts: scripts/evil\n"
    write_manifest_dir(repo_dir, "services/web/swarm/stage", text)
    (error,) = load_deployments_repo(repo_dir).errors
    assert error.field == "control_scripts"
    assert "outside the deployments repo" in error.message


def _write_bytes(repo_dir: Path, data: bytes) -> None:
    folder = repo_dir / "services/web/swarm/stage"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "stack.yml").write_text(STACK)
    (folder / "sami.yaml").write_bytes(data)


@pytest.mark.parametrize(
    ("data", "line", "column", "message"),
    [
        (b"version: v1beta\n\x00\x01\x02", 2, 1, "contains NUL bytes"),
        (b"version: v1beta\nservice_name: w\xe9b\n", 2, 16, "is not valid UTF-8"),
        (b"version: [[[[", 1, 14, "is not valid YAML"),
        (b"a: \x07\n", 1, 4, "is not valid YAML"),
        (b"[" * 100_000, 1, 65, f"is nested more than {yamlsafe.MAX_DEPTH} levels deep"),
        (b"- " * 100_000 + b"x", 1, 129, "is nested more than"),
        # Sami's limit, not the parser's (libyaml from 0.2.6 stops at 1000 levels on its own).
        (b"[" * 1_500, 1, 65, "is nested more than"),
        (b"[" * 1_500 + b"]" * 1_500, 1, 65, "is nested more than"),
        (b"[" * 65 + b"]" * 65, 1, 65, "is nested more than"),
        (b"k: " + b"{a: " * 2_000, 1, 256, "is nested more than"),
        (b"k: v\n" * 3_000 + b"z: " + b"[" * 1_500, 3_001, 67, "is nested more than"),
    ],
    ids=[
        "binary", "latin1", "unclosed", "control-char", "deep-flow", "deep-block",
        "flow-1500", "flow-1500-closed", "flow-65-closed", "deep-mapping", "deep-after-3000-lines",
    ],
)
def test_hostile_bytes_are_reported(repo_dir: Path, data: bytes, line: int, column: int, message: str) -> None:
    _write_bytes(repo_dir, data)
    (error,) = load_deployments_repo(repo_dir).errors
    assert (error.line, error.column) == (line, column), str(error)
    assert message in error.message


def test_sixty_four_levels_are_allowed() -> None:
    document = yamlsafe.load_document("[" * 64 + "x" + "]" * 64)
    assert document.problems == []


def test_oversized_manifest_is_refused(repo_dir: Path) -> None:
    _write_bytes(repo_dir, b"# padding\n" * 30_000)
    (error,) = load_deployments_repo(repo_dir).errors
    assert error.message.startswith("is larger than 256 KiB")


def test_billion_laughs_is_stopped(repo_dir: Path) -> None:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 9):
        refs = ",".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    _write_bytes(repo_dir, ("\n".join(lines) + "\n").encode())
    (error,) = load_deployments_repo(repo_dir).errors
    assert "more than 10000 values once aliases are expanded" in error.message


def test_recursive_alias_is_stopped(repo_dir: Path) -> None:
    _write_bytes(repo_dir, b"a: &a [*a]\n")
    (error,) = load_deployments_repo(repo_dir).errors
    assert "nested more than" in error.message


def test_fifo_named_like_a_manifest_does_not_hang(repo_dir: Path) -> None:
    folder = repo_dir / "services/web/swarm/stage"
    folder.mkdir(parents=True)
    os.mkfifo(folder / "sami.yaml")
    (error,) = load_deployments_repo(repo_dir).errors
    assert error.message == "is not a regular file"


def test_oob_file_that_is_not_yaml(repo_dir: Path) -> None:
    path = write_manifest_dir(repo_dir, "services/web/swarm/stage", VALID.format(service="web", type="swarm"))
    (path.parent / "stack.yml").write_text("services: [unclosed\n")
    (error,) = load_deployments_repo(repo_dir).errors
    assert error.field == "oob.update-image.file"
    assert "stack.yml: is not valid YAML" in error.message


# --- parallel loading -------------------------------------------------------------------


def test_parallel_and_serial_loading_agree(repo_dir: Path) -> None:
    for index in range(40):
        text = VALID.format(service=f"s{index}", type="swarm")
        if index % 7 == 0:
            text += "zigzag: true\n"
        write_manifest_dir(repo_dir, f"services/s{index}/swarm/stage", text)
    serial = load_tree(repo_dir, workers=1)
    parallel = load_tree(repo_dir, workers=2)
    assert parallel.manifests == serial.manifests
    assert parallel.errors == serial.errors
    assert len(serial.errors) == 6 and len(serial.manifests) == 34


MAP_CHUNKS = """
from bot.manifests.parallel import map_chunks
from tests.manifests.test_manifests_loader import _double, _triple
print(map_chunks(_double, _triple, list(range(10)), 3))
"""


def test_map_chunks_keeps_order() -> None:
    # In a fresh process: map_chunks forks only where no other thread runs, and the test run's
    # own threads (servers' log readers) would make it work alone here.
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", MAP_CHUNKS], capture_output=True, text=True, check=True,
                            timeout=60)
    assert result.stdout.strip() == "([0, 3, 6, 9], [8, 10, 12, 14, 16, 18])"


def test_map_chunks_works_alone_while_other_threads_run() -> None:
    import threading

    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert map_chunks(_double, _triple, list(range(10)), 3) is None
    finally:
        stop.set()
        thread.join()


def _double(chunk: list[int]) -> list[int]:
    return [2 * x for x in chunk]


def _triple(chunk: list[int]) -> list[int]:
    return [3 * x for x in chunk]
