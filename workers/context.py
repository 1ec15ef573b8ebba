"""What a worker process needs, built once from its settings: database, queue, manifests, scripts."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from bot.core import db
from bot.core.config import Settings, load_settings
from bot.github.client import GitHubClient
from bot.github.redeliver import AskedMemory, asked_memory
from bot.github.rounds import RoundMarks, round_marks
from bot.github.router import Router
from bot.github.routes import make_router
from bot.manifests.store import ManifestStore
from workers.executor import Executor
from workers.queue import InProcessBroker, make_broker


@dataclass
class WorkerContext:
    """The collaborators of jobs and the scheduler, passed in rather than global."""

    settings: Settings
    session_factory: sessionmaker
    broker: object
    manifests: ManifestStore
    executor: Executor
    router: Router  # the webhook events' handlers, which the delivery jobs dispatch to
    github: GitHubClient | None = None  # None when no GitHub credentials are set
    # What the GitHub rounds remember between runs: shared through Redis, or by this process's jobs.
    asked: AskedMemory | None = None
    rounds: RoundMarks | None = None

    def session(self) -> Session:
        return self.session_factory()


_lock = threading.Lock()
_context: WorkerContext | None = None


def build_context(settings: Settings, broker=None, session_factory: sessionmaker | None = None) -> WorkerContext:
    """A context for ``settings``; the broker defaults to RQ on the configured Redis."""
    # Working folders of this process: the instance folder and, when it is the default inside it,
    # the static root that static_file deployments are written to (the embedded default's SQLite
    # file creates the instance folder; with PostgreSQL nothing else would).
    Path(settings.instance_dir).mkdir(parents=True, exist_ok=True)
    if Path(settings.static_root).parent == Path(settings.instance_dir):
        Path(settings.static_root).mkdir(exist_ok=True)
    if session_factory is None:
        session_factory = sessionmaker(bind=db.make_engine(settings.database_url), expire_on_commit=False)
    broker = broker if broker is not None else make_broker(settings)
    context = WorkerContext(
        settings=settings,
        session_factory=session_factory,
        broker=broker,
        manifests=ManifestStore.from_settings(settings),
        executor=Executor(settings),
        router=make_router(),
        github=GitHubClient.from_settings(settings),
        asked=asked_memory(broker),
        rounds=round_marks(broker),
    )
    if isinstance(context.broker, InProcessBroker) and context.broker.context is None:
        context.broker.context = context  # its jobs run with this context
    return context


# RQ calls job functions with their arguments only: a `sami worker` process installs its context
# here at start-up, and jobs called without one use it. Everything else passes contexts in.
def set_context(context: WorkerContext | None) -> None:
    """Install the context RQ jobs use in this process (worker start-up, tests)."""
    global _context
    with _lock:
        _context = context


def get_context() -> WorkerContext:
    """The context of this process, built from ``SAMI_*`` variables on first use."""
    global _context
    with _lock:
        if _context is None:
            _context = build_context(load_settings())
        return _context
