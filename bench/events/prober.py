"""Asks a server for /healthz and /api/v1/deployments every 50 ms until SIGTERM, then prints p50, p95
and max milliseconds of each as JSON (bench_events.py runs it while changes fan out).

    python bench/events/prober.py PORT TOKEN
"""

from __future__ import annotations

import http.client
import json
import signal
import statistics
import sys
import time

PROBES = ["/healthz", "/api/v1/deployments?limit=50"]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(len(ordered) * p / 100) - 1))]


def main(port: int, token: str) -> None:
    stopping: list[bool] = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    times: dict[str, list[float]] = {path: [] for path in PROBES}
    failed = 0
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": f"Bearer {token}"}
    print("ready", flush=True)
    while not stopping:
        for path in PROBES:
            started = time.perf_counter()
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            response.read()
            times[path].append((time.perf_counter() - started) * 1000)
            failed += response.status != 200
        time.sleep(0.05)
    result = {path: {"p50": round(statistics.median(t), 1), "p95": round(percentile(t, 95), 1),
                     "max": round(max(t), 1), "count": len(t)} for path, t in times.items() if t}
    result["not_200"] = failed
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
