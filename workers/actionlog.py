"""An action's log: output appended to its row as it comes, in small batches, up to a size cap."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from sqlalchemy import update
from sqlalchemy.orm import Session

from bot.core.models import Action

MAX_LOG_BYTES = 1024 * 1024
# The longest a line waits in memory. The runner ticks more often than this, so output reaches
# the database within about this long even when the script then goes quiet or its worker dies.
FLUSH_SECONDS = 0.5


class ActionLog:
    """Buffers an action's output and appends it to the action's row at most every
    ``FLUSH_SECONDS``; ``flush_if_due`` is called on the runner's ticks."""

    def __init__(self, sessions: Callable[[], Session], action_id: int, limit: int = MAX_LOG_BYTES):
        self.sessions = sessions
        self.action_id = action_id
        self.limit = limit
        self.size = 0
        self.truncated = False
        self.buffer: list[str] = []
        self.lock = threading.Lock()
        self.last_flush = time.monotonic()

    def write(self, text: str) -> None:
        with self.lock:
            if self.truncated:
                return
            if self.size + len(text) > self.limit:
                text = text[: max(0, self.limit - self.size)] + f"\n[output truncated at {self.limit} characters]\n"
                self.truncated = True
            self.size += len(text)
            self.buffer.append(text)
        if self.truncated:
            self.flush()
        else:
            self.flush_if_due()

    def line(self, text: str) -> None:
        self.write(text if text.endswith("\n") else text + "\n")

    def flush_if_due(self) -> None:
        if self.buffer and time.monotonic() - self.last_flush >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        with self.lock:
            chunk, self.buffer = "".join(self.buffer), []
            self.last_flush = time.monotonic()
            truncated = self.truncated
        if not chunk and not truncated:
            return
        with self.sessions() as session:
            session.execute(update(Action).where(Action.id == self.action_id)
                            .values(log=Action.log + chunk, log_truncated=truncated)
                            .execution_options(synchronize_session=False))
            session.commit()
