"""Spread a list over forked worker processes; the calling process takes the first share.

Used only for big trees. Forking is skipped (None is returned, and the caller works alone)
when the platform cannot fork or when other threads run: a forked child would inherit
their locks in whatever state they were in.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")
L = TypeVar("L")


def can_fork() -> bool:
    """True when forking workers is safe here: fork exists and no other thread runs."""
    return (
        "fork" in multiprocessing.get_all_start_methods()
        and threading.active_count() == 1
        and multiprocessing.current_process().name == "MainProcess"
    )


def map_chunks(
    remote: Callable[[Sequence[T]], list[R]],
    local: Callable[[Sequence[T]], list[L]],
    items: Sequence[T],
    workers: int,
) -> tuple[list[L], list[R]] | None:
    """Split items in contiguous chunks: local() runs the first here, remote() the rest in
    forked processes. Returns (local results, remote results in order), or None when
    forking is not possible or failed (the caller then does all the work itself).
    remote must be picklable (a module-level function or a functools.partial of one).
    """
    if workers < 2 or len(items) < 2 or not can_fork():
        return None
    size = -(-len(items) // workers)
    chunks = [items[i : i + size] for i in range(0, len(items), size)]
    try:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=len(chunks) - 1, mp_context=context) as pool:
            # Frozen objects are skipped by the children's garbage collector, which would
            # otherwise touch (and so copy) every page inherited from this process.
            gc.freeze()
            try:
                futures = [pool.submit(remote, chunk) for chunk in chunks[1:]]
            finally:
                gc.unfreeze()
            mine = local(chunks[0])
            theirs: list[R] = []
            for future in futures:
                theirs.extend(future.result())
    except (BrokenProcessPool, OSError) as exc:
        log.warning("worker processes failed (%s); continuing in one process", exc)
        return None
    return mine, theirs
