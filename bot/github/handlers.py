"""Webhook handlers: pull requests drive their environments, pushes to the deployments repo update
the deployments whose manifests changed. Each handler translates the event and calls one
level-triggered function (``bot.github.pulls``, ``bot.github.pushes``); the outcome is one line.
"""

from __future__ import annotations

import logging

from sqlalchemy import select

from bot import outbox
from bot.core.models import PullRequestRecord
from bot.github import pulls, pushes
from bot.github.client import GitHubError
from bot.github.outcomes import Did, Outcome
from bot.github.router import Event, HandlerContext, Retry
from bot.manifests import DeploymentsRepoError, PrDeploy

log = logging.getLogger(__name__)

SHOWN_ERRORS = 3  # manifest errors quoted in a push's outcome
SHOWN_NAMES = 10  # deployment names listed in a push's outcome
REPO_RETRY_SECONDS = 60
PENDING_RETRY_SECONDS = 60  # a delivery waiting for a pending action to settle


# --- pull requests ---------------------------------------------------------------------------

def _sync(event: Event, ctx: HandlerContext, pr: pulls.PullRequest) -> Outcome:
    repo = ctx.manifests.current()
    # Pushes come in series (a rebase, fixups): an update waits a moment for the next one to replace it.
    done = pulls.sync_pull_request(ctx.session, repo, pr, ctx.services, requested_by=f"github:{event.sender}",
                                   origin="webhook", delivery_id=event.delivery_id, settings=ctx.settings,
                                   github=ctx.github, debounce=ctx.settings.pr_debounce_seconds)
    if any(step.did is Did.WAITING for step in done):
        # A pull request closed while its environment still deploys: the whole sync is tried again
        # once that may have settled (it is idempotent, so what was done already is not done twice).
        raise Retry(PENDING_RETRY_SECONDS, Outcome.of(done).text)
    return Outcome.of(done) if done else Outcome.ignored(f"no service deploys pull requests of {pr.repository}")


def _pull_request(event: Event) -> pulls.PullRequest | Outcome:
    try:
        return pulls.PullRequest.from_payload(event.payload["pull_request"], event.repository)
    except (KeyError, pulls.PayloadError) as exc:
        return Outcome.ignored(f"not a pull request Sami can read ({exc})")


def pull_request_opened(event: Event, ctx: HandlerContext) -> Outcome:
    """An opened or reopened pull request gets its environments (those it is wanted in)."""
    pr = _pull_request(event)
    return pr if isinstance(pr, Outcome) else _sync(event, ctx, pr)


def pull_request_pushed(event: Event, ctx: HandlerContext) -> Outcome:
    """A new head commit moves the pull request's environments to it (a queued older update is superseded)."""
    pr = _pull_request(event)
    return pr if isinstance(pr, Outcome) else _sync(event, ctx, pr)


def pull_request_closed(event: Event, ctx: HandlerContext) -> Outcome:
    """A closed or merged pull request's environments are archived."""
    pr = _pull_request(event)
    return pr if isinstance(pr, Outcome) else _sync(event, ctx, pr)


def pull_request_label(event: Event, ctx: HandlerContext) -> Outcome:
    """A deploy_label added or removed turns its label-mode environments on or off; other labels do nothing."""
    pr = _pull_request(event)
    if isinstance(pr, Outcome):
        return pr
    label = (event.payload.get("label") or {}).get("name")
    repo = ctx.manifests.current()
    used = {m.deploy_label for m in pulls.pull_request_manifests(repo, pr.repository) if m.pr_deploy is PrDeploy.LABEL}
    if label not in used:
        return Outcome.ignored(f"label {label!r} deploys nothing in {pr.repository}")
    # The payload's label list may predate the change; the event's own label says what changed.
    return _sync(event, ctx, pr.with_label(label, event.action == "labeled"))


# --- checks (require_checks) -----------------------------------------------------------------

def checks_changed(event: Event, ctx: HandlerContext) -> Outcome:
    """A check of a commit settled: pull requests at that commit that wait for CI read their checks again."""
    payload = event.payload
    if event.name == "status":
        if str(payload.get("context") or "").startswith("sami/"):
            return Outcome.ignored("Sami's own commit status")
        sha = payload.get("sha")
    else:
        sha = (payload.get(event.name) or {}).get("head_sha")
    if not isinstance(sha, str) or not sha or not event.repository:
        return Outcome.ignored("no commit named")
    waiting = [record for record in ctx.session.scalars(select(PullRequestRecord).where(
        PullRequestRecord.repository == event.repository, PullRequestRecord.head_sha == sha))
        if record.checks and record.checks.get("sha") == sha and record.checks.get("state") != "success"]
    if not waiting:
        return Outcome.ignored(f"no pull request waits for the checks of {sha[:7]}")
    if ctx.github is None:
        return Outcome.ignored("Sami has no GitHub credentials to read the checks")
    done = []
    for record in waiting:
        try:
            item = ctx.github.get_pull_request(event.repository, record.number)
        except GitHubError as exc:
            raise Retry(REPO_RETRY_SECONDS, f"pull request {record.number} could not be read: {exc}") from None
        pr = pulls.PullRequest.from_payload(item, event.repository)
        done.append(_sync(event, ctx, pr))
    return Outcome.of(done)


