"""Deployments from their own history: roll one back to an earlier good configuration, or clone one
into another environment or name."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.core import naming
from bot.core.errors import Conflict, Invalid, NotFound
from bot.core.models import Action, Deployment
from bot.core.states import ActionState, DeploymentState, supersede_queued_updates, transition
from bot.manifests import DeploymentsRepo
from bot.services import pins
from bot.services.deployments import (
    Accepted,
    Context,
    action_config,
    apply_config,
    check_overrides,
    commit_and_queue,
    deployed_action,
    deployment_links,
    find_manifest,
    get_deployment,
    image_and_tag,
    lock_or_create,
    merge_overrides,
    record_action,
    refuse_if_busy,
)

S = DeploymentState


CONFIG_KINDS = ("create", "update")


def _config_key(config: Mapping) -> tuple:
    """What a rollback restores of an action's config: its tag or image and its overrides."""
    return (config.get("tag"), config.get("image"), sorted((config.get("app_overrides") or {}).items()),
            sorted((config.get("deployment_overrides") or {}).items()))


def _rollback_target(session: Session, deployment: Deployment, to_action_id: int | None) -> Action:
    """The succeeded create/update action to roll back to: ``to_action_id``, or by default the
    newest one whose config differs from the deployment's current one (the previous good config)."""
    if to_action_id is not None:
        action = session.get(Action, to_action_id)
        if action is None or action.deployment_id != deployment.id:
            raise NotFound(f"deployment {deployment.name!r} has no action {to_action_id} "
                           f"(its actions: GET /api/v1/deployments/{deployment.name}/actions)")
        if action.kind not in CONFIG_KINDS or action.state is not ActionState.SUCCEEDED:
            raise Conflict(f"action {to_action_id} is a {action.state} {action.kind}: a rollback goes back to the "
                           f"config of a succeeded create or update", state=str(deployment.state))
        return action
    history = session.scalars(select(Action).where(Action.deployment_id == deployment.id,
                                                   Action.kind.in_(CONFIG_KINDS))
                              .order_by(Action.id.desc()).limit(500)).all()
    if history:
        current = _config_key(history[0].config or {})
        for action in history:
            if action.state is ActionState.SUCCEEDED and _config_key(action.config or {}) != current:
                return action
    raise Conflict(f"deployment {deployment.name!r} has no earlier successful config to roll back to "
                   f"(one comes from a succeeded create or update with another tag or overrides)",
                   state=str(deployment.state))


@dataclass(frozen=True)
class RollbackTarget:
    """The configuration a rollback goes back to: that of a succeeded create or update."""

    action_id: int
    tag: str | None
    image: str | None

    @classmethod
    def of(cls, action: Action) -> RollbackTarget:
        config = action.config or {}
        return cls(action.id, config.get("tag"), config.get("image"))

    def as_dict(self) -> dict:
        return {"action_id": self.action_id, "tag": self.tag, "image": self.image}

    @property
    def words(self) -> str:
        """"v1 (the configuration of action 3)": what a person is told before and after."""
        return f"{self.tag or self.image or 'its earlier image'} (the configuration of action {self.action_id})"


def rollback_target(session: Session, name: str, to_action_id: int | None = None) -> RollbackTarget:
    """Where a rollback of deployment ``name`` would go now (``to_action_id``, or the previous good
    configuration), without changing anything: what the page's button and the CLI name before it is done.
    NotFound or Conflict as the rollback itself would answer."""
    return RollbackTarget.of(_rollback_target(session, get_deployment(session, name), to_action_id))


def rollback_deployment(session: Session, repo: DeploymentsRepo, name: str, ctx: Context, *,
                        to_action_id: int | None = None, requested_by: str, origin: str,
                        delivery_id: str | None = None) -> Accepted:
    """Update a deployment back to the tag/image and overrides of an earlier succeeded create or
    update (the previous good config, or action ``to_action_id``), with the current manifests.
    ``delivery_id`` ties the action to the webhook delivery (a `/sami rollback` comment) that asked."""
    deployment = get_deployment(session, name, lock=True)
    target = _rollback_target(session, deployment, to_action_id)
    manifest = find_manifest(repo, deployment.service, deployment.environment)
    if deployment.state is S.ARCHIVED:
        raise Conflict(f"deployment {name!r} is archived: restore it first "
                       f"(POST /api/v1/deployments/{name}/restore)", state=str(deployment.state))
    transition(deployment, S.UPDATE_PENDING)  # 409 naming the allowed transitions otherwise
    return _update_to(session, repo, ctx, deployment, manifest, target, "rollback_to", requested_by=requested_by,
                      origin=origin, delivery_id=delivery_id)


