"""Queue job for periodic work: ``check`` of a live deployment, ``archive_check`` of an archiving
one. It takes the deployment's lease like an action does, and skips a deployment that is busy.

A check that cannot start (a secret missing, the manifest gone, the deployments repo unreadable, or
a bug) is noted on the deployment, and the scheduler tries it again after the check interval,
doubling with each failure in a row up to CHECK_BACKOFF_CAP."""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import exists, select
from sqlalchemy.orm.exc import StaleDataError

from bot import outbox
from bot.core import logs
from bot.core.errors import Conflict, Invalid
from bot.core.lifecycle import REASON_WORDS
from bot.core.models import Action, Deployment
from bot.core.states import (
    LIVE_STATES,
    ActionState,
    DeploymentState,
    FailureReason,
    clear_check_failing,
    note_check_failing,
    note_running,
    transition,
)
from bot.manifests import DeploymentsRepo, DeploymentsRepoError, Manifest
from bot.services.deployments import Context, action_config, deployed_action
from bot.services.drift import compare, parse_report, summary
from bot.services.history import reconcile_deployment
from workers import endpoints
from workers.context import WorkerContext
from workers.executor import ExecutorError, Target, prepare_manifest_dir
from workers.jobs import (
    CHECK_EXIT_REASONS,
    HEARTBEAT_SECONDS,
    drain,
    make_target,
    next_queued_action,
)
from workers.lease import LeaseLost, claim_lease, db_now, release_lease, renew_lease, worker_identity
from workers.runner import ScriptResult

log = logging.getLogger(__name__)
S = DeploymentState

CHECK_BACKOFF_CAP = 3600  # seconds: the longest wait between tries of a check that cannot start
# Failures of the setting around a check, not of Sami: one line with the reason, no traceback.
CANNOT_START = (ExecutorError, DeploymentsRepoError)


def check_deployment(deployment_id: int, kind: str = "check", *, ctx: WorkerContext) -> None:
    """Queue job: a periodic ``check`` of a live deployment, or ``archive_check`` of an archiving one.
    Its log lines name the deployment."""
    with ctx.session() as session:
        name = session.scalar(select(Deployment.name).where(Deployment.id == deployment_id))
    if name is None:
        return  # deleted meanwhile
    with logs.about(deployment=name):
        _check(ctx, deployment_id, kind)


def _check(ctx: WorkerContext, deployment_id: int, kind: str) -> None:
    owner = worker_identity()
    if not claim_lease(ctx.session, deployment_id, owner):
        return  # busy: an action is running on it, and it will settle the state
    try:
        _periodic(ctx, deployment_id, kind, owner)
    except (StaleDataError, LeaseLost) as exc:
        log.info("%s of deployment %s dropped: %s", kind, deployment_id, type(exc).__name__)
    except CANNOT_START as exc:
        name, delay = _note_failure(ctx, deployment_id, kind, str(exc))
        log.warning("%s of %s cannot run: %s; next try in %d s", kind, name, exc, delay)
    except Exception as exc:
        name, delay = _note_failure(ctx, deployment_id, kind,
                                    f"an unexpected error ({type(exc).__name__}); see the worker's log")
        log.exception("%s of %s failed; next try in %d s", kind, name, delay)
    finally:
        release_lease(ctx.session, deployment_id, owner)
    if next_queued_action(ctx, deployment_id) is not None and claim_lease(ctx.session, deployment_id, owner):
        drain(ctx, deployment_id, owner)


@dataclass(frozen=True)
class Planned:
    """A periodic check about to run: its deployment, manifest, target, and what drift is measured against."""

    deployment_id: int
    name: str
    manifest: Manifest
    target: Target
    deployed_config: dict | None
    baseline: dict | None


