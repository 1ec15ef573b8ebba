"""`/sami` commands in pull request comments: check who asks, answer on GitHub, call the services.

The handler verifies and translates; what a command does is decided by bot.services (and
bot.github.pulls for "this pull request's environments"). Every answer (a reaction, a reply, the
sticky comment's "last command" line) is an outbox row written in the transaction of what caused
it, so GitHub being down delays the answer and loses none of it.

Only comments just created count: an edited comment, and comments by bots (Sami's own sticky
comment and replies included), never trigger anything. State-changing commands need write,
maintain or admin permission on the repository, read through the API (the GitHub client keeps
an answer for a minute).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

from bot import outbox
from bot.core.errors import SamiError
from bot.core.models import Deployment
from bot.core.states import DeploymentState
from bot.github import commands, pulls
from bot.github import comment as sticky
from bot.github.client import GitHubError
from bot.github.outcomes import Did, Outcome, Result
from bot.github.router import Event, HandlerContext, Retry
from bot.github.teams import TeamMembership
from bot.manifests import Manifest
from bot.services import deployments, environments, history, pins, releases

log = logging.getLogger(__name__)

WRITERS = frozenset({"admin", "maintain", "write"})
GITHUB_RETRY_SECONDS = 30




def _is_bot(comment: dict) -> bool:
    user = comment.get("user") or {}
    body = str(comment.get("body") or "")
    return (user.get("type") == "Bot" or str(user.get("login") or "").endswith("[bot]")
            or body.startswith(sticky.MARKER) or body.startswith("<!-- sami:reply"))


def _reply(ctx: HandlerContext, event: Event, number: int, text: str, suffix: str = "") -> None:
    outbox.add(ctx.session, key=f"reply:{event.delivery_id}{suffix}", kind="reply", repository=event.repository or "",
               pull_request=number, payload={"body": text})


def _react(ctx: HandlerContext, event: Event, comment_id: int, content: str) -> None:
    outbox.add(ctx.session, key=f"reaction:{comment_id}:{content}", kind="reaction",
               repository=event.repository or "", payload={"comment_id": comment_id, "content": content})


def _last_command(ctx: HandlerContext, repository: str, number: int, text: str, author: str, result: str) -> None:
    record = outbox.pull_request_record(ctx.session, repository, number)
    record.last_command = {"text": text[:200], "author": author, "result": result[:200]}
    outbox.request_sticky_comment(ctx.session.connection(), repository, number, delay=0)


def comment_created(event: Event, ctx: HandlerContext) -> Outcome:
    """A new comment on a pull request with `/sami` commands runs them for a writer; others are answered why not."""
    payload = event.payload
    issue = payload.get("issue") or {}
    comment = payload.get("comment") or {}
    if not issue.get("pull_request"):
        return Outcome.ignored("a comment on an issue, not on a pull request")
    if _is_bot(comment):
        return Outcome.ignored("a comment by a bot")
    parsed = commands.parse_comment(comment.get("body"))
    if not parsed.commands and not parsed.errors:
        return Outcome.ignored("no /sami command in the comment")
    repository, number, comment_id = event.repository or "", int(issue["number"]), int(comment["id"])
    author = str((comment.get("user") or {}).get("login") or event.sender or "someone")
    written = "; ".join(str(c) for c in parsed.commands) or "/sami"
    if parsed.errors:
        lines = [f"- line {e.line}: {e.message}" if e.line else f"- {e.message}" for e in parsed.errors]
        _reply(ctx, event, number, "Sami did not run this comment's commands:\n\n" + "\n".join(lines)
               + "\n\nComment `/sami help` for the commands.")
        _react(ctx, event, comment_id, "confused")
        ctx.session.commit()
        return Outcome.processed(f"refused: {parsed.errors[0].message}")
    if ctx.github is None:
        return Outcome.ignored("Sami has no GitHub credentials, so it cannot check who may run commands")
    if any(c.state_changing for c in parsed.commands):
        try:
            permission = ctx.github.permission(repository, author)
        except GitHubError as exc:
            if exc.status == 0 or exc.status >= 500:
                raise Retry(GITHUB_RETRY_SECONDS, f"the permission of {author} could not be read: {exc}") from None
            permission = "none"
        if permission not in WRITERS:
            why = (f"{author} has {permission} permission on {repository}; changing environments needs write, "
                   "maintain or admin")
            _reply(ctx, event, number, f"Sami refused `{written}`: {why}.")
            _react(ctx, event, comment_id, "confused")
            _last_command(ctx, repository, number, written, author, f"refused: {why}")
            ctx.session.commit()
            return Outcome.processed(f"refused: {why}")
    _react(ctx, event, comment_id, "eyes")
    ctx.session.commit()
    runner = _Runner(event, ctx, repository, number, author)
    results = [result for command in parsed.commands for result in runner.run(command)]
    problems = [result for result in results if result.did in (Did.FAILED, Did.REFUSED)]
    summary = "; ".join(map(str, results))
    if problems:
        _reply(ctx, event, number, "Sami could not do everything this comment asked:\n\n"
               + "\n".join(f"- {result}" for result in problems), suffix=":problems")
    held = any(result.did is Did.HELD for result in results)
    if runner.changing and not runner.queued and not held:
        # Nothing to wait for: the answer is complete now (with actions, the outbox's hook reacts when they settle;
        # a deploy held for CI keeps its 👀 until it runs).
        _react(ctx, event, comment_id, "confused" if problems else "rocket")
    _last_command(ctx, repository, number, written, author, summary[:200])
    ctx.session.commit()
    return Outcome.processed(summary)


class _Runner:
    """Runs the commands of one comment on one pull request."""

    def __init__(self, event: Event, ctx: HandlerContext, repository: str, number: int, author: str):
        self.event, self.ctx, self.repository, self.number, self.author = event, ctx, repository, number, author
        self.queued = 0
        self.changing = False
        self._pr: pulls.PullRequest | None = None
        self._gate: pulls.CheckGate | None = None

    @property
    def who(self) -> dict:
        return {"requested_by": f"github:{self.author}", "origin": "webhook", "delivery_id": self.event.delivery_id}

    def pull_request(self) -> pulls.PullRequest:
        if self._pr is None:
            self._pr = pulls.PullRequest.from_payload(self.ctx.github.get_pull_request(self.repository, self.number),
                                                      self.repository)
            pulls.remember(self.ctx.session, self._pr)  # the sticky comment shows this head (and its checks)
        return self._pr

    def manifests(self, command: commands.Command) -> list[Manifest] | str:
        available = pulls.pull_request_manifests(self.ctx.manifests.current(), self.repository)
        if not command.services:
            return available or f"no service deploys pull requests of {self.repository}"
        by_name = {m.service_name: m for m in available}
        unknown = [s for s in command.services if s not in by_name]
        if unknown:
            names = ", ".join(sorted(by_name)) or "none"
            return f"{', '.join(unknown)}: no pull request environment for {self.repository} (services: {names})"
        return [by_name[s] for s in command.services]

    def run(self, command: commands.Command) -> list[Result]:
        """What the command did, one result per environment it acted on (one result for help and status)."""
        verb = commands.Verb(command.verb)
        if verb is commands.Verb.HELP:
            services_ = [m.service_name for m in pulls.pull_request_manifests(self.ctx.manifests.current(),
                                                                              self.repository)]
            _reply(self.ctx, self.event, self.number, commands.help_text(services_), suffix=":help")
            return [Result(Did.DONE, "help sent")]
        if verb is commands.Verb.STATUS:
            outbox.request_sticky_comment(self.ctx.session.connection(), self.repository, self.number, delay=0)
            return [Result(Did.DONE, "status refreshed")]
        self.changing = True
        if verb is commands.Verb.RELEASE:
            return [self._release(command.services[0])]
        chosen = self.manifests(command)
        if isinstance(chosen, str):
            return [Result.said(Did.REFUSED, f"{command}: {chosen}")]
        if verb is commands.Verb.UNPIN:
            return self._each(chosen, self._unpin)
        try:
            if verb in (commands.Verb.DEPLOY, commands.Verb.UPDATE):
                pr = self.pull_request()
                if pr.state != "open":
                    return [Result.said(Did.REFUSED, f"{command}: the pull request is closed")]
                if verb is commands.Verb.DEPLOY and pr.fork:
                    record = outbox.pull_request_record(self.ctx.session, self.repository, self.number)
                    record.approved_sha, record.approved_by = pr.head_sha, self.author
                    record.head_sha, record.fork = pr.head_sha, True
                    self.ctx.session.commit()
                return self._each(chosen, lambda m: self._deploy(m, pr, verb))
            operation: Callable = {commands.Verb.ARCHIVE: deployments.archive_deployment,
                                   commands.Verb.RESTORE: deployments.restore_deployment}.get(verb) or _rollback
            return self._each(chosen, lambda m: self._accepted(
                operation(self.ctx.session, self.ctx.manifests.current(), m.deployment_name(self.number),
                          self.ctx.services, **self.who), verb))
        except GitHubError as exc:
            raise Retry(GITHUB_RETRY_SECONDS, f"the pull request could not be read: {exc}") from None

    def _release(self, name: str) -> Result:
        """Switch blue-green environment ``name`` to the release awaiting it, when the environment belongs
        to this pull request's repository (a component's manifest names it); release_approvers decide who."""
        repo = self.ctx.manifests.current()
        try:
            env = environments.environment(self.ctx.session, repo, name)
            mine = {m.service_name for m in pulls.pull_request_manifests(repo, self.repository)}
            if not any(c.service in mine or (c.manifest.repository or "").lower() == self.repository.lower()
                       for c in env.components):
                return Result.said(Did.REFUSED, f"/sami release {name}: environment {name!r} does not belong to "
                                                f"{self.repository} (none of its components' manifests names it)")
            done = releases.switch(self.ctx.session, repo, name, self.ctx.services,
                                   requested_by=f"github:{self.author}", origin="webhook",
                                   source_repo=self.repository, pull_request=self.number,
                                   teams=TeamMembership(self.ctx.github))
        except SamiError as exc:
            self.ctx.session.rollback()
            return Result.said(Did.REFUSED, f"/sami release {name}: {exc}")
        return Result(Did.DONE, f"release {done.id} of {name} switching to {done.to_colour}")

    def _each(self, manifests: list[Manifest], do: Callable[[Manifest], Result]) -> list[Result]:
        done = []
        for manifest in manifests:
            try:
                done.append(do(manifest))
            except SamiError as exc:
                self.ctx.session.rollback()
                done.append(Result.said(Did.FAILED, f"{manifest.deployment_name(self.number)}: {exc}"))
        return done

    def _unpin(self, manifest: Manifest) -> Result:
        name = manifest.deployment_name(self.number)
        existing = self.ctx.session.query(Deployment).filter(Deployment.name == name).first()
        if existing is None or existing.state is DeploymentState.REMOVED:
            return Result.said(Did.UNCHANGED, f"{name}: not deployed")
        if existing.pinned_by is None:
            return Result.said(Did.UNCHANGED, f"{name}: not pinned")
        pins.unpin(self.ctx.session, name, requested_by=f"github:{self.author}")
        return Result(Did.DONE, f"unpinned {name}: pushes deploy it again")

    def _accepted(self, accepted: deployments.Accepted, verb: commands.Verb) -> Result:
        self.queued += 1
        return Result(Did.DONE, f"{verb} of {accepted.deployment} queued (action {accepted.action_id})")

    def _deploy(self, manifest: Manifest, pr: pulls.PullRequest, verb: commands.Verb) -> Result:
        name = manifest.deployment_name(self.number)
        existing = self.ctx.session.query(Deployment).filter(Deployment.name == name).first()
        if verb is commands.Verb.UPDATE and (existing is None or existing.state is DeploymentState.REMOVED):
            return Result.said(Did.REFUSED, f"update of {manifest.service_name}: {name} is not deployed (comment /sami "
                                          "deploy)")
        if manifest.require_checks:
            # A command deploys the head commit too, so it waits for green checks as a push does.
            if self._gate is None:
                self._gate = pulls.CheckGate(self.ctx.session, pr, self.ctx.github)
            blocked = self._gate.blocks(manifest)
            if blocked:
                did, why = blocked
                if did is Did.HELD:
                    why += ("; it deploys when they pass" if self._resumes(manifest, pr)
                            else f"; comment /sami {verb} again when they pass")
                return Result.said(did, f"{name}: {why}")
        # A writer's deploy or update is a person's decision: it deploys over a rollback's pin and clears it.
        pinned = existing is not None and existing.pinned_by is not None
        unpinned = ", unpinned" if pinned else ""
        result = pulls.deploy_one(self.ctx.session, self.ctx.manifests.current(), manifest, pr, self.ctx.services,
                                **self.who, unpin=pinned)
        if result.did is Did.UNCHANGED and verb is commands.Verb.UPDATE and "already at" in result.text:
            # `update` deploys the same commit again.
            accepted = deployments.refresh_deployment(self.ctx.session, self.ctx.manifests.current(), name,
                                                   self.ctx.services, **self.who, unpin=pinned)
            self.queued += 1
            return Result(Did.DONE, f"updated {accepted.deployment} again at {pr.head_sha[:7]}{unpinned}")
        if result.did is not Did.UNCHANGED:
            self.queued += 1
            return Result(result.did, result.text + unpinned)
        return result


    def _resumes(self, manifest: Manifest, pr: pulls.PullRequest) -> bool:
        """Whether the check events that turn the commit green deploy it without another command: the
        pull request wants the environment anyway (or is a fork whose head commit a writer approved)."""
        if pulls.unwanted_because(manifest, pr) is None:
            return True
        # Unwanted only for being a fork: wanted at the head commit a writer approved.
        return (pr.fork and pulls.unwanted_because(manifest, replace(pr, fork=False)) is None
                and pulls.approved(self.ctx.session, pr))


def _rollback(session, repo, name, ctx, *, requested_by: str, origin: str, delivery_id: str | None = None
              ) -> deployments.Accepted:
    """Back to the last successful deploy before the current one (the services decide which)."""
    return history.rollback_deployment(session, repo, name, ctx, requested_by=requested_by, origin=origin,
                                        delivery_id=delivery_id)
