"""Two stand-ins for GitHub's REST API, for tests of the GitHub client and what uses it.

``PrismServer``: Prism serving GitHub's own OpenAPI description (npm ``@octokit/openapi``),
trimmed to the operations Sami calls. It answers from the description's examples and rejects a
request that breaks the description (422, reason in ``sl-violations``), so a test going through
it proves Sami's requests are well formed. Its answers are fixed example data
(``octocat/Hello-World``, pull request 1347): assert on what was sent and on statuses.

``FakeGitHub``: a recording fake, named as such, for what fixed examples cannot express (an
error on page 2, a rate limit, a 304, an expired installation token): a small HTTP server on
127.0.0.1 answering scripted responses and recording every request it gets.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt

from tests.support.servers import free_port

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
SPEC_SOURCE = NODE_DIR / "node_modules" / "@octokit" / "openapi" / "generated" / "api.github.com.json"
PRISM = NODE_DIR / "node_modules" / ".bin" / "prism"
GITHUB = "https://api.github.com"
# Seconds a test's GitHub client (and the proxy in front of Prism) waits for an answer. Prism shares the
# machine's CPU with everything else: a loaded machine has stalled it past production's 10 s, and a
# slow answer must make a test slower, never make it take GitHub for unreachable.
ANSWER_TIMEOUT = 120

# The operations Sami's GitHub client calls; the served description holds these and nothing else.
OPERATIONS: dict[str, tuple[str, ...]] = {
    "/app": ("get",),
    "/app/hook/config": ("get",),
    "/app/hook/deliveries": ("get",),
    "/app/hook/deliveries/{delivery_id}/attempts": ("post",),
    "/app/installations/{installation_id}/access_tokens": ("post",),
    "/app-manifests/{code}/conversions": ("post",),
    "/orgs/{org}/teams/{team_slug}/memberships/{username}": ("get",),
    "/repos/{owner}/{repo}": ("get",),
    "/repos/{owner}/{repo}/installation": ("get",),
    "/repos/{owner}/{repo}/hooks": ("get",),
    "/repos/{owner}/{repo}/hooks/{hook_id}/deliveries": ("get",),
    "/repos/{owner}/{repo}/hooks/{hook_id}/deliveries/{delivery_id}/attempts": ("post",),
    "/repos/{owner}/{repo}/pulls": ("get",),
    "/repos/{owner}/{repo}/pulls/{pull_number}": ("get",),
    "/repos/{owner}/{repo}/issues/{issue_number}/comments": ("get", "post"),
    "/repos/{owner}/{repo}/issues/comments/{comment_id}": ("patch",),
    "/repos/{owner}/{repo}/issues/comments/{comment_id}/reactions": ("post",),
    "/repos/{owner}/{repo}/collaborators/{username}/permission": ("get",),
    "/repos/{owner}/{repo}/deployments": ("get", "post"),
    "/repos/{owner}/{repo}/deployments/{deployment_id}/statuses": ("post",),
    "/repos/{owner}/{repo}/statuses/{sha}": ("post",),
    "/repos/{owner}/{repo}/commits/{ref}/check-runs": ("get",),
    "/repos/{owner}/{repo}/commits/{ref}/status": ("get",),
    "/user": ("get",),
}
TRIM_VERSION = "1"  # change when trim() changes, to rebuild cached copies


def _refs(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            found.add(ref)
        for value in node.values():
            _refs(value, found)
    elif isinstance(node, list):
        for value in node:
            _refs(value, found)


def _drop_link_headers(node: Any) -> None:
    # Their examples point at a page 2 that no example answers.
    if isinstance(node, dict):
        headers = node.get("headers")
        if isinstance(headers, dict):
            for name in [name for name in headers if name.lower() == "link"]:
                del headers[name]
        for value in node.values():
            _drop_link_headers(value)
    elif isinstance(node, list):
        for value in node:
            _drop_link_headers(value)


def trim(spec: dict[str, Any], operations: dict[str, tuple[str, ...]] = OPERATIONS) -> dict[str, Any]:
    """The description with only ``operations`` and every component they reference, no x-webhooks."""
    paths = {}
    for path, verbs in operations.items():
        item = spec["paths"][path]
        kept = {verb: item[verb] for verb in verbs}
        if "parameters" in item:
            kept["parameters"] = item["parameters"]
        paths[path] = kept
    wanted: set[str] = set()
    _refs(paths, wanted)
    components: dict[str, dict[str, Any]] = {}
    done: set[str] = set()
    while wanted:
        ref = wanted.pop()
        if ref in done:
            continue
        done.add(ref)
        _, _, kind, name = ref.split("/", 3)  # "#/components/schemas/pull-request"
        node = spec["components"][kind][name]
        components.setdefault(kind, {})[name] = node
        _refs(node, wanted)
    trimmed = copy.deepcopy({"openapi": spec["openapi"], "info": spec["info"], "servers": spec["servers"],
                             "paths": paths, "components": components})
    _drop_link_headers(trimmed)
    return trimmed


def trimmed_spec(cache_dir: Path) -> Path:
    """The trimmed description as a file in ``cache_dir``, rebuilt when its source or the operations change."""
    if not SPEC_SOURCE.exists():
        raise RuntimeError(f"{SPEC_SOURCE} is missing: run scripts/install-test-deps")
    stat = SPEC_SOURCE.stat()
    key = hashlib.sha256(json.dumps([stat.st_size, stat.st_mtime_ns, OPERATIONS, TRIM_VERSION]).encode())
    target = cache_dir / f"github-{key.hexdigest()[:16]}.json"
    if not target.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        spec = json.loads(SPEC_SOURCE.read_text())
        partial = target.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(trim(spec)))
        partial.replace(target)
    return target


class PrismServer:
    """Prism mocking the trimmed description on a free port, its URLs pointing at itself."""

    def __init__(self, spec: Path, workdir: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.spec = workdir / "github.json"
        # PyGithub follows the url fields of answers: they must point here, not at api.github.com.
        self.spec.write_text(spec.read_text().replace(GITHUB, self.url))
        self.log_path = workdir / "prism.log"
        self.process: subprocess.Popen | None = None
        self.started_in: float | None = None

    def start(self, timeout: float = 60.0) -> None:
        if not PRISM.exists():
            raise RuntimeError(f"{PRISM} is missing: run scripts/install-test-deps")
        began = time.monotonic()
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [str(PRISM), "mock", "-h", "127.0.0.1", "-p", str(self.port), str(self.spec)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        while "Prism is listening" not in self.log():
            if self.process.poll() is not None or time.monotonic() - began > timeout:
                self.stop()
                raise RuntimeError(f"Prism did not start:\n{self.log()[-3000:]}")
            time.sleep(0.05)
        self.started_in = time.monotonic() - began

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def request_violations(self, since: int = 0) -> list[str]:
        """Prism's complaints about requests (not about its own examples) logged after offset ``since``."""
        return re.findall(r"Violation: request\S* .*", self.log()[since:])

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


