"""Queue jobs: run an action's scripts, check a live deployment. Jobs receive ids and load rows.

One worker at a time holds a deployment's lease (a conditional UPDATE on its row, so it holds
across any number of processes and machines). A job that cannot get the lease returns at once:
the holder runs every queued action of that deployment before it lets go (it drains), and
checks again after letting go, so nothing queued is left behind.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import exists, or_, select, update
from sqlalchemy.orm import Session

from bot.manifests import DeploymentsRepo, Manifest
from bot.models import Action, Deployment
from bot.states import (
    LIVE_STATES,
    ActionState,
    DeploymentState,
    FailureReason,
    can_transition,
    transition,
    transition_action,
)
from workers.context import WorkerContext, get_context
from workers.executor import ExecutorError, Target, prepare_manifest_dir, workdir
from workers.runner import ScriptNotFound, ScriptResult

log = logging.getLogger(__name__)
S = DeploymentState

LEASE_SECONDS = 60
HEARTBEAT_SECONDS = 10
LOG_FLUSH_SECONDS = 0.5
MAX_LOG_BYTES = 1024 * 1024
CHECK_EXIT_REASONS = {2: FailureReason.PARTIAL_AVAILABILITY, 3: FailureReason.TAG_MISMATCH}
REASON_WORDS = {FailureReason.PARTIAL_AVAILABILITY: "partial availability",
                FailureReason.TAG_MISMATCH: "tag mismatch", FailureReason.TIMED_OUT: "timed out",
                FailureReason.GENERIC: "failed"}


def utcnow() -> datetime:
    return datetime.now(UTC)


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}:{uuid.uuid4().hex[:8]}"


# --- the lease -------------------------------------------------------------------------------

def claim_lease(ctx: WorkerContext, deployment_id: int, owner: str) -> bool:
    """Take the deployment's lease if it is free or expired; False if another worker holds it."""
    now = utcnow()
    with ctx.session() as session:
        result = session.execute(
            update(Deployment)
            .where(Deployment.id == deployment_id,
                   or_(Deployment.lease_owner.is_(None), Deployment.lease_expires_at < now))
            .values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=LEASE_SECONDS))
            .execution_options(synchronize_session=False)
        )
        session.commit()
        return result.rowcount == 1


def renew_lease(ctx: WorkerContext, deployment_id: int, owner: str, action_id: int | None = None) -> None:
    """Heartbeat: extend the lease and stamp the running action."""
    now = utcnow()
    with ctx.session() as session:
        session.execute(
            update(Deployment).where(Deployment.id == deployment_id, Deployment.lease_owner == owner)
            .values(lease_expires_at=now + timedelta(seconds=LEASE_SECONDS))
            .execution_options(synchronize_session=False))
        if action_id is not None:
            session.execute(update(Action).where(Action.id == action_id, Action.state == ActionState.RUNNING)
                            .values(heartbeat_at=now).execution_options(synchronize_session=False))
        session.commit()


def release_lease(ctx: WorkerContext, deployment_id: int, owner: str) -> None:
    with ctx.session() as session:
        session.execute(
            update(Deployment).where(Deployment.id == deployment_id, Deployment.lease_owner == owner)
            .values(lease_owner=None, lease_expires_at=None)
            .execution_options(synchronize_session=False))
        session.commit()


def next_queued_action(ctx: WorkerContext, deployment_id: int) -> int | None:
    with ctx.session() as session:
        return session.scalars(
            select(Action.id).where(Action.deployment_id == deployment_id, Action.state == ActionState.QUEUED)
            .order_by(Action.id).limit(1)).first()


# --- jobs ------------------------------------------------------------------------------------

def run_action(action_id: int) -> None:
    """Queue job: run action ``action_id`` (and whatever else is queued on its deployment)."""
    ctx = get_context()
    with ctx.session() as session:
        action = session.get(Action, action_id)
        if action is None or action.state is not ActionState.QUEUED:
            return
        deployment_id = action.deployment_id
    owner = worker_identity()
    if claim_lease(ctx, deployment_id, owner):
        drain(ctx, deployment_id, owner)


