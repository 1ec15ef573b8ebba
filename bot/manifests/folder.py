"""Walk a folder of the deployments repo entry by entry, never following a link out of it.

Every run gets a copy of its manifest's whole folder (listed in ``files`` or not), and a
static_file deployment publishes what that copy holds; control scripts run from their folder.
So each entry of such a folder must be a regular file, a folder, or a relative symlink that
resolves to a file or folder inside the repo (outside its ``.git``); links are followed only
after that check, and a link to a folder that contains it (a loop) is refused like the
others. The loader reports the problems; the executor walks again at deploy time and copies
exactly the entries it walked.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass

# Entries walked in one folder (linked folders count each time they are reached).
MAX_FOLDER_ENTRIES = 10_000

_ALLOWED = "only files, folders and relative symlinks to files or folders inside the repo are allowed"


@dataclass(frozen=True)
class FolderProblem:
    """An entry that may not be used: its path from the repo root, and why (a sentence tail)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(frozen=True)
class FolderEntry:
    """A usable entry: its path inside the walked folder and the real path of its content."""

    path: str
    source: str
    is_dir: bool


@dataclass(frozen=True)
class FolderScan:
    """What walking one folder found: usable entries (parents first) and problems."""

    entries: tuple[FolderEntry, ...]
    problems: tuple[FolderProblem, ...]


def special_kind(mode: int) -> str:
    """Words for what a non-regular, non-folder, non-link file is."""
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    return "a special file"


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder + os.sep)


class _Walk:
    def __init__(self, root: str, rel_dir: str, limit: int) -> None:
        self.real_root = os.path.realpath(root)
        self.git_dir = os.path.join(self.real_root, ".git")
        self.rel_dir = rel_dir.strip("/")
        self.limit = limit
        self.count = 0
        self.entries: list[FolderEntry] = []
        self.problems: list[FolderProblem] = []

    def problem(self, shown: str, message: str) -> None:
        self.problems.append(FolderProblem(f"{self.rel_dir}/{shown}" if shown else self.rel_dir, message))

    def link_target(self, path: str, shown: str, chain: tuple[str, ...]) -> tuple[str, bool] | None:
        """(real path, is a folder) of a link that may be followed, else None (problem noted)."""
        try:
            text = os.readlink(path)
        except OSError as exc:
            self.problem(shown, f"cannot be read: {exc.strerror}")
            return None
        if not _inside(os.path.realpath(path), self.real_root):
            self.problem(
                shown,
                f"is a symlink to {text!r}, which leaves the deployments repo; it would hand files of "
                "the bot's machine to the scripts (and publish them for static_file)",
            )
            return None
        if os.path.isabs(text):
            self.problem(
                shown,
                f"is an absolute symlink (to {text!r}); links must be relative and stay inside the "
                "deployments repo, which is checked out elsewhere on the bot's machine",
            )
            return None
        try:
            real = os.path.realpath(path, strict=True)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                self.problem(shown, f"is a symlink loop (to {text!r}); {_ALLOWED}")
            elif exc.errno in (errno.ENOENT, errno.ENOTDIR):
                self.problem(shown, f"is a broken symlink (to {text!r}); remove it or add what it names")
            else:
                self.problem(shown, f"cannot be followed: {exc.strerror}")
            return None
        if not _inside(real, self.real_root):  # changed since the first look
            self.problem(shown, f"is a symlink to {text!r}, which leaves the deployments repo; refused")
            return None
        if _inside(real, self.git_dir):
            self.problem(shown, f"is a symlink to {text!r}, into the repo's .git folder; refused")
            return None
        try:
            mode = os.stat(real).st_mode
        except OSError as exc:
            self.problem(shown, f"cannot be followed: {exc.strerror}")
            return None
        if stat.S_ISDIR(mode):
            if any(_inside(folder, real) for folder in chain):
                self.problem(
                    shown,
                    f"is a symlink to {text!r}, a folder that contains it (a loop); link to a file "
                    "or to a folder beside it",
                )
                return None
            return real, True
        if stat.S_ISREG(mode):
            return real, False
        self.problem(shown, f"is a symlink to {special_kind(mode)}; {_ALLOWED}")
        return None

    def run(self, start: str) -> None:
        # Each stack item: a real folder, its path as shown (relative to the walked folder),
        # and the real folders it was reached through (a link to any of them is a loop).
        stack: list[tuple[str, str, tuple[str, ...]]] = [(start, "", (start,))]
        while stack:
            folder, rel, chain = stack.pop()
            try:
                with os.scandir(folder) as listed:
                    found = sorted(listed, key=lambda e: e.name)
            except OSError as exc:
                self.problem(rel.rstrip("/"), f"cannot be read: {exc.strerror}")
                continue
            below: list[tuple[str, str, tuple[str, ...]]] = []
            for entry in found:
                self.count += 1
                if self.count > self.limit:
                    self.problem(
                        "",
                        f"holds more than {self.limit} entries (counting subfolders and linked "
                        "folders); keep big bundles in an archive file",
                    )
                    return
                shown = f"{rel}{entry.name}"
                if entry.is_symlink():
                    target = self.link_target(entry.path, shown, chain)
                    if target is None:
                        continue
                    real, is_dir = target
                    self.entries.append(FolderEntry(shown, real, is_dir))
                    if is_dir:
                        below.append((real, f"{shown}/", (*chain, real)))
                elif entry.is_dir(follow_symlinks=False):
                    self.entries.append(FolderEntry(shown, entry.path, True))
                    below.append((entry.path, f"{shown}/", (*chain, entry.path)))
                elif entry.is_file(follow_symlinks=False):
                    self.entries.append(FolderEntry(shown, entry.path, False))
                else:
                    try:
                        mode = entry.stat(follow_symlinks=False).st_mode
                    except OSError as exc:
                        self.problem(shown, f"cannot be read: {exc.strerror}")
                        continue
                    self.problem(shown, f"is {special_kind(mode)}; {_ALLOWED}")
            stack.extend(reversed(below))  # depth first, in name order: parents before children


def scan_folder(root: str | os.PathLike[str], rel_dir: str, *, limit: int = MAX_FOLDER_ENTRIES) -> FolderScan:
    """Walk root/rel_dir without following links out of the repo; list usable entries and problems.

    Problem paths are relative to root, as reached from rel_dir (through links inside the
    repo); a walk that meets more than ``limit`` entries stops there with a problem.
    """
    walk = _Walk(os.fspath(root), rel_dir, limit)
    start = os.path.join(walk.real_root, walk.rel_dir)
    try:
        real_start = os.path.realpath(start, strict=True)
    except OSError as exc:
        walk.problem("", f"cannot be read: {exc.strerror}")
        return FolderScan((), tuple(walk.problems))
    if not _inside(real_start, walk.real_root) or _inside(real_start, walk.git_dir):
        walk.problem("", "leads out of the deployments repo through a symlink; refused")
    elif not os.path.isdir(real_start):
        walk.problem("", "is not a folder")
    else:
        walk.run(real_start)
    return FolderScan(tuple(walk.entries), tuple(walk.problems))
