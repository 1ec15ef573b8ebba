"""Benchmark: what the manifest store costs per re-read interval on an unchanged folder source.

The web, the worker and the scheduler each ask the store for the current manifests; a folder
source is due again every ManifestStore.LOCAL_TTL (2 s). This measures one due re-read of a
generated, unchanged repo of --count manifests two ways in one run, alternating:

- parse: what a due re-read cost before (load_deployments_repo: parse and validate every file);
- fingerprint: ManifestStore.current() now (stat every entry, compare the digest, keep the read).

and reports CPU per re-read and per minute (30 re-reads a minute per process) with their ratio.

Run from the project root:

    .venv/bin/python bench/manifests/bench_store.py [--count 1000] [--rounds 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from generate import generate_repo  # noqa: E402

from bot.manifests import load_deployments_repo  # noqa: E402
from bot.manifests.store import ManifestStore  # noqa: E402


def _age(root: Path) -> None:
    past = time.time() - 3600
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            os.utime(os.path.join(folder, name), (past, past), follow_symlinks=False)


def _cpu_ms(fn) -> float:
    start = time.process_time()
    fn()
    return (time.process_time() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "deployments"
        generate_repo(root, args.count, error_rate=0.0)
        _age(root)
        store = ManifestStore(str(root), None, Path(tmp) / "cache")
        store.LOCAL_TTL = 0.0  # every call is a due re-read
        first = store.current()
        print(f"{len(first.manifests)} manifests, {len(first.errors)} errors; {args.rounds} rounds each, alternating")
        parse, fingerprint = [], []
        for _ in range(args.rounds):
            parse.append(_cpu_ms(lambda: load_deployments_repo(root)))
            fingerprint.append(_cpu_ms(store.current))
        assert store.current() is first, "the unchanged folder was parsed again"
        p, f = statistics.median(parse), statistics.median(fingerprint)
        print(f"parse every due re-read:    median {p:8.2f} ms CPU  -> {p * 30 / 1000:6.2f} CPU-s a minute per process")
        print(f"fingerprint, keep the read: median {f:8.2f} ms CPU  -> {f * 30 / 1000:6.2f} CPU-s a minute per process")
        print(f"ratio parse / fingerprint: {p / f:.1f}x")


if __name__ == "__main__":
    main()
