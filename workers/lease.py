"""A deployment's lease: at most one worker runs scripts on a deployment at a time.

The lease is a conditional UPDATE on the deployment's row, so it holds across any number of
processes and machines. Its times come from the database's clock, never the worker's, so
machines whose clocks disagree can share the work.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from datetime import timedelta

from sqlalchemy import or_, update

from bot.core.db import db_now
from bot.core.models import Action, Deployment
from bot.core.states import ActionState
from workers.runner import StopScript

LEASE_SECONDS = 60


class LeaseLost(StopScript):
    """This worker no longer holds the deployment's lease: stop, and write nothing more."""


def worker_identity() -> str:
    """A name unique to this worker thread: host, process, thread and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}:{uuid.uuid4().hex[:8]}"


def on_this_host(worker: str | None) -> bool:
    """Whether ``worker`` (a ``worker_identity``) ran on this machine."""
    return bool(worker) and worker.split(":", 1)[0] == socket.gethostname()


def claim_lease(session_factory, deployment_id: int, owner: str) -> bool:
    """Take the deployment's lease if it is free or expired; False if another worker holds it."""
    with session_factory() as session:
        now = db_now(session)
        result = session.execute(
            update(Deployment)
            .where(Deployment.id == deployment_id,
                   or_(Deployment.lease_owner.is_(None), Deployment.lease_expires_at < now))
            .values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=LEASE_SECONDS))
            .execution_options(synchronize_session=False)
        )
        session.commit()
        return result.rowcount == 1


def renew_lease(session_factory, deployment_id: int, owner: str, action_id: int | None = None) -> bool:
    """Heartbeat: extend the lease (and stamp the running action ``action_id``); False if either
    is no longer this worker's."""
    with session_factory() as session:
        now = db_now(session)
        renewed = session.execute(
            update(Deployment).where(Deployment.id == deployment_id, Deployment.lease_owner == owner)
            .values(lease_expires_at=now + timedelta(seconds=LEASE_SECONDS))
            .execution_options(synchronize_session=False)).rowcount == 1
        if renewed and action_id is not None:
            renewed = session.execute(
                update(Action).where(Action.id == action_id, Action.state == ActionState.RUNNING,
                                     Action.worker == owner[:255])
                .values(heartbeat_at=now).execution_options(synchronize_session=False)).rowcount == 1
        session.commit()
        return renewed


def release_lease(session_factory, deployment_id: int, owner: str) -> None:
    """Let the lease go, if it is still this worker's."""
    with session_factory() as session:
        session.execute(
            update(Deployment).where(Deployment.id == deployment_id, Deployment.lease_owner == owner)
            .values(lease_owner=None, lease_expires_at=None)
            .execution_options(synchronize_session=False))
        session.commit()
