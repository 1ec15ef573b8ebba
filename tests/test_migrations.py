"""Migrations upgrade and downgrade cleanly on PostgreSQL and SQLite and match the models."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from bot import db
from bot.models import Base
from tests.conftest import create_database

TABLES = {"deployments", "actions", "deliveries", "api_tokens", "outbox", "github_pull_requests", "alembic_version"}


@pytest.fixture(params=["postgresql", "sqlite"])
def empty_database_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'migrations.sqlite3'}"
    postgres = request.getfixturevalue("postgres")
    return create_database(postgres, "sami_migrations")


def _tables(url):
    engine = db.make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade(empty_database_url):
    db.upgrade(empty_database_url)
    tables = _tables(empty_database_url)
    assert tables >= TABLES
    db.downgrade(empty_database_url, "base")
    tables = _tables(empty_database_url)
    assert tables <= {"alembic_version"}
    db.upgrade(empty_database_url)
    engine = db.make_engine(empty_database_url)
    head = ScriptDirectory.from_config(db.alembic_config(empty_database_url)).get_current_head()
    assert db.current_revision(engine) == head
    engine.dispose()


def test_each_revision_steps_down_and_up(empty_database_url):
    script = ScriptDirectory.from_config(db.alembic_config(empty_database_url))
    revisions = [r.revision for r in script.walk_revisions()][::-1]
    for revision in revisions:
        db.upgrade(empty_database_url, revision)
    for revision in reversed(revisions):
        db.downgrade(empty_database_url, f"{revision}-1" if revision != revisions[0] else "base")
    db.upgrade(empty_database_url)


def test_models_match_migrations(empty_database_url):
    db.upgrade(empty_database_url)
    engine = db.make_engine(empty_database_url)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
    engine.dispose()
    assert differences == [], "models and migrations disagree: add a migration"
