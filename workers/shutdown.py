"""Stopping a worker without losing or failing its action.

On SIGTERM a worker (``sami worker``, or the embedded worker inside ``sami serve``) lets its
running action finish for up to ``SAMI_SHUTDOWN_GRACE`` seconds. Past that it hands the action
back: the script's process group is stopped (TERM, then KILL), the action goes back to
``queued`` with a line in its log, the deployment's lease is let go, and the scheduler's sweep
queues it again for the next worker. An action handed back runs again from its first script, as
a retry after a lost worker would; control scripts are idempotent by contract.

The running job sees the request at its next heartbeat (``Run.beat``), at most half a second
into a script or between two checks.
"""

from __future__ import annotations

import logging

from rq.worker import WorkerStatus
from sqlalchemy import select

from bot import outbox
from bot.core.models import Action
from bot.core.states import ActionState, transition_action
from workers.context import ContextWorker

log = logging.getLogger(__name__)




def requeue(session_factory, action_id: int, owner: str) -> bool:
    """Put the running action ``action_id`` back to queued, if it is still ``owner``'s."""
    with session_factory() as session:
        action = session.scalars(select(Action).where(Action.id == action_id, Action.state == ActionState.RUNNING,
                                                      Action.worker == owner[:255])
                                 .with_for_update().execution_options(populate_existing=True)).first()
        if action is None:
            return False
        transition_action(action, ActionState.QUEUED)
        # It starts over: its next worker marks the first script again.
        action.script_started_at = None
        action.script_pgid = None
        action.log = Action.log + "\n# the worker stopped before the action ended; handed back to the queue\n"
        outbox.commit(session)
    log.warning("action %s handed back to the queue: the worker is stopping", action_id,
                extra={"action_id": action_id})
    return True


class GracefulWorker(ContextWorker):
    """The worker of ``sami worker`` (jobs run in this process, with its context), whose warm shutdown
    has a deadline.

    First SIGTERM or SIGINT: take no new job, let the running one finish within ``grace`` seconds,
    then hand its action back. A second one while a job runs: hand it back at once.
    """

    def __init__(self, *args, grace: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.grace = grace

    def request_stop(self, signum, frame):
        if self.get_state() == WorkerStatus.BUSY:
            log.info("stopping: the running job has %s s to finish before its action is handed back", self.grace)
        self.context.stopping.request(self.grace)
        super().request_stop(signum, frame)

    def request_force_stop(self, signum, frame):
        if self.get_state() == WorkerStatus.BUSY:
            log.info("stopping now: the running action is handed back")
            self.context.stopping.request(0)
            return
        super().request_force_stop(signum, frame)
