"""Putting work on the queue: RQ on Redis, or threads in the process for the embedded default.

PostgreSQL holds every action; the queue only carries action ids. A failed enqueue is logged
and left to the scheduler's sweep, which re-queues every queued action the queue does not hold.
An action that may not start yet (``delay``) is scheduled: queued by RQ's scheduler (which `sami
worker` runs), or by a timer in the embedded default; the sweep queues it if that is lost.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from bot.core.config import Settings

log = logging.getLogger(__name__)

ACTIONS_QUEUE = "sami-actions"
CHECKS_QUEUE = "sami-checks"
# Jobs are named by their import path, as RQ stores them; the queue never imports the jobs module
# itself (jobs depend on the queue's context, not the other way round).
RUN_ACTION = "workers.jobs.run_action"
CHECK_DEPLOYMENT = "workers.checks.check_deployment"
CHECK_BATCH = "workers.checks.check_batch"
# Webhook deliveries go on the actions queue: processing one is short, and it is what queues actions.
PROCESS_DELIVERY = "workers.deliveries.process_delivery"
# GitHub side effects go on the checks queue: short requests that must not wait behind scripts.
DELIVER_OUTBOX = "workers.outbox.deliver_outbox_row"
OUTBOX_JOB_TIMEOUT = 120
# The scheduler's GitHub rounds go on the checks queue too: a deadline keeps them short, and a GitHub
# that hangs then holds up a worker for a while, never the scheduler's tick.
GITHUB_ROUNDS = {"reconcile": "workers.github_rounds.reconcile_round",
                 "redeliver": "workers.github_rounds.redeliver_round"}
# A blue-green switch of an environment's entry goes on the actions queue: it runs a control script.
RUN_SWITCH = "workers.releases.run_switch"
SWITCH_JOB_TIMEOUT = 600
GITHUB_ROUND_JOB_TIMEOUT = 600  # seconds; past its deadline a round only waits for its last request
# New webhook deliveries' row ids, pushed by the web intake (one command per delivery) and turned
# into their jobs by the workers (``RQBroker.take_deliveries``), away from the request's time.
DELIVERIES_HANDED_OFF = "sami:deliveries:new"
DELIVERY_JOB_TIMEOUT = 300  # seconds; a handler stuck on GitHub longer than this fails the delivery
WAITING_JOB_STATES = {JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED, JobStatus.CREATED}


def delivery_job_id(delivery_row_id: int) -> str:
    """The job id of a delivery's processing (action jobs are plain action ids)."""
    return f"delivery-{delivery_row_id}"


def check_batch_job_id(deployment_ids: list[int]) -> str:
    """One job per set of deployments: the same due set queued again while its job waits is not doubled."""
    return f"check_batch-{len(deployment_ids)}-{zlib.crc32(','.join(map(str, sorted(deployment_ids))).encode()):08x}"


def switch_job_id(release_id: int) -> str:
    """The job id of a release's switch."""
    return f"switch-{release_id}"


def outbox_job_id(row_id: int) -> str:
    """The job id of an outbox row's sending."""
    return f"outbox-{row_id}"


def github_round_job_id(name: str) -> str:
    """The job id of GitHub round ``name``: one at a time, so a second copy while one waits or runs is a no-op."""
    return f"github-{name}"


