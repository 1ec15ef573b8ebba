"""The web app's database: one session factory per app and one session per request, closed when
the request ends."""

from __future__ import annotations

from flask import Flask, current_app, g
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from bot.core.db import make_engine


def init_app(app: Flask, engine: Engine | None = None, session_factory=None) -> None:
    """Give the app an engine and a per-request session, closed when the request ends."""
    settings = app.config["SAMI"]
    if session_factory is None:
        engine = engine or make_engine(settings.database_url)
        session_factory = sessionmaker(bind=engine, expire_on_commit=False)
    app.extensions["sami.db"] = session_factory
    app.teardown_appcontext(_close_session)


def get_session() -> Session:
    """The session of the current request (or app context)."""
    if "db_session" not in g:
        g.db_session = current_app.extensions["sami.db"]()
    return g.db_session


def _close_session(_exc=None) -> None:
    session = g.pop("db_session", None)
    if session is not None:
        session.close()