def drain(ctx: WorkerContext, deployment_id: int, owner: str) -> None:
    """Run the deployment's queued actions oldest first while holding its lease."""
    while True:
        try:
            while (action_id := next_queued_action(ctx, deployment_id)) is not None:
                execute_action(ctx, action_id, owner)
        finally:
            release_lease(ctx, deployment_id, owner)
        # An action queued while we held the lease had its job return early: take it over.
        if next_queued_action(ctx, deployment_id) is None or not claim_lease(ctx, deployment_id, owner):
            return


def check_deployment(deployment_id: int, kind: str = "check") -> None:
    """Queue job: a periodic ``check`` of a live deployment, or ``archive_check`` of an archiving one."""
    ctx = get_context()
    owner = worker_identity()
    if not claim_lease(ctx, deployment_id, owner):
        return  # busy: an action is running on it, and it will settle the state
    try:
        with ctx.session() as session:
            deployment = session.get(Deployment, deployment_id)
            if deployment is None:
                return
            pending = session.scalar(select(exists().where(
                Action.deployment_id == deployment_id,
                Action.state.in_((ActionState.QUEUED, ActionState.RUNNING)))))
            if pending:
                return
            if kind == "archive_check" and deployment.state is S.ARCHIVE_PENDING:
                _periodic_archive_check(ctx, session, deployment, owner)
            elif kind == "check" and deployment.state in LIVE_STATES:
                _periodic_check(ctx, session, deployment, owner)
    finally:
        release_lease(ctx, deployment_id, owner)
    if next_queued_action(ctx, deployment_id) is not None and claim_lease(ctx, deployment_id, owner):
        drain(ctx, deployment_id, owner)


# --- running one action ----------------------------------------------------------------------

class ActionLog:
    """Appends an action's output to its row as it comes, in batches, up to a size cap."""

    def __init__(self, ctx: WorkerContext, action_id: int, limit: int = MAX_LOG_BYTES):
        self.ctx = ctx
        self.action_id = action_id
        self.limit = limit
        self.size = 0
        self.truncated = False
        self.buffer: list[str] = []
        self.lock = threading.Lock()
        self.last_flush = time.monotonic()

    def write(self, text: str) -> None:
        with self.lock:
            if self.truncated:
                return
            if self.size + len(text) > self.limit:
                text = text[: max(0, self.limit - self.size)] + f"\n[output truncated at {self.limit} bytes]\n"
                self.truncated = True
            self.size += len(text)
            self.buffer.append(text)
        if time.monotonic() - self.last_flush >= LOG_FLUSH_SECONDS or self.truncated:
            self.flush()

    def line(self, text: str) -> None:
        self.write(text if text.endswith("\n") else text + "\n")

    def flush(self) -> None:
        with self.lock:
            chunk, self.buffer = "".join(self.buffer), []
            self.last_flush = time.monotonic()
            truncated = self.truncated
        if not chunk and not truncated:
            return
        with self.ctx.session() as session:
            session.execute(update(Action).where(Action.id == self.action_id)
                            .values(log=Action.log + chunk, log_truncated=truncated)
                            .execution_options(synchronize_session=False))
            session.commit()


@dataclass
class Outcome:
    """How an action ended, and the state its deployment goes to."""

    state: ActionState
    deployment_state: DeploymentState
    reason: FailureReason | None = None
    message: str | None = None
    exit_code: int | None = None


