"""An action's steps: one row per control-script call (bot.core.models.ActionStep), written when the
call starts and when it ends, so the page and the API show each call's exit code, also while it runs.

Steps are records, not states: they are written with a plain commit, like the action's log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from bot.core.db import db_now
from bot.core.models import ActionStep
from workers.runner import ScriptResult

log = logging.getLogger(__name__)


class Steps:
    """The steps of action ``action_id`` as its worker runs them, in order."""

    def __init__(self, sessions: Callable[[], Session], action_id: int):
        self.sessions = sessions
        self.action_id = action_id
        self.current: int | None = None  # the id of the step started last
        self.position: int | None = None

    def start(self, operation: str, again: bool = False) -> None:
        """A call of ``operation`` starts: a new step, or with ``again`` one more attempt of the step
        started last (a check run again until it passes); it runs until ``finish``."""
        with self.sessions() as session:
            now = db_now(session)
            if again and self.current is not None:
                session.execute(update(ActionStep).where(ActionStep.id == self.current)
                                .values(attempts=ActionStep.attempts + 1, finished_at=None, exit_code=None,
                                        timed_out=False).execution_options(synchronize_session=False))
            else:
                if self.position is None:
                    # An action handed back to the queue keeps the steps it ran before; new ones follow them.
                    self.position = session.scalar(select(func.max(ActionStep.position))
                                                   .where(ActionStep.action_id == self.action_id)) or 0
                self.position += 1
                step = ActionStep(action_id=self.action_id, position=self.position, operation=operation,
                                  started_at=now, timed_out=False, attempts=1)
                session.add(step)
                session.flush()
                self.current = step.id
            session.commit()

    def finish(self, result: ScriptResult) -> None:
        """The call ended: its exit code, or that its timeout stopped it."""
        self._end(result.exit_code, result.timed_out)

    def stopped(self) -> None:
        """The call ended without an exit code: it was stopped (a cancel, the worker stopping) or could
        not start. Never raises: the reason it ended is what the caller goes on with."""
        try:
            self._end(None, False)
        except Exception:
            log.exception("could not record the end of step %s of action %s", self.current, self.action_id)

    def _end(self, exit_code: int | None, timed_out: bool) -> None:
        if self.current is None:
            return
        with self.sessions() as session:
            session.execute(update(ActionStep).where(ActionStep.id == self.current)
                            .values(finished_at=db_now(session), exit_code=exit_code, timed_out=timed_out)
                            .execution_options(synchronize_session=False))
            session.commit()