def _plan(ctx: WorkerContext, repo: DeploymentsRepo, deployment_id: int, kind: str,
          fresh_after: datetime | None = None) -> Planned | None:
    """What the periodic ``kind`` of a deployment runs with; None when it is not wanted now (busy, settled
    otherwise, or checked after ``fresh_after`` already)."""
    # Read what is needed, then let the session go: no transaction stays open while a script runs.
    with ctx.session() as session:
        deployment = session.get(Deployment, deployment_id)
        if deployment is None:
            return None
        if fresh_after is not None and deployment.checked_at is not None and deployment.checked_at > fresh_after:
            return None
        busy = session.scalar(select(exists().where(
            Action.deployment_id == deployment_id, Action.state.in_((ActionState.QUEUED, ActionState.RUNNING)))))
        if busy or not _wanted(kind, deployment.state):
            return None
        manifest = repo.find(deployment.service, deployment.manifest_environment or deployment.environment)
        if manifest is None:
            raise ExecutorError(f"no manifest for {deployment.service} {deployment.environment} in the "
                                "deployments repo")
        name, service, environment, pr = (deployment.name, deployment.service, deployment.environment,
                                          deployment.pull_request)
        # The config the deployment runs with, as an action on it would get it.
        config = action_config(deployment, manifest, repo)
        # What Sami deployed, and what the target reported running then: what drift is measured against.
        deployed = deployed_action(session, deployment_id) if kind == "check" else None
        deployed_config, baseline = (dict(deployed.config or {}), deployed.running) if deployed else (None, None)
    target = make_target(ctx, name, service, environment, pr, manifest, config, repo)
    return Planned(deployment_id, name, manifest, target, deployed_config, baseline)


def _beat(ctx: WorkerContext, deployment_ids: list[int], owner: str):
    """A runner tick that renews the leases of ``deployment_ids`` every HEARTBEAT_SECONDS."""
    last_beat = time.monotonic()

    def beat():
        nonlocal last_beat
        if time.monotonic() - last_beat < HEARTBEAT_SECONDS:
            return
        last_beat = time.monotonic()
        for deployment_id in deployment_ids:
            if not renew_lease(ctx.session, deployment_id, owner):
                raise LeaseLost(f"lost the lease of deployment {deployment_id}")

    return beat


def _periodic(ctx: WorkerContext, deployment_id: int, kind: str, owner: str) -> None:
    repo = ctx.manifests.current()
    plan = _plan(ctx, repo, deployment_id, kind)
    if plan is None:
        return
    if endpoints.external(plan.manifest):  # no script: its check is the endpoint's (nothing to archive)
        result = endpoints.answer(plan.manifest) if kind == "check" else ScriptResult(0, False, "", "", 0.0)
        _settle(ctx, plan, kind, result)
        return
    with tempfile.TemporaryDirectory(prefix="sami-check-") as temp:
        manifest_dir = prepare_manifest_dir(repo, plan.manifest, plan.target.image, Path(temp))
        result = ctx.executor.run(kind, repo, plan.target, manifest_dir, on_tick=_beat(ctx, [deployment_id], owner),
                                  label=f"sami-check-{deployment_id}")
    _settle(ctx, plan, kind, result)


def _settle(ctx: WorkerContext, plan: Planned, kind: str, result: ScriptResult) -> None:
    """Record what a periodic check found: the state it implies, what runs and the drift."""
    deployment_id = plan.deployment_id
    with ctx.session() as session:
        deployment = session.scalars(select(Deployment).where(Deployment.id == deployment_id).with_for_update()
                                     .execution_options(populate_existing=True)).one()
        old = deployment.state
        was_failing = deployment.check_failures > 0  # its status message says the check could not run
        drifted = False
        if kind == "check" and deployment.state in LIVE_STATES:
            report = parse_report(result.stdout)
            differences = (compare(plan.deployed_config, plan.baseline, report)
                           if report is not None and plan.deployed_config is not None else None)
            note_running(deployment, report, differences, db_now(session))
            drifted = bool(differences)
        if kind == "archive_check":
            if result.ok and deployment.state is S.ARCHIVE_PENDING:
                transition(deployment, S.ARCHIVED)
            elif was_failing:
                clear_check_failing(deployment)
        elif deployment.state in LIVE_STATES:
            if result.ok and deployment.state is S.FAILURE:
                transition(deployment, S.RUNNING, message="check passed")
            elif result.ok and was_failing:
                clear_check_failing(deployment, "check passed")
            elif not result.ok and drifted:
                # Drift explains the failed check (an image changed by hand, a stack removed): it is shown
                # as drift, not as a Failure of what Sami deployed.
                if was_failing:
                    clear_check_failing(deployment)
            elif not result.ok:
                reason = FailureReason.TIMED_OUT if result.timed_out else CHECK_EXIT_REASONS.get(
                    result.exit_code, FailureReason.GENERIC)
                detail = (result.stderr or result.stdout).strip().splitlines()
                # A generic failure's message says what failed (its short reason on lists is "check exit N").
                message = (f"check failed (exit {result.exit_code})" if reason is FailureReason.GENERIC
                           else f"check: {REASON_WORDS[reason]}") + (f": {detail[-1][:300]}" if detail else "")
                if deployment.state is S.RUNNING or deployment.failure_reason is not reason or was_failing:
                    transition(deployment, S.FAILURE, reason=reason, message=message)
        deployment.checked_at = db_now(session)
        deployment.check_failures, deployment.check_retry_at = 0, None
        outbox.commit(session)
        if deployment.state is not old:
            log.info("%s: %s is %s (was %s)", kind, deployment.name, deployment.state, old)
        if drifted:
            log.info("check: %s drifted: %s", deployment.name, summary(deployment.drift))
    if drifted and plan.manifest.on_drift == "reconcile":
        _reconcile_on_drift(ctx, deployment_id, plan.name)


