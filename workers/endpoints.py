"""External third-party services, and the check of their endpoint (their manifest's ``check``).

Nothing of an external service is provisioned, so no control script ever runs for it (``external``): its
create, update and restore only check the endpoint, its archive and cleanup only record the state, and
Sami itself asks the outside provider whether it answers, in place of the ``check`` script, after a deploy
and in the periodic checks.

``{type: tcp}``: a TCP connection to every ``host:port`` of the endpoint. ``{type: http, path: /p}``: a
GET of ``/p`` on every entry (``https`` on port 443, ``http`` otherwise); any answer below 400 passes,
redirects are not followed. Every entry must answer; they are asked at once, each within the check's
``timeout``, so a check never takes much longer than that. A failure names each entry that did not answer.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor

from bot.manifests import Manifest
from bot.manifests.topology import Kind, ThirdPartyMode
from workers.runner import ScriptResult

MAX_ENTRIES = 16  # entries asked at once (an endpoint list is a handful of hosts)


def external(manifest: Manifest) -> bool:
    """Whether ``manifest`` is an external third-party service: nothing is provisioned, no control script runs."""
    return manifest.kind is Kind.THIRD_PARTY and manifest.mode is ThirdPartyMode.EXTERNAL


def wanted(manifest: Manifest) -> bool:
    """Whether ``manifest`` is an external third-party service with a check of its endpoint."""
    return external(manifest) and manifest.check is not None and bool(manifest.endpoint)


def entries(endpoint: str) -> list[tuple[str, int]]:
    """``host:port`` entries of a comma-separated endpoint as (host, port); ``[v6]`` hosts unbracketed."""
    found = []
    for entry in endpoint.split(","):
        host, sep, port = entry.strip().rpartition(":")
        if sep and host and port.isdigit():
            found.append((host[1:-1] if host.startswith("[") and host.endswith("]") else host, int(port)))
    return found


def _label(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _tcp(host: str, port: int, timeout: float) -> str | None:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except TimeoutError:
        return f"no TCP connection within {timeout:g} s"
    except OSError as exc:
        return f"TCP connection failed ({exc.strerror or type(exc).__name__})"


def _http(host: str, port: int, path: str, timeout: float) -> str | None:
    if port == 443:
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(
            host, port, timeout=timeout, context=ssl.create_default_context())
    else:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
    scheme = "https" if port == 443 else "http"
    try:
        connection.request("GET", path, headers={"User-Agent": "sami-endpoint-check"})
        status = connection.getresponse().status
    except TimeoutError:
        return f"GET {scheme}://{_label(host, port)}{path}: no answer within {timeout:g} s"
    except (OSError, http.client.HTTPException) as exc:
        why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        return f"GET {scheme}://{_label(host, port)}{path} failed ({why})"
    finally:
        connection.close()
    return None if status < 400 else f"GET {scheme}://{_label(host, port)}{path} answered {status}"


def problem(manifest: Manifest) -> str | None:
    """Why the endpoint of ``manifest`` does not pass its check (naming each entry that failed); None when it does."""
    if not wanted(manifest):
        return None
    check = manifest.check
    targets = entries(manifest.endpoint or "")[:MAX_ENTRIES]
    if not targets:
        return f"endpoint check: no host:port in {manifest.endpoint!r}"
    timeout = float(check.timeout)

    def ask(target: tuple[str, int]) -> str | None:
        host, port = target
        if check.type == "http":
            return _http(host, port, check.path or "/", timeout)
        return _tcp(host, port, timeout)

    with ThreadPoolExecutor(max_workers=len(targets)) as pool:
        answers = list(pool.map(ask, targets))
    failed = [f"{_label(host, port)}: {why}" for (host, port), why in zip(targets, answers, strict=True) if why]
    if not failed:
        return None
    return f"endpoint check ({check.type}) failed: " + "; ".join(failed)


def answer(manifest: Manifest) -> ScriptResult:
    """What stands for the ``check`` script of an external service: its endpoint check (exit 1 with the
    reason on stderr when it fails; exit 0 when it passes, or when the manifest has no check)."""
    started = time.monotonic()
    why = problem(manifest)
    return ScriptResult(exit_code=0 if why is None else 1, timed_out=False, stdout="",
                        stderr="" if why is None else why + "\n", duration=time.monotonic() - started)
