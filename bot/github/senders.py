"""Sending the outbox's rows: each kind of GitHub side effect as the request that makes it.

A row is sent by a job (workers/outbox.py) with the GitHub client. What a row shows is read when
it is sent (a coalesced row renders the latest state); a create first looks for what an earlier,
unanswered try may have made; what GitHub gives back (the comment's id, the Deployment's id) is
kept as the row's result for the rows after it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot import outbox
from bot.core.db import db_now
from bot.core.models import Action, Deployment, OutboxRow, OutboxState, PullRequestRecord, Release
from bot.core.states import ActionState, DeploymentState
from bot.github import comment as sticky
from bot.github.client import GitHubError
from bot.services import drift, environments, releases

A = ActionState

COMMIT_STATES = {
    A.QUEUED: "pending", A.RUNNING: "pending", A.SUCCEEDED: "success", A.FAILED: "failure",
    A.TIMED_OUT: "failure", A.CANCELLED: "error", A.SUPERSEDED: "error",
}
ACTION_WORDS = {A.QUEUED: "queued", A.RUNNING: "running", A.SUCCEEDED: "done", A.FAILED: "failed",
                A.TIMED_OUT: "timed out", A.CANCELLED: "cancelled", A.SUPERSEDED: "superseded by a newer request"}
# A Deployment status in the words of its description.
STATE_WORDS = {"queued": "queued", "in_progress": "running", "success": "done", "failure": "failed",
               "error": "cancelled", "inactive": "superseded by a newer request"}


class Postpone(Exception):
    """The row cannot be sent yet (the Deployment it belongs to is not created yet): try again soon,
    without counting a try."""

    def __init__(self, seconds: float, reason: str):
        super().__init__(reason)
        self.seconds = seconds


@dataclass(frozen=True)
class Sender:
    """What sending needs: the GitHub client and the public URL of Sami's status page."""

    github: Any  # bot.github.client.GitHubClient
    public_url: str

    def page(self, name: str, action_id: int | None = None) -> str:
        url = f"{self.public_url.rstrip('/')}/deployments/{name}"
        return f"{url}#action-{int(action_id)}" if action_id else url


def send(session: Session, row: OutboxRow, sender: Sender) -> dict[str, Any]:
    """Send one row; returns what to keep as its result (``{"skipped": why}`` when nothing was sent)."""
    return SENDERS[row.kind](session, row, sender)


def render_comment(session: Session, repository: str, number: int, record: PullRequestRecord, sender: Sender,
                   now: datetime) -> str:
    """The sticky comment of pull request ``number`` as its deployments are now."""
    deployments = session.scalars(select(Deployment).where(
        Deployment.source_repo == repository, Deployment.pull_request == number,
        Deployment.state != DeploymentState.REMOVED)).all()
    rows = []
    for deployment in deployments:
        action = session.scalars(select(Action).where(Action.deployment_id == deployment.id)
                                 .order_by(Action.id.desc()).limit(1)).first()
        url = next((link.get("url") for link in deployment.links or () if link.get("url")), None)
        deploy = session.scalars(select(Action).where(
            Action.deployment_id == deployment.id, Action.kind.in_(tuple(outbox.DEPLOYING_KINDS)))
            .order_by(Action.id.desc()).limit(1)).first()
        previous = None
        if deployment.state is DeploymentState.UPDATE_PENDING:
            done = session.scalars(select(Action.config).where(
                Action.deployment_id == deployment.id, Action.state == ActionState.SUCCEEDED,
                Action.kind.in_(tuple(outbox.DEPLOYING_KINDS))).order_by(Action.id.desc()).limit(1)).first()
            previous = (done or {}).get("tag")
            previous = previous if previous != deployment.tag else None
        rows.append(sticky.EnvironmentRow(
            service=deployment.service, name=deployment.name, state=deployment.state,
            failure_reason=deployment.failure_reason, url=url, tag=deployment.tag, sha=deployment.sha,
            updated_at=deployment.status_changed_at, action_id=action.id if action else None,
            action_state=action.state if action else None, action_kind=action.kind if action else None,
            page_url=sender.page(deployment.name, action.id if action else None), previous_tag=previous,
            drift=drift.summary(deployment.drift) or None,
            status_message=deployment.status_message, deploy_kind=deploy.kind if deploy else None,
            deploy_state=deploy.state if deploy else None,
            deploy_tag=(deploy.config or {}).get("tag") if deploy else None,
            pinned_by=deployment.pinned_by, pin_reason=deployment.pin_reason))
    head = record.head_sha or next((d.sha for d in sorted(deployments, key=lambda d: d.updated_at) if d.sha), None)
    checks = record.checks if record.checks and record.checks.get("sha") == head else None
    ci_failed = checks["summary"] if checks and checks.get("state") == "failure" else None
    if checks and checks.get("state") == "pending":
        waiting = set(checks.get("services") or ())
        shown = {row.service for row in rows}
        rows = [replace(row, waiting_for="CI") if row.service in waiting else row for row in rows]
        rows += [sticky.EnvironmentRow(service=service, name=f"{service}-pr-{number}", state=DeploymentState.REMOVED,
                                       waiting_for="CI", sha=head) for service in sorted(waiting - shown)]
    last = record.last_command
    last_command = sticky.LastCommand(last["text"], last["author"], last["result"]) if last else None
    awaiting = bool(record.fork and record.head_sha and record.approved_sha != record.head_sha)
    asked = session.scalars(select(Release).where(Release.source_repo == repository, Release.pull_request == number)
                            .order_by(Release.id.desc()).limit(sticky.MAX_RELEASE_LINES))
    return sticky.render_sticky_comment(rows, pr_number=number, head_sha=head, now=now,
                                        public_url=sender.public_url.rstrip("/") + "/deployments",
                                        awaiting_approval=awaiting, last_command=last_command, ci_failed=ci_failed,
                                        releases=[releases.summary(r) for r in asked],
                                        preview=_preview(session, repository, number, sender))