class Run:
    """One action being executed: its rows, target, working copy, log and heartbeat."""

    def __init__(self, ctx: WorkerContext, action: Action, deployment: Deployment, owner: str):
        self.ctx = ctx
        self.action_id = action.id
        self.deployment_id = deployment.id
        self.kind = action.kind
        self.config = dict(action.config or {})
        self.owner = owner
        self.log = ActionLog(ctx, action.id)
        self.deployment_name = deployment.name
        self.service = deployment.service
        self.environment = deployment.environment
        self.pull_request = deployment.pull_request
        self.last_beat = time.monotonic()
        self.script_started = False

    def beat(self) -> None:
        if time.monotonic() - self.last_beat >= HEARTBEAT_SECONDS:
            self.last_beat = time.monotonic()
            renew_lease(self.ctx, self.deployment_id, self.owner, self.action_id)

    def mark_script_started(self) -> None:
        if self.script_started:
            return
        self.script_started = True
        with self.ctx.session() as session:
            session.execute(update(Action).where(Action.id == self.action_id)
                            .values(script_started_at=utcnow()).execution_options(synchronize_session=False))
            session.commit()

    def target(self, manifest: Manifest) -> Target:
        return make_target(self.ctx, self.deployment_name, self.service, self.environment, self.pull_request,
                           manifest, self.config)

    def script(self, operation: str, repo: DeploymentsRepo, target: Target, manifest_dir: Path,
               extra: tuple[str, ...] = (), quiet: bool = False) -> ScriptResult:
        self.mark_script_started()
        if not quiet:
            self.log.line(f"$ {operation}")
        result = self.ctx.executor.run(operation, repo, target, manifest_dir, extra=extra,
                                       on_output=None if quiet else self.log.write, on_tick=self.beat)
        if not quiet:
            status = "timed out" if result.timed_out else f"exit {result.exit_code}"
            self.log.line(f"# {operation}: {status} after {result.duration:.1f} s")
        self.beat()
        return result


def execute_action(ctx: WorkerContext, action_id: int, owner: str) -> None:
    """Run one queued action to its end and settle its deployment's state."""
    with ctx.session() as session:
        action = session.get(Action, action_id)
        if action is None or action.state is not ActionState.QUEUED:
            return
        deployment = action.deployment
        transition_action(action, ActionState.RUNNING)
        action.worker = owner[:255]
        session.commit()
        run = Run(ctx, action, deployment, owner)
    log.info("running %s of %s (action %s)", run.kind, run.deployment_name, action_id,
             extra={"action_id": action_id, "deployment": run.deployment_name})
    try:
        outcome = _perform(run)
    except (ExecutorError, ScriptNotFound) as exc:
        run.log.line(f"error: {exc}")
        outcome = _failed(run.kind, str(exc))
    except Exception as exc:
        log.exception("action %s failed unexpectedly", action_id, extra={"action_id": action_id})
        run.log.line(f"internal error: {type(exc).__name__}: {exc}")
        outcome = _failed(run.kind, f"internal error: {type(exc).__name__}")
    run.log.flush()
    _finish(run, outcome)


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


def _load_manifest(run: Run) -> tuple[DeploymentsRepo, Manifest | None]:
    repo = run.ctx.manifests.at(run.config.get("manifest_sha"))
    return repo, repo.find(run.service, run.environment)


def _perform(run: Run) -> Outcome:
    repo, manifest = _load_manifest(run)
    if manifest is None:
        if run.kind == "cleanup":
            return _failed("cleanup", f"no manifest for {run.service} {run.environment} in the deployments "
                                      "repo: clean it up by hand, then delete the record")
        return _failed(run.kind, f"no manifest for {run.service} {run.environment} in the deployments repo")
    target = run.target(manifest)
    with workdir() as temp:
        manifest_dir = prepare_manifest_dir(repo, manifest, target.image, Path(temp))
        operation = {"create": "create", "update": "update", "restore": "unarchive",
                     "archive": "archive", "cleanup": "cleanup"}[run.kind]
        if run.kind in ("create", "update", "restore") and run.ctx.executor.has(repo, manifest, "config_check"):
            result = run.script("config_check", repo, target, manifest_dir)
            if not result.ok:
                return _script_failed(run, "config_check", result)
        result = run.script(operation, repo, target, manifest_dir)
        if not result.ok:
            return _script_failed(run, operation, result)
        if run.kind == "cleanup":
            return Outcome(ActionState.SUCCEEDED, S.REMOVED, exit_code=0)
        check = "archive_check" if run.kind == "archive" else "check"
        return _wait_for(run, check, repo, target, manifest_dir, manifest.status_timeout
                         or run.ctx.settings.status_timeout)


