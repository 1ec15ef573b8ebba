"""Queue jobs that run actions. Jobs receive ids and load their rows themselves.

One worker at a time holds a deployment's lease (``workers.lease``). A job that cannot get it
returns at once: the holder runs every queued action of that deployment before it lets go (it
drains), and checks again after letting go, so nothing queued is left behind. The holder renews
the lease with every heartbeat; a renewal that finds the lease taken stops the script
(``LeaseLost``), and every write that settles an action is conditional on this worker still
owning it.
"""

from __future__ import annotations

import contextvars
import logging
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import exists, select, update

from bot import outbox
from bot.core import logs, metrics
from bot.core.errors import failure_text
from bot.core.lifecycle import DEPLOY_KINDS, REASON_WORDS
from bot.core.models import Action, Deployment
from bot.core.states import (
    ActionState,
    DeploymentState,
    FailureReason,
    after_cancel,
    can_transition,
    claim_action,
    note_running,
    transition,
    transition_action,
)
from bot.manifests import DeploymentsRepo, DeploymentsRepoError, Manifest
from bot.manifests.topology import Kind
from bot.services import environments, releases
from bot.services.deployments import Context, endpoint_parts
from bot.services.drift import parse_report
from workers import endpoints
from workers.actionlog import ActionLog
from workers.context import WorkerContext
from workers.executor import ExecutorError, Target, prepare_manifest_dir
from workers.lease import LeaseLost, claim_lease, db_now, release_lease, renew_lease, worker_identity
from workers.runner import ScriptNotFound, ScriptResult, StopScript
from workers.shutdown import requeue
from workers.steps import Steps
from workers.stopping import HandBack

log = logging.getLogger(__name__)
S = DeploymentState

HEARTBEAT_SECONDS = 10
CHECK_EXIT_REASONS = {2: FailureReason.PARTIAL_AVAILABILITY, 3: FailureReason.TAG_MISMATCH}
SCRIPT_FOR = {"create": "create", "update": "update", "restore": "unarchive", "archive": "archive",
              "cleanup": "cleanup"}
# When the deployments repo cannot be read (the git host is down), the action waits this long
# before each new try; after the last one it fails.
REPO_RETRY_DELAYS = (5, 15, 30, 60, 120)
ACTION_DIR_PREFIX = "sami-action-"
# How often a running action looks for a cancel request (the request is a database column, so a
# cancel reaches the worker on whichever host runs it).
CANCEL_POLL_SECONDS = 1.0


class Cancelled(StopScript):
    """Someone cancelled the running action: its script's group is stopped (TERM, then KILL)."""


def action_dir_prefix(action_id: int) -> str:
    """The name every working copy of action ``action_id`` starts with (the reaper finds them by it)."""
    return f"{ACTION_DIR_PREFIX}{action_id}-"


def script_label(action_id: int) -> str:
    """The label of the process group that runs action ``action_id``'s scripts."""
    return f"sami-action-{action_id}"


def next_queued_action(ctx: WorkerContext, deployment_id: int) -> int | None:
    """The deployment's oldest queued action, unless it may not start yet: it waits to be retried,
    or for newer pushes to replace it (then nothing runs before it: actions on one deployment run
    in the order they were accepted, and its scheduled job or the sweep starts it when due)."""
    with ctx.session() as session:
        row = session.execute(
            select(Action.id, Action.retry_at).where(Action.deployment_id == deployment_id,
                                                     Action.state == ActionState.QUEUED)
            .order_by(Action.id).limit(1)).first()
        if row is None:
            return None
        if row.retry_at is not None and row.retry_at > db_now(session):
            return None
        return row.id


# --- jobs ------------------------------------------------------------------------------------

def run_action(action_id: int, *, ctx: WorkerContext) -> None:
    """Queue job: run action ``action_id`` (and whatever else is queued on its deployment)."""
    with ctx.session() as session:
        action = session.get(Action, action_id)
        if action is None or action.state is not ActionState.QUEUED:
            return
        deployment_id = action.deployment_id
    owner = worker_identity()
    if claim_lease(ctx.session, deployment_id, owner):
        drain(ctx, deployment_id, owner)


