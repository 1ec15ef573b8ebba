"""Run one control script: argv list, secrets in the environment, output captured as it comes,
secret values masked, a size cap, and a timeout that stops the whole process group."""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bot.core import metrics

log = logging.getLogger(__name__)

MASK = "********"
# Secrets shorter than this would mask ordinary words; the executor refuses such values.
MIN_MASKED_LENGTH = 6


# Every script runs under a supervisor that leads its process group: if the worker dies, the
# script and whatever it started die with it (and cannot race the action's retry).
SUPERVISOR = str(Path(__file__).resolve().with_name("supervise.py"))
SUPERVISOR_LABEL = "sami-script"


class StopScript(Exception):
    """Raised by an ``on_tick``/``on_output`` callback to stop the script (its group is killed)."""


class ScriptNotFound(Exception):
    """The control script for an operation does not exist or is not executable."""


@dataclass(frozen=True)
class ScriptResult:
    """What a finished script did: exit code (None when killed by the timeout) and its output."""

    exit_code: int | None
    timed_out: bool
    stdout: str
    stderr: str
    duration: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


class Masker:
    """Replaces every secret value in a text with a fixed mask."""

    def __init__(self, secrets: Iterable[str]):
        # Output is masked a line at a time, so a multi-line secret (a key, a kubeconfig) is
        # masked line by line. Longest first, so a secret that contains another is masked whole.
        values = set()
        for secret in secrets:
            for part in (secret or "").splitlines() or [secret or ""]:
                if len(part.strip()) >= MIN_MASKED_LENGTH:
                    values.add(part.strip())
        self.values = sorted(values, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for value in self.values:
            if value in text:
                text = text.replace(value, MASK)
        return text


def _call(callback, *args) -> None:
    """Run a callback; its failure (a database blip while writing a heartbeat or a log line) must
    not abandon a running script, so it is logged. StopScript is the one way to stop it."""
    try:
        callback(*args)
    except StopScript:
        raise
    except Exception:
        log.exception("control script callback failed; the script goes on")


def _reader(stream, name: str, lines: queue.Queue) -> None:
    try:
        for raw in iter(stream.readline, b""):
            lines.put((name, raw.decode("utf-8", "replace")))
    finally:
        stream.close()
        lines.put((name, None))


def _stop_group(process: subprocess.Popen, grace: float) -> None:
    """TERM the script's whole process group, then KILL what is left after ``grace`` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait)
            # The leader is gone; children may linger in the group.
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue
        return


def run_control_script(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str | None = None,
    timeout: float,
    secrets: Iterable[str] = (),
    on_output: Callable[[str], None] | None = None,
    on_tick: Callable[[], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    label: str = SUPERVISOR_LABEL,
    tick_seconds: float = 0.5,
    max_output: int = 1024 * 1024,
    kill_grace: float = 10.0,
) -> ScriptResult:
    """Run ``argv`` (never through a shell) and return its result.

    ``on_output`` receives masked log lines as they arrive (stderr lines prefixed ``! ``),
    ``on_tick`` is called every ``tick_seconds`` while the script runs (heartbeats, log flushes),
    ``on_start`` gets the process group id once the script runs. ``label`` names the group for
    ``find_script_group``.
    """
    if not argv or not os.path.isfile(argv[0]) or not os.access(argv[0], os.X_OK):
        raise ScriptNotFound(f"control script {argv[0] if argv else '?'} is missing or not executable")
    mask = Masker(secrets)
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-I", "-S", SUPERVISOR, label, *argv],
        env={**env, "SAMI_SUPERVISOR_PARENT": str(os.getpid())},
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, so a timeout stops every child
        close_fds=True,
    )
    lines: queue.Queue = queue.Queue()
    readers = [
        threading.Thread(target=_reader, args=(process.stdout, "stdout", lines), daemon=True),
        threading.Thread(target=_reader, args=(process.stderr, "stderr", lines), daemon=True),
    ]
    for reader in readers:
        reader.start()
    if on_start:
        _call(on_start, process.pid)
    captured: dict[str, list[str]] = {"stdout": [], "stderr": []}
    sizes = {"stdout": 0, "stderr": 0}
    open_streams = 2
    timed_out = False
    deadline = started + timeout
    next_tick = started + tick_seconds
    exited_at: float | None = None
    try:
        # Until the script has exited and its output is read (or it is stopped).
        while open_streams or process.poll() is None:
            now = time.monotonic()
            if exited_at is None and process.poll() is not None:
                exited_at = now
            if open_streams and exited_at is not None and not timed_out and now - exited_at > 5:
                # The script is done but something it started still holds its output open.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                break
            if now >= deadline and not timed_out:
                timed_out = True
                log.warning("control script %s timed out after %.0f s", os.path.basename(argv[0]), timeout)
                metrics.SCRIPT_TIMEOUTS.labels(os.path.basename(argv[0])).inc()
                _stop_group(process, kill_grace)
            if on_tick and now >= next_tick:
                next_tick = now + tick_seconds
                _call(on_tick)
            if not open_streams:
                # The script closed its output (as it does when it exits) but may run on: wait for its
                # end, which comes in a moment when it exited, keeping the timeout and the ticks going.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(0.05)
                continue
            try:
                name, line = lines.get(timeout=0.2 if timed_out else min(0.2, max(0.01, deadline - now)))
            except queue.Empty:
                if timed_out and process.poll() is not None and time.monotonic() > deadline + kill_grace + 10:
                    break  # a grandchild escaped the group but holds the pipe; stop waiting for it
                continue
            if line is None:
                open_streams -= 1
                continue
            line = mask(line)
            if sizes[name] < max_output:
                captured[name].append(line)
                sizes[name] += len(line)
            if on_output:
                _call(on_output, line if name == "stdout" else f"! {line}")
    except BaseException:
        # Stopped by the caller (StopScript from a callback) or an unexpected error: never leave
        # the script running behind our back.
        _stop_group(process, kill_grace)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(5)
        raise
    if timed_out:
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        exit_code = None
    else:
        exit_code = process.wait()
    return ScriptResult(
        exit_code=exit_code,
        timed_out=timed_out,
        stdout="".join(captured["stdout"]),
        stderr="".join(captured["stderr"]),
        duration=time.monotonic() - started,
    )


def find_script_group(pgid: int, label: str) -> bool:
    """Whether ``pgid`` still leads a script group started with ``label`` on this host (a pid
    that was reused by another process does not)."""
    try:
        with open(f"/proc/{pgid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
        return os.getpgid(pgid) == pgid and SUPERVISOR.encode() in argv and label.encode() in argv
    except (OSError, ProcessLookupError):
        return False


def kill_script_group(pgid: int, label: str) -> bool:
    """SIGKILL the script group ``pgid`` if it is still the one labelled ``label``."""
    if not find_script_group(pgid, label):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    return True