# --- pushes ----------------------------------------------------------------------------------

def push(event: Event, ctx: HandlerContext) -> Outcome:
    """A push to the deployments repo's branch updates the deployments whose folder changed; others do nothing."""
    payload = event.payload
    repository = payload.get("repository") or {}
    name = repository.get("full_name") or "an unknown repository"
    source = ctx.settings.deployments_repo
    if pushes.deployments_repo_key(source) is None:
        return Outcome.ignored(f"push to {name}; the deployments repo is a folder without a remote, so pushes are "
                               "not followed")
    if not pushes.is_deployments_repo(repository, source):
        return Outcome.ignored(f"{name} is not the deployments repo (application pushes deploy nothing; CI requests "
                               "deploys)")
    branch = pushes.tracked_branch(ctx.settings.deployments_ref, repository)
    ref = payload.get("ref") or ""
    if ref != f"refs/heads/{branch}":
        return Outcome.ignored(f"{ref or 'no ref'} is not the deployments repo's branch {branch}")
    after = payload.get("after") or ""
    if payload.get("deleted") or after == pushes.ZERO_SHA:
        return Outcome.ignored(f"the push deleted {ref}")
    try:
        result = pushes.update_changed_deployments(
            ctx.session, ctx.manifests, payload.get("before") or "", after, ctx.services,
            requested_by=f"github:{event.sender}", origin="webhook", delivery_id=event.delivery_id)
    except DeploymentsRepoError as exc:
        raise Retry(REPO_RETRY_SECONDS, f"the deployments repo could not be read at {after[:7]}: {exc}") from None
    _validation_status(ctx, name, result)
    return Outcome.processed(_push_outcome(result))


def _validation_status(ctx: HandlerContext, repository: str, result: pushes.PushResult) -> None:
    """The commit status ``sami/validate`` on the pushed commit: its manifest errors (file:line), or valid."""
    if result.errors:
        count = len(result.errors)
        state = "failure"
        description = f"{count} manifest error{'s' if count > 1 else ''}, nothing deployed: {result.errors[0]}"
    else:
        state, description = "success", "manifests valid"
    target = f"{ctx.settings.public_url.rstrip('/')}/api/v1/services"
    outbox.add(ctx.session, key=f"validation:{repository}@{result.sha}", kind="commit_status_validation",
               repository=repository, payload={"sha": result.sha, "state": state, "context": "sami/validate",
                                               "description": description[:outbox.DESCRIPTION],
                                               "target_url": target})
    ctx.session.commit()


def _push_outcome(result: pushes.PushResult) -> str:
    at = f"deployments repo at {result.sha[:7]}"
    if result.errors:
        count = len(result.errors)
        shown = "; ".join(str(e) for e in result.errors[:SHOWN_ERRORS])
        more = f"; and {count - SHOWN_ERRORS} more" if count > SHOWN_ERRORS else ""
        return f"refused {at}: {count} manifest error{'s' if count > 1 else ''}, nothing deployed: {shown}{more}"
    parts = []
    if result.updated:
        parts.append(f"updated {_names(result.updated)}")
    if result.failed:
        parts.append(f"could not update {_names(result.failed)}")
    if result.without_manifest:
        parts.append(f"no manifest any more for {_names(result.without_manifest)} (left as they are)")
    parts.append(f"{result.unchanged} unchanged")
    # After the count, so that each line starts with its word (the deliveries page shows them as refused).
    parts.extend(f"refused {line}" for line in result.refused[:SHOWN_NAMES])
    if len(result.refused) > SHOWN_NAMES:
        parts.append(f"refused {len(result.refused) - SHOWN_NAMES} more pinned deployments")
    if not result.updated and not result.failed and not result.refused:
        return f"{at}: no deployment's manifest folder changed ({', '.join(parts)})"
    return f"{at}: " + "; ".join(parts)


def _names(names: tuple[str, ...]) -> str:
    shown = ", ".join(names[:SHOWN_NAMES])
    return shown + (f" and {len(names) - SHOWN_NAMES} more" if len(names) > SHOWN_NAMES else "")