def _wait_for(run: Run, check: str, repo, target: Target, manifest_dir: Path, status_timeout: int) -> Outcome:
    """Run ``check`` until it passes or ``status_timeout`` seconds have gone by."""
    done = S.ARCHIVED if check == "archive_check" else S.RUNNING
    deadline = time.monotonic() + status_timeout
    delay = 0.5
    last: ScriptResult | None = None
    attempts = 0
    while True:
        attempts += 1
        result = run.script(check, repo, target, manifest_dir, quiet=True)
        if result.ok:
            run.log.line(f"# {check}: passed (attempt {attempts})")
            return Outcome(ActionState.SUCCEEDED, done, exit_code=0)
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
                       FailureReason.TIMED_OUT)
    reason = CHECK_EXIT_REASONS.get(last.exit_code, FailureReason.TIMED_OUT)
    detail = (last.stderr or last.stdout).strip().splitlines()
    message = f"check did not pass within {status_timeout} s ({REASON_WORDS[reason]})"
    if detail:
        message += f": {detail[-1][:300]}"
    return _failed(run.kind, message, reason, last.exit_code)


def _finish(run: Run, outcome: Outcome) -> None:
    ctx = run.ctx
    with ctx.session() as session:
        action = session.get(Action, run.action_id)
        deployment = session.scalars(select(Deployment).where(Deployment.id == run.deployment_id)
                                     .with_for_update()).one()
        transition_action(action, outcome.state)
        action.exit_code = outcome.exit_code
        action.error = outcome.message if outcome.state is not ActionState.SUCCEEDED else None
        newer = session.scalar(select(exists().where(
            Action.deployment_id == deployment.id, Action.state == ActionState.QUEUED)))
        old_state = deployment.state
        # With newer work queued the deployment stays pending; the last action settles it.
        if not newer:
            if can_transition(deployment.state, outcome.deployment_state):
                transition(deployment, outcome.deployment_state, reason=outcome.reason, message=outcome.message)
                if outcome.deployment_state in (S.RUNNING, S.FAILURE):
                    deployment.checked_at = utcnow()
            else:
                log.warning("%s is %s; not moving it to %s after action %s", deployment.name, deployment.state,
                            outcome.deployment_state, action.id)
        session.commit()
        new_state = deployment.state
    log.info("action %s %s: %s is %s", run.action_id, outcome.state, run.deployment_name, new_state,
             extra={"action_id": run.action_id, "deployment": run.deployment_name})
    if new_state is not old_state:
        _after_state_change(run, old_state, new_state)


def _after_state_change(run: Run, old: DeploymentState, new: DeploymentState) -> None:
    """Refresh links from ``info`` and call ``notifications``; neither can fail the action."""
    try:
        repo, manifest = _load_manifest(run)
        if manifest is None:
            return
        target = run.target(manifest)
        with workdir() as temp:
            manifest_dir = prepare_manifest_dir(repo, manifest, target.image, Path(temp))
            if new is S.RUNNING and ctx_has(run, repo, manifest, "info"):
                result = run.ctx.executor.run("info", repo, target, manifest_dir, timeout=60)
                links = parse_links(result.stdout) if result.ok else []
                if links:
                    with run.ctx.session() as session:
                        session.execute(update(Deployment).where(Deployment.id == run.deployment_id)
                                        .values(links=links).execution_options(synchronize_session=False))
                        session.commit()
            if ctx_has(run, repo, manifest, "notifications"):
                run.ctx.executor.run("notifications", repo, target, manifest_dir, timeout=60,
                                     extra=("--old-status", str(old), "--new-status", str(new)))
    except Exception:
        log.exception("info/notifications after action %s failed", run.action_id)


def ctx_has(run: Run, repo, manifest, operation: str) -> bool:
    return run.ctx.executor.has(repo, manifest, operation)


