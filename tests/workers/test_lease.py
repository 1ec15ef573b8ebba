"""The deployment lease on the real PostgreSQL: who may take it, who may renew it, whose clock
decides when it expires."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from bot.core.models import Action, Deployment
from bot.core.states import ActionState, DeploymentState
from workers.lease import LEASE_SECONDS, claim_lease, db_now, release_lease, renew_lease


@pytest.fixture
def deployment_id(db_session):
    deployment = Deployment(name="web-stage", service="web", environment="stage", type="swarm",
                            state=DeploymentState.UPDATE_PENDING)
    db_session.add(deployment)
    db_session.commit()
    return deployment.id


def lease(db_session, deployment_id):
    db_session.expire_all()
    deployment = db_session.get(Deployment, deployment_id)
    return deployment.lease_owner, deployment.lease_expires_at


def expire(db_session, deployment_id, seconds_ago: int = 1):
    db_session.execute(update(Deployment).where(Deployment.id == deployment_id)
                       .values(lease_expires_at=db_now(db_session) - timedelta(seconds=seconds_ago)))
    db_session.commit()


def test_a_free_lease_is_taken_and_lasts_its_term(session_factory, db_session, deployment_id):
    assert claim_lease(session_factory, deployment_id, "a")
    owner, expires = lease(db_session, deployment_id)
    assert owner == "a"
    left = (expires - db_now(db_session)).total_seconds()
    assert LEASE_SECONDS - 5 < left <= LEASE_SECONDS


def test_a_live_lease_of_another_worker_is_refused(session_factory, db_session, deployment_id):
    assert claim_lease(session_factory, deployment_id, "a")
    assert not claim_lease(session_factory, deployment_id, "b")
    assert lease(db_session, deployment_id)[0] == "a"
    # Not even its holder takes it twice: a lease is claimed once, then renewed.
    assert not claim_lease(session_factory, deployment_id, "a")


def test_an_expired_lease_can_be_taken(session_factory, db_session, deployment_id):
    assert claim_lease(session_factory, deployment_id, "a")
    expire(db_session, deployment_id)
    assert claim_lease(session_factory, deployment_id, "b")
    assert lease(db_session, deployment_id)[0] == "b"


def test_only_the_holder_renews_the_lease(session_factory, db_session, deployment_id):
    assert claim_lease(session_factory, deployment_id, "a")
    assert not renew_lease(session_factory, deployment_id, "b")
    assert lease(db_session, deployment_id)[0] == "a"
    expire(db_session, deployment_id, seconds_ago=30)
    assert renew_lease(session_factory, deployment_id, "a")
    owner, expires = lease(db_session, deployment_id)
    assert owner == "a" and expires > db_now(db_session) + timedelta(seconds=LEASE_SECONDS - 5)


def test_a_lease_taken_over_cannot_be_renewed_by_its_old_holder(session_factory, db_session, deployment_id):
    assert claim_lease(session_factory, deployment_id, "a")
    expire(db_session, deployment_id)
    assert claim_lease(session_factory, deployment_id, "b")
    assert not renew_lease(session_factory, deployment_id, "a")
    release_lease(session_factory, deployment_id, "a")  # letting go of what is not yours does nothing
    assert lease(db_session, deployment_id)[0] == "b"


def test_a_renewal_fails_once_the_action_is_no_longer_this_workers(session_factory, db_session, deployment_id):
    action = Action(deployment_id=deployment_id, kind="update", requested_by="test", origin="cli",
                    state=ActionState.RUNNING, worker="a")
    db_session.add(action)
    db_session.commit()
    assert claim_lease(session_factory, deployment_id, "a")
    assert renew_lease(session_factory, deployment_id, "a", action.id)
    db_session.expire_all()
    assert db_session.get(Action, action.id).heartbeat_at is not None
    db_session.execute(update(Action).where(Action.id == action.id).values(worker="b"))
    db_session.commit()
    assert not renew_lease(session_factory, deployment_id, "a", action.id)
    db_session.execute(update(Action).where(Action.id == action.id).values(worker="a",
                                                                           state=ActionState.FAILED))
    db_session.commit()
    assert not renew_lease(session_factory, deployment_id, "a", action.id)
    # Once its action is settled, the holder still keeps the lease itself (info, notifications).
    assert renew_lease(session_factory, deployment_id, "a")


CLAIM = """
import sys
from sqlalchemy.orm import sessionmaker
from bot.core import db
from workers.lease import claim_lease
sessions = sessionmaker(bind=db.make_engine(sys.argv[1]))
print("taken" if claim_lease(sessions, int(sys.argv[2]), sys.argv[3]) else "refused")
"""


@pytest.mark.skipif(not shutil.which("faketime"), reason="needs faketime (Debian: faketime)")
def test_a_worker_whose_clock_runs_ahead_does_not_take_a_live_lease(own_database_url, session_factory):
    """Two workers, one with its clock an hour ahead (libfaketime), share a deployment: the lease
    runs on the database's clock, so the fast one waits like the other."""
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    engine = create_engine(own_database_url)
    with Session(engine) as session:
        deployment = Deployment(name="web-stage", service="web", environment="stage", type="swarm",
                                state=DeploymentState.UPDATE_PENDING)
        session.add(deployment)
        session.commit()
        deployment_id = deployment.id

    def claim(owner: str, *skew: str) -> str:
        env = {**os.environ, "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
        argv = [*skew, sys.executable, "-c", CLAIM, own_database_url, str(deployment_id), owner]
        return subprocess.run(argv, env=env, capture_output=True, text=True, check=True, timeout=60).stdout.strip()

    assert claim("slow") == "taken"
    assert claim("fast", "faketime", "-f", "+1h") == "refused"
    with Session(engine) as session:
        deployment = session.get(Deployment, deployment_id)
        assert deployment.lease_owner == "slow"
        left = (deployment.lease_expires_at - db_now(session)).total_seconds()
    assert left <= LEASE_SECONDS
    # And a lease taken by the fast worker expires on the database's clock, not an hour late.
    with Session(engine) as session:
        session.execute(update(Deployment).values(lease_owner=None, lease_expires_at=None))
        session.commit()
    assert claim("fast", "faketime", "-f", "+1h") == "taken"
    with Session(engine) as session:
        expires = session.scalar(select(Deployment.lease_expires_at))
        assert (expires - db_now(session)).total_seconds() <= LEASE_SECONDS
    engine.dispose()