def drain(ctx: WorkerContext, deployment_id: int, owner: str) -> None:
    """Run the deployment's queued actions oldest first while holding its lease.

    An action's after-work (info, notifications) runs before the next action of the deployment; after
    the last one, with ``ctx.after_work``, it runs beside the worker's next job, on a thread that keeps
    the lease until it ends (``workers.afterwork``)."""
    while True:
        follow_up: FollowUp | None = None
        handed = False
        try:
            while (action_id := next_queued_action(ctx, deployment_id)) is not None:
                if follow_up is not None:
                    follow_up.run_now()  # the next action's scripts never run beside this one's
                    follow_up = None
                later: list[FollowUp] = []
                if not execute_action(ctx, action_id, owner, later):
                    return  # the lease is gone: whoever holds it now carries on
                follow_up = later[0] if later else None
            if follow_up is not None and ctx.after_work is not None:
                ctx.after_work.start(lambda f=follow_up: _follow_up_then_let_go(ctx, f, deployment_id, owner),
                                     name=f"sami-after-action-{follow_up.run.action_id}")
                handed = True
                return
        finally:
            if not handed:
                if follow_up is not None:
                    follow_up.run_now()
                release_lease(ctx.session, deployment_id, owner)
        # An action queued while we held the lease had its job return early: take it over.
        if next_queued_action(ctx, deployment_id) is None or not claim_lease(ctx.session, deployment_id, owner):
            return


def _follow_up_then_let_go(ctx: WorkerContext, follow_up: FollowUp, deployment_id: int, owner: str) -> None:
    """Run an action's after-work, let the deployment's lease go, and queue again an action queued on it
    meanwhile (its job returned early: the lease was held)."""
    try:
        follow_up.run_now()
    finally:
        release_lease(ctx.session, deployment_id, owner)
    waiting = next_queued_action(ctx, deployment_id)
    if waiting is not None:
        ctx.broker.enqueue_action(waiting)


# --- running one action ----------------------------------------------------------------------

@dataclass
class Outcome:
    """How an action ended, and the state its deployment goes to."""

    state: ActionState
    deployment_state: DeploymentState
    reason: FailureReason | None = None
    message: str | None = None
    exit_code: int | None = None
    # What the target reported running when the check passed (bot.services.drift), if it reports.
    running: dict | None = None


@dataclass
class Prepared:
    """What an action runs against: the manifests, its manifest, the target and a working copy."""

    repo: DeploymentsRepo
    manifest: Manifest
    target: Target
    manifest_dir: Path


@dataclass
class FollowUp:
    """An action's after-work: info and notifications once its deployment's state changed, with the working
    copy they run in (removed when they end) and the log ids of the action."""

    run: Run
    prepared: Prepared
    old: DeploymentState
    new: DeploymentState
    stack: ExitStack
    context: contextvars.Context

    def run_now(self) -> None:
        """Run it here and now; never raises (neither script can fail the action)."""
        try:
            with self.stack:
                self.context.run(_after_state_change, self.run, self.prepared, self.old, self.new)
        except Exception:
            log.exception("after-work of action %s failed", self.run.action_id)