# --- many deployments in one call ------------------------------------------------------------

def check_batch(deployment_ids: list[int], seen_at: str | None = None, *, ctx: WorkerContext) -> None:
    """Queue job: the periodic ``check`` of many deployments whose script set has ``check_batch``, in one
    call of it per set; each deployment's answer is settled as its own ``check`` would be. A deployment
    checked since the scheduler found it due at ``seen_at`` (by another batch) is left out."""
    owner = worker_identity()
    repo = ctx.manifests.current()
    fresh_after = (datetime.fromisoformat(seen_at) - timedelta(seconds=ctx.settings.check_interval / 2)
                   if seen_at else None)
    claimed = [i for i in deployment_ids if claim_lease(ctx.session, i, owner)]
    try:
        # One call per script set and Sami target: each target has its own Docker host or static root.
        groups: dict[tuple[Path, str | None], list[Planned]] = {}
        for deployment_id in claimed:
            try:
                plan = _plan(ctx, repo, deployment_id, "check", fresh_after)
            except CANNOT_START as exc:
                name, delay = _note_failure(ctx, deployment_id, "check", str(exc))
                log.warning("check of %s cannot run: %s; next try in %d s", name, exc, delay)
                continue
            if plan is not None:
                key = (ctx.executor.scripts_dir(repo, plan.manifest), plan.target.runs_on)
                groups.setdefault(key, []).append(plan)
        for plans in groups.values():
            _run_batch(ctx, repo, plans, owner)
    finally:
        for deployment_id in claimed:
            release_lease(ctx.session, deployment_id, owner)
    for deployment_id in claimed:
        if next_queued_action(ctx, deployment_id) is not None and claim_lease(ctx.session, deployment_id, owner):
            drain(ctx, deployment_id, owner)


def _run_batch(ctx: WorkerContext, repo: DeploymentsRepo, plans: list[Planned], owner: str) -> None:
    ids = [plan.deployment_id for plan in plans]
    try:
        with tempfile.TemporaryDirectory(prefix="sami-check-batch-") as temp:
            # One working copy per manifest and image, shared by the deployments that have both.
            copies: dict[tuple[str, str | None], Path] = {}
            entries = []
            for plan in plans:
                key = (plan.manifest.path, plan.target.image)
                if key not in copies:
                    copies[key] = prepare_manifest_dir(repo, plan.manifest, plan.target.image,
                                                       Path(temp) / str(len(copies)))
                entries.append(ctx.executor.batch_entry(plan.target, copies[key]))
            result = ctx.executor.run_batch(repo, plans[0].target, entries, Path(temp),
                                            on_tick=_beat(ctx, ids, owner), label=f"sami-check-batch-{ids[0]}")
    except LeaseLost as exc:
        log.info("check_batch of %d deployments dropped: %s", len(ids), exc)
        return
    except CANNOT_START as exc:
        for deployment_id in ids:
            _note_failure(ctx, deployment_id, "check", str(exc))
        log.warning("check_batch of %d deployments cannot run: %s", len(ids), exc)
        return
    answers = parse_batch(result.stdout)
    for plan in plans:
        try:
            _settle(ctx, plan, "check", batch_result(answers.get(plan.name), result))
        except StaleDataError:
            log.info("check of %s dropped: StaleDataError", plan.name)


