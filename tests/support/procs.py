"""Process helpers for tests."""

from __future__ import annotations

import os


def alive(pid: int) -> bool:
    """Whether ``pid`` is running (a zombie, which has exited but not been reaped, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