class Run:
    """One action being executed: its ids, config, log and heartbeat."""

    def __init__(self, ctx: WorkerContext, action: Action, deployment: Deployment, owner: str):
        self.ctx = ctx
        self.action_id = action.id
        self.deployment_id = deployment.id
        self.kind = action.kind
        self.config = dict(action.config or {})
        self.attempts = action.attempts or 0
        self.owner = owner
        self.log = ActionLog(ctx.session, action.id)
        self.steps = Steps(ctx.session, action.id)
        self.deployment_name = deployment.name
        self.service = deployment.service
        self.environment = deployment.environment
        self.pull_request = deployment.pull_request
        self.last_beat = time.monotonic()
        self.claimed = False
        self.script_started = False
        self.cancel_checked = 0.0

    def beat(self, force: bool = False) -> None:
        """Renew the lease (and, while the action runs, its heartbeat); raise LeaseLost if it is gone,
        HandBack if the worker is stopping."""
        if self.claimed:
            self.ctx.stopping.check()
        if force or time.monotonic() - self.last_beat >= HEARTBEAT_SECONDS:
            self.last_beat = time.monotonic()
            if not renew_lease(self.ctx.session, self.deployment_id, self.owner,
                               self.action_id if self.claimed else None):
                raise LeaseLost(f"lost the lease of {self.deployment_name}")

    def tick(self) -> None:
        """Called often while a script runs: output reaches the log, the heartbeat the row, and a
        cancel request stops the script."""
        self.log.flush_if_due()
        self.check_cancel()
        self.beat()

    def check_cancel(self, force: bool = False) -> None:
        """Raise Cancelled if someone asked to cancel this action (looked up at most once a second)."""
        if not force and time.monotonic() - self.cancel_checked < CANCEL_POLL_SECONDS:
            return
        self.cancel_checked = time.monotonic()
        with self.ctx.session() as session:
            requested_by = session.execute(select(Action.cancel_requested_by).where(
                Action.id == self.action_id, Action.cancel_requested_at.is_not(None))).scalar()
        if requested_by is not None:
            raise Cancelled(f"cancelled by {requested_by}")

    def claim(self) -> bool:
        """queued -> running, only if still queued (another worker may have taken it)."""
        with self.ctx.session() as session:
            claimed = claim_action(session, self.action_id, self.owner, db_now(session))
            outbox.commit(session)
        self.claimed = claimed
        return claimed

    def settled(self) -> None:
        """The action's outcome is written: from now on a heartbeat renews only the lease."""
        self.claimed = False

    def mark_script_started(self) -> None:
        if self.script_started:
            return
        self.script_started = True
        with self.ctx.session() as session:
            marked = session.execute(
                update(Action).where(Action.id == self.action_id, Action.state == ActionState.RUNNING,
                                     Action.worker == self.owner[:255], Action.script_started_at.is_(None))
                .values(script_started_at=db_now(session)).execution_options(synchronize_session=False)).rowcount
            session.commit()
        if not marked:
            raise LeaseLost(f"action {self.action_id} is no longer this worker's")
        self.beat(force=True)  # the lease must still be ours before the first script starts

    def record_group(self, pgid: int) -> None:
        """Remember the running script's process group (the reaper stops it if this worker dies)."""
        if not self.claimed:
            return
        with self.ctx.session() as session:
            session.execute(update(Action).where(Action.id == self.action_id, Action.worker == self.owner[:255])
                            .values(script_pgid=pgid).execution_options(synchronize_session=False))
            session.commit()

    def target(self, manifest: Manifest, repo: DeploymentsRepo | None = None) -> Target:
        return make_target(self.ctx, self.deployment_name, self.service, self.environment, self.pull_request,
                           manifest, self.config, repo)

    def script(self, operation: str, prepared: Prepared, extra: tuple[str, ...] = (), quiet: bool = False,
               timeout: float | None = None, again: bool = False) -> ScriptResult:
        """Run one of the action's control scripts, recorded as a step (with ``again``: as one more attempt
        of the step before, a check run until it passes)."""
        self.check_cancel(force=True)
        self.mark_script_started()
        if not quiet:
            self.log.line(f"$ {operation}")
        self.steps.start(operation, again=again)
        try:
            result = self.ctx.executor.run(operation, prepared.repo, prepared.target, prepared.manifest_dir,
                                           extra=extra, on_output=None if quiet else self.log.write,
                                           on_tick=self.tick, on_start=self.record_group,
                                           label=script_label(self.action_id), timeout=timeout)
        except LeaseLost:
            raise  # the action is another worker's now: nothing more is written
        except BaseException:
            self.steps.stopped()
            raise
        self.steps.finish(result)
        if not quiet:
            status = "timed out" if result.timed_out else f"exit {result.exit_code}"
            self.log.line(f"# {operation}: {status} after {result.duration:.1f} s")
        self.beat()
        return result


