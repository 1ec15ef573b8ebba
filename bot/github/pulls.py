"""Pull request environments, level-triggered: make a pull request's environments match its state.

Webhook handlers and the reconciler call the one function here, ``sync_pull_request``, with the
pull request as GitHub describes it now (the webhook's ``pull_request`` and the REST API's pull
object have the same shape). It compares that with the environments Sami keeps and asks the
services layer for the difference, so a redelivered event or a second reconciliation changes
nothing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot import outbox
from bot.core import naming
from bot.core.errors import Conflict, Pinned, SamiError
from bot.core.models import PullRequestRecord
from bot.github import checks
from bot.github.outcomes import Did, Result
from bot.manifests import DeploymentsRepo, Manifest, PrDeploy
from bot.services import deployments, environments

log = logging.getLogger(__name__)
# The origin of what the reconciler does: it repairs missed events and leaves what was decided on purpose.
RECONCILE = "reconcile"

_SHA_RE = re.compile(r"^[0-9a-f]{40}\Z")

class PayloadError(ValueError):
    """A pull request object without what Sami needs (number, state, head commit)."""


@dataclass(frozen=True)
class PullRequest:
    """A pull request as far as its environments are concerned."""

    repository: str  # the base repository, owner/name
    number: int
    state: str  # "open" or "closed"
    merged: bool
    head_sha: str
    head_ref: str
    head_repository: str | None  # owner/name; None when the fork was deleted
    fork: bool  # the head repository is not the base repository
    labels: frozenset[str]
    author: str | None
    updated_at: datetime | None

    @classmethod
    def from_payload(cls, pr: Mapping[str, Any], repository: str | None = None) -> PullRequest:
        """Read a GitHub pull request object; ``repository`` defaults to its base repository."""
        try:
            base = repository or pr["base"]["repo"]["full_name"]
            head = pr["head"]
            number, state, sha = pr["number"], pr["state"], head["sha"]
        except (KeyError, TypeError) as exc:
            raise PayloadError(f"the pull request object has no {exc}") from None
        if not isinstance(number, int) or isinstance(number, bool) or number < 1:
            raise PayloadError(f"pull request number {number!r} is not a positive whole number")
        if state not in ("open", "closed"):
            raise PayloadError(f"pull request state {state!r} is neither open nor closed")
        if not isinstance(sha, str) or not _SHA_RE.match(sha):
            raise PayloadError(f"head sha {sha!r} is not a commit sha")
        head_repository = (head.get("repo") or {}).get("full_name")
        return cls(
            repository=base,
            number=number,
            state=state,
            merged=bool(pr.get("merged")),
            head_sha=sha,
            head_ref=str(head.get("ref") or ""),
            head_repository=head_repository,
            fork=head_repository is None or head_repository.lower() != base.lower(),
            labels=frozenset(label["name"] for label in pr.get("labels") or () if label.get("name")),
            author=(pr.get("user") or {}).get("login"),
            updated_at=_timestamp(pr.get("updated_at")),
        )

    def with_label(self, label: str, present: bool) -> PullRequest:
        """This pull request with ``label`` added or removed."""
        return replace(self, labels=self.labels | {label} if present else self.labels - {label})


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def repository_allowed(repository: str, patterns: Iterable[str], repo: DeploymentsRepo) -> bool:
    """Whether Sami acts for ``repository``: it matches an ``owner/name`` or ``owner/*`` pattern of
    SAMI_GITHUB_REPOSITORIES, or, with none set, some manifest names it as its repository."""
    wanted = repository.lower()
    patterns = tuple(patterns)
    if patterns:
        owner = wanted.split("/", 1)[0]
        return any(p.lower() in (wanted, f"{owner}/*") for p in patterns)
    return any(m.repository and m.repository.lower() == wanted for m in repo.manifests)


def pull_request_manifests(repo: DeploymentsRepo, repository: str) -> list[Manifest]:
    """The pull_request environments of ``repository`` that deploy pull requests, by service."""
    wanted = repository.lower()
    found = [m for m in repo.manifests if m.is_pull_request_environment and m.pr_deploy is not PrDeploy.OFF
             and m.repository and m.repository.lower() == wanted]
    return sorted(found, key=lambda m: m.service_name)


def unwanted_because(manifest: Manifest, pr: PullRequest) -> str | None:
    """Why ``pr`` should have no environment of ``manifest`` (None when it should have one)."""
    if pr.state != "open":
        return "merged" if pr.merged else "closed"
    if manifest.pr_deploy is PrDeploy.LABEL and manifest.deploy_label not in pr.labels:
        return f"not labeled {manifest.deploy_label}"
    if pr.fork and not manifest.pr_forks:
        return f"fork ({pr.head_repository or 'deleted repository'}); the manifest's pr_forks is off"
    return None


def sync_pull_request(session: Session, repo: DeploymentsRepo, pr: PullRequest, ctx: deployments.Context, *,
                      requested_by: str, origin: str, delivery_id: str | None = None, settings,
                      github=None, debounce: float = 0) -> list[Result]:
    """Make the pull request's environments match its current state; say what was done, one result each.

    Open and wanted: create, restore or update ``<service>-pr-<n>`` to the head commit's tag (an
    update waits ``debounce`` seconds, so that the next pushes of a series replace it).
    Closed, or no longer wanted (deploy label removed, a fork where forks are off): archive it.
    Webhook events bring back an environment archived at the same commit (a reopen, a label);
    the reconciler (``origin="reconcile"``) only repairs, so it leaves those archived.
    """
    manifests = pull_request_manifests(repo, pr.repository)
    if not manifests:
        return []
    if not repository_allowed(pr.repository, settings.github_repositories, repo):
        return [Result(Did.IGNORED, f"ignored: {pr.repository} is not in SAMI_GITHUB_REPOSITORIES")]
    remember(session, pr)
    gate = CheckGate(session, pr, github)
    done = []
    source, in_preview = preview_of(repo, manifests)
    if in_preview:
        manifests = [m for m in manifests if m not in in_preview]
        try:
            done.append(_sync_preview(session, repo, source, in_preview, pr, ctx, requested_by=requested_by,
                                      origin=origin, gate=gate))
        except Pinned as exc:  # a rollback pinned a component: the push leaves the preview as it is
            session.rollback()
            # The reconciler repairs missed events only: it leaves a pinned preview alone without a refusal.
            did = Did.UNCHANGED if origin == RECONCILE else Did.REFUSED
            done.append(Result.said(did, f"preview of {source}: {exc}"))
        except SamiError as exc:
            session.rollback()
            done.append(Result.said(Did.FAILED, f"preview of {source}: {exc}"))
    for manifest in manifests:
        try:
            done.append(_sync_one(session, repo, manifest, pr, ctx, requested_by=requested_by, origin=origin,
                                  delivery_id=delivery_id, gate=gate, debounce=debounce))
        except Pinned as exc:  # a rollback pinned it: the push leaves it where the rollback took it
            session.rollback()
            done.append(Result.said(Did.REFUSED, str(exc)))
        except SamiError as exc:  # one service's problem does not hide the others'
            session.rollback()
            done.append(Result.said(Did.FAILED, f"{manifest.deployment_name(pr.number)}: {exc}"))
    # A repair round that changed nothing (pinned, already right) says so at debug only: it comes back every round.
    quiet = origin == RECONCILE and all(r.did in (Did.UNCHANGED, Did.SKIPPED) for r in done)
    log.log(logging.DEBUG if quiet else logging.INFO, "pull request %s#%s: %s", pr.repository, pr.number,
            "; ".join(map(str, done)))
    return done


def preview_of(repo: DeploymentsRepo, manifests: list[Manifest]) -> tuple[str | None, list[Manifest]]:
    """The environment the pull_request environment previews (its file's ``preview_of``), and which of
    ``manifests`` are applications of it: their pull requests get a whole environment of their own."""
    topology = repo.topologies.get("pull_request")
    source = topology.preview_of if topology is not None else None
    if not source:
        return None, []
    template = repo.topology(source)
    members = set(template.components) if template is not None else set()
    return source, [m for m in manifests if m.service_name in members]


def _sync_preview(session: Session, repo: DeploymentsRepo, source: str, manifests: list[Manifest], pr: PullRequest,
                  ctx: deployments.Context, *, requested_by: str, origin: str, gate: CheckGate | None) -> Result:
    """The pull request's whole-environment preview of ``source``: its applications at the head commit,
    the rest as ``source`` runs it; archived as a whole once the pull request is closed or unwanted."""
    name = environments.preview_name(pr.repository, pr.number)
    why_not = next((w for w in (unwanted_because(m, pr) for m in manifests) if w), None)
    if why_not is not None and pr.state == "open" and pr.fork and approved(session, pr):
        why_not = None
    if why_not is None:
        for manifest in manifests:
            blocked = gate.blocks(manifest) if manifest.require_checks and gate is not None else None
            if blocked:
                return Result.said(blocked[0], f"{name}: {blocked[1]}")
    tags = {m.service_name: m.render_pr_tag(sha=pr.head_sha, number=pr.number, branch=pr.head_ref)
            for m in manifests}
    try:
        run = environments.sync_preview(session, repo, source, tags, ctx, repository=pr.repository,
                                        number=pr.number, is_open=why_not is None, requested_by=requested_by,
                                        origin=origin)
    except Conflict as exc:  # a run of the preview still goes: the next event (or the reconciler) moves it on
        return Result.said(Did.WAITING, f"{name}: {exc}")
    if run is None:
        return Result.said(Did.SKIPPED, f"{name}: {why_not}")
    what = "archiving" if run.operation == "archive" else "deploying"
    return Result(Did.DONE, f"{what} preview {name} of {source} ({len(run.components)} components, run {run.id})"
                  + (f" ({why_not})" if why_not else f" at {pr.head_sha[:7]}"))


def _sync_one(session: Session, repo: DeploymentsRepo, manifest: Manifest, pr: PullRequest,
              ctx: deployments.Context, *, requested_by: str, origin: str, delivery_id: str | None,
              gate: CheckGate | None = None, debounce: float = 0) -> Result:
    name = manifest.deployment_name(pr.number)
    why_not = unwanted_because(manifest, pr)
    if why_not is not None and pr.state == "open" and pr.fork and not manifest.pr_forks:
        # A fork's code is untrusted: it is deployed only at a commit a writer approved with `/sami deploy`.
        if approved(session, pr):
            why_not = None
        else:
            return Result.said(Did.HELD, f"{name}: fork ({pr.head_repository or 'deleted repository'}) at "
                                       f"{pr.head_sha[:7]} waits for a writer's /sami deploy")
    if why_not is not None:
        ensured = deployments.ensure_archived(session, repo, name, ctx, requested_by=requested_by, origin=origin,
                                           delivery_id=delivery_id)
        if ensured.done:
            return Result(Did.DONE, f"archived {name} ({why_not})")
        if ensured.reason == deployments.NOT_DEPLOYED:
            return Result.said(Did.SKIPPED, f"{manifest.service_name}: {why_not}")
        if ensured.waiting:
            return Result.said(Did.WAITING, f"{name}: {ensured.reason}")
        return Result.said(Did.UNCHANGED, f"{name}: {ensured.reason}")
    if manifest.require_checks:
        blocked = gate.blocks(manifest) if gate is not None else \
            (Did.HELD, "require_checks is set; no checks were read")
        if blocked:
            return Result.said(blocked[0], f"{name}: {blocked[1]}")
    return deploy_one(session, repo, manifest, pr, ctx, requested_by=requested_by, origin=origin,
                      delivery_id=delivery_id, debounce=debounce)


def deploy_one(session: Session, repo: DeploymentsRepo, manifest: Manifest, pr: PullRequest, ctx: deployments.Context,
               *, requested_by: str, origin: str, delivery_id: str | None, debounce: float = 0,
               unpin: bool = False) -> Result:
    """Bring ``manifest``'s environment of ``pr`` to its head commit (create, restore or update; an update
    waits ``debounce`` seconds for a newer push to replace it); one line. ``unpin``: a writer's command deploys
    over a rollback's pin, clearing it (a push does not: Pinned)."""
    name = manifest.deployment_name(pr.number)
    short = pr.head_sha[:7]
    request = deployments.DeploymentRequest(
        service=manifest.service_name, environment=manifest.environment, requested_by=requested_by,
        origin=origin, tag=manifest.render_pr_tag(sha=pr.head_sha, number=pr.number, branch=pr.head_ref),
        ref=_ref(pr.head_ref), sha=pr.head_sha, pull_request=pr.number, source_repo=pr.repository,
        delivery_id=delivery_id, debounce_seconds=debounce, unpin=unpin)
    ensured = deployments.ensure_deployed(session, repo, request, ctx, revive=origin != RECONCILE)
    if ensured.done is None:
        return Result.said(Did.UNCHANGED, f"{name}: {ensured.reason}")
    if ensured.done == "restored":
        return Result(Did.DONE, f"restored {name} at {short}")
    return Result(Did.DONE, f"{ensured.done} {name} {'at' if ensured.done == 'created' else 'to'} {short}")


def approved(session: Session, pr: PullRequest) -> bool:
    """Whether a writer approved the pull request's head commit (`/sami deploy` on a fork)."""
    found = session.scalar(select(PullRequestRecord.approved_sha).where(
        PullRequestRecord.repository == pr.repository, PullRequestRecord.number == pr.number))
    return found is not None and found == pr.head_sha


def remember(session: Session, pr: PullRequest) -> None:
    """Keep the pull request's head commit and fork-ness for its sticky comment (a new head of a fork
    waits for a new approval, and the comment says so)."""
    record = outbox.pull_request_record(session, pr.repository, pr.number)
    if (record.head_sha, record.fork) != (pr.head_sha, pr.fork):
        record.head_sha, record.fork = pr.head_sha, pr.fork
        if pr.fork:
            outbox.request_sticky_comment(session.connection(), pr.repository, pr.number)
    session.commit()


def _ref(branch: str) -> str | None:
    try:
        return naming.check_ref(branch)
    except naming.InvalidName:
        return None  # kept only when it is a name scripts and logs can show as it is


class CheckGate:
    """``require_checks``: the head commit's checks, read through the API once per sync (events arrive
    late or out of order, so their content is never trusted), and remembered for the sticky comment."""

    def __init__(self, session: Session, pr: PullRequest, github):
        self.session, self.pr, self.github = session, pr, github
        self._verdict = None
        self.services: list[str] = []

    def blocks(self, manifest: Manifest) -> tuple[Did, str] | None:
        """None when the head commit's checks are green; else (what it comes to, why): held while they run,
        refused when one failed."""
        if self.github is None:
            return Did.HELD, "require_checks is set and Sami has no GitHub credentials to read the checks"
        if self._verdict is None:
            self._verdict = checks.read(self.github, self.pr.repository, self.pr.head_sha)
        verdict = self._verdict
        self.services.append(manifest.service_name)
        self._remember(verdict)
        short = self.pr.head_sha[:7]
        if verdict.state == checks.SUCCESS:
            return None
        if verdict.state == checks.FAILURE:
            return Did.REFUSED, f"CI failed at {short} ({verdict.summary}); nothing is deployed until the checks pass"
        return Did.HELD, f"waiting for CI at {short} ({verdict.summary})"

    def _remember(self, verdict) -> None:
        record = outbox.pull_request_record(self.session, self.pr.repository, self.pr.number)
        wanted = {"sha": self.pr.head_sha, "state": verdict.state, "summary": verdict.summary[:300],
                  "services": sorted(set(self.services))}
        if record.checks != wanted:
            record.checks = wanted
            outbox.request_sticky_comment(self.session.connection(), self.pr.repository, self.pr.number)
        self.session.commit()
