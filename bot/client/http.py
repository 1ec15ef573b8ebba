"""The client's HTTP side: one JSON call to the Sami server, and errors turned into one line that
says what to do next, with the exit code that goes with them.

The standard library's urllib is enough: the client needs no dependency the server lacks.
"""

from __future__ import annotations

import json
import re
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping

from bot import __version__
from bot.client.exits import Exit, for_status
from bot.core.lifecycle import TRANSITIONS, DeploymentState

S = DeploymentState
TIMEOUT = 30.0
SCOPE_RE = re.compile(r"may not (?P<action>[a-z]+)(?: on (?P<service>[^/\s]+)/(?P<environment>[^\s(]+))?")


class ClientError(Exception):
    """A call that did not work: a one-line message with the fix, and the exit code."""

    def __init__(self, message: str, exit_code: Exit, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.status = status


def check_url(url: str) -> str:
    """The server's root URL without a trailing slash (ClientError unless it is http(s))."""
    parsed = urllib.parse.urlsplit(url or "")
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ClientError(f"{url!r} is not a server address: give its root URL, like https://sami.example.com "
                          "(--url, SAMI_URL or sami login)", Exit.BAD_INPUT)
    return url.rstrip("/")


class Client:
    """Calls ``/api/v1`` on one server with one token."""

    def __init__(self, url: str, token: str | None, timeout: float = TIMEOUT):
        self.url = check_url(url)
        self.token = token
        self.timeout = timeout

    def get(self, path: str, query: Mapping[str, object] | None = None) -> dict:
        return self.call("GET", path, query=query)

    def post(self, path: str, body: Mapping[str, object] | None = None) -> dict:
        return self.call("POST", path, body=body or {})

    def text(self, path: str) -> str:
        """A GET whose answer is a document other than JSON (a YAML export): its text, or ClientError."""
        return self.call("GET", path, raw=True)

    def call(self, method: str, path: str, *, body: Mapping[str, object] | None = None,
             query: Mapping[str, object] | None = None, raw: bool = False) -> dict:
        """One call; its JSON answer (with ``raw``, a successful answer's text), or ClientError."""
        if not self.token:
            raise ClientError("no token: set SAMI_TOKEN, run `sami login`, or give --token "
                              "(an admin creates one with `sami token create NAME`)", Exit.REFUSED)
        url = self.url + path
        pairs = [(k, v) for k, v in (query or {}).items() if v not in (None, "", (), [])]
        if pairs:
            url += "?" + urllib.parse.urlencode(pairs, doseq=True)
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json",
                   "User-Agent": f"sami-client/{__version__}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                if raw and response.status < 400:
                    return response.read().decode("utf-8", "replace")
                return self._answer(response.status, response.read(), method, path)
        except urllib.error.HTTPError as exc:
            with exc:
                return self._answer(exc.code, exc.read(), method, path)
        except urllib.error.URLError as exc:
            raise ClientError(self._unreachable(exc.reason), Exit.UNREACHABLE) from None
        except (TimeoutError, ConnectionError, OSError) as exc:
            raise ClientError(self._unreachable(exc), Exit.UNREACHABLE) from None

    def _unreachable(self, reason) -> str:
        if isinstance(reason, ConnectionRefusedError):
            why = "connection refused"
        elif isinstance(reason, socket.gaierror):
            why = "unknown host"
        elif isinstance(reason, TimeoutError):
            why = f"no answer within {self.timeout:g} s"
        else:
            why = getattr(reason, "strerror", None) or str(reason)
        return (f"cannot reach {self.url}: {why}. Is the server running, and is the address right "
                "(--url, SAMI_URL or sami login)?")

    def _answer(self, status: int, raw: bytes, method: str, path: str) -> dict:
        try:
            document = json.loads(raw or b"null")
        except ValueError:
            document = None
        if not isinstance(document, dict):
            if status >= 500:
                raise ClientError(f"{self.url} answered {status} without Sami's JSON: the server or a proxy in "
                                  "front of it failed; try again later", Exit.SERVER_ERROR, status)
            raise ClientError(f"{self.url} answered {method} {path} with {status} but not with Sami's JSON: is it "
                              "the Sami server's root URL (--url, SAMI_URL or sami login)?", Exit.UNREACHABLE, status)
        if status < 400:
            return document
        message = str(document.get("error") or f"HTTP {status}")
        raise ClientError(explain(status, message, document, method, path), for_status(status), status)


def explain(status: int, message: str, document: Mapping, method: str, path: str) -> str:
    """The server's error message and what to do about it, in one line."""
    message = message.rstrip(".")
    if status == 401:
        return (f"the server refused the token ({message}): check SAMI_TOKEN or --token, or run `sami login` "
                "with a valid one")
    if status == 403:
        match = SCOPE_RE.search(message)
        if match and match["action"] == "admin":
            return f"{message}. This needs an admin token (sami token create NAME --admin)"
        if match:
            wanted = f"--action {match['action']}"
            if match["service"] and match["service"] != "*":
                wanted += f" --service {match['service']}"
            if match["environment"] and match["environment"] != "*":
                wanted += f" --environment {match['environment']}"
            return (f"{message}. It lacks the {match['action']!r} scope there: ask an admin for a token with "
                    f"`sami token create NAME {wanted}`")
        return message
    if status == 404 and message == "no such page or API endpoint":
        return (f"the server has no {method} {path}: is the address the Sami server's root URL, and is the server "
                "recent enough for this command?")
    if status == 404:
        return message.replace("(list them: GET /api/v1/deployments)", "(list them: sami list)")
    if status == 409:
        message = API_CALL_RE.sub(lambda m: f"sami {m['kind']} {m['name']}", message)
        state = document.get("state")
        # A pinned deployment's refusal says how to unpin it: the state's next steps would not help.
        hint = next_steps(state, document.get("action_id")) if state and not document.get("pinned") else ""
        return f"{message}{'; ' + hint if hint else ''}"
    if status >= 500:
        return f"the server failed: {message}"
    return message


# The command that asks for each state change a person can ask for (the rest happen by themselves).
_COMMANDS = {(S.ARCHIVED, S.CREATE_PENDING): "restore", (S.REMOVED, S.CREATE_PENDING): "create",
             (S.ARCHIVED, S.CLEANUP_PENDING): "cleanup", (S.CLEANUP_FAILED, S.CLEANUP_PENDING): "cleanup",
             (S.CLEANUP_FAILED, S.REMOVED): "delete"}
_COMMANDS_TO = {S.UPDATE_PENDING: "update", S.ARCHIVE_PENDING: "archive"}
_ORDER = ("create", "update", "archive", "restore", "cleanup", "delete")
API_CALL_RE = re.compile(r"POST /api/v1/deployments/(?P<name>[a-z0-9-]+)/(?P<kind>[a-z]+)")


def next_steps(state: str, action_id: object = None) -> str:
    """What a person may do with a deployment in ``state``, as sami commands."""
    try:
        current = DeploymentState(state)
    except ValueError:
        return ""
    possible = {_COMMANDS.get((frm, to)) or _COMMANDS_TO.get(to) for frm, to in TRANSITIONS if frm is current}
    commands = [c for c in _ORDER if c in possible]
    if current in (S.CREATE_PENDING, S.UPDATE_PENDING, S.ARCHIVE_PENDING, S.CLEANUP_PENDING):
        action = str(action_id) if isinstance(action_id, int) else "ACTION_ID"
        return f"follow it with `sami wait {action}`, or stop it with `sami cancel {action}`"
    if not commands:
        return ""
    return f"from {current} you can: {', '.join('sami ' + c for c in commands)}"