def prepare(run: Run, stack: ExitStack) -> Prepared:
    """Load the manifest the action was accepted with and make its working copy."""
    repo = run.ctx.manifests.at(run.config.get("manifest_sha"))
    manifest = repo.find(run.service, run.config.get("manifest_environment") or run.environment)
    if manifest is None:
        hint = ": clean it up by hand, then delete the record" if run.kind == "cleanup" else ""
        raise ExecutorError(f"no manifest for {run.service} {run.environment} in the deployments repo{hint}")
    target = run.target(manifest, repo)
    temp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=action_dir_prefix(run.action_id))))
    return Prepared(repo, manifest, target, prepare_manifest_dir(repo, manifest, target.image, temp))


def retry_later(run: Run, problem: str) -> bool:
    """Put the action back to wait for another try, with backoff; False once the tries are used up."""
    if run.attempts >= len(REPO_RETRY_DELAYS):
        return False
    delay = REPO_RETRY_DELAYS[run.attempts]
    with run.ctx.session() as session:
        retry_at = db_now(session) + timedelta(seconds=delay)
        note = (f"# the deployments repo could not be read ({problem}); try {run.attempts + 1} of "
                f"{len(REPO_RETRY_DELAYS) + 1}, next in {delay} s\n")
        session.execute(update(Action).where(Action.id == run.action_id, Action.state == ActionState.QUEUED)
                        .values(attempts=Action.attempts + 1, retry_at=retry_at, log=Action.log + note)
                        .execution_options(synchronize_session=False))
        session.commit()
    log.warning("action %s: the deployments repo could not be read (%s); retrying in %s s", run.action_id,
                problem, delay)
    return True


def execute_action(ctx: WorkerContext, action_id: int, owner: str, later: list[FollowUp] | None = None) -> bool:
    """Run one queued action to its end and settle its deployment; False if the lease was lost.

    Its after-work (info, notifications) runs at the end, or with ``later`` is appended to it for the caller,
    which runs it before it lets the deployment's lease go."""
    with ctx.session() as session:
        action = session.get(Action, action_id)
        if action is None or action.state is not ActionState.QUEUED:
            return True
        run = Run(ctx, action, action.deployment, owner)
        # Its wait for a worker starts when it may start: a retry's or a pushed update's wait is on purpose.
        may_start_at = max(action.created_at, action.retry_at) if action.retry_at else action.created_at
        # Every line of its run, and every outbox row it writes, names it, its deployment and the
        # webhook delivery that asked for it.
        about = {"delivery_id": action.delivery_id, "deployment": run.deployment_name, "action_id": action_id}
    with logs.about(**about):
        return _execute(ctx, run, action_id, owner, may_start_at, later)


def _execute(ctx: WorkerContext, run: Run, action_id: int, owner: str, may_start_at: datetime,
             later: list[FollowUp] | None) -> bool:
    with ExitStack() as stack:
        # The slow part (reading manifests may fetch from git) comes before the action is claimed,
        # so a claimed action always has a fresh heartbeat.
        prepared: Prepared | None = None
        problem: str | None = None
        try:
            prepared = prepare(run, stack)
        except DeploymentsRepoError as exc:
            if retry_later(run, str(exc)):
                return True  # drain stops at the waiting action; the sweep queues it when due
            problem = f"the deployments repo could not be read after {run.attempts + 1} tries: {exc}"
        except (ExecutorError, OSError) as exc:
            problem = str(exc)
        try:
            run.beat(force=True)
        except LeaseLost:
            return False
        if not run.claim():
            return True  # another worker took it
        metrics.action_started(run.kind, may_start_at)
        started = time.monotonic()
        log.info("running %s of %s (action %s)", run.kind, run.deployment_name, action_id)
        try:
            if problem is not None:
                run.log.line(f"error: {problem}")
                outcome = _failed(run.kind, problem)
            else:
                outcome = _perform(run, prepared)
        except HandBack:
            run.log.flush()
            requeue(ctx.session, action_id, owner)
            return False  # drain lets the lease go; the sweep queues the action again
        except LeaseLost:
            log.warning("action %s: lease of %s lost; leaving the action to the reaper", action_id,
                        run.deployment_name)
            run.log.flush()
            return False
        except Cancelled as exc:
            run.log.line(f"# {exc}: the script was stopped")
            outcome = Outcome(ActionState.CANCELLED, after_cancel(run.kind, ran=run.script_started),
                              FailureReason.CANCELLED, f"action {action_id} ({run.kind}) {exc}")
        except (ExecutorError, ScriptNotFound) as exc:
            run.log.line(f"error: {exc}")
            outcome = _failed(run.kind, str(exc))
        except Exception as exc:
            log.exception("action %s failed unexpectedly", action_id)
            run.log.line(f"internal error: {failure_text(exc)}")
            outcome = _failed(run.kind, f"internal error: {type(exc).__name__}")
        run.log.flush()
        outputs = _info_outputs(run, prepared, outcome)
        if _seed_wanted(run, prepared, outcome):
            try:
                outcome = _seed(run, prepared, outputs, outcome)
            except HandBack:
                run.log.flush()
                requeue(ctx.session, action_id, owner)
                return False
            except LeaseLost:
                run.log.flush()
                return False
            except Cancelled as exc:
                run.log.line(f"# {exc}: the seed was stopped")
                outcome = Outcome(ActionState.CANCELLED, after_cancel(run.kind, ran=True), FailureReason.CANCELLED,
                                  f"action {action_id} ({run.kind}) {exc}")
            except (ExecutorError, ScriptNotFound) as exc:
                run.log.line(f"error: {exc}")
                outcome = _failed(run.kind, f"seed failed: {exc}")
            run.log.flush()
        changed = _finish(run, outcome, prepared, outputs)
        metrics.action_finished(run.kind, outcome.state, time.monotonic() - started)
        run.settled()
        if changed and prepared is not None:
            if later is None:
                _after_state_change(run, prepared, *changed)
            else:  # the working copy stays until it has run
                later.append(FollowUp(run, prepared, *changed, stack.pop_all(), contextvars.copy_context()))
    return True


