"""Live updates side by side: open `/events` streams held by one web process, a change committed to
the deployments table, and the time until each stream has it, for the hub and maintained options.

    .venv/bin/python bench/events/bench_events.py [--streams 100,500,1000,2000] [--rounds 2]
        [--changes 5] [--candidates hub,gthread,gevent,flask-sse,asgi] [--spare 100]

Candidates, each one web process on a private PostgreSQL (``--deployments`` rows) and Redis:

- ``hub``: `sami serve --workers 1` (gthread, 8 threads) with bot/web/events.py's hub;
- ``gthread``: Sami's app with ``/events`` as a generator (streams.py), gunicorn's gthread worker with
  a thread per stream plus 100 (``--threads 600`` for 500 streams);
- ``gevent``: the same generator on gunicorn's gevent worker (gevent, psycogreen);
- ``flask-sse``: the generator reading flask-sse's Redis subscription, on the gevent worker
  (gevent, psycogreen, flask-sse);
- ``asgi``: `sami serve --workers 1` for every other request and a starlette app on uvicorn serving
  only ``/events`` (sidecar.py; starlette, uvicorn).

The streams are opened as a browser's EventSource does (HTTP/1.1 keep-alive, ``Accept:
text/event-stream``, the session cookie of a sign-in with a token that may read half the services:
the page needs a sign-in, ``SAMI_PAGE_READ=login``). Each run starts a fresh server, signs in, times
``GET /healthz`` and ``GET /api/v1/deployments`` with no stream open, opens the streams, lets them sit
(``--idle`` seconds), then commits ``--changes`` changes of one deployment's tag and takes, per
stream, the time from the commit to the ``change`` event carrying that tag; it times the same requests
with the streams open, then again from another process (prober.py) while as many more changes fan
out. Then half the pages move at once (each stream closes and a new one opens): the time until the new
streams are live, and a /healthz sent meanwhile. Last, right after one more change, every page closes,
and the server's descriptors show how long it holds the connections of pages that left.
gunicorn's worker connections (and gthread's threads) are the streams plus ``--spare`` (100). The web
process's RSS, threads, descriptors and CPU time come from /proc. Candidates alternate within each round, in
an order rotated from round to round.

Packages for all but the hub and gthread are in the bench extra's lock: ``.venv/bin/pip install
--require-hashes -r requirements/bench.txt``; a candidate whose packages are missing is skipped with a note.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib.util
import json
import os
import random
import re
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench" / "page"))

from bench_page import seed  # noqa: E402
from prober import PROBES, percentile  # noqa: E402
from sqlalchemy import text  # noqa: E402
from sqlalchemy.orm import sessionmaker  # noqa: E402

from bot.core import db  # noqa: E402
from bot.services.tokens import Scopes, create_token  # noqa: E402
from tests.support.sami_server import sami_env  # noqa: E402
from tests.support.servers import PostgresServer, RedisServer, free_port, running  # noqa: E402

CANDIDATES = ["hub", "gthread", "gevent", "flask-sse", "asgi"]
NEEDS = {"gevent": ["gevent", "psycogreen"], "flask-sse": ["gevent", "psycogreen", "flask_sse"],
         "asgi": ["starlette", "uvicorn"]}
CHANGED = "svc00-env00000"  # in a service the read token may read
READABLE_SERVICES = [f"svc{i:02d}" for i in range(20)]  # half of bench_page's 40: the filter runs
SPARE = 100  # gthread threads and worker connections beyond the streams (600 for 500 pages): --spare


# -- the servers ------------------------------------------------------------------------------------

def gunicorn_argv(port: int, worker_class: str, streams: int, spare: int = SPARE) -> list[str]:
    """gunicorn serving streams.py's app in one process, with `sami serve`'s other settings."""
    threads = ["--threads", str(streams + spare)] if worker_class == "gthread" else []
    return [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1",
            "--worker-class", worker_class, *threads, "--worker-connections", str(streams + spare),
            "--keep-alive", "5", "--timeout", "60", "--graceful-timeout", "2", "--access-logfile", "-",
            "--pythonpath", str(HERE), "streams:create()"]


def sami_serve_argv(port: int) -> list[str]:
    return [sys.executable, "-m", "bot.cli", "serve", "--bind", f"127.0.0.1:{port}", "--workers", "1",
            "--threads", "8"]


@dataclass
class Served:
    """One candidate's processes: streams go to ``stream_port``, other requests to ``probe_port``."""

    name: str
    stream_port: int
    probe_port: int
    commands: list[tuple[list[str], dict[str, str]]]
    log: Path
    processes: list[subprocess.Popen] = field(default_factory=list)

    def start(self) -> Served:
        with open(self.log, "ab") as sink:
            for argv, env in self.commands:
                self.processes.append(subprocess.Popen(argv, env=env, cwd=ROOT, stdout=sink,
                                                       stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 60
        for port in {self.stream_port, self.probe_port}:
            while not healthy(port):
                if time.monotonic() > deadline or any(p.poll() is not None for p in self.processes):
                    self.stop()
                    raise SystemExit(f"{self.name} did not start:\n{self.log.read_text()[-3000:]}")
                time.sleep(0.2)
        return self

    @property
    def stream_pid(self) -> int:
        """The process holding the streams: gunicorn's one worker, or uvicorn itself."""
        root = self.processes[-1].pid
        children = Path(f"/proc/{root}/task/{root}/children").read_text().split()
        return int(children[0]) if children else root

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def healthy(port: int) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/healthz")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def serve(name: str, streams: int, env: dict[str, str], tmp: Path, spare: int = SPARE) -> Served:
    """Start candidate ``name`` sized for ``streams`` open pages and ``spare`` more connections."""
    port = free_port()
    metrics = tempfile.mkdtemp(prefix="metrics-", dir=tmp)
    env = {**env, "PROMETHEUS_MULTIPROC_DIR": metrics, "PYTHONPATH": str(ROOT)}
    log = tmp / f"{name}-{streams}.log"
    if name == "hub":
        return Served(name, port, port, [(sami_serve_argv(port), env)], log).start()
    if name == "gthread":
        return Served(name, port, port, [(gunicorn_argv(port, "gthread", streams, spare), env)], log).start()
    if name == "gevent":
        return Served(name, port, port, [(gunicorn_argv(port, "gevent", streams, spare), env)], log).start()
    if name == "flask-sse":
        return Served(name, port, port, [(gunicorn_argv(port, "gevent", streams, spare),
                                          {**env, "BENCH_EVENTS_FEED": "flask-sse"})], log).start()
    if name == "asgi":
        sidecar = free_port()
        uvicorn = [sys.executable, "-m", "uvicorn", "--app-dir", str(HERE), "--host", "127.0.0.1", "--port",
                   str(sidecar), "--timeout-keep-alive", "5", "--backlog", "4096", "sidecar:app"]
        return Served(name, sidecar, port, [(sami_serve_argv(port), env), (uvicorn, env)], log).start()
    raise SystemExit(f"unknown candidate {name!r}: one of {', '.join(CANDIDATES)}")


# -- /proc ------------------------------------------------------------------------------------------

def _descendants(root: int) -> list[int]:
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        with contextlib.suppress(OSError):  # it ended meanwhile
            todo += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return found


def cpu_seconds(roots: list[int]) -> float:
    """User and system CPU seconds of these processes and their descendants (reaped children too)."""
    ticks, total = os.sysconf("SC_CLK_TCK"), 0.0
    for root in roots:
        for pid in _descendants(root):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += sum(int(value) for value in fields[11:15]) / ticks
    return total


def rss_mb(roots: list[int]) -> float:
    total = 0
    for root in roots:
        for pid in _descendants(root):
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
            total += int(match[1]) if match else 0
    return total / 1024


def threads_and_fds(pid: int) -> tuple[int, int]:
    return len(os.listdir(f"/proc/{pid}/task")), len(os.listdir(f"/proc/{pid}/fd"))


# -- a browser's side -------------------------------------------------------------------------------

def sign_in(port: int, token: str) -> str:
    """The session cookie of a sign-in with ``token`` on /login, as a person does it."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", "/login")
    response = connection.getresponse()
    page = response.read().decode()
    cookie = response.getheader("Set-Cookie").split(";", 1)[0]
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)[1]
    form = urllib.parse.urlencode({"csrf_token": csrf, "token": token, "next": "/"})
    connection.request("POST", "/login/token", body=form, headers={
        "Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"})
    response = connection.getresponse()
    response.read()
    connection.close()
    assert response.status == 302, f"sign-in answered {response.status}"
    return response.getheader("Set-Cookie").split(";", 1)[0]


def timed_requests(port: int, token: str, count: int) -> dict[str, dict]:
    """p50, p95 and max milliseconds of ``count`` of each of PROBES, one after the other on a kept-alive
    connection; and how many did not answer 200."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": f"Bearer {token}"}
    times: dict[str, list[float]] = {path: [] for path in PROBES}
    failed = 0
    for n in range(count + 2):
        for path in PROBES:
            started = time.perf_counter()
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            response.read()
            if n >= 2:  # two rounds of warm-up
                times[path].append((time.perf_counter() - started) * 1000)
                failed += response.status != 200
    connection.close()
    result = {path: {"p50": round(statistics.median(t), 1), "p95": round(percentile(t, 95), 1),
                     "max": round(max(t), 1)} for path, t in times.items()}
    result["not_200"] = failed
    return result


class Stream:
    """One open page's connection: what arrived since it was last looked at, and when events came."""

    __slots__ = ("arrived", "buffer", "closed", "hello_at", "sock", "status")

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buffer = bytearray()
        self.status = None
        self.hello_at: float | None = None
        self.closed = False
        self.arrived: dict[bytes, float] = {}


class Browser:
    """Many EventSource connections read by one selector loop."""

    def __init__(self, port: int, cookie: str):
        self.port = port
        self.request = (f"GET /events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n"
                        f"Cache-Control: no-cache\r\nConnection: keep-alive\r\nCookie: {cookie}\r\n"
                        f"User-Agent: bench-events\r\n\r\n").encode()
        self.selector = selectors.DefaultSelector()
        self.streams: list[Stream] = []
        self.refused = 0
        self.waiting_for: bytes | None = None

    def open(self, count: int, timeout: float) -> int:
        """Open ``count`` streams; how many had their ``hello`` event within ``timeout`` seconds."""
        return self.await_hello(self.connect(count), timeout)

    def connect(self, count: int) -> list[Stream]:
        """Send ``count`` requests for /events, each on a connection of its own."""
        streams = []
        for _ in range(count):
            try:
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
                sock.sendall(self.request)
            except OSError:
                self.refused += 1
                continue
            sock.setblocking(False)
            stream = Stream(sock)
            streams.append(stream)
            self.selector.register(sock, selectors.EVENT_READ, stream)
        self.streams += streams
        return streams

    def await_hello(self, streams: list[Stream], timeout: float) -> int:
        """How many of ``streams`` had their ``hello`` within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while any(s.hello_at is None for s in streams) and time.monotonic() < deadline:
            self.pump(0.5)
        return sum(1 for s in streams if s.hello_at is not None)

    def leave(self, count: int) -> None:
        """``count`` pages go away: their connections close, as when a browser leaves a page."""
        for stream in [s for s in self.streams if not s.closed][:count]:
            self.selector.unregister(stream.sock)
            stream.sock.close()
            stream.closed = True

    def live(self) -> int:
        """Streams that had their hello and are still open."""
        return sum(1 for s in self.streams if s.hello_at is not None and not s.closed)

    def got(self, tag: bytes) -> int:
        return sum(1 for s in self.streams if tag in s.arrived)

    def pump(self, timeout: float) -> None:
        """Read whatever arrived within ``timeout`` seconds, noting hello and the awaited change."""
        for key, _ in self.selector.select(timeout):
            stream: Stream = key.data
            try:
                chunk = stream.sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""
            now = time.monotonic()
            if not chunk:
                stream.closed = True
                self.selector.unregister(stream.sock)
                continue
            stream.buffer += chunk
            if stream.status is None and b"\r\n" in stream.buffer:
                stream.status = int(stream.buffer.split(b" ", 2)[1])
            if stream.hello_at is None and b"event: hello" in stream.buffer:
                stream.hello_at = now
                del stream.buffer[:]
            elif self.waiting_for is not None and self.waiting_for in stream.buffer:
                stream.arrived[self.waiting_for] = now
                del stream.buffer[:]
            elif len(stream.buffer) > 65536:
                del stream.buffer[:-4096]

    def wait_for(self, tag: bytes, committed_at: float, timeout: float) -> list[float]:
        """Seconds from ``committed_at`` to the change carrying ``tag``, for every stream that got it."""
        self.waiting_for = tag
        deadline = time.monotonic() + timeout
        while self.got(tag) < self.live() and time.monotonic() < deadline:
            self.pump(0.2)
        self.waiting_for = None
        return [s.arrived[tag] - committed_at for s in self.streams if tag in s.arrived]

    def idle(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.pump(max(0.0, min(0.5, deadline - time.monotonic())))

    def close(self) -> None:
        self.leave(len(self.streams))
        self.selector.close()


# -- one run ----------------------------------------------------------------------------------------

def change(engine, tag: str) -> float:
    """Give the changed deployment a new tag; the monotonic time just after the commit returned."""
    with engine.begin() as connection:
        connection.execute(text("UPDATE deployments SET tag = :tag, version = version + 1, updated_at = now() "
                                "WHERE name = :name"), {"tag": tag, "name": CHANGED})
    return time.monotonic()


def changes(browser: Browser, engine, label: str, count: int) -> tuple[list[float], list[float], list[int]]:
    """Commit ``count`` changes at random points of the poll interval: per stream and change, the delay
    from the commit and the delay from the first stream's arrival (the fan-out); streams reached each."""
    delays, fan_out, reached = [], [], []
    for n in range(count):
        browser.idle(random.uniform(0.3, 1.3))
        tag = f"bench-{label}-{n}-{random.getrandbits(32):08x}"
        got = browser.wait_for(f'"tag":"{tag}"'.encode(), change(engine, tag), timeout=30)
        delays += got
        fan_out += [delay - min(got) for delay in got]
        reached.append(len(got))
    return delays, fan_out, reached


def spread(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "max": None}
    return {"p50": round(statistics.median(values), 3), "p95": round(percentile(values, 95), 3),
            "max": round(max(values), 3)}


def start_prober(port: int, token: str) -> subprocess.Popen:
    """prober.py asking for PROBES every 50 ms, in a process of its own, as pages and CI do meanwhile."""
    prober = subprocess.Popen([sys.executable, str(HERE / "prober.py"), str(port), token], stdout=subprocess.PIPE,
                              text=True)
    assert prober.stdout.readline().strip() == "ready", "the prober did not start"
    return prober


def stop_prober(prober: subprocess.Popen) -> dict:
    prober.terminate()
    out, _ = prober.communicate(timeout=30)
    return json.loads(out)


def navigate(browser: Browser, probe_port: int, pages: int) -> dict:
    """``pages`` people move to another page at once: each page's stream closes and a new one opens.
    How long until every new stream is live, and how long a /healthz sent meanwhile takes."""
    browser.leave(pages)
    started = time.monotonic()
    fresh = browser.connect(pages)
    healthz: list[float | None] = []
    asking = threading.Thread(target=lambda: healthz.append(single_request(probe_port, "/healthz")))
    asking.start()
    live = browser.await_hello(fresh, timeout=45)
    asking.join()
    last = max((s.hello_at for s in fresh if s.hello_at is not None), default=started)
    return {"pages": pages, "live_again": live, "all_live_s": round(last - started, 2) if live == pages else None,
            "healthz_ms": healthz[0]}


def released_after_close(pid: int, streams: int, fds_open: int, timeout: float = 35) -> float | None:
    """Seconds until the server closed its side of 95 % of the ``streams`` the pages closed (None: not
    within ``timeout``): until then each holds a socket, and a thread or greenlet, for nobody."""
    closed_at = time.monotonic()
    while time.monotonic() - closed_at < timeout:
        if threads_and_fds(pid)[1] <= fds_open - 0.95 * streams:
            return round(time.monotonic() - closed_at, 1)
        time.sleep(0.1)
    return None


def single_request(port: int, path: str, timeout: float = 60) -> float | None:
    """Milliseconds for one GET on a new connection; None if it did not answer 200 within ``timeout``."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    started = time.perf_counter()
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return round((time.perf_counter() - started) * 1000, 1) if response.status == 200 else None
    except OSError:
        return None
    finally:
        connection.close()


def database_connections(engine) -> int:
    """Connections to the benchmark's database other than this one (the servers' pools)."""
    with engine.connect() as connection:
        return connection.execute(text("SELECT count(*) - 1 FROM pg_stat_activity "
                                       "WHERE datname = current_database()")).scalar()


def measure(name: str, count: int, args, env: dict[str, str], tmp: Path, engine, token: str,
            others: list[int]) -> dict:
    """One candidate holding ``count`` streams: times, memory and CPU."""
    served = serve(name, count, env, tmp, args.spare)
    try:
        cookie = sign_in(served.probe_port, token)
        before = timed_requests(served.probe_port, token, args.requests)
        pid = served.stream_pid
        roots = [p.pid for p in served.processes]
        result = {"candidate": name, "streams": count, "rss_mb_before": round(rss_mb([pid]), 1),
                  "threads_before": threads_and_fds(pid)[0], "requests_without_streams": before}
        browser = Browser(served.stream_port, cookie)
        cpu, started = cpu_seconds(roots), time.monotonic()
        result["opened"] = browser.open(count, timeout=60 + count / 20)
        result["refused"] = browser.refused
        result["not_200"] = sum(1 for s in browser.streams if s.status not in (None, 200))
        result["open_s"] = round(time.monotonic() - started, 2)
        result["open_cpu_s"] = round(cpu_seconds(roots) - cpu, 2)
        browser.idle(2.5)  # the poller's first look at the table (it only takes note) is behind us
        cpu, others_cpu, started = cpu_seconds(roots), cpu_seconds(others), time.monotonic()
        browser.idle(args.idle)
        idle_s = time.monotonic() - started
        idle_cpu = cpu_seconds(roots) - cpu
        result["idle_cpu_pct"] = round(100 * idle_cpu / idle_s, 1)
        result["idle_db_redis_cpu_pct"] = round(100 * (cpu_seconds(others) - others_cpu) / idle_s, 1)
        cpu, started = cpu_seconds(roots), time.monotonic()
        delays, fan_out, reached = changes(browser, engine, f"{name}-{count}", args.changes)
        fan_out_cpu = (cpu_seconds(roots) - cpu) - idle_cpu / idle_s * (time.monotonic() - started)
        result.update({"reached_min": min(reached), "still_open": browser.live(), "delay_s": spread(delays),
                       "fan_out_s": spread(fan_out),
                       "fan_out_cpu_ms": round(max(0.0, fan_out_cpu) * 1000 / args.changes, 1),
                       "requests_with_streams": timed_requests(served.probe_port, token, args.requests)})
        prober = start_prober(served.probe_port, token)
        busy_delays, _, busy_reached = changes(browser, engine, f"{name}-{count}-busy", args.changes)
        result["requests_during_changes"] = stop_prober(prober)
        result["delay_with_requests_s"] = spread(busy_delays)
        result["reached_min"] = min(result["reached_min"], *busy_reached)
        result["rss_mb"], result["rss_mb_all"] = round(rss_mb([pid]), 1), round(rss_mb(roots), 1)
        result["threads"], result["fds"] = threads_and_fds(pid)
        result["database_connections"] = database_connections(engine)
        result["navigation"] = navigate(browser, served.probe_port, count // 2)
        # Every page closes right after an event, when a stream's keep-alive timer has just started.
        changes(browser, engine, f"{name}-{count}-last", 1)
        still_open, fds = browser.live(), threads_and_fds(pid)[1]
        browser.close()
        result["released_s"] = released_after_close(pid, still_open, fds)
        return result
    finally:
        served.stop()


# -- the report -------------------------------------------------------------------------------------

def _probe_cell(path: str):
    """p95 of ``path`` with no stream open, with the streams open, and while changes fan out."""
    return lambda r: " / ".join(str(r[phase][path]["p95"]) for phase in
                                ("requests_without_streams", "requests_with_streams", "requests_during_changes"))


COLUMNS = [
    ("candidate", lambda r: r["candidate"]),
    ("streams", lambda r: str(r["streams"])),
    ("opened, got every change", lambda r: f"{r['opened']} " + (
        "yes" if r["reached_min"] == r["streams"] else f"no: {r['reached_min']}")),
    ("delay p50 / p95 / max s", lambda r: f"{r['delay_s']['p50']} / {r['delay_s']['p95']} / {r['delay_s']['max']}"),
    ("fan-out p95 / max s", lambda r: f"{r['fan_out_s']['p95']} / {r['fan_out_s']['max']}"),
    ("RSS MB (KB per stream)",
     lambda r: f"{r['rss_mb']} ({(r['rss_mb'] - r['rss_mb_before']) * 1024 / r['streams']:.0f})"),
    ("threads", lambda r: str(r["threads"])),
    ("DB conns", lambda r: str(r["database_connections"])),
    ("CPU s to open", lambda r: str(r["open_cpu_s"])),
    ("fan-out CPU ms", lambda r: str(r["fan_out_cpu_ms"])),
    ("idle CPU %", lambda r: str(r["idle_cpu_pct"])),
    ("/healthz p95 ms: none / open / changing", _probe_cell(PROBES[0])),
    ("API p95 ms: none / open / changing", _probe_cell(PROBES[1])),
    ("half the pages move: all live again s, /healthz meanwhile ms", lambda r: (
        f"{r['navigation']['all_live_s'] if r['navigation']['all_live_s'] is not None else '> 45'}, "
        f"{r['navigation']['healthz_ms'] if r['navigation']['healthz_ms'] is not None else 'none in 60 s'}")),
    ("closed after an event: let go s", lambda r: "> 35" if r["released_s"] is None else str(r["released_s"])),
]


def summary(results: list[dict]) -> str:
    """One line per candidate and stream count; the rounds' figures side by side, comma separated."""
    lines = ["| " + " | ".join(header for header, _ in COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    keys = sorted({(r["streams"], r["candidate"]) for r in results}, key=lambda k: (k[0], CANDIDATES.index(k[1])))
    for streams, candidate in keys:
        runs = [r for r in results if r["candidate"] == candidate and r["streams"] == streams]
        cells = [describe(runs[0]) if header in ("candidate", "streams") else ", ".join(describe(r) for r in runs)
                 for header, describe in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def available(candidates: list[str]) -> list[str]:
    """The candidates whose packages are installed; a note for each one skipped."""
    found = []
    for name in candidates:
        missing = [module for module in NEEDS.get(name, []) if importlib.util.find_spec(module) is None]
        if missing:
            print(f"skipping {name}: {', '.join(missing)} not installed (.venv/bin/pip install --require-hashes "
                  "-r requirements/bench.txt)", flush=True)
        else:
            found.append(name)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", default="100,500,1000,2000", help="stream counts, comma separated")
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--changes", type=int, default=5, help="changes committed per run")
    parser.add_argument("--idle", type=float, default=16,
                        help="seconds the open streams sit before the changes (past one 15 s keep-alive)")
    parser.add_argument("--requests", type=int, default=30, help="of each probe request, per measurement")
    parser.add_argument("--deployments", type=int, default=1000)
    parser.add_argument("--spare", type=int, default=SPARE,
                        help="gunicorn worker connections (and gthread threads) beyond the streams")
    args = parser.parse_args()
    candidates = available(args.candidates.split(","))
    counts = [int(n) for n in args.streams.split(",")]
    results: list[dict] = []
    with running(PostgresServer()) as postgres, running(RedisServer()) as redis, \
            tempfile.TemporaryDirectory(prefix="sami-bench-events-") as tmp:
        from tests.conftest import create_database

        url = create_database(postgres, "sami_bench_events")
        db.upgrade(url)
        seed(url, args.deployments, args.deployments * 10, 0)
        engine = db.make_engine(url)
        with sessionmaker(bind=engine)() as session:
            token = create_token(session, "bench-reader", Scopes(services=tuple(READABLE_SERVICES)))
            session.commit()
        env = sami_env(SAMI_DATABASE_URL=url, SAMI_REDIS_URL=redis.url(0), SAMI_INSTANCE_DIR=f"{tmp}/instance",
                       SAMI_MODE="production", SAMI_SECRET_KEY="k" * 32, SAMI_WEBHOOK_SECRET="w" * 32,
                       SAMI_PAGE_READ="login", SAMI_SHUTDOWN_GRACE="2", SAMI_LOG_LEVEL="warning")
        postmaster = int((postgres.data / "postmaster.pid").read_text().split()[0])
        for round_ in range(args.rounds):
            order = candidates[round_ % len(candidates):] + candidates[:round_ % len(candidates)]
            for count in counts:
                for name in order:
                    result = measure(name, count, args, env, Path(tmp), engine, token,
                                     [postmaster, redis.process.pid])
                    result["round"] = round_ + 1
                    results.append(result)
                    print(json.dumps(result), flush=True)
        engine.dispose()
    print()
    print(f"{args.changes} changes per run, {args.rounds} round(s), {args.spare} spare connections; "
          f"load average {os.getloadavg()[0]:.1f} at the end")
    print(summary(results))


if __name__ == "__main__":
    main()