class RQBroker:
    """Work on Redis through RQ; the job id of an action is the action id."""

    def __init__(self, connection: redis.Redis):
        self.connection = connection
        self.actions = Queue(ACTIONS_QUEUE, connection=connection)
        self.checks = Queue(CHECKS_QUEUE, connection=connection)

    def job_is_live(self, job_id: str, started_counts: bool = True, scheduled_counts: bool = True) -> bool:
        """Whether the job waits on the queue (or, with ``started_counts``, is being run; with
        ``scheduled_counts``, is scheduled for later)."""
        try:
            status = Job.fetch(job_id, connection=self.connection).get_status(refresh=False)
        except NoSuchJobError:
            return False
        if status == JobStatus.SCHEDULED:
            return scheduled_counts
        return status in WAITING_JOB_STATES or (started_counts and status == JobStatus.STARTED)

    def _enqueue(self, queue: Queue, func: str, job_id: str, *args, started_counts: bool = True,
                 timeout: int = -1, delay: float = 0.0, new: bool = False, front: bool = False) -> bool:
        # A job a dead worker had started stays "started" in RQ for minutes; callers that know no
        # worker holds the deployment (the sweep, the reaper) replace it. Work asked for now replaces
        # a job scheduled for later (its time came and RQ's scheduler has not moved it, or it moved up).
        # ``new``: the row was just inserted, so no job of it can exist yet and none is looked for.
        # ``front``: the job goes before those already waiting (work others wait behind).
        if not new:
            if self.job_is_live(job_id, started_counts, scheduled_counts=delay > 0):
                return True
            with contextlib.suppress(NoSuchJobError):
                Job.fetch(job_id, connection=self.connection).delete()
        options = dict(job_id=job_id, result_ttl=0, failure_ttl=24 * 3600, description=f"{func}{args}")
        if delay > 0:
            # RQ's schedule counts whole seconds (it drops the fraction): the next whole second is the
            # first moment the job cannot be queued before the action may start.
            at = datetime.fromtimestamp(math.ceil(time.time() + delay), UTC)
            queue.enqueue_at(at, func, *args, job_timeout=timeout, **options)
        elif new:
            # One round trip: the job, its queue and the push in one pipeline.
            with self.connection.pipeline() as pipeline:
                queue.enqueue_call(func, args=args, timeout=timeout, pipeline=pipeline, at_front=front, **options)
                pipeline.execute()
        else:
            queue.enqueue_call(func, args=args, timeout=timeout, at_front=front, **options)
        return True

    def enqueue_action(self, action_id: int, started_counts: bool = True,
                       delay: float = 0.0, new: bool = False, front: bool = False) -> bool:
        """Queue action ``action_id``, to start ``delay`` seconds from now; False (and the sweep
        queues it when it is due) when Redis is unreachable. ``new``: the action was just accepted,
        so no job of it can exist yet and none is looked for (two Redis round trips fewer).
        ``front``: it is taken before the jobs already waiting (an environment run's component that
        others wait behind)."""
        try:
            self._enqueue(self.actions, RUN_ACTION, str(action_id), action_id,
                          started_counts=started_counts, delay=delay, new=new, front=front)
        except redis.RedisError as exc:
            log.warning("could not queue action %s (%s); the sweep will queue it", action_id,
                        type(exc).__name__, extra={"action_id": action_id})
            return False
        return True

    def enqueue_check(self, deployment_id: int, kind: str = "check", started_counts: bool = True) -> bool:
        """Queue a status check of a live deployment (or an archive check)."""
        try:
            return self._enqueue(self.checks, CHECK_DEPLOYMENT,
                                 f"{kind}-{deployment_id}", deployment_id, kind, started_counts=started_counts)
        except redis.RedisError as exc:
            log.warning("could not queue %s of deployment %s: %s", kind, deployment_id, type(exc).__name__)
            return False

    def enqueue_check_batch(self, deployment_ids: list[int], seen_at: datetime) -> bool:
        """Queue one ``check_batch`` call for the periodic checks of ``deployment_ids`` (one script set), found
        due at ``seen_at``."""
        try:
            return self._enqueue(self.checks, CHECK_BATCH, check_batch_job_id(deployment_ids), list(deployment_ids),
                                 seen_at.isoformat(), started_counts=False)
        except redis.RedisError as exc:
            log.warning("could not queue the check of %d deployments: %s", len(deployment_ids), type(exc).__name__)
            return False

    def enqueue_delivery(self, delivery_row_id: int, started_counts: bool = True, new: bool = False) -> bool:
        """Queue the processing of webhook delivery row ``delivery_row_id``; False (and the sweep
        queues it) when Redis is unreachable. ``new``: the row was just inserted, so no job of it
        can exist yet and none is looked for (the webhook intake's hot path)."""
        job_id = delivery_job_id(delivery_row_id)
        try:
            return self._enqueue(self.actions, PROCESS_DELIVERY, job_id, delivery_row_id,
                                 started_counts=started_counts, timeout=DELIVERY_JOB_TIMEOUT, new=new)
        except redis.RedisError as exc:
            log.warning("could not queue delivery row %s (%s); the sweep will queue it", delivery_row_id,
                        type(exc).__name__)
            return False

    def hand_off_delivery(self, delivery_row_id: int) -> bool:
        """Hand new delivery row ``delivery_row_id`` to the workers: one push of its id on a Redis
        list, which a worker turns into its job (``take_deliveries``). Building and writing an RQ job
        costs the web request several times more. False (and the sweep queues it) when Redis is
        unreachable."""
        try:
            self.connection.rpush(DELIVERIES_HANDED_OFF, delivery_row_id)
        except redis.RedisError as exc:
            log.warning("could not queue delivery row %s (%s); the sweep will queue it", delivery_row_id,
                        type(exc).__name__)
            return False
        return True

    def take_deliveries(self, wait: float = 0.0, limit: int = 100) -> int:
        """Queue the jobs of deliveries handed off by the web intake: up to ``limit`` of them, waiting
        up to ``wait`` seconds for the first; how many were taken.

        A delivery taken and not queued (this process died in between) is still "received" in the
        database, and the scheduler's sweep queues it; one the sweep queued already is not queued twice.
        """
        if wait > 0:
            first = self.connection.blpop([DELIVERIES_HANDED_OFF], timeout=wait)
            if first is None:
                return 0
            taken = [first[1], *(self.connection.lpop(DELIVERIES_HANDED_OFF, limit - 1) or [])]
        else:
            taken = self.connection.lpop(DELIVERIES_HANDED_OFF, limit) or []
        for row_id in taken:
            self.enqueue_delivery(int(row_id))
        return len(taken)

    def enqueue_outbox(self, row_id: int, started_counts: bool = True) -> bool:
        """Queue the sending of outbox row ``row_id``; False (and the next sweep tries) without Redis."""
        try:
            return self._enqueue(self.checks, DELIVER_OUTBOX, outbox_job_id(row_id), row_id,
                                 started_counts=started_counts, timeout=OUTBOX_JOB_TIMEOUT)
        except redis.RedisError as exc:
            log.warning("could not queue outbox row %s: %s", row_id, type(exc).__name__)
            return False

    def enqueue_switch(self, release_id: int) -> bool:
        """Queue the switch of release ``release_id``; False (and the scheduler's releases step tries) without Redis."""
        try:
            return self._enqueue(self.actions, RUN_SWITCH, switch_job_id(release_id), release_id,
                                 timeout=SWITCH_JOB_TIMEOUT)
        except redis.RedisError as exc:
            log.warning("could not queue the switch of release %s: %s", release_id, type(exc).__name__)
            return False

    def enqueue_github_round(self, name: str, round_at: str) -> bool:
        """Queue GitHub round ``name`` as of ``round_at`` (an ISO time); a no-op while one waits or runs."""
        try:
            return self._enqueue(self.checks, GITHUB_ROUNDS[name], github_round_job_id(name), round_at,
                                 timeout=GITHUB_ROUND_JOB_TIMEOUT)
        except redis.RedisError as exc:
            log.warning("could not queue the GitHub %s round: %s", name, type(exc).__name__)
            return False

    def ping(self) -> None:
        self.connection.ping()