def _failed(kind: str, message: str, reason=FailureReason.GENERIC, exit_code=None,
            state=ActionState.FAILED) -> Outcome:
    target = S.CLEANUP_FAILED if kind == "cleanup" else S.FAILURE
    return Outcome(state, target, reason, message, exit_code)


def _script_failed(run: Run, operation: str, result: ScriptResult) -> Outcome:
    if result.timed_out:
        return _failed(run.kind, f"{operation} timed out", FailureReason.TIMED_OUT, None, ActionState.TIMED_OUT)
    detail = (result.stdout.strip() if operation == "config_check" else result.stderr.strip()) or \
        result.stdout.strip()
    message = f"{operation} failed (exit {result.exit_code})"
    if detail:
        message += ": " + detail.splitlines()[-1][:500]
    return _failed(run.kind, message, FailureReason.GENERIC, result.exit_code)


def _perform(run: Run, prepared: Prepared) -> Outcome:
    if endpoints.external(prepared.manifest):
        return _record_only(run, prepared)
    executor = run.ctx.executor
    if run.kind in ("create", "update", "restore") and executor.has(prepared.repo, prepared.manifest,
                                                                     "config_check"):
        result = run.script("config_check", prepared)
        if not result.ok:
            return _script_failed(run, "config_check", result)
    operation = SCRIPT_FOR[run.kind]
    extra: tuple[str, ...] = ()
    if run.kind == "cleanup" and run.config.get("delete_data"):
        extra = ("--delete-data",)
    elif run.kind == "update" and run.config.get("force"):  # a shrink the user asked for (check_resize)
        extra = ("--force",)
    result = run.script(operation, prepared, extra=extra)
    if not result.ok:
        return _script_failed(run, operation, result)
    if run.kind == "cleanup":
        return Outcome(ActionState.SUCCEEDED, S.REMOVED, exit_code=result.exit_code)
    check = "archive_check" if run.kind == "archive" else "check"
    status_timeout = prepared.manifest.status_timeout or run.ctx.settings.status_timeout
    return _wait_for(run, check, prepared, status_timeout)


def _record_only(run: Run, prepared: Prepared) -> Outcome:
    """An external service's action: nothing is provisioned, so no control script runs. Create, update and
    restore wait for its endpoint to answer (its check); archive and cleanup only record the state."""
    run.log.line(f"# {run.kind} of an external service ({prepared.manifest.endpoint}): nothing is provisioned, "
                 "no control script runs")
    if run.kind == "archive":
        return Outcome(ActionState.SUCCEEDED, S.ARCHIVED)
    if run.kind == "cleanup":
        return Outcome(ActionState.SUCCEEDED, S.REMOVED)
    status_timeout = prepared.manifest.status_timeout or run.ctx.settings.status_timeout
    return _wait_for(run, "check", prepared, status_timeout)