def _preview(session: Session, repository: str, number: int, sender: Sender) -> sticky.Preview | None:
    """The pull request's whole-environment preview (``preview_of``), as the comment shows it."""
    found = environments.preview_of_pull_request(session, repository, number)
    if found is None:
        return None
    components = tuple(sticky.PreviewComponent(
        service=c["service"], state=c["state"], failure_reason=c["failure_reason"],
        status_message=c["status_message"], tag=c["tag"], url=c["url"], endpoint=c["endpoint"],
        status=c["status"], message=c["message"], data=c["data"]) for c in found["components"])
    return sticky.Preview(environment=found["environment"], source=found["source"], run_id=found["run_id"],
                          operation=found["operation"], run_state=found["run_state"], components=components,
                          page_url=f"{sender.public_url.rstrip('/')}/environments/{found['environment']}")


def _send_comment(session: Session, row: OutboxRow, sender: Sender) -> dict[str, Any]:
    number = int(row.pull_request or 0)
    record = outbox.pull_request_record(session, row.repository, number, lock=True)  # one sender per comment at a time
    now = datetime.now(UTC)
    body = render_comment(session, row.repository, number, record, sender, now)
    digest = hashlib.sha256(body.split("\n<sub>", 1)[0].encode()).hexdigest()  # the footer's time aside
    if record.comment_id and record.comment_digest == digest:
        return {"skipped": "the comment says this already", "comment_id": record.comment_id}
    if record.comment_id is None and _may_exist(session, row):
        record.comment_id = _find_comment(sender, row.repository, number, sticky.MARKER)
    if record.comment_id is not None:
        try:
            sender.github.update_issue_comment(row.repository, record.comment_id, body)
        except GitHubError as exc:
            if exc.status != 404:
                raise
            record.comment_id = None  # someone deleted it: post a new one
    if record.comment_id is None:
        created = sender.github.create_issue_comment(row.repository, number, body)
        record.comment_id = int(created["id"])
    record.comment_digest = digest
    return {"comment_id": record.comment_id}


def _may_exist(session: Session, row: OutboxRow) -> bool:
    """Whether an earlier try may have posted what this row posts without its answer reaching Sami."""
    if row.attempts > 1:
        return True
    return session.scalar(select(OutboxRow.id).where(
        OutboxRow.kind == row.kind, OutboxRow.repository == row.repository,
        OutboxRow.pull_request == row.pull_request, OutboxRow.id != row.id,
        OutboxRow.state.in_((OutboxState.FAILED, OutboxState.DELIVERING))).limit(1)) is not None


