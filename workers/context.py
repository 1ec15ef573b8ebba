"""What a worker process needs, built once from its settings (database, queue, manifests, scripts,
GitHub), and the RQ worker that hands it to every job it runs."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from rq import SimpleWorker
from rq.job import Job
from sqlalchemy.orm import Session, sessionmaker

from bot.core import db
from bot.core.config import Settings
from bot.github.client import GitHubClient
from bot.github.redeliver import AskedMemory, asked_memory
from bot.github.rounds import RoundMarks, round_marks
from bot.github.router import Router
from bot.github.routes import make_router
from bot.manifests.store import ManifestStore
from workers.afterwork import AfterWork
from workers.executor import Executor
from workers.queue import InProcessBroker, make_broker
from workers.stopping import Stopping

log = logging.getLogger(__name__)


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
    # The process's stop request: set on SIGTERM (a worker) or when the web process stops (embedded).
    stopping: Stopping = field(default_factory=Stopping)
    # Where an action's info and notifications run once its outcome is recorded: beside the next job
    # (a `sami worker`: its sessions are its own on each thread), or None: in the job, before it lets the
    # deployment go (the embedded default, and workers that share one database connection).
    after_work: AfterWork | None = None

    def session(self) -> Session:
        return self.session_factory()


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


class ContextJob(Job):
    """An RQ job that is handed its worker's context: Sami's job functions take ``ctx``, which RQ
    does not store (only the job's own arguments go through Redis)."""

    context: WorkerContext | None = None  # set on each job by the worker that runs it

    def _execute(self):
        if self.context is None:
            raise RuntimeError(f"job {self.id} has no context: run Sami's jobs with workers.context.ContextWorker")
        return self.func(*self.args, ctx=self.context, **self.kwargs)


def _take_deliveries(take, stop: threading.Event) -> None:
    """Queue handed-off deliveries as they come, until ``stop``."""
    while not stop.is_set():
        try:
            take(wait=1.0)
        except Exception as exc:  # Redis is away: the sweep queues what waits meanwhile
            log.warning("could not take handed-off deliveries (%s); trying again", type(exc).__name__)
            stop.wait(1.0)


class ContextWorker(SimpleWorker):
    """RQ's SimpleWorker (jobs run in this process) that runs each job with ``context``.

    With the context's ``after_work`` (a `sami worker`), an action's info and notifications run beside
    the next job (``workers.afterwork``), and ``work`` returns once they have ended. It also turns the
    deliveries the web intake handed off into their jobs: first all of them in burst mode (a burst
    worker stops when its queues are empty), else from a thread of its own for as long as it works.
    """

    def __init__(self, *args, context: WorkerContext, **kwargs):
        kwargs.setdefault("job_class", ContextJob)
        super().__init__(*args, **kwargs)
        self.context = context

    def work(self, burst: bool = False, *args, **kwargs):
        after_work = self.context.after_work
        if after_work is None:
            return self._work(burst, *args, **kwargs)
        while True:
            try:
                result = self._work(burst, *args, **kwargs)
            finally:
                # The info and notifications of the last actions still run: they end before the worker does.
                after_work.wait()
            # An action queued on a deployment while its after-work held the lease is queued again when
            # the lease is let go: a burst worker runs it too.
            if not burst or not any(queue.count for queue in self.queues):
                return result

    def _work(self, burst: bool = False, *args, **kwargs):
        take = getattr(self.context.broker, "take_deliveries", None)
        if take is None:
            return super().work(burst, *args, **kwargs)
        if burst:
            while take():
                pass
            return super().work(burst, *args, **kwargs)
        stop = threading.Event()
        taker = threading.Thread(target=_take_deliveries, args=(take, stop), name="sami-deliveries", daemon=True)
        taker.start()
        try:
            return super().work(burst, *args, **kwargs)
        finally:
            stop.set()
            taker.join(timeout=5)

    def perform_job(self, job, queue, *args, **kwargs):
        job.context = self.context
        return super().perform_job(job, queue, *args, **kwargs)