def _update_to(session: Session, repo: DeploymentsRepo, ctx: Context, deployment: Deployment, manifest,
               earlier: Action, mark: str, *, requested_by: str, origin: str, delivery_id: str | None) -> Accepted:
    """Record and queue an update of ``deployment`` (already UpdatePending) to the config of action ``earlier``,
    with the current manifests; its config names ``earlier`` under ``mark`` (rollback_to, reconcile_of)."""
    apply_config(deployment, earlier.config or {}, manifest)
    deployment.type = str(manifest.type)
    deployment.manifest_sha = repo.sha
    deployment.links = deployment_links(manifest, deployment, ctx)
    action = record_action(session, deployment, "update", requested_by=requested_by, origin=origin,
                           config={**action_config(deployment, manifest, repo), mark: earlier.id},
                           delivery_id=delivery_id)
    supersede_queued_updates(session, deployment, action)
    if mark == "rollback_to":
        # Pinned at the version it went back to (again, if it was pinned): CI and pushes leave it there.
        pins.pin(deployment, by=requested_by, action_id=action.id,
                 reason=f"rollback to {RollbackTarget.of(earlier).words}")
    accepted = commit_and_queue(session, ctx, deployment, action)
    if mark != "rollback_to":
        return accepted
    return replace(accepted, rollback_to=RollbackTarget.of(earlier).as_dict())


def clone_deployment(session: Session, repo: DeploymentsRepo, name: str, ctx: Context, *,
                     environment: str | None = None, new_name: str | None = None, requested_by: str,
                     origin: str) -> Accepted:
    """Create a new deployment of ``name``'s service with its tag/image and overrides, in another
    environment (named ``<service>-<environment>``) and/or under ``new_name``."""
    source = get_deployment(session, name)
    if environment is None and new_name is None:
        raise Invalid("give the clone's 'environment', its 'name', or both")
    environment = environment or source.environment
    try:
        naming.check_environment(environment)
        if environment == "pull_request":
            raise naming.InvalidName("a clone cannot be a pull request environment: those follow their pull request")
        clone_name = naming.check_name(new_name) if new_name else naming.deployment_name(source.service, environment)
    except naming.InvalidName as exc:
        raise Invalid(str(exc)) from None
    manifest = find_manifest(repo, source.service, environment)
    app_overrides = check_overrides("app", source.app_overrides, manifest.allowed_app_overrides)
    deployment_overrides = check_overrides("deployment", source.deployment_overrides,
                                            manifest.allowed_deployment_overrides)
    keep_image = bool(source.image and manifest.image and naming.split_image(source.image)[0] == manifest.image)
    image, tag = image_and_tag(manifest, None if keep_image else source.tag, source.image if keep_image else None)

    deployment = lock_or_create(session, clone_name, source.service, environment, str(manifest.type))
    free = deployment.state is S.REMOVED and (deployment.service, deployment.environment) == (source.service,
                                                                                                environment)
    if not free and not ctx.sees(deployment):  # neither its state nor whose it is
        raise Conflict(f"deployment name {clone_name!r} is not available; choose another 'name'")
    if deployment.state is not S.REMOVED:
        raise Conflict(f"deployment name {clone_name!r} is taken (it is {deployment.state}); choose another "
                       f"'name'", state=str(deployment.state))
    if not free:
        # a removed deployment's row keeps its history: its name stays with its service and environment
        raise Conflict(f"deployment name {clone_name!r} belongs to service {deployment.service!r} in environment "
                       f"{deployment.environment!r} (removed); choose another 'name'", state=str(deployment.state))
    transition(deployment, S.CREATE_PENDING)
    deployment.type = str(manifest.type)
    deployment.tag, deployment.image = tag, image
    deployment.app_overrides = merge_overrides({}, app_overrides)
    deployment.deployment_overrides = merge_overrides({}, deployment_overrides)
    deployment.source_repo, deployment.ref, deployment.sha = source.source_repo, source.ref, source.sha
    deployment.pull_request = None
    deployment.manifest_sha = repo.sha
    deployment.links = deployment_links(manifest, deployment, ctx)
    action = record_action(session, deployment, "create", requested_by=requested_by, origin=origin,
                     config={**action_config(deployment, manifest, repo), "clone_of": source.name})
    return commit_and_queue(session, ctx, deployment, action)


def reconcile_deployment(session: Session, repo: DeploymentsRepo, name: str, ctx: Context, *, requested_by: str,
                         origin: str, delivery_id: str | None = None) -> Accepted:
    """Put back what Sami deployed: an update to the config of the last succeeded create, update or restore,
    marked ``reconcile_of`` that action. It repairs drift (a change made on the target by hand) and
    leaves the deployment where a failed request had left it asking for the last good config."""
    deployment = get_deployment(session, name, lock=True)
    if deployment.state not in (S.RUNNING, S.FAILURE):
        raise Conflict(f"deployment {name!r} is {deployment.state}: only a Running or Failure deployment can be "
                       f"reconciled", state=str(deployment.state))
    refuse_if_busy(session, deployment)
    deployed = deployed_action(session, deployment.id)
    if deployed is None:
        raise Conflict(f"deployment {name!r} has no deployed config to put back (no create, update or restore of "
                       f"it succeeded)", state=str(deployment.state))
    manifest = find_manifest(repo, deployment.service, deployment.environment)
    transition(deployment, S.UPDATE_PENDING, message=f"reconciling to action {deployed.id}'s config")
    return _update_to(session, repo, ctx, deployment, manifest, deployed, "reconcile_of", requested_by=requested_by,
                      origin=origin, delivery_id=delivery_id)