def parse_batch(stdout: str) -> dict[str, dict]:
    """``check_batch``'s answer lines by deployment name; lines that are not answers are skipped."""
    answers = {}
    for line in stdout.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            answer = json.loads(line)
        except ValueError:
            continue
        if isinstance(answer, dict) and isinstance(answer.get("name"), str) and isinstance(answer.get("exit"), int):
            answers[answer["name"]] = answer
    return answers


def batch_result(answer: dict | None, call: ScriptResult) -> ScriptResult:
    """One deployment's part of a ``check_batch`` call, as its own ``check`` would have ended."""
    if answer is None:
        detail = (call.stderr or call.stdout).strip().splitlines()
        why = "timed out" if call.timed_out else f"exit {call.exit_code}"
        return ScriptResult(None if call.timed_out else (call.exit_code or 1), call.timed_out, "",
                            f"check_batch gave no answer for it ({why})" + (f": {detail[-1]}" if detail else ""),
                            call.duration)
    running = answer.get("running")
    stdout = json.dumps({"running": running}) if isinstance(running, list) else ""
    return ScriptResult(answer["exit"], False, stdout, str(answer.get("message") or ""), call.duration)


ON_DRIFT_BY = "sami (on_drift: reconcile)"


def _reconcile_on_drift(ctx: WorkerContext, deployment_id: int, name: str) -> None:
    """The manifest asks drift to be repaired: queue a reconcile, unless the last one it queued failed (then
    the drift stays shown, and a person decides)."""
    with ctx.session() as session:
        last = session.scalars(select(Action).where(Action.deployment_id == deployment_id)
                               .order_by(Action.id.desc()).limit(1)).first()
        if last is not None and (last.config or {}).get("reconcile_of") and last.requested_by == ON_DRIFT_BY \
                and last.state is not ActionState.SUCCEEDED:
            log.warning("%s drifted again after the reconcile of action %s %s; leaving it to a person", name,
                        last.id, last.state)
            return
        try:
            accepted = reconcile_deployment(session, ctx.manifests.current(), name,
                                            Context.from_settings(ctx.settings, ctx.broker),
                                            requested_by=ON_DRIFT_BY, origin="schedule")
        except (Conflict, Invalid) as exc:
            session.rollback()
            log.info("%s drifted; no reconcile now: %s", name, exc)
            return
    log.info("%s drifted: reconcile queued as action %s", name, accepted.action_id)


def _wanted(kind: str, state: DeploymentState) -> bool:
    """Whether a deployment in ``state`` gets periodic ``kind``: check when live, archive_check when archiving."""
    return (kind == "archive_check" and state is S.ARCHIVE_PENDING) or (kind == "check" and state in LIVE_STATES)


def check_backoff(interval: int, failures: int) -> int:
    """Seconds until the next try of a check that could not start ``failures`` times in a row: the check
    interval, doubling, up to CHECK_BACKOFF_CAP (or the interval, when that is longer)."""
    return min(interval * 2 ** min(failures - 1, 16), max(interval, CHECK_BACKOFF_CAP))


def _note_failure(ctx: WorkerContext, deployment_id: int, kind: str, reason: str) -> tuple[str, int]:
    """Record that the check could not start, when to try it again, and why (on its status message);
    returns the deployment's name and the seconds until the next try."""
    with ctx.session() as session:
        deployment = session.scalars(select(Deployment).where(Deployment.id == deployment_id).with_for_update()
                                     .execution_options(populate_existing=True)).one()
        now = db_now(session)
        deployment.check_failures += 1
        delay = check_backoff(ctx.settings.check_interval, deployment.check_failures)
        deployment.checked_at = now
        deployment.check_retry_at = now + timedelta(seconds=delay)
        if _wanted(kind, deployment.state):
            note_check_failing(deployment, kind, reason)
        session.commit()
        return deployment.name, delay
