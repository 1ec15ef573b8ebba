"""The records on real PostgreSQL: constraints, timestamps, optimistic locking."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm.exc import StaleDataError

from bot.core.models import Action, Delivery, Deployment
from bot.core.states import ActionState, DeploymentState


def _deployment(**kwargs):
    values = dict(name="web-stage", service="web", environment="stage", type="swarm",
                  state=DeploymentState.CREATE_PENDING, tag="abc123")
    values.update(kwargs)
    return Deployment(**values)


def test_deployment_and_actions_round_trip(db_session):
    deployment = _deployment()
    deployment.actions.append(Action(kind="create", requested_by="ci", origin="api",
                                     config={"tag": "abc123"}))
    db_session.add(deployment)
    db_session.commit()
    db_session.expire_all()
    loaded = db_session.scalars(select(Deployment).where(Deployment.name == "web-stage")).one()
    assert loaded.state is DeploymentState.CREATE_PENDING
    assert loaded.created_at.tzinfo is not None
    assert loaded.app_overrides == {}
    [action] = loaded.actions
    assert action.state is ActionState.QUEUED
    assert action.config == {"tag": "abc123"}
    assert action.log == ""


def test_deployment_names_are_unique(db_session):
    db_session.add(_deployment())
    db_session.commit()
    db_session.add(_deployment(service="other"))
    with pytest.raises(IntegrityError):
        db_session.commit()
    db_session.rollback()


def test_delivery_ids_are_unique(db_session):
    db_session.add(Delivery(delivery_id="72d3162e", event="pull_request", action="opened"))
    db_session.commit()
    db_session.add(Delivery(delivery_id="72d3162e", event="pull_request", action="opened"))
    with pytest.raises(IntegrityError):
        db_session.commit()
    db_session.rollback()


def test_unknown_state_is_refused(db_session):
    db_session.add(_deployment(state="Exploded"))
    with pytest.raises(StatementError):
        db_session.commit()
    db_session.rollback()


def test_naive_timestamps_are_refused(db_session):
    db_session.add(_deployment(checked_at=datetime(2026, 1, 1)))
    with pytest.raises(StatementError, match="naive datetime"):
        db_session.commit()
    db_session.rollback()


def test_concurrent_writers_of_one_deployment_conflict(engine):
    # Two real connections, so the row is committed for real; the test removes it at the end.
    from sqlalchemy.orm import Session

    with Session(engine) as setup:
        setup.add(_deployment(name="web-optimistic-lock"))
        setup.commit()
    first, second = Session(engine), Session(engine)
    try:
        query = select(Deployment).where(Deployment.name == "web-optimistic-lock")
        a = first.scalars(query).one()
        b = second.scalars(query).one()
        a.state = DeploymentState.RUNNING
        first.commit()
        b.state = DeploymentState.FAILURE
        with pytest.raises(StaleDataError):
            second.commit()
        second.rollback()
    finally:
        first.close()
        second.close()
        with Session(engine) as cleanup:
            cleanup.delete(cleanup.scalars(query).one())
            cleanup.commit()


def test_timestamps_are_utc(db_session):
    moment = datetime(2026, 5, 1, 12, 30, tzinfo=UTC)
    db_session.add(_deployment(checked_at=moment))
    db_session.commit()
    db_session.expire_all()
    assert db_session.scalars(select(Deployment)).one().checked_at == moment