def _wait_for(run: Run, check: str, prepared: Prepared, status_timeout: int) -> Outcome:
    """Run ``check`` until it passes or ``status_timeout`` seconds have gone by (for an external service,
    its endpoint check in place of the script)."""
    done = S.ARCHIVED if check == "archive_check" else S.RUNNING
    deadline = time.monotonic() + status_timeout
    script_timeout = prepared.manifest.timeout or run.ctx.settings.script_timeout
    delay = 0.5
    last: ScriptResult | None = None
    attempts = 0
    while True:
        attempts += 1
        # One check may not outlast the status timeout.
        remaining = max(1.0, deadline - time.monotonic())
        if endpoints.external(prepared.manifest):
            result = endpoints.answer(prepared.manifest)
        else:
            result = run.script(check, prepared, quiet=True, timeout=min(script_timeout, remaining),
                                again=attempts > 1)
        if result.ok:
            if check == "check" and endpoints.wanted(prepared.manifest):
                run.log.line(f"# endpoint check ({prepared.manifest.check.type}) of {prepared.manifest.endpoint}: "
                             "passed")
            run.log.line(f"# {check}: passed (attempt {attempts})")
            running = parse_report(result.stdout) if check == "check" else None
            return Outcome(ActionState.SUCCEEDED, done, exit_code=result.exit_code, running=running)
        if last is None or (result.exit_code, result.stderr) != (last.exit_code, last.stderr):
            run.log.line(f"# {check}: {'timed out' if result.timed_out else f'exit {result.exit_code}'} "
                         f"(attempt {attempts}), retrying")
            for line in (result.stdout + result.stderr).splitlines()[-20:]:
                run.log.line(f"  {line}")
        last = result
        if time.monotonic() + delay > deadline:
            break
        time.sleep(delay)
        run.beat()
        delay = min(delay * 1.5, 10.0)
    if check == "archive_check":
        return _failed(run.kind, f"archive_check did not pass within {status_timeout} s",
                       FailureReason.TIMED_OUT, last.exit_code)
    reason = FailureReason.TIMED_OUT if last.timed_out else CHECK_EXIT_REASONS.get(
        last.exit_code, FailureReason.TIMED_OUT)
    detail = (last.stderr or last.stdout).strip().splitlines()
    message = f"check did not pass within {status_timeout} s ({REASON_WORDS[reason]})"
    if detail:
        message += f": {detail[-1][:300]}"
    return _failed(run.kind, message, reason, last.exit_code)


def _seed_wanted(run: Run, prepared: Prepared | None, outcome: Outcome) -> bool:
    """An internal third-party service provisioned for a clone or a preview is seeded once, after the check of
    the action whose config says ``seed`` passed: its create's, or, when that create or its seed failed, the
    update of a later deploy of its environment (bot.services.environments decides); never otherwise."""
    return (prepared is not None and outcome.state is ActionState.SUCCEEDED and run.kind in ("create", "update")
            and bool(run.config.get("seed")))


def _seed(run: Run, prepared: Prepared, outputs: dict[str, str], checked: Outcome) -> Outcome:
    """Run the scripts' ``seed`` (given ``--endpoint`` when the service's is known); its failure fails
    the action, and so the component and what depends on it."""
    if not run.ctx.executor.has(prepared.repo, prepared.manifest, "seed"):
        return _failed(run.kind, "seed failed: the control scripts have no seed operation")
    endpoint = outputs.get("endpoint") or _recorded_endpoint(run)
    extra = ("--endpoint", endpoint) if endpoint else ()
    result = run.script("seed", prepared, extra=extra)
    if result.ok:
        return checked
    if result.timed_out:
        return _failed(run.kind, "seed failed: timed out", FailureReason.TIMED_OUT, None, ActionState.TIMED_OUT)
    detail = (result.stderr.strip() or result.stdout.strip()).splitlines()
    why = detail[-1][:500] if detail else "no output"
    return _failed(run.kind, f"seed failed: {why} (exit {result.exit_code})", FailureReason.GENERIC,
                   result.exit_code)


