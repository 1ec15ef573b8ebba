"""What an action does once its outcome is recorded (``info``, ``notifications``), run beside the
worker's next job instead of before it.

The outcome, the run's next components and the deployment's state are committed before; these scripts
only refresh links and tell people. A ``sami worker`` runs them on a thread of its own while it takes
the next job, so a component that waits for this one does not also wait for them. The thread keeps the
deployment's lease until they end (no other script runs on that deployment meanwhile), then lets it go
and queues again what was queued on the deployment while it held it. A worker that stops waits for them.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

# More at once than this, and the worker waits for one to end before it takes its next job.
MAX_RUNNING = 4


class AfterWork:
    """The threads of one worker process that run actions' after-work; ``wait`` joins them."""

    def __init__(self, max_running: int = MAX_RUNNING):
        self.max_running = max_running
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Condition()

    def start(self, work: Callable[[], None], name: str) -> None:
        """Run ``work`` on a thread of its own (with the log ids of the caller)."""
        context = contextvars.copy_context()

        def run() -> None:
            try:
                context.run(work)
            except Exception:
                log.exception("%s failed", name)
            finally:
                with self._lock:
                    self._threads.discard(threading.current_thread())
                    self._lock.notify_all()

        # Not a daemon: a process that exits still lets it finish (its scripts are its children).
        thread = threading.Thread(target=run, name=name)
        with self._lock:
            self._lock.wait_for(lambda: len(self._threads) < self.max_running)
            self._threads.add(thread)
        thread.start()

    def running(self) -> int:
        with self._lock:
            return len(self._threads)

    def wait(self, timeout: float | None = None) -> bool:
        """Until every after-work started so far has ended; False if ``timeout`` came first."""
        with self._lock:
            return self._lock.wait_for(lambda: not self._threads, timeout)
