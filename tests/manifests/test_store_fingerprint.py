"""A folder source is re-read only when something under it changed (ManifestStore + folder_fingerprint)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from bot.manifests.store import ManifestStore, folder_fingerprint

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "deployments"
HOUR_AGO = time.time() - 3600


def age(root: Path, when: float = HOUR_AGO) -> None:
    """Set every entry's times into the past, so no fingerprint counts as racy."""
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            os.utime(os.path.join(folder, name), (when, when), follow_symlinks=False)
    os.utime(root, (when, when))


@pytest.fixture
def store(tmp_path):
    root = tmp_path / "deployments"
    shutil.copytree(EXAMPLES, root, symlinks=True)
    age(root)
    store = ManifestStore(str(root), None, tmp_path / "cache")
    store.LOCAL_TTL = 0.0  # every call is past the re-read interval
    return store


def test_an_unchanged_folder_is_not_parsed_again(store):
    first = store.current()
    assert first.ok, first.errors
    assert store.current() is first
    assert store.current() is first


def test_an_edit_of_the_same_size_is_read(store):
    first = store.current()
    path = Path(store.source) / "services/docs/static_file/stage/sami.yaml"
    text = path.read_text()
    assert first.find("docs", "stage").timeout == 300
    path.write_text(text.replace("timeout: 5m", "timeout: 6m"))  # same size
    age(Path(store.source), HOUR_AGO + 60)
    second = store.current()
    assert second is not first
    assert second.find("docs", "stage").timeout == 360


def test_a_new_or_removed_file_is_read(store):
    first = store.current()
    root = Path(store.source)
    assert first.find("docs", "qa") is None
    extra = root / "services/docs/static_file/qa"
    shutil.copytree(root / "services/docs/static_file/stage", extra)
    age(root, HOUR_AGO + 60)
    second = store.current()
    assert second is not first
    assert second.find("docs", "qa") is not None
    shutil.rmtree(extra)
    age(root, HOUR_AGO + 120)
    third = store.current()
    assert third is not second
    assert third.find("docs", "qa") is None


def test_a_change_just_made_is_never_trusted_to_the_fingerprint(store):
    root = Path(store.source)
    first = store.current()
    (root / "services/docs/static_file/stage/sami.yaml").touch()  # now: within the racy window
    assert folder_fingerprint(root) is None
    second = store.current()
    third = store.current()
    assert second is not first
    assert third is not second  # read again while the change is too recent to trust the digest


def test_the_fingerprint_follows_names_sizes_and_times(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f").write_text("x")
    (tmp_path / ".git").mkdir()
    age(tmp_path)
    before = folder_fingerprint(tmp_path)
    assert before is not None
    assert folder_fingerprint(tmp_path) == before
    (tmp_path / ".git" / "index").write_text("ignored")
    assert folder_fingerprint(tmp_path) == before
    (tmp_path / "a" / "f").rename(tmp_path / "a" / "g")
    age(tmp_path)
    assert folder_fingerprint(tmp_path) != before