def _recorded_endpoint(run: Run) -> str | None:
    with run.ctx.session() as session:
        outputs = session.scalar(select(Deployment.outputs).where(Deployment.id == run.deployment_id))
    return (outputs or {}).get("endpoint")


def _info_outputs(run: Run, prepared: Prepared | None, outcome: Outcome) -> dict[str, str]:
    """A third-party service's outputs from its ``info`` (an ``endpoint,HOST:PORT`` line), read before
    the outcome is recorded so that the components depending on it are queued with its endpoint."""
    if (prepared is None or outcome.state is not ActionState.SUCCEEDED
            or run.kind not in ("create", "update", "restore") or prepared.manifest.kind is not Kind.THIRD_PARTY
            or endpoints.external(prepared.manifest)
            or not run.ctx.executor.has(prepared.repo, prepared.manifest, "info")):
        return {}
    try:
        result = run.script("info", prepared, quiet=True, timeout=60)
    except Exception as exc:  # the outcome stands; the endpoint stays the manifest's
        run.log.line(f"# info failed: {exc}")
        return {}
    return parse_outputs(result.stdout) if result.ok else {}


def parse_outputs(text: str) -> dict[str, str]:
    """The ``endpoint,VALUE`` line of ``info`` output as outputs (endpoint, host, port); {} without one."""
    for line in text.splitlines():
        name, sep, value = line.strip().partition(",")
        value = value.strip()
        if sep and name.strip() == "endpoint" and value and len(value) <= 1000 and value.isprintable():
            return endpoint_parts(value)
    return {}


def _finish(run: Run, outcome: Outcome, prepared: Prepared | None = None,
            outputs: dict[str, str] | None = None) -> tuple[DeploymentState, DeploymentState] | None:
    """Record the outcome; return (old, new) deployment states if they differ.

    When the action is a component of a whole-environment run, the run advances in the same
    transaction (the components behind it are accepted); if that step fails, the outcome is recorded
    without it and the scheduler advances the run later.
    """
    try:
        return _settle(run, outcome, prepared, outputs, advance_run=True)
    except Exception:
        log.exception("action %s: its environment run could not advance; the scheduler will", run.action_id)
        return _settle(run, outcome, prepared, outputs, advance_run=False)


def _repo_at(run: Run, prepared: Prepared | None):
    def at(sha: str | None) -> DeploymentsRepo:
        if prepared is not None and prepared.repo.sha == sha:
            return prepared.repo
        return run.ctx.manifests.at(sha)
    return at


def _settle(run: Run, outcome: Outcome, prepared: Prepared | None, outputs: dict[str, str] | None, *,
            advance_run: bool) -> tuple[DeploymentState, DeploymentState] | None:
    queued: list[environments.Queued] = []
    services_ctx = Context.from_settings(run.ctx.settings, run.ctx.broker)
    with run.ctx.session() as session:
        deployment = session.scalars(select(Deployment).where(Deployment.id == run.deployment_id)
                                     .with_for_update().execution_options(populate_existing=True)).one()
        action = session.scalars(select(Action).where(Action.id == run.action_id)
                                 .execution_options(populate_existing=True)).one()
        if action.state is not ActionState.RUNNING or action.worker != run.owner[:255]:
            log.warning("action %s was settled elsewhere (%s) while it ran; its result is dropped",
                        run.action_id, action.state)
            return None
        transition_action(action, outcome.state)
        action.exit_code = outcome.exit_code
        action.error = outcome.message if outcome.state is not ActionState.SUCCEEDED else None
        newer = session.scalar(select(exists().where(
            Action.deployment_id == deployment.id, Action.state == ActionState.QUEUED)))
        old_state = deployment.state
        if outcome.state is ActionState.SUCCEEDED and run.kind in DEPLOY_KINDS:
            # What runs now is what Sami deployed: the report is the baseline drift is measured against.
            action.running = outcome.running
            note_running(deployment, outcome.running, [] if outcome.running is not None else None, db_now(session))
        elif outcome.state is ActionState.SUCCEEDED and run.kind == "archive":
            note_running(deployment, None, None)  # archived: nothing is compared
        # With newer work queued the deployment stays pending; the last action settles it.
        if not newer:
            if can_transition(deployment.state, outcome.deployment_state):
                transition(deployment, outcome.deployment_state, reason=outcome.reason, message=outcome.message)
                if outcome.deployment_state in (S.RUNNING, S.FAILURE):
                    deployment.checked_at = db_now(session)
                    # A script ran: periodic checks go back to the plain interval.
                    deployment.check_failures, deployment.check_retry_at = 0, None
            else:
                log.warning("%s is %s; not moving it to %s after action %s", deployment.name,
                            deployment.state, outcome.deployment_state, action.id)
        if outputs:
            deployment.outputs = {**(deployment.outputs or {}), **outputs}
        if advance_run:
            queued = environments.action_settled(session, action, _repo_at(run, prepared), services_ctx)
            releases.deploys_settled(session, run.environment)
        outbox.commit(session)
        environments.hand_to_queue(services_ctx, queued)
        new_state = deployment.state
    log.info("action %s %s: %s is %s", run.action_id, outcome.state, run.deployment_name, new_state)
    return (old_state, new_state) if new_state is not old_state else None