class InProcessBroker:
    """Runs jobs on threads of this process: the embedded default's queue and worker.

    Jobs get ``context``, the worker context built around this broker (``build_context``); without
    one no job is taken.
    """

    def __init__(self, threads: int = 4):
        self.context = None
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="sami-worker")
        self._lock = threading.Lock()
        self._live: set[str] = set()
        self._timers: dict[str, threading.Timer] = {}
        self._waiting = 0

    def job_is_live(self, job_id: str, started_counts: bool = True, scheduled_counts: bool = True) -> bool:
        # Threads of this process cannot die on their own: a job in the set is waiting or running.
        with self._lock:
            return job_id in self._live or (scheduled_counts and job_id in self._timers)

    def _submit_later(self, job_id: str, delay: float, func: str, *args) -> bool:
        """Submit the job after ``delay`` seconds, from a timer thread (no worker thread waits)."""
        with self._lock:
            if job_id in self._live or job_id in self._timers:
                return True
            timer = threading.Timer(delay, self._fire, args=(job_id, func, *args))
            timer.daemon = True
            self._timers[job_id] = timer
        timer.start()
        return True

    def _fire(self, job_id: str, func: str, *args) -> None:
        with self._lock:
            if self._timers.pop(job_id, None) is None:
                return  # submitted already, or shut down
        self._submit(job_id, func, *args)

    def _submit(self, job_id: str, func: str, *args) -> bool:
        if self.context is None:
            # No worker shares this process (an app built without `sami serve`'s embedded worker):
            # the job is not queued, as when Redis is down, and the embedded worker's sweep takes it.
            log.warning("job %s not queued: no worker runs in this process", job_id)
            return False
        with self._lock:
            timer = self._timers.pop(job_id, None)
            if timer is not None:
                timer.cancel()  # asked for now: it does not wait for its time any more
            if job_id in self._live:
                return True
            self._live.add(job_id)
            self._waiting += 1

        def run():
            with self._lock:
                self._waiting -= 1
            try:
                module, _, name = func.rpartition(".")
                getattr(importlib.import_module(module), name)(*args, ctx=self.context)
            except Exception:
                log.exception("job %s failed", job_id)
            finally:
                with self._lock:
                    self._live.discard(job_id)

        self._executor.submit(run)
        return True

    def enqueue_action(self, action_id: int, started_counts: bool = True,
                       delay: float = 0.0, new: bool = False, front: bool = False) -> bool:
        # Threads take jobs as they come: no job waits behind another long enough for an order to matter.
        if delay > 0:
            self._submit_later(str(action_id), delay, RUN_ACTION, action_id)
        else:
            self._submit(str(action_id), RUN_ACTION, action_id)
        return True

    def enqueue_check(self, deployment_id: int, kind: str = "check", started_counts: bool = True) -> bool:
        return self._submit(f"{kind}-{deployment_id}", CHECK_DEPLOYMENT, deployment_id, kind)

    def enqueue_check_batch(self, deployment_ids: list[int], seen_at: datetime) -> bool:
        return self._submit(check_batch_job_id(deployment_ids), CHECK_BATCH, list(deployment_ids),
                            seen_at.isoformat())

    def enqueue_delivery(self, delivery_row_id: int, started_counts: bool = True, new: bool = False) -> bool:
        return self._submit(delivery_job_id(delivery_row_id), PROCESS_DELIVERY, delivery_row_id)

    def hand_off_delivery(self, delivery_row_id: int) -> bool:
        return self.enqueue_delivery(delivery_row_id, new=True)

    def enqueue_outbox(self, row_id: int, started_counts: bool = True) -> bool:
        return self._submit(outbox_job_id(row_id), DELIVER_OUTBOX, row_id)

    def enqueue_switch(self, release_id: int) -> bool:
        return self._submit(switch_job_id(release_id), RUN_SWITCH, release_id)

    def enqueue_github_round(self, name: str, round_at: str) -> bool:
        return self._submit(github_round_job_id(name), GITHUB_ROUNDS[name], round_at)

    def ping(self) -> None:
        return None

    def waiting(self) -> int:
        """Jobs submitted and not started yet (the queue depth)."""
        with self._lock:
            return self._waiting

    def shutdown(self, wait: bool = False) -> None:
        with self._lock:
            timers, self._timers = list(self._timers.values()), {}
        for timer in timers:
            timer.cancel()  # the next start's sweep queues what is still queued in the database
        self._executor.shutdown(wait=wait, cancel_futures=True)


def connect_redis(settings: Settings) -> redis.Redis:
    """A Redis client for ``settings.redis_url``."""
    return redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=10,
                                health_check_interval=30)


def redis_unreachable_message(url: str, exc: Exception) -> str:
    """One line on a Redis that did not answer: where Sami looked, why it failed, what to check."""
    connection = redis.connection.parse_url(url) if url.startswith(("redis://", "rediss://")) else {}
    where = f"{connection.get('host', 'localhost')}:{connection.get('port', 6379)}" if connection else url
    text = str(exc).strip().splitlines()
    # redis-py says "Error 111 connecting to host:port. Connection refused.": the last sentence is why.
    reason = text[0].rstrip(".").rsplit(". ", 1)[-1] if text else type(exc).__name__
    return f"cannot reach Redis at {where}: {reason}; check SAMI_REDIS_URL and that Redis runs there"


def make_broker(settings: Settings) -> RQBroker | InProcessBroker:
    """RQ on the configured Redis; without one (the embedded default), threads of this process."""
    if settings.redis_url:
        return RQBroker(connect_redis(settings))
    return InProcessBroker()