# -- the recording fake ------------------------------------------------------------------------

HOLD_LIMIT = 120.0  # a held answer is given after this long even if the test never released it


@dataclass
class Reply:
    """One scripted answer of the fake."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    # Answered only once this is set: a request GitHub is still working on, for tests of what happens
    # meanwhile.
    held_until: threading.Event | None = None


@dataclass
class Recorded:
    """One request the fake received."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any

    @property
    def authorization(self) -> str:
        return self.headers.get("authorization", "")


class _LoopbackServer:
    """An HTTP server on a free loopback port, serving ``_handler()`` in a thread while in a ``with``."""

    def __init__(self):
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    def _handler(self) -> type:
        raise NotImplementedError

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


class FakeGitHub(_LoopbackServer):
    """A recording fake GitHub: scripted replies per ``METHOD /path``, every request recorded.

    Replies for a route are used in order, the last one again for later requests; a reply can be held
    back until the test releases it (``Reply.held_until``). An App's requests are checked the way
    GitHub checks them: its JWT must verify with the App's public key, and installation tokens must
    be ones this fake issued and has not expired.
    """

    def __init__(self, app_id: int | None = None, public_key: Any = None):
        self.app_id = app_id
        self.public_key = public_key
        self.routes: dict[str, list[Reply]] = {}
        self.requests: list[Recorded] = []
        self.tokens: dict[str, int] = {}  # issued installation token -> installation id
        self.expired: set[str] = set()
        self.token_lifetime = 3600.0
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        super().__init__()

    def on(self, method: str, path: str, *replies: Reply) -> None:
        """Answer ``method path`` with ``replies`` in order; ``path?a=1&b=2`` (sorted, not encoded) answers
        only that query, a bare path any query no other route takes."""
        self.routes[f"{method} {path}"] = list(replies)

    def calls(self, method: str | None = None, path: str | None = None) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if (method is None or r.method == method)
                    and (path is None or r.path == path)]

    def wait_for_requests(self, count: int, timeout: float = 60.0) -> bool:
        """Whether ``count`` requests have arrived, waiting for them up to ``timeout`` seconds."""
        with self._arrived:
            return self._arrived.wait_for(lambda: len(self.requests) >= count, timeout)

    def issue_token(self, installation_id: int) -> Reply:
        token = f"ghs_canary{len(self.tokens):04d}{installation_id:06d}"
        self.tokens[token] = installation_id
        expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + self.token_lifetime))
        return Reply(201, {"token": token, "expires_at": expires})

    def _authorized(self, recorded: Recorded) -> Reply | None:
        if self.app_id is None:
            return None
        scheme, _, credential = recorded.authorization.partition(" ")
        if recorded.path.startswith("/app"):
            try:
                claims = jwt.decode(credential, self.public_key, algorithms=["RS256"])
            except jwt.PyJWTError as exc:
                return Reply(401, {"message": f"A JSON web token could not be decoded ({type(exc).__name__})"})
            if scheme != "Bearer" or str(claims.get("iss")) != str(self.app_id):
                return Reply(401, {"message": "'Issuer' claim ('iss') must be the App's id"})
            return None
        if recorded.path.endswith("/installation"):
            return None if scheme == "Bearer" else Reply(401, {"message": "Bad credentials"})
        if credential not in self.tokens or credential in self.expired:
            return Reply(401, {"message": "Bad credentials"})
        return None

    def _reply(self, recorded: Recorded) -> Reply:
        refused = self._authorized(recorded)
        if refused is not None:
            return refused
        query = "&".join(f"{name}={value}" for name, value in sorted(recorded.query.items()))
        for key in (f"{recorded.method} {recorded.path}?{query}", f"{recorded.method} {recorded.path}"):
            replies = self.routes.get(key)
            if replies:
                reply = replies.pop(0) if len(replies) > 1 else replies[0]
                if reply.status == 201 and reply.body == "issue-token":
                    return self.issue_token(int(recorded.path.split("/")[3]))
                return reply
        return Reply(404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"})

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                parts = urllib.parse.urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                recorded = Recorded(self.command, parts.path, dict(urllib.parse.parse_qsl(parts.query)),
                                    {k.lower(): v for k, v in self.headers.items()},
                                    json.loads(raw) if raw else None)
                with fake._lock:
                    fake.requests.append(recorded)
                    reply = fake._reply(recorded)
                    fake._arrived.notify_all()
                if reply.held_until is None:
                    self._answer(reply)
                    return
                reply.held_until.wait(HOLD_LIMIT)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up waiting
                    self._answer(reply)

            def _answer(self, reply: Reply) -> None:
                body = b"" if reply.body is None or reply.status == 304 else json.dumps(reply.body).encode()
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value.replace("{url}", fake.url))
                if reply.status != 304:
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

            def log_message(self, *args) -> None:
                pass

        return Handler