def _after_state_change(run: Run, prepared: Prepared, old: DeploymentState, new: DeploymentState) -> None:
    """Refresh links from ``info`` and call ``notifications``; neither can fail the action (nor runs for an
    external service, which has no scripts)."""
    executor = run.ctx.executor
    if endpoints.external(prepared.manifest):
        return
    try:
        if new is S.RUNNING and executor.has(prepared.repo, prepared.manifest, "info"):
            result = executor.run("info", prepared.repo, prepared.target, prepared.manifest_dir, timeout=60,
                                  on_tick=run.beat, label=script_label(run.action_id))
            links = parse_links(result.stdout) if result.ok else []
            if links:
                with run.ctx.session() as session:
                    session.execute(update(Deployment).where(Deployment.id == run.deployment_id)
                                    .values(links=links).execution_options(synchronize_session=False))
                    session.commit()
        if executor.has(prepared.repo, prepared.manifest, "notifications"):
            executor.run("notifications", prepared.repo, prepared.target, prepared.manifest_dir, timeout=60,
                         on_tick=run.beat, label=script_label(run.action_id),
                         extra=("--old-status", str(old), "--new-status", str(new)))
    except Exception:
        log.exception("info/notifications after action %s failed", run.action_id)


def parse_links(text: str) -> list[dict[str, str]]:
    """``info`` output (``name,url`` lines) as link records; malformed lines are skipped."""
    links = []
    for line in text.splitlines():
        name, sep, url = line.strip().partition(",")
        if sep and name and url.startswith(("http://", "https://")):
            links.append({"name": name.strip()[:100], "url": url.strip()[:2000]})
    return links[:20]


def make_target(ctx: WorkerContext, name: str, service: str, environment: str, pull_request: int | None,
                manifest: Manifest, config: dict, repo: DeploymentsRepo | None = None) -> Target:
    """The script target for a deployment with ``config`` (tag, image, overrides).

    It runs on the Sami target ``config`` names, else the one the file of the environment whose manifests
    it deploys with names in ``repo`` (a clone's, a colour's or a preview's template; else its own), else
    the default target.
    """
    s = ctx.settings
    runs_on = config.get("target")
    if runs_on is None and repo is not None:
        try:
            runs_on = repo.target_of(config.get("manifest_environment") or environment)
        except ValueError as exc:
            raise ExecutorError(f"{exc}; nothing was run") from None
    url = manifest.render_url(name=name, base_domain=s.base_domain, namespace=s.namespace,
                              project_name=s.project_name, pr=pull_request)
    return Target(name=name, service=service, environment=environment,
                  tag=config.get("tag") or "latest", image=config.get("image"),
                  app_overrides=dict(config.get("app_overrides") or {}),
                  deployment_overrides=dict(config.get("deployment_overrides") or {}),
                  url=url, manifest=manifest, runs_on=runs_on)
