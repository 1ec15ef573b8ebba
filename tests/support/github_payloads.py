"""Real GitHub webhook payloads for tests, and deliveries signed as GitHub signs them.

The payloads are GitHub's own examples from npm ``@octokit/webhooks-examples`` (installed into
tests/node by scripts/install-test-deps). Its ``api.github.com/index.json`` is a list of events,
each ``{"name", "description", "actions", "properties", "examples": [payload, ...]}``.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import hmac
import json
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES_INDEX = ROOT / "tests" / "node" / "node_modules" / "@octokit" / "webhooks-examples" / "api.github.com" / \
    "index.json"


@functools.cache
def _index() -> dict[str, list[dict[str, Any]]]:
    if not EXAMPLES_INDEX.exists():
        raise RuntimeError(f"{EXAMPLES_INDEX.relative_to(ROOT)} is missing: run scripts/install-test-deps")
    return {entry["name"]: entry["examples"] for entry in json.loads(EXAMPLES_INDEX.read_text())}


def events() -> list[str]:
    """The events GitHub's examples cover."""
    return sorted(_index())


def examples(event: str, action: str | None = None) -> list[dict[str, Any]]:
    """Every example payload of ``event`` (with ``action``, when given); copies, free to change."""
    try:
        found = _index()[event]
    except KeyError:
        raise KeyError(f"no example of {event!r} events (there are: {', '.join(events())})") from None
    if action is not None:
        found = [payload for payload in found if payload.get("action") == action]
    if not found:
        actions = sorted({str(payload.get("action")) for payload in _index()[event]})
        raise KeyError(f"no example of {event}.{action} (actions with examples: {', '.join(actions)})")
    return copy.deepcopy(found)


def example(event: str, action: str | None = None, *, index: int = 0) -> dict[str, Any]:
    """One example payload of ``event`` (with ``action``); a copy."""
    return examples(event, action)[index]


def body(payload: dict[str, Any]) -> bytes:
    """The payload as GitHub sends it: compact JSON."""
    return json.dumps(payload, separators=(",", ":")).encode()


def sign(data: bytes, secret: str) -> str:
    """The ``X-Hub-Signature-256`` header GitHub sends with ``data``."""
    return "sha256=" + hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()


def delivery_headers(event: str, data: bytes, secret: str | None, delivery: str | None = None) -> dict[str, str]:
    """The headers of a delivery of ``data`` as GitHub sends them (unsigned when ``secret`` is None)."""
    headers = {
        "User-Agent": "GitHub-Hookshot/044aadd",
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-GitHub-Hook-ID": "292430182",
    }
    if secret is not None:
        headers["X-Hub-Signature-256"] = sign(data, secret)
    return headers
