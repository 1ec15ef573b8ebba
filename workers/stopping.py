"""A worker's stop request, as its running action sees it: a grace period, then hand the action back
(``workers.shutdown`` says how a worker stops). One per worker context."""

from __future__ import annotations

import threading

from workers.runner import StopScript


class HandBack(StopScript):
    """The worker is stopping: put the action back on the queue (raised from a heartbeat)."""


class Stopping:
    """This process's stop request: set once the grace period is over (or at once, grace 0)."""

    def __init__(self) -> None:
        self.hand_back = threading.Event()
        self._timer: threading.Timer | None = None

    def request(self, grace: float) -> None:
        """Start the grace period; running actions are handed back when it ends."""
        if grace <= 0:
            self.hand_back.set()
            return
        if self._timer is not None or self.hand_back.is_set():
            return
        self._timer = threading.Timer(grace, self.hand_back.set)
        self._timer.daemon = True
        self._timer.start()

    def check(self) -> None:
        """Raise HandBack once running actions must be handed back."""
        if self.hand_back.is_set():
            raise HandBack("the worker is stopping")