def _find_comment(sender: Sender, repository: str, number: int, marker: str) -> int | None:
    for item in sender.github.list_issue_comments(repository, number):
        if str(item.get("body") or "").startswith(marker):
            return int(item["id"])
    return None


def _send_reaction(session: Session, row: OutboxRow, sender: Sender) -> dict[str, Any]:
    # Adding a reaction that is there already changes nothing: a retry is harmless.
    answer = sender.github.add_reaction(row.repository, int(row.payload["comment_id"]), row.payload["content"])
    return {"reaction_id": answer.get("id") if isinstance(answer, dict) else None}


def reply_marker(key: str) -> str:
    return f"<!-- sami:reply {hashlib.sha256(key.encode()).hexdigest()[:16]} -->"


def _send_reply(session: Session, row: OutboxRow, sender: Sender) -> dict[str, Any]:
    marker = reply_marker(row.key)
    number = int(row.pull_request or 0)
    if row.attempts > 1:
        found = _find_comment(sender, row.repository, number, marker)
        if found is not None:
            return {"comment_id": found, "found": True}
    created = sender.github.create_issue_comment(row.repository, number, marker + "\n" + row.payload["body"])
    return {"comment_id": int(created["id"])}


def _never_ran(action: Action | None) -> bool:
    """Whether the action ended before it started: a newer commit replaced it, or someone cancelled it."""
    return action is not None and action.started_at is None and action.state in (A.SUPERSEDED, A.CANCELLED)


def _wait_for_start(session: Session, action: Action | None) -> None:
    """Postpone a row about an action that may not start yet: until then a newer push may replace it."""
    if action is None:
        return
    wait = outbox._seconds_to_start(action, db_now(session))
    if wait > 0:
        raise Postpone(wait, f"action {action.id} may not start for {wait:.0f} s")


def _send_deployment(session: Session, row: OutboxRow, sender: Sender) -> dict[str, Any]:
    payload = row.payload
    deployment = session.get(Deployment, row.deployment_id) if row.deployment_id else None
    action = session.get(Action, row.action_id) if row.action_id else None
    if _never_ran(action):
        # Never ran: a newer commit replaced it before GitHub heard of it. Nothing to show there.
        return {"skipped": f"the action was {action.state} before it started"}
    _wait_for_start(session, action)
    description = f"Sami: {deployment.name if deployment else payload['environment']} (action {row.action_id})"
    if row.attempts > 1:  # an earlier try may have created it without its answer reaching Sami
        for item in sender.github.list_deployments(row.repository, sha=payload["ref"],
                                                   environment=payload["environment"]):
            if isinstance(item.get("payload"), dict) and item["payload"].get("sami_action") == row.action_id:
                return {"github_deployment": int(item["id"]), "found": True}
    created = sender.github.create_deployment(
        row.repository, ref=payload["ref"], environment=payload["environment"], description=description,
        transient=bool(payload.get("transient")), payload={"sami_action": row.action_id})
    return {"github_deployment": int(created["id"])}


def _github_deployment(session: Session, *, action_id: int | None = None, deployment_id: int | None = None,
                       lock: bool = False) -> OutboxRow | None:
    """The outbox row that creates (or created) the GitHub Deployment of an action, or the last one of a
    deployment; locked, with ``lock``, so that one action's statuses are sent one at a time."""
    query = select(OutboxRow).where(OutboxRow.kind == "deployment")
    query = query.where(OutboxRow.action_id == action_id) if action_id is not None else \
        query.where(OutboxRow.deployment_id == deployment_id, OutboxRow.state == OutboxState.DELIVERED)
    query = query.order_by(OutboxRow.id.desc()).limit(1)
    if lock:
        query = query.with_for_update()
    return session.scalars(query.execution_options(populate_existing=True)).first()


def _last_sent(session: Session, kind: str, action_id: int) -> str | None:
    results = session.scalars(select(OutboxRow.result).where(
        OutboxRow.kind == kind, OutboxRow.action_id == action_id, OutboxRow.state == OutboxState.DELIVERED)
        .order_by(OutboxRow.delivered_at.desc(), OutboxRow.id.desc())).all()
    return next((r.get("state") for r in results if r and r.get("state")), None)


