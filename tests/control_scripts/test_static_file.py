"""static_file scripts for real in a temporary served folder."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import stat
import tarfile
import threading
import zipfile
from functools import partial
from pathlib import Path

import pytest

from bot.manifests import load_deployments_repo
from tests.control_scripts.helpers import EXAMPLES, contract_args, run_script
from workers.executor import ExecutorError, prepare_manifest_dir

SITE = EXAMPLES / "docs" / "static_file" / "stage"


@pytest.fixture
def static_root(tmp_path: Path) -> Path:
    root = tmp_path / "served"
    root.mkdir()
    return root


def _env(root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAMI_")}
    env["SAMI_STATIC_ROOT"] = str(root)
    env.update(extra)
    return env


def _run(op: str, root: Path, tag: str, manifest: Path = SITE, name: str = "docs-stage", **kw):
    args = contract_args(name, tag=tag, manifest_dir=manifest, service="docs", **kw)
    return run_script("static_file", op, args, env=_env(root))


def _served_tag(base: Path, link: str = "current") -> str:
    target = os.readlink(base / link)
    assert target.startswith("releases/")
    return target.removeprefix("releases/").rsplit("@", 1)[0]


def _release_tags(base: Path) -> list[str]:
    return sorted(p.name.rsplit("@", 1)[0] for p in (base / "releases").iterdir())


def _leftovers(base: Path) -> list[str]:
    found = [p.name for p in base.iterdir() if p.name.startswith(".")]
    if (base / "releases").exists():
        found += [p.name for p in (base / "releases").iterdir() if p.name.startswith(".")]
    return found


def test_deploy_switches_atomically_and_keeps_last_three(static_root: Path):
    base = static_root / "docs-stage"
    for tag in ("v1", "v2", "v3", "v4", "v5"):
        result = _run("create" if tag == "v1" else "update", static_root, tag)
        assert result.returncode == 0, result.stderr
        assert _served_tag(base) == tag
        assert (base / "current" / "index.html").read_text().startswith("<!doctype html>")
        assert _run("check", static_root, tag).returncode == 0
    assert _release_tags(base) == ["v3", "v4", "v5"]
    assert [p.name for p in base.iterdir() if p.name.startswith(".")] == []
    # asked about an older tag: tag mismatch
    assert _run("check", static_root, "v4").returncode == 3
    # the release folder is readable by a web server running as another user
    assert (base / "current").stat().st_mode & 0o005 == 0o005


def test_redeploying_the_same_tag_replaces_its_release(static_root: Path, tmp_path: Path):
    manifest = tmp_path / "manifest"
    (manifest / "site").mkdir(parents=True)
    (manifest / "site" / "index.html").write_text("one")
    assert _run("create", static_root, "v1", manifest).returncode == 0
    (manifest / "site" / "index.html").write_text("two")
    assert _run("update", static_root, "v1", manifest).returncode == 0
    assert (static_root / "docs-stage" / "current" / "index.html").read_text() == "two"


def test_redeploying_the_same_tag_never_hides_the_served_files(static_root: Path, tmp_path: Path):
    """A reader polling current/index.html while the same tag is deployed again and again
    must always find a whole release."""
    manifest = tmp_path / "manifest"
    (manifest / "site").mkdir(parents=True)
    (manifest / "site" / "index.html").write_text("release 0")
    assert _run("create", static_root, "v1", manifest).returncode == 0
    served = static_root / "docs-stage" / "current" / "index.html"
    stop = threading.Event()
    polls = {"ok": 0, "missing": 0, "bad": []}

    def poll() -> None:
        while not stop.is_set():
            try:
                text = served.read_text()
            except FileNotFoundError:
                polls["missing"] += 1
                continue
            polls["ok"] += 1
            if not text.startswith("release "):
                polls["bad"].append(text)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        for i in range(1, 9):
            (manifest / "site" / "index.html").write_text(f"release {i}")
            result = _run("update", static_root, "v1", manifest)
            assert result.returncode == 0, result.stderr
    finally:
        stop.set()
        thread.join(10)
    assert polls["missing"] == 0, polls
    assert polls["bad"] == []
    assert polls["ok"] > 100
    assert served.read_text() == "release 8"
    base = static_root / "docs-stage"
    assert _release_tags(base) == ["v1"], "superseded folders of the tag are removed"
    assert _run("check", static_root, "v1", manifest).returncode == 0


def test_pruning_counts_releases_and_keeps_the_served_one(static_root: Path, tmp_path: Path):
    base = static_root / "docs-stage"
    for tag in ("v1", "v2", "v3", "v2", "v2", "v4", "v3"):
        assert _run("update", static_root, tag).returncode == 0
        assert _served_tag(base) == tag
    assert _release_tags(base) == ["v2", "v3", "v4"]
    for keep, expected in (("1", ["v3"]),):
        assert _run("update", static_root, "v3", deployment_config={"keep-releases": keep}).returncode == 0
        assert _release_tags(base) == expected
    assert _run("check", static_root, "v3").returncode == 0


def test_releases_of_older_scripts_are_understood(static_root: Path):
    """releases/<tag> without @<id>, as older scripts made them."""
    base = static_root / "docs-stage"
    (base / "releases" / "v1").mkdir(parents=True)
    (base / "releases" / "v1" / "index.html").write_text("old")
    (base / "current").symlink_to("releases/v1")
    assert _run("check", static_root, "v1").returncode == 0
    assert _run("check", static_root, "v1.2").returncode == 3
    assert _run("update", static_root, "v1").returncode == 0
    assert _release_tags(base) == ["v1"]
    assert (base / "current" / "index.html").read_text() != "old"


def _symlink_bundle(manifest: Path, kind: str, name: str, target: str) -> dict[str, str]:
    """A bundle with index.html and `name` -> `target`, as a folder, .tar.gz or .zip."""
    site = manifest / "site"
    site.mkdir(parents=True)
    (site / "index.html").write_text("hello")
    (site / "sub").mkdir()
    (site / "sub" / "page.html").write_text("page")
    (site / name).symlink_to(target)
    if kind == "folder":
        return {}
    if kind == "tar":
        with tarfile.open(manifest / "bundle.tar.gz", "w:gz") as tar:
            tar.add(site, arcname=".")
        return {"source": "bundle.tar.gz"}
    with zipfile.ZipFile(manifest / "bundle.zip", "w") as zf:
        for path in sorted(site.rglob("*")):
            folder = path.is_dir() and not path.is_symlink()
            info = zipfile.ZipInfo(str(path.relative_to(site)) + ("/" if folder else ""))
            if path.is_symlink():
                info.create_system = 3
                info.external_attr = 0o120777 << 16
                zf.writestr(info, os.readlink(path))
            elif path.is_dir():
                info.external_attr = 0o040755 << 16
                zf.writestr(info, "")
            else:
                info.external_attr = 0o100644 << 16
                zf.writestr(info, path.read_bytes())
    return {"source": "bundle.zip"}


@pytest.mark.parametrize("kind", ["folder", "tar", "zip"])
@pytest.mark.parametrize(
    ("name", "target"),
    [("leak.txt", "/etc/passwd"), ("up", "../../.."), ("sub/escape", "../../../../../etc/hostname"), ("root", "/")],
)
def test_symlinks_out_of_the_bundle_are_refused(kind, name, target, static_root: Path, tmp_path: Path):
    base = static_root / "docs-stage"
    assert _run("create", static_root, "v1").returncode == 0
    before = os.readlink(base / "current")
    manifest = tmp_path / "manifest"
    config = _symlink_bundle(manifest, kind, name, target)
    result = _run("update", static_root, "v2", manifest, deployment_config=config)
    assert result.returncode != 0
    assert "symlink" in result.stderr and name.split("/")[-1] in result.stderr, result.stderr
    assert "nothing was changed" in result.stderr
    assert os.readlink(base / "current") == before, "nothing is switched"
    assert _release_tags(base) == ["v1"]
    assert _leftovers(base) == []


@pytest.mark.parametrize("kind", ["folder", "tar", "zip"])
def test_relative_symlinks_inside_the_bundle_are_kept(kind, static_root: Path, tmp_path: Path):
    manifest = tmp_path / "manifest"
    config = _symlink_bundle(manifest, kind, "latest.html", "sub/page.html")
    result = _run("create", static_root, "v1", manifest, deployment_config=config)
    assert result.returncode == 0, result.stderr
    assert (static_root / "docs-stage" / "current" / "latest.html").read_text() == "page"


def test_bundle_symlinked_out_of_the_manifest_is_refused(static_root: Path, tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    manifest = tmp_path / "manifest"
    manifest.mkdir()
    (manifest / "site").symlink_to(outside)
    result = _run("config_check", static_root, "v1", manifest)
    assert result.returncode == 64
    assert 'Static bundle "site" is a symlink to outside the manifest folder' in result.stdout
    assert _run("create", static_root, "v1", manifest).returncode == 64
    assert not (static_root / "docs-stage" / "current").exists()


def test_special_files_are_refused(static_root: Path, tmp_path: Path):
    manifest = tmp_path / "manifest"
    (manifest / "site").mkdir(parents=True)
    (manifest / "site" / "index.html").write_text("x")
    os.mkfifo(manifest / "site" / "pipe")
    with tarfile.open(manifest / "bundle.tar", "w") as tar:
        tar.add(manifest / "site", arcname=".")
    result = _run("create", static_root, "v1", manifest, deployment_config={"source": "bundle.tar"})
    assert result.returncode != 0
    assert "pipe" in result.stderr
    assert not (static_root / "docs-stage" / "current").exists()
    assert _leftovers(static_root / "docs-stage") == []


@pytest.mark.parametrize("bundle", ["bundle.tar.gz", "bundle.zip"])
def test_failed_unpack_leaves_nothing_behind(bundle, static_root: Path, tmp_path: Path):
    base = static_root / "docs-stage"
    assert _run("create", static_root, "v1").returncode == 0
    manifest = tmp_path / "manifest"
    manifest.mkdir()
    (manifest / bundle).write_bytes(b"this is not an archive\n" * 100)
    result = _run("update", static_root, "v2", manifest, deployment_config={"source": bundle})
    assert result.returncode != 0
    assert "cannot unpack" in result.stderr
    assert _leftovers(base) == []
    assert _served_tag(base) == "v1"


def test_archive_unarchive_cleanup(static_root: Path):
    base = static_root / "docs-stage"
    assert _run("create", static_root, "v1").returncode == 0
    assert _run("archive_check", static_root, "v1").returncode != 0
    assert _run("archive", static_root, "v1").returncode == 0
    assert not (base / "current").exists()
    assert _served_tag(base, "archived") == "v1"
    assert _run("archive_check", static_root, "v1").returncode == 0
    assert _run("check", static_root, "v1").returncode == 1
    assert _run("archive", static_root, "v1").returncode == 0  # idempotent
    assert _run("unarchive", static_root, "v1").returncode == 0
    assert _served_tag(base) == "v1"
    assert not (base / "archived").exists()
    assert _run("check", static_root, "v1").returncode == 0
    assert _run("cleanup", static_root, "v1").returncode == 0
    assert not base.exists()
    assert static_root.exists()
    assert _run("cleanup", static_root, "v1").returncode == 0  # idempotent


def test_unarchive_without_archive_deploys(static_root: Path):
    assert _run("unarchive", static_root, "v7").returncode == 0
    assert _served_tag(static_root / "docs-stage") == "v7"


def test_tarball_source_and_health_url(static_root: Path, tmp_path: Path):
    manifest = tmp_path / "manifest"
    manifest.mkdir()
    with tarfile.open(manifest / "bundle.tar.gz", "w:gz") as tar:
        tar.add(SITE / "site", arcname=".")
    result = _run("create", static_root, "v1", manifest, deployment_config={"source": "bundle.tar.gz"})
    assert result.returncode == 0, result.stderr
    served = static_root / "docs-stage" / "current"
    assert (served / "healthz").read_text() == "ok\n"

    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))

    class Quiet(http.server.ThreadingHTTPServer):
        pass

    server = Quiet(("127.0.0.1", 0), handler)
    handler.keywords["directory"] = str(served)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        args = contract_args("docs-stage", tag="v1", manifest_dir=manifest, service="docs")
        ok = _env(static_root, SAMI_HEALTH_URL=f"http://127.0.0.1:{port}/healthz", SAMI_HEALTH_TIMEOUT="5")
        assert run_script("static_file", "check", args, env=ok).returncode == 0
        bad = _env(static_root, SAMI_HEALTH_URL=f"http://127.0.0.1:{port}/missing", SAMI_HEALTH_TIMEOUT="5")
        assert run_script("static_file", "check", args, env=bad).returncode == 1
    finally:
        server.shutdown()
        server.server_close()


def test_deployments_are_separate(static_root: Path):
    assert _run("create", static_root, "v1", name="docs-pr-1").returncode == 0
    assert _run("create", static_root, "v2", name="docs-pr-2").returncode == 0
    assert _run("cleanup", static_root, "v1", name="docs-pr-1").returncode == 0
    assert not (static_root / "docs-pr-1").exists()
    assert _run("check", static_root, "v2", name="docs-pr-2").returncode == 0


def test_interrupted_deploy_leaves_nothing_behind(static_root: Path, tmp_path: Path):
    """A deploy stopped by SIGTERM (e.g. a timeout) while unpacking removes its temporary folder."""
    import signal
    import subprocess
    import time

    from tests.control_scripts.helpers import SCRIPTS

    slow = tmp_path / "slow-bin"
    slow.mkdir()
    (slow / "tar").write_text("#!/bin/sh\nexec sleep 30\n")
    (slow / "tar").chmod(0o755)
    manifest = tmp_path / "manifest"
    manifest.mkdir()
    (manifest / "bundle.tar").write_bytes(b"")
    args = contract_args("docs-stage", tag="v1", manifest_dir=manifest, deployment_config={"source": "bundle.tar"})
    env = _env(static_root, PATH=f"{slow}:{os.environ['PATH']}")
    proc = subprocess.Popen([str(SCRIPTS / "static_file" / "create"), *args], env=env, start_new_session=True)
    releases = static_root / "docs-stage" / "releases"
    deadline = time.monotonic() + 10
    while not (releases.exists() and any(releases.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any(releases.iterdir()), "the deploy started unpacking"
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(10) != 0
    assert _leftovers(static_root / "docs-stage") == []
    assert not (static_root / "docs-stage" / "current").exists()


# --- the working copy the bot hands to the scripts ----------------------------------------


@pytest.fixture
def deployments(tmp_path: Path) -> Path:
    """A copy of the example deployments repo (the docs site is static_file)."""
    root = tmp_path / "deployments"
    shutil.copytree(EXAMPLES.parent, root, symlinks=True)
    return root


DOCS_STAGE = "services/docs/static_file/stage"


def _prepare(root: Path, into: Path) -> Path:
    repo = load_deployments_repo(root)
    assert repo.ok, [str(e) for e in repo.errors]
    manifest = repo.find("docs", "stage")
    assert manifest is not None
    return prepare_manifest_dir(repo, manifest, None, into)


def test_the_prepared_copy_of_a_good_bundle_deploys(deployments: Path, static_root: Path, tmp_path: Path):
    (deployments / "shared").mkdir()
    (deployments / "shared/terms.html").write_text("terms")
    site = deployments / DOCS_STAGE / "site"
    (site / "latest.html").symlink_to("index.html")
    (site / "terms.html").symlink_to("../../../../../shared/terms.html")
    (site / "again").symlink_to(".")
    (deployments / DOCS_STAGE / "mirror").symlink_to("site")
    errors = [str(e) for e in load_deployments_repo(deployments).errors]
    assert errors == [
        "environments/stage.yaml:5:31: components[3]: the manifest of 'docs', "
        f"{DOCS_STAGE}/sami.yaml, has errors",
        f"{DOCS_STAGE}/mirror/again: is a symlink to '.', a folder that contains it (a loop); link to a file or "
        "to a folder beside it",
        f"{DOCS_STAGE}/sami.yaml:12:9: files[0]: 'site/again' is a symlink to '.', a folder that contains it "
        "(a loop); link to a file or to a folder beside it",
    ]
    (site / "again").unlink()
    prepared = _prepare(deployments, tmp_path / "run")
    copied = list(prepared.rglob("*"))
    assert not [p for p in copied if p.is_symlink()], "links inside the repo are copied as what they point to"
    assert (prepared / "site/terms.html").read_text() == "terms"
    for source in ("site", "mirror"):
        result = _run("update", static_root, source, prepared, deployment_config={"source": source})
        assert result.returncode == 0, result.stderr
        served = static_root / "docs-stage" / "current"
        assert (served / "latest.html").read_text() == (served / "index.html").read_text()
        assert (served / "terms.html").read_text() == "terms"


def _hostile(kind: str, folder: Path, outside: Path) -> str:
    """Put one hostile entry in a manifest folder; return its path relative to the folder."""
    if kind == "host file":
        (folder / "leak.txt").symlink_to("/etc/passwd")
        return "leak.txt"
    if kind == "outside folder":
        (folder / "site").rename(folder / "site.orig")
        (folder / "site").symlink_to(os.path.relpath(outside, folder))
        return "site"
    if kind == "unlisted folder":
        (folder / "other").symlink_to(outside)
        return "other"
    if kind == "self loop":
        (folder / "site/self").symlink_to("self")
        return "site/self"
    if kind == "folder loop":
        (folder / "site/up").symlink_to("..")
        return "site/up"
    if kind == "fifo":
        os.mkfifo(folder / "site/pipe")
        return "site/pipe"
    if kind == "device":
        try:
            os.mknod(folder / "site/null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
        except PermissionError:
            pytest.skip("creating device nodes is not permitted here")
        return "site/null"
    raise AssertionError(kind)


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "kind", ["host file", "outside folder", "unlisted folder", "self loop", "folder loop", "fifo", "device"]
)
def test_hostile_entries_added_after_validation_are_refused_at_deploy(kind: str, deployments: Path, tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    repo = load_deployments_repo(deployments)
    manifest = repo.find("docs", "stage")
    assert repo.ok and manifest is not None
    bad = _hostile(kind, deployments / DOCS_STAGE, outside)
    into = tmp_path / "run"
    into.mkdir()
    with pytest.raises(ExecutorError) as caught:
        prepare_manifest_dir(repo, manifest, None, into)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{DOCS_STAGE}/{bad}: "), message
    assert not [p for p in into.rglob("*") if p.name in ("secret.txt", "leak.txt", "null", "pipe")]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("swap", ["symlink", "fifo"])
def test_a_file_swapped_between_the_walk_and_the_copy_is_refused(
    swap: str, deployments: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from bot.manifests import folder
    from workers import executor

    repo = load_deployments_repo(deployments)
    manifest = repo.find("docs", "stage")
    assert manifest is not None
    scan = folder.scan_folder(repo.root, manifest.directory)
    index = deployments / DOCS_STAGE / "site/index.html"
    index.unlink()
    if swap == "symlink":
        index.symlink_to("/etc/passwd")
    else:
        os.mkfifo(index)
    monkeypatch.setattr(executor.folder, "scan_folder", lambda *args, **kwargs: scan)
    with pytest.raises(ExecutorError, match=f"^{DOCS_STAGE}/site/index.html: became .* while being copied; refused$"):
        prepare_manifest_dir(repo, manifest, None, tmp_path / "run")


@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_an_archive_cannot_write_through_a_symlink_it_holds(kind: str, static_root: Path, tmp_path: Path):
    """An archive with `out -> <a folder outside>` and then `out/planted.html` writes nothing outside."""
    import io

    outside = tmp_path / "outside"
    outside.mkdir()
    manifest = tmp_path / "manifest"
    manifest.mkdir()
    if kind == "tar":
        config = {"source": "bundle.tar"}
        with tarfile.open(manifest / "bundle.tar", "w") as tar:
            link = tarfile.TarInfo("out")
            link.type, link.linkname = tarfile.SYMTYPE, str(outside)
            tar.addfile(link)
            planted = tarfile.TarInfo("out/planted.html")
            planted.size = 5
            tar.addfile(planted, io.BytesIO(b"owned"))
    else:
        config = {"source": "bundle.zip"}
        with zipfile.ZipFile(manifest / "bundle.zip", "w") as zf:
            link = zipfile.ZipInfo("out")
            link.create_system, link.external_attr = 3, 0o120777 << 16
            zf.writestr(link, str(outside))
            zf.writestr("out/planted.html", "owned")
    result = _run("create", static_root, "v1", manifest, deployment_config=config)
    assert result.returncode != 0
    assert list(outside.iterdir()) == []
    assert not (static_root / "docs-stage" / "current").exists()
    assert _leftovers(static_root / "docs-stage") == []


def test_check_reports_the_served_tag_and_nothing_once_removed(static_root: Path):
    assert _run("create", static_root, "v1").returncode == 0
    checked = _run("check", static_root, "v1")
    assert checked.returncode == 0
    assert json.loads(checked.stdout.splitlines()[-1]) == {"running": [{"name": "current", "tag": "v1"}]}
    assert json.loads(_run("check", static_root, "v2").stdout.splitlines()[-1])["running"][0]["tag"] == "v1"
    (static_root / "docs-stage" / "current").unlink()
    gone = _run("check", static_root, "v1")
    assert gone.returncode == 1 and json.loads(gone.stdout.splitlines()[-1]) == {"running": []}


def test_check_batch_answers_for_every_deployment_as_check_would(static_root: Path, tmp_path: Path):
    for name, tag in (("docs-a", "v1"), ("docs-b", "v1")):
        assert _run("create", static_root, tag, name=name).returncode == 0
    batch = tmp_path / "batch.jsonl"
    entries = [{"name": "docs-a", "tag": "v1"}, {"name": "docs-b", "tag": "v2"}, {"name": "docs-c", "tag": "v1"},
               {"name": "../etc", "tag": "v1"}]
    batch.write_text("".join(json.dumps(e) + "\n" for e in entries))
    done = run_script("static_file", "check_batch", ["--project-name", "sami", "--base-domain", "example.test",
                                                     "--namespace", "sami", f"--batch={batch}"],
                      env=_env(static_root))
    assert done.returncode == 0, done.stderr
    answers = {a["name"]: a for a in map(json.loads, done.stdout.splitlines())}
    assert answers["docs-a"] == {"name": "docs-a", "exit": 0, "message": "", "running": [{"name": "current",
                                                                                          "tag": "v1"}]}
    assert answers["docs-b"]["exit"] == 3 and answers["docs-b"]["running"] == [{"name": "current", "tag": "v1"}]
    assert answers["docs-c"]["exit"] == 1 and answers["docs-c"]["running"] == []
    assert answers["../etc"]["exit"] == 64 and "running" not in answers["../etc"]
    for name in ("docs-a", "docs-b"):  # each answer is what that deployment's own check says
        own = _run("check", static_root, entries[["docs-a", "docs-b"].index(name)]["tag"], name=name)
        assert own.returncode == answers[name]["exit"]


def _switch(root: Path, colour: str, backend: str | Path, name: str = "docs-stage"):
    args = contract_args(name, tag="v1", manifest_dir=SITE, service="docs")
    return run_script("static_file", "switch", [*args, "--colour", colour, "--backend", str(backend)],
                      env=_env(root))


def test_switch_points_the_entry_at_a_colour_and_back(static_root: Path) -> None:
    for colour in ("blue", "green"):
        assert _run("create", static_root, "v1", name=f"docs-stage-{colour}").returncode == 0
    blue, green = (static_root / f"docs-stage-{c}" / "current" for c in ("blue", "green"))
    entry = static_root / "docs-stage"
    for colour, backend in (("blue", blue), ("green", green), ("blue", blue)):
        result = _switch(static_root, colour, backend)
        assert result.returncode == 0, result.stderr
        assert os.readlink(entry / "current") == str(backend)
        assert (entry / "colour").read_text() == f"{colour}\n"
        assert (entry / "current" / "index.html").is_file()
        assert [p.name for p in entry.iterdir() if p.name.startswith(".")] == []  # no temporary link left


@pytest.mark.parametrize(("colour", "backend", "code", "says"), [
    ("red", "{root}/docs-stage-blue/current", 64, "--colour must be blue or green"),
    ("blue", "", 64, "--backend"),
    ("blue", "docs-stage-blue/current", 64, "must be an absolute path"),
    ("blue", "/etc", 64, "outside SAMI_STATIC_ROOT"),
    ("blue", "{root}/../outside", 64, "outside SAMI_STATIC_ROOT"),
    ("blue", "{root}/docs-stage-blue/current", 1, "serves nothing"),
])
def test_switch_refuses_what_it_cannot_serve_and_changes_nothing(static_root: Path, colour, backend, code,
                                                                 says) -> None:
    result = _switch(static_root, colour, backend.format(root=static_root))
    assert result.returncode == code and says in result.stderr, result.stderr
    assert not (static_root / "docs-stage" / "current").exists()
