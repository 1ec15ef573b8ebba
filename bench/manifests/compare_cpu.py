"""Benchmark: CPU time of one in-process folder load, this checkout against another, on one tree.

Wall time on a shared machine follows its load; the CPU time of a single-process load does
much less, so a change to the loader is measured here as CPU seconds of ``load_tree(workers=1)``
for both checkouts on the same generated tree, alternating, each in a fresh interpreter. With
``--dependencies`` a second tree has ``depends_on`` in every manifest (two each) and an
environment file, so the checks that span manifests run over the whole tree.

Run from the project root, with the other checkout extracted somewhere, e.g.:

    git archive <commit> | tar -x -C /tmp/baseline
    .venv/bin/python bench/manifests/compare_cpu.py --baseline /tmp/baseline --count 5000 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from generate import generate_repo  # noqa: E402

ONE = """
import gc, sys, time
sys.path.insert(0, sys.argv[1])
from bot.manifests.loader import load_tree
load_tree(sys.argv[2], workers=1)
for _ in range(int(sys.argv[3])):
    gc.collect()
    start = time.process_time()
    repo = load_tree(sys.argv[2], workers=1)
    print(time.process_time() - start, len(repo.manifests), len(repo.errors))
"""


def add_dependencies(root: Path) -> None:
    services = sorted(os.listdir(root / "services"))
    for index, service in enumerate(services):
        if index == 0:
            continue
        deps = sorted({services[index // 2], services[index // 3]} - {service})
        for manifest in (root / "services" / service).glob("*/*/sami.yaml"):
            with manifest.open("a") as handle:
                handle.write(f"\ndepends_on: [{', '.join(deps)}]\n")
    (root / "environments").mkdir()
    (root / "environments" / "stage.yaml").write_text("version: v1beta\n")


def measure(code: Path, tree: Path, runs: int) -> tuple[list[float], str]:
    out = subprocess.run([sys.executable, "-c", ONE, str(code), str(tree), str(runs)], capture_output=True,
                         text=True, check=True).stdout.split("\n")
    rows = [line.split() for line in out if line]
    return [float(r[0]) for r in rows], f"{rows[-1][1]} valid, {rows[-1][2]} errors"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True)
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dependencies", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sami-bench-cpu-") as temp:
        tree = Path(temp) / "plain"
        generate_repo(tree, args.count)
        trees = {"plain": tree}
        if args.dependencies:
            deps = Path(temp) / "dependencies"
            generate_repo(deps, args.count)
            add_dependencies(deps)
            trees["with depends_on"] = deps
        results: dict[tuple[str, str], list[float]] = {}
        notes: dict[tuple[str, str], str] = {}
        for _ in range(args.rounds):
            for label, code in (("baseline", args.baseline), ("this checkout", ROOT)):
                for name, path in trees.items():
                    if label == "baseline" and name != "plain":
                        continue
                    times, note = measure(code, path, args.runs)
                    results.setdefault((label, name), []).extend(times)
                    notes[(label, name)] = note
        for (label, name), times in results.items():
            print(f"{label:14} {name:16} median {statistics.median(times):.3f} s CPU, best {min(times):.3f} s "
                  f"over {len(times)} loads ({notes[(label, name)]})")


if __name__ == "__main__":
    main()