def _describe(action: Action, deployment: Deployment, words: str | None = None) -> str:
    """``create of web-pr-3 done``: the action and how it stands (``words``, else its current state)."""
    state = ActionState(action.state)
    text = f"{action.kind} of {deployment.name} {words or ACTION_WORDS[state]}"
    if state in (A.FAILED, A.TIMED_OUT) and action.error and words in (None, "failed"):
        text += f": {action.error}"
    text = " ".join(text.split())
    return text if len(text) <= outbox.DESCRIPTION else text[: outbox.DESCRIPTION - 1] + "…"


def _send_deployment_status(session: Session, row: OutboxRow, sender: Sender) -> dict[str, Any]:
    """One status of an action's GitHub Deployment, the state the row was written for, after the earlier ones."""
    created = _github_deployment(session, action_id=row.action_id, lock=True)  # one status of it at a time
    if created is None or created.state is not OutboxState.DELIVERED:
        if created is not None and created.state in (OutboxState.FAILED, OutboxState.SKIPPED):
            return {"skipped": "its GitHub Deployment could not be created"}
        raise Postpone(outbox.COALESCE_SECONDS, "its GitHub Deployment is not created yet")
    earlier = session.scalar(select(OutboxRow.id).where(
        OutboxRow.kind == "deployment_status", OutboxRow.action_id == row.action_id, OutboxRow.id < row.id,
        OutboxRow.state.in_((OutboxState.PENDING, OutboxState.DELIVERING))).limit(1))
    if earlier is not None:
        raise Postpone(1.0, f"an earlier status of action {row.action_id} is not sent yet (row {earlier})")
    action = session.get(Action, row.action_id)
    deployment = session.get(Deployment, row.deployment_id)
    if action is None or deployment is None:
        return {"skipped": "the action is gone"}
    state = row.payload.get("state") or outbox.DEPLOYMENT_STATES[ActionState(action.state)]
    url = next((link.get("url") for link in deployment.links or () if link.get("url")), None)
    sender.github.create_deployment_status(
        row.repository, int(created.result["github_deployment"]), state=state,
        description=_describe(action, deployment, STATE_WORDS.get(state)),
        environment_url=url if state == "success" else None, log_url=sender.page(deployment.name, action.id))
    return {"state": state}


def _send_inactive(session: Session, row: OutboxRow, sender: Sender) -> dict[str, Any]:
    created = _github_deployment(session, deployment_id=row.deployment_id)
    deployment = session.get(Deployment, row.deployment_id)
    if created is None or deployment is None:
        return {"skipped": "no GitHub Deployment of it was made"}
    sender.github.create_deployment_status(
        row.repository, int(created.result["github_deployment"]), state="inactive",
        description=f"{deployment.name} archived", log_url=sender.page(deployment.name, row.action_id))
    return {"state": "inactive"}


def _send_commit_status(session: Session, row: OutboxRow, sender: Sender) -> dict[str, Any]:
    created = _github_deployment(session, action_id=row.action_id, lock=True)  # serialises the action's rows
    action = session.get(Action, row.action_id)
    deployment = session.get(Deployment, row.deployment_id)
    if action is None or deployment is None or created is None:
        return {"skipped": "the action is gone"}
    if created.state is OutboxState.SKIPPED or (created.state is not OutboxState.DELIVERED and _never_ran(action)):
        return {"skipped": "the action never ran"}
    _wait_for_start(session, action)
    state = COMMIT_STATES[ActionState(action.state)]
    if _last_sent(session, "commit_status", action.id) == state:
        return {"skipped": f"GitHub shows {state} already"}
    sender.github.create_commit_status(row.repository, created.payload["ref"], state=state,
                                       context=f"sami/{deployment.service}", description=_describe(action, deployment),
                                       target_url=sender.page(deployment.name, action.id))
    return {"state": state}


def _send_validation(session: Session, row: OutboxRow, sender: Sender) -> dict[str, Any]:
    payload = row.payload
    sender.github.create_commit_status(row.repository, payload["sha"], state=payload["state"],
                                       context=payload.get("context", "sami/validate"),
                                       description=payload["description"][:outbox.DESCRIPTION],
                                       target_url=payload.get("target_url"))
    return {"state": payload["state"]}


SENDERS = {
    "comment": _send_comment,
    "reaction": _send_reaction,
    "reply": _send_reply,
    "deployment": _send_deployment,
    "deployment_status": _send_deployment_status,
    "inactive": _send_inactive,
    "commit_status": _send_commit_status,
    "commit_status_validation": _send_validation,
}