def parse_links(text: str) -> list[dict[str, str]]:
    """``info`` output (``name,url`` lines) as link records; malformed lines are skipped."""
    links = []
    for line in text.splitlines():
        name, sep, url = line.strip().partition(",")
        if sep and name and url.startswith(("http://", "https://")):
            links.append({"name": name.strip()[:100], "url": url.strip()[:2000]})
    return links[:20]


# --- periodic checks -------------------------------------------------------------------------

def _periodic_check(ctx: WorkerContext, session: Session, deployment: Deployment, owner: str) -> None:
    repo = ctx.manifests.current()
    manifest = repo.find(deployment.service, deployment.environment)
    if manifest is None:
        return
    config = {"tag": deployment.tag, "image": deployment.image,
              "app_overrides": {**manifest.app_overrides, **deployment.app_overrides},
              "deployment_overrides": {**manifest.deployment_overrides, **deployment.deployment_overrides}}
    target = _target_for(ctx, deployment, manifest, config)
    with workdir() as temp:
        manifest_dir = prepare_manifest_dir(repo, manifest, target.image, Path(temp))
        result = ctx.executor.run("check", repo, target, manifest_dir,
                                  on_tick=lambda: renew_lease(ctx, deployment.id, owner))
    deployment = session.scalars(select(Deployment).where(Deployment.id == deployment.id)
                                 .with_for_update()).one()
    old = deployment.state
    if deployment.state in LIVE_STATES:
        if result.ok and deployment.state is S.FAILURE:
            transition(deployment, S.RUNNING, message="check passed")
        elif not result.ok:
            reason = FailureReason.TIMED_OUT if result.timed_out else CHECK_EXIT_REASONS.get(
                result.exit_code, FailureReason.GENERIC)
            detail = (result.stderr or result.stdout).strip().splitlines()
            message = f"check: {REASON_WORDS[reason]}" + (f": {detail[-1][:300]}" if detail else "")
            if deployment.state is S.RUNNING or deployment.failure_reason is not reason:
                transition(deployment, S.FAILURE, reason=reason, message=message)
        deployment.checked_at = utcnow()
    session.commit()
    if deployment.state is not old:
        log.info("check: %s is %s (was %s)", deployment.name, deployment.state, old,
                 extra={"deployment": deployment.name})


def _periodic_archive_check(ctx: WorkerContext, session: Session, deployment: Deployment, owner: str) -> None:
    repo = ctx.manifests.current()
    manifest = repo.find(deployment.service, deployment.environment)
    if manifest is None:
        return
    target = _target_for(ctx, deployment, manifest, {"tag": deployment.tag, "image": deployment.image})
    with workdir() as temp:
        manifest_dir = prepare_manifest_dir(repo, manifest, target.image, Path(temp))
        result = ctx.executor.run("archive_check", repo, target, manifest_dir,
                                  on_tick=lambda: renew_lease(ctx, deployment.id, owner))
    deployment = session.scalars(select(Deployment).where(Deployment.id == deployment.id)
                                 .with_for_update()).one()
    if result.ok and deployment.state is S.ARCHIVE_PENDING:
        transition(deployment, S.ARCHIVED)
    deployment.checked_at = utcnow()
    session.commit()


def make_target(ctx: WorkerContext, name: str, service: str, environment: str, pull_request: int | None,
                manifest: Manifest, config: dict) -> Target:
    """The script target for a deployment with ``config`` (tag, image, overrides)."""
    s = ctx.settings
    url = manifest.render_url(name=name, base_domain=s.base_domain, namespace=s.namespace,
                              project_name=s.project_name, pr=pull_request)
    return Target(name=name, service=service, environment=environment,
                  tag=config.get("tag") or "latest", image=config.get("image"),
                  app_overrides=dict(config.get("app_overrides") or {}),
                  deployment_overrides=dict(config.get("deployment_overrides") or {}),
                  url=url, manifest=manifest)


def _target_for(ctx: WorkerContext, deployment: Deployment, manifest: Manifest, config: dict) -> Target:
    return make_target(ctx, deployment.name, deployment.service, deployment.environment,
                       deployment.pull_request, manifest, config)
