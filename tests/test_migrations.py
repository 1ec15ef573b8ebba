"""Migrations upgrade and downgrade cleanly on PostgreSQL and SQLite, and whatever way the database
reached head, its schema is the models' schema."""

from __future__ import annotations

import re

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import CheckConstraint, inspect

from bot.core import db
from bot.core.models import Base
from tests.conftest import create_database

TABLES = {"deployments", "actions", "action_steps", "deliveries", "api_tokens", "outbox", "github_pull_requests",
          "environments", "environment_snapshots", "environment_runs", "environment_run_components",
          "alembic_version"}


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


def _revisions(url) -> list[str]:
    """Every revision, oldest first."""
    script = ScriptDirectory.from_config(db.alembic_config(url))
    return [revision.revision for revision in script.walk_revisions()][::-1]


def _predicate(text: str | None) -> str | None:
    """A partial index's WHERE clause without what PostgreSQL adds when it reflects it (casts, parentheses)."""
    if text is None:
        return None
    return re.sub(r"::(?:character varying|\w+)|[()\s]", "", str(text)).lower()


def _partial_index_differences(connection) -> list[tuple]:
    # Alembic compares an index's columns and uniqueness, not its WHERE clause: a partial unique
    # index made whole (or the reverse) would refuse or allow rows the code relies on.
    dialect = connection.dialect.name
    reflector = inspect(connection)
    found = []
    for table in Base.metadata.sorted_tables:
        reflected = {index["name"]: index for index in reflector.get_indexes(table.name)}
        for index in table.indexes:
            model = _predicate(index.dialect_kwargs.get(f"{dialect}_where"))
            database = _predicate(reflected.get(index.name, {}).get("dialect_options", {}).get(f"{dialect}_where"))
            if model != database:
                found.append(("partial index", table.name, index.name, database, model))
    return found


def _check_constraint_differences(connection) -> list[tuple]:
    # Alembic does not compare CHECK constraints, and the enums' value lists live in them: a state the
    # models know but the database refuses would fail the first write of it. Compared by name and quoted
    # values, since PostgreSQL gives `x IN ('a', 'b')` back as `x::text = ANY (ARRAY['a'::character varying, ...])`.
    reflector = inspect(connection)
    found = []
    for table in Base.metadata.sorted_tables:
        model = {constraint.name: _quoted(constraint.sqltext.compile(
            dialect=connection.dialect, compile_kwargs={"literal_binds": True}))
            for constraint in table.constraints if isinstance(constraint, CheckConstraint)}
        database = {constraint["name"]: _quoted(constraint["sqltext"])
                    for constraint in reflector.get_check_constraints(table.name)}
        if model != database:
            found.append(("check constraints", table.name, database, model))
    return found


def _quoted(sql) -> frozenset[str]:
    return frozenset(re.findall(r"'([^']*)'", str(sql)))


def schema_differences(url: str) -> list:
    """Where the database at ``url`` and the models disagree: Alembic's autogenerate comparison (types,
    nullability, server defaults, indexes, unique constraints, foreign keys), then the WHERE clauses of
    partial indexes and the CHECK constraints it does not compare."""
    engine = db.make_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True,
                                                                   "compare_server_default": True})
            return [*compare_metadata(context, Base.metadata), *_partial_index_differences(connection),
                    *_check_constraint_differences(connection)]
    finally:
        engine.dispose()


def test_upgrade_gives_the_models_schema(empty_database_url):
    db.upgrade(empty_database_url)
    assert schema_differences(empty_database_url) == [], "models and migrations disagree: add a migration"


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
    assert schema_differences(empty_database_url) == []


def test_each_revision_steps_down_and_up(empty_database_url):
    revisions = _revisions(empty_database_url)
    for revision in revisions:
        db.upgrade(empty_database_url, revision)
    assert schema_differences(empty_database_url) == []
    # A downgrade that leaves something behind, or takes too much away, shows once the database is back at head.
    for position, revision in reversed(list(enumerate(revisions))):
        db.downgrade(empty_database_url, revisions[position - 1] if position else "base")
        db.upgrade(empty_database_url)
        assert schema_differences(empty_database_url) == [], f"after {revision} down and up"


# What a migration could get wrong, done by hand to a migrated database, and how the comparison names it.
DRIFTS = {
    "a column missing": ("ALTER TABLE github_pull_requests DROP COLUMN checks", "'add_column'"),
    "an index missing": ("DROP INDEX ix_outbox_action_id", "'add_index'"),
    "a unique constraint missing": ("ALTER TABLE api_tokens DROP CONSTRAINT uq_api_tokens_token_id",
                                    "'add_constraint'"),
    "a type changed": ("ALTER TABLE deployments ALTER COLUMN tag TYPE varchar(100)", "'modify_type'"),
    "a nullable column": ("ALTER TABLE outbox ALTER COLUMN kind DROP NOT NULL", "'modify_nullable'"),
    "a server default missing": ("ALTER TABLE actions ALTER COLUMN attempts DROP DEFAULT", "'modify_default'"),
    "the outbox's partial index made whole": (
        "DROP INDEX uq_outbox_pending_coalesce_key; "
        "CREATE UNIQUE INDEX uq_outbox_pending_coalesce_key ON outbox (coalesce_key)", "'partial index'"),
    "an enum value missing": (
        "ALTER TABLE deployments DROP CONSTRAINT ck_deployments_failurereason; "
        "ALTER TABLE deployments ADD CONSTRAINT ck_deployments_failurereason "
        "CHECK (failure_reason IN ('partial_availability', 'tag_mismatch', 'timed_out', 'generic'))",
        "'check constraints'"),
}


@pytest.mark.parametrize("drift", DRIFTS)
def test_the_comparison_reports_a_schema_that_drifted(postgres, drift):
    statement, reported_as = DRIFTS[drift]
    url = create_database(postgres, "sami_migrations")
    db.upgrade(url)
    engine = db.make_engine(url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(statement)
    finally:
        engine.dispose()
    differences = schema_differences(url)
    assert len(differences) == 1 and reported_as in repr(differences), differences
