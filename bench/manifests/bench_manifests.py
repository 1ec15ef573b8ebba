"""Benchmark: load and validate a deployments repo of many manifests.

Measures, on a generated repo (default 10,000 manifests, about 5% broken):

1. load + validate of the folder, end to end (median of --runs runs, in one process);
2. the first load from a git source (clone, extract the commit's tree, load);
3. the second load of the same sha from that git source (in-process memo);
4. check-jsonschema (PyPI) validating the same sami.yaml files with the same schema.

Run from the project root:

    .venv/bin/python bench/manifests/bench_manifests.py [--count 10000] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from generate import generate_repo  # noqa: E402

from bot.manifests import clear_memo, load_deployments_repo  # noqa: E402
from manifests_schema import schema_path  # noqa: E402


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _timed(func, runs: int) -> tuple[float, list[float], object, float]:
    """Median wall time, all wall times, the last result, median CPU seconds (all processes)."""
    times, cpu = [], []
    result = None
    for _ in range(runs):
        cpu_start = _cpu()
        start = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - start)
        cpu.append(_cpu() - cpu_start)
    return statistics.median(times), times, result, statistics.median(cpu)


def _git(*args: str, cwd: Path) -> None:
    subprocess.run(
        ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.test", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--skip-check-jsonschema", action="store_true")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="sami-bench-"))
    try:
        repo_dir = work / "deployments"
        broken = generate_repo(repo_dir, args.count)
        print(f"generated {args.count} manifests ({broken} broken) in {repo_dir}")
        print(f"machine: {_cpu_model()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")

        median, times, repo, cpu = _timed(lambda: load_deployments_repo(repo_dir), args.runs)
        print(
            f"folder load+validate: median {median:.3f}s, best {min(times):.3f}s over "
            f"{args.runs} runs ({', '.join(f'{t:.2f}' for t in times)}); "
            f"median CPU {cpu:.3f}s over all processes; "
            f"{len(repo.manifests)} valid, {len(repo.errors)} errors"
        )
        load = os.getloadavg()[0]
        print(f"load average (1 min) after the folder runs: {load:.2f}")

        _git("init", "--quiet", "--initial-branch=main", cwd=repo_dir)
        _git("add", "-A", cwd=repo_dir)
        _git("commit", "--quiet", "-m", "bench", cwd=repo_dir)
        bare = work / "deployments.git"
        subprocess.run(
            ["git", "clone", "--quiet", "--bare", str(repo_dir), str(bare)],
            check=True,
            capture_output=True,
        )
        sha = subprocess.run(
            ["git", "--git-dir", str(bare), "rev-parse", "HEAD"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        cache = work / "cache"
        clear_memo()
        start = time.perf_counter()
        first = load_deployments_repo(bare, ref=sha, cache_dir=cache)
        first_load = time.perf_counter() - start
        print(f"git first load (clone + extract + load): {first_load:.3f}s")
        median_second, _, second, _ = _timed(
            lambda: load_deployments_repo(bare, ref=sha, cache_dir=cache), max(args.runs, 20)
        )
        assert second is first
        print(f"git second load of the same sha: median {median_second * 1000:.3f} ms")
        clear_memo()
        start = time.perf_counter()
        load_deployments_repo(bare, ref="main", cache_dir=cache)
        reparse = time.perf_counter() - start
        print(f"git load by branch after clearing the memo (fetch + reuse tree + load): {reparse:.3f}s")

        if not args.skip_check_jsonschema:
            tool = shutil.which("check-jsonschema") or str(Path(sys.executable).with_name("check-jsonschema"))
            files = sorted(str(p.relative_to(repo_dir)) for p in repo_dir.glob("services/*/*/*/sami.yaml"))
            start = time.perf_counter()
            result = subprocess.run(
                [tool, "--schemafile", str(schema_path()), *files],
                cwd=repo_dir,
                capture_output=True,
                text=True,
                check=False,
            )
            other = time.perf_counter() - start
            print(
                f"check-jsonschema on the same {len(files)} files: {other:.3f}s "
                f"(exit {result.returncode}); ratio check-jsonschema / sami = {other / median:.1f}x"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