# -- a fault in front of the real mock ----------------------------------------------------------


class FlakyProxy(_LoopbackServer):
    """A reverse proxy in front of Prism that answers 502 while ``down`` is set, as GitHub does in an
    outage, and otherwise forwards each request as it is. It counts the requests it forwarded (those
    that reached the mock), per ``METHOD /path``: what GitHub would have acted on."""

    def __init__(self, target: str):
        self.target = target.rstrip("/")
        self.down = False
        self.refused = 0
        self.forwarded: list[tuple[str, str, Any]] = []
        self._lock = threading.Lock()
        super().__init__()

    def counts(self) -> dict[str, int]:
        """Forwarded requests per ``METHOD /path`` with numbers replaced by ``{n}``."""
        counted: dict[str, int] = {}
        with self._lock:
            for method, path, _ in self.forwarded:
                shape = re.sub(r"/\d+(?=/|$)", "/{n}", re.sub(r"/[0-9a-f]{40}(?=/|$)", "/{sha}", path))
                key = f"{method} {shape}"
                counted[key] = counted.get(key, 0) + 1
        return dict(sorted(counted.items()))

    def _handler(self):
        import requests

        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if proxy.down:
                    with proxy._lock:
                        proxy.refused += 1
                    body = b'{"message":"Server Error"}'
                    self.send_response(502)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                answer = requests.request(self.command, proxy.target + self.path, data=raw or None, headers=headers,
                                          timeout=ANSWER_TIMEOUT)
                with proxy._lock:
                    proxy.forwarded.append((self.command, urllib.parse.urlsplit(self.path).path,
                                            json.loads(raw) if raw else None))
                body = answer.content.replace(proxy.target.encode(), proxy.url.encode())
                self.send_response(answer.status_code)
                for name, value in answer.headers.items():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

            def log_message(self, *args) -> None:
                pass

        return Handler


# -- a GitHub that hangs -------------------------------------------------------------------------


class SilentGitHub:
    """A GitHub that accepts connections and never answers, as a hung one does: a real listening
    socket that holds every connection open, unread, and counts them."""

    def __init__(self):
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._socket.settimeout(0.05)  # the accept loop looks at ``_stop`` this often
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def accepted(self) -> int:
        """Connections accepted so far."""
        with self._lock:
            return len(self._held)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._socket.accept()
            except TimeoutError:
                continue
            with self._lock:
                self._held.append(connection)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._socket.close()
        with self._lock:
            for connection in self._held:
                connection.close()
