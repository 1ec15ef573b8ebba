"""The leader of a control script's process group: when the worker that started it dies, the
script and everything it started die too.

Run as ``python -I -S supervise.py LABEL SCRIPT [ARGS...]`` in a new session, it asks the kernel
for SIGUSR1 when its parent dies (``PR_SET_PDEATHSIG``), starts the script in its own group and
waits for it. On SIGUSR1 it kills the whole group, grandchildren included (``sleep 300 &``),
which a death signal on the script alone cannot do. SIGTERM sent to the group (a timeout or a
cancel) reaches the script itself; the supervisor only waits for it to end. The exit status is
the script's (a script killed by a signal makes the supervisor end by that signal). LABEL names
the action (``sami-action-ID``) so that a reaper on the same host can recognise the group.

Standard library only, and no site-packages (``-S``): it starts in a few milliseconds.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
RESTORED_SIGNALS = tuple(getattr(signal, name) for name in ("SIGPIPE", "SIGXFZ", "SIGXFSZ") if hasattr(signal, name))
DEATH_SIGNAL = signal.SIGUSR1


def _kill_group(_signum=None, _frame=None) -> None:
    os.killpg(0, signal.SIGKILL)  # ourselves included


def _ask_for_death_signal(parent: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(DEATH_SIGNAL), 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the runner's timeout still applies
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        _kill_group()


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: supervise.py LABEL SCRIPT [ARGS...]", file=sys.stderr)
        return 2
    parent = int(os.environ.pop("SAMI_SUPERVISOR_PARENT", os.getppid()))
    # Handlers, not SIG_IGN: a caught signal is reset to its default in the script at exec.
    signal.signal(DEATH_SIGNAL, _kill_group)
    signal.signal(signal.SIGTERM, lambda *_: None)
    signal.signal(signal.SIGINT, lambda *_: None)
    _ask_for_death_signal(parent)
    try:
        # posix_spawnp, not subprocess: importing subprocess takes longer than the rest of this start-up.
        # Python ignores SIGPIPE (and SIGXFSZ); the script gets them back at their defaults, as subprocess's
        # restore_signals did, so that a pipeline's writer ends quietly when its reader has gone.
        pid = os.posix_spawnp(argv[1], argv[1:], os.environ, setsigdef=RESTORED_SIGNALS)
    except OSError as exc:
        print(f"cannot start {argv[1]}: {exc.strerror}", file=sys.stderr)
        return 126
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
