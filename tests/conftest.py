"""Shared fixtures: a private PostgreSQL (migrated once, each test rolled back to a savepoint),
a private Redis (one database index, flushed per test) and the Flask app built on them."""

from __future__ import annotations

import uuid

import pytest
import redis as redis_lib
from sqlalchemy import create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

from bot.core import db
from bot.core.states import changes_pending
from bot.web import create_app
from tests.support.docker import swarm_session  # noqa: F401  (the private Swarm, started on first use)
from tests.support.github_mock import ANSWER_TIMEOUT
from tests.support.servers import PostgresServer, RedisServer, running


@event.listens_for(Session, "before_commit")
def _state_changes_commit_through_the_outbox(session: Session) -> None:
    """A guard of the tests only: a state change committed without bot.outbox.commit would never
    reach GitHub. Every state-changing path the tests drive fails here if it forgets."""
    if changes_pending(session):
        raise AssertionError("a state change was committed with session.commit(), not bot.outbox.commit(session): "
                             "GitHub would never hear of it")


TEST_DATABASE = "sami_test"
TEST_REDIS_DB = 1
WEBHOOK_SECRET = "test-webhook-secret"


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server of the test run's own."""
    with running(PostgresServer()) as server:
        yield server


def create_database(postgres: PostgresServer, name: str, template: str | None = None) -> str:
    """Create database ``name`` (optionally copied from ``template``) and return its URL."""
    admin = create_engine(postgres.url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        suffix = f' TEMPLATE "{template}"' if template else ""
        connection.execute(text(f'CREATE DATABASE "{name}"{suffix}'))
    admin.dispose()
    return postgres.url(name)


@pytest.fixture(scope="session")
def database_url(postgres):
    """The test database, created and migrated once for the whole run."""
    url = create_database(postgres, TEST_DATABASE)
    db.upgrade(url)
    return url


@pytest.fixture
def own_database_url(postgres):
    """A migrated database of the test's own, for tests whose processes need to see each other's
    commits; dropped at the end."""
    name = f"sami_own_{uuid.uuid4().hex[:8]}"
    url = create_database(postgres, name)
    db.upgrade(url)
    yield url
    admin = create_engine(postgres.url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def engine(database_url):
    engine = db.make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def db_connection(engine):
    """A connection inside a transaction that is rolled back when the test ends."""
    connection = engine.connect()
    transaction = connection.begin()
    yield connection
    transaction.rollback()
    connection.close()


@pytest.fixture
def session_factory(db_connection):
    """Sessions on the test's connection: their commits are savepoints inside its transaction."""
    return sessionmaker(
        bind=db_connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )


@pytest.fixture
def db_session(session_factory):
    session = session_factory()
    yield session
    session.close()


@pytest.fixture(scope="session")
def redis_server():
    """A Redis server of the test run's own."""
    with running(RedisServer()) as server:
        yield server


@pytest.fixture
def own_redis():
    """A Redis server of the test's own, for tests whose worker processes take every queue's jobs."""
    with running(RedisServer()) as server:
        yield server


@pytest.fixture
def redis_url(redis_server):
    """The test's Redis database index, empty at the start and flushed at the end."""
    client = redis_lib.Redis.from_url(redis_server.url(TEST_REDIS_DB))
    client.flushdb()
    yield redis_server.url(TEST_REDIS_DB)
    client.flushdb()
    client.close()


@pytest.fixture
def redis_client(redis_url):
    client = redis_lib.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def test_config(database_url, redis_url, tmp_path):
    return {
        "mode": "test",
        "database_url": database_url,
        "redis_url": redis_url,
        "instance_dir": str(tmp_path / "instance"),
        "webhook_secret": WEBHOOK_SECRET,
        "secret_key": "test-secret-key",
        "github_timeout": ANSWER_TIMEOUT,
        # Pushes deploy at once; the tests of the wait for newer pushes set their own window.
        "pr_debounce_seconds": 0,
    }


@pytest.fixture
def app(test_config, session_factory):
    app = create_app(test_config)
    app.extensions["sami.db"] = session_factory
    return app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()
