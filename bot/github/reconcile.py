"""Level-triggered repair of pull request environments: GitHub's open pull requests against Sami's.

Webhooks get lost (Sami was down, a delivery failed, an event came out of order). Every
SAMI_RECONCILE_INTERVAL seconds, for each repository a pull_request manifest names and the allowlist admits,
the scheduler lists its open pull requests and syncs each one, then looks up, one by one, the pull
requests of live environments missing from that list, and syncs them too (a closed one is
archived). Syncing changes nothing where Sami is already right.

An error from GitHub never counts as "no pull requests" (Argo CD #11464 archived every preview
environment on a failed listing): a repository whose listing fails in any way, on any page, or
is rate limited, is skipped for the round and nothing of it is archived. An environment is
archived only when GitHub, asked about that very pull request, says it is closed. A round run
under the client's deadline stops where the deadline finds it; the rest waits for the next round.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bot.core.config import Settings
from bot.core.models import Deployment
from bot.core.states import DeploymentState
from bot.github.client import DeadlinePassed, GitHubClient, GitHubError, RateLimited
from bot.github.outcomes import Did
from bot.github.pulls import (
    RECONCILE,
    PayloadError,
    PullRequest,
    pull_request_manifests,
    repository_allowed,
    sync_pull_request,
)
from bot.manifests import DeploymentsRepo, PrDeploy
from bot.services.deployments import Context

log = logging.getLogger(__name__)
S = DeploymentState

REQUESTED_BY = "schedule:reconcile"
ORIGIN = RECONCILE
# Environments that exist for a pull request and that a closed pull request would archive.
LIVE_PR_STATES = (S.CREATE_PENDING, S.UPDATE_PENDING, S.RUNNING, S.FAILURE)


@dataclass
class ReconcileReport:
    """What one reconciliation round did."""

    repositories: list[str] = field(default_factory=list)  # reconciled in full
    skipped: dict[str, str] = field(default_factory=dict)  # repository -> why it was left alone
    done: list[str] = field(default_factory=list)  # what syncing did, one line per environment
    errors: list[str] = field(default_factory=list)  # pull requests that could not be synced
    retry_after: float | None = None  # GitHub's rate limit stopped the round: wait this long


def reconciled_repositories(repo: DeploymentsRepo, settings: Settings) -> list[str]:
    """Repositories whose pull requests get environments: named by a pull_request manifest that
    deploys them, and admitted by SAMI_GITHUB_REPOSITORIES."""
    found: dict[str, str] = {}
    for manifest in repo.manifests:
        if (manifest.is_pull_request_environment and manifest.pr_deploy is not PrDeploy.OFF
                and manifest.repository):
            found.setdefault(manifest.repository.lower(), manifest.repository)
    return sorted(name for name in found.values() if repository_allowed(name, settings.github_repositories, repo))


def reconcile_pull_requests(sessions: Callable[[], Session], repo: DeploymentsRepo, github: GitHubClient,
                            ctx: Context, settings: Settings) -> ReconcileReport:
    """One round over every reconciled repository; stops early when GitHub's rate limit is hit or the
    client's deadline passes."""
    report = ReconcileReport()
    repositories = reconciled_repositories(repo, settings)
    for index, repository in enumerate(repositories):
        try:
            _reconcile_repository(sessions, repo, github, ctx, settings, repository, report)
        except DeadlinePassed:
            for later in repositories[index:]:
                report.skipped[later] = "left for the next round: this round's deadline passed"
            break
        except RateLimited as exc:
            # One limit for every repository of these credentials: the rest wait for the next round.
            report.retry_after = exc.retry_after
            for later in repositories[index:]:
                report.skipped[later] = f"rate limited: {exc.message}"
            break
        except GitHubError as exc:
            report.skipped[repository] = exc.message
        else:
            report.repositories.append(repository)
    for repository, why in report.skipped.items():
        log.warning("reconciliation skipped %s: %s", repository, why)
    return report


def _reconcile_repository(sessions: Callable[[], Session], repo: DeploymentsRepo, github: GitHubClient,
                          ctx: Context, settings: Settings, repository: str, report: ReconcileReport) -> None:
    # The whole list or an exception: a partial answer must not look like closed pull requests.
    open_pulls = github.list_open_pull_requests(repository)
    numbers = set()
    for item in open_pulls:
        numbers.add(item.get("number"))
        _sync(sessions, repo, ctx, settings, repository, item, report, github)
    with sessions() as session:
        live = session.scalars(
            select(Deployment.pull_request).where(
                func.lower(Deployment.source_repo) == repository.lower(), Deployment.pull_request.is_not(None),
                Deployment.state.in_(LIVE_PR_STATES))
            .distinct().order_by(Deployment.pull_request)).all()
    for number in live:
        if number in numbers:
            continue
        # Missing from the open list: closed, most likely; archive only on GitHub's word about it.
        try:
            item = github.get_pull_request(repository, number)
        except (RateLimited, DeadlinePassed):
            raise
        except GitHubError as exc:
            report.errors.append(f"{repository}#{number}: {exc.message}")
            continue
        if item.get("number") != number:
            report.errors.append(f"{repository}#{number}: GitHub answered with pull request {item.get('number')}")
            continue
        _sync(sessions, repo, ctx, settings, repository, item, report, github)


def _sync(sessions: Callable[[], Session], repo: DeploymentsRepo, ctx: Context, settings: Settings,
          repository: str, item: dict, report: ReconcileReport, github=None) -> None:
    if not pull_request_manifests(repo, repository):
        return
    try:
        pr = PullRequest.from_payload(item, repository)
    except PayloadError as exc:
        report.errors.append(f"{repository}#{item.get('number')}: {exc}")
        return
    with sessions() as session:
        try:
            done = sync_pull_request(session, repo, pr, ctx, requested_by=REQUESTED_BY, origin=ORIGIN,
                                     settings=settings, github=github)
        except (RateLimited, DeadlinePassed):
            session.rollback()
            raise  # the round stops; this pull request's checks are read again next round
        except Exception as exc:  # one pull request's trouble does not stop the others
            session.rollback()
            log.exception("reconciling %s#%s failed", repository, pr.number)
            report.errors.append(f"{repository}#{pr.number}: {type(exc).__name__}: {exc}")
            return
    report.done.extend(step.text for step in done if step.did not in (Did.UNCHANGED, Did.SKIPPED))
