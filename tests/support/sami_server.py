"""A real `sami serve` (gunicorn) process for tests and benchmarks, always stopped at the end."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]


# Secrets as long as production mode asks (bot/core/config.py's MIN_SECRET_LENGTHS), for tests that run it.
PRODUCTION_SECRET_KEY = "test-session-signing-key-0123456789abcdef"
PRODUCTION_WEBHOOK_SECRET = "test-webhook-secret-0123456789abcdef"


def sami_env(**settings: str) -> dict[str, str]:
    """This process's environment without its SAMI_* variables, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAMI_")}
    env.update(settings)
    return env


def sami(*args: str, env: dict[str, str], timeout: float = 60, check: bool = True,
         stdin: bytes | None = None) -> subprocess.CompletedProcess:
    """Run the `sami` command; its output as text."""
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=check, cwd=ROOT)


class SamiServer:
    """`sami serve` on a free port of 127.0.0.1, its output in ``log``."""

    def __init__(self, env: dict[str, str], log: Path, *args: str, port: int | None = None, cwd: Path = ROOT):
        self.port = port or free_port()
        self.cwd = cwd  # `python -m` imports from here first
        self.env = env
        self.log = log
        self.args = args
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> SamiServer:
        with open(self.log, "ab") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bot.cli", "serve", "--bind", f"127.0.0.1:{self.port}", *self.args],
                env=self.env, stdout=sink, stderr=subprocess.STDOUT, cwd=self.cwd)
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise AssertionError(f"sami serve did not start: {self.output()[-3000:]}")
            time.sleep(0.2)
        return self

    def healthy(self) -> bool:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            connection.request("GET", "/healthz")
            return connection.getresponse().status == 200
        except OSError:
            return False
        finally:
            connection.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            # gunicorn lets in-flight work finish for up to its graceful timeout (30 s), then stops.
            self.process.wait(45)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> SamiServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def post(url: str, path: str, data: bytes, headers: dict[str, str], timeout: float = 30) -> tuple[int, bytes]:
    """POST ``data`` to ``url`` + ``path`` on a connection of its own; the status and body."""
    host, _, port = url.removeprefix("http://").partition(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        connection.request("POST", path, body=data, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def call(url: str, token: str | None = None, body: dict | None = None) -> tuple[int, str]:
    """GET ``url`` (or POST ``body`` as JSON) with an optional bearer token: (status, text)."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method="POST" if body else "GET")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
