"""What the script supervisor costs per control-script call.

Every script now starts under ``workers/supervise.py`` (a Python process leading the script's
group, so the whole tree dies with its worker). This runs the same trivial script through
``run_control_script`` (supervised) and through the previous way (``setpriv --pdeathsig KILL``
in front of the script, no supervisor), interleaved in one run, and prints both and their ratio.

    .venv/bin/python bench/pipeline/bench_supervisor.py --calls 200
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from workers.runner import run_control_script

ENV = {"PATH": "/usr/bin:/bin"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    setpriv = shutil.which("setpriv")
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "op"
        script.write_text("#!/bin/sh\necho ok\n")
        script.chmod(0o755)
        supervised, direct = [], []
        for _ in range(args.calls):
            started = time.perf_counter()
            run_control_script([str(script)], env=ENV, timeout=30)
            supervised.append(time.perf_counter() - started)
            started = time.perf_counter()
            subprocess.run([*([setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []), str(script)],
                           env=ENV, capture_output=True, check=True, start_new_session=True)
            direct.append(time.perf_counter() - started)
    s, d = statistics.median(supervised), statistics.median(direct)
    print(f"calls: {args.calls} each, interleaved; load average {os.getloadavg()[0]:.2f}")
    print(f"supervised run_control_script: median {s * 1000:.1f} ms")
    print(f"setpriv + script (before):     median {d * 1000:.1f} ms")
    print(f"added per call: {(s - d) * 1000:.1f} ms (ratio {s / d:.2f})")


if __name__ == "__main__":
    main()
