"""Rollback pins: a rollback (of a deployment, or of an environment to a snapshot) pins what it rolled back,
so that what would move it on by itself — a CI request, a push to the deployments repo, a whole-environment
deploy — is refused, naming who pinned it, when and how to unpin, until a person unpins it (``sami unpin``,
the page's Unpin button, ``/sami unpin``) or a new release is made (``clear``).

A rollback says "not that version"; a pipeline that deploys the next build, or a deployments-repo change
re-applied on top, would silently undo it. The pin is kept on the deployment's row (``pinned_*``) and
changed only through bot.core.states, so the pull request's comment follows it through the outbox.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot import outbox
from bot.core import naming, states
from bot.core.errors import Conflict, Invalid, NotFound, Pinned
from bot.core.models import Deployment
from bot.core.states import DeploymentState
from bot.manifests import DeploymentsRepo
from bot.manifests.topology import COLOURS

log = logging.getLogger(__name__)


def how_to_unpin(name: str) -> dict[str, str]:
    """The ways to unpin ``name``: the command, the page (its Unpin button), the API, the comment command, and
    a person's deploy of a version on purpose."""
    return {"cli": f"sami unpin {name}", "page": f"/deployments/{name}",
            "api": f"POST /api/v1/deployments/{name}/unpin", "comment": "/sami unpin",
            "deploy": f"sami update {name} --tag TAG --unpin"}


def view(deployment: Deployment) -> dict | None:
    """The pin as the API shows it: ``{by, at, action_id, reason, unpin}``, or None when not pinned."""
    if deployment.pinned_by is None:
        return None
    return {"by": deployment.pinned_by, "at": _iso(deployment.pinned_at), "action_id": deployment.pinned_action_id,
            "reason": deployment.pin_reason, "unpin": how_to_unpin(deployment.name)}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def words(deployment: Deployment) -> str:
    """"pinned by token:ops at 2026-12-07 17:04 UTC (rollback to v1 ...)": the pin in one phrase."""
    at = f" at {deployment.pinned_at:%Y-%m-%d %H:%M} UTC" if deployment.pinned_at else ""
    reason = f" ({deployment.pin_reason})" if deployment.pin_reason else ""
    return f"pinned by {deployment.pinned_by}{at}{reason}"


def refusal(deployment: Deployment) -> Pinned:
    """The refusal of a change a pin holds off: who, when, why and how to unpin (409 on the API)."""
    name = deployment.name
    return Pinned(f"deployment {name!r} is {words(deployment)}: Sami leaves it at the rolled-back version until "
                  f"it is unpinned (sami unpin {name}, the Unpin button on its page /deployments/{name}, or "
                  f"comment /sami unpin on its pull request), or a person deploys a version on purpose "
                  f"(sami update {name} --tag TAG --unpin)",
                  state=str(deployment.state), pinned=view(deployment))


def environment_refusal(environment: str, pinned: list[Deployment]) -> Pinned:
    """The refusal of a whole-environment deploy that would move pinned components on."""
    first = pinned[0]
    more = f" (and {', '.join(d.name for d in pinned[1:])}, pinned too)" if len(pinned) > 1 else ""
    commands = f"sami env unpin {environment}, or " + " && ".join(f"sami unpin {d.name}" for d in pinned)
    return Pinned(f"environment {environment!r} has pinned components: {first.name} is {words(first)}{more}. "
                  f"Sami leaves them at the rolled-back versions until they are unpinned ({commands}, or the "
                  f"Unpin button on each one's page), or a snapshot is deployed (sami env deploy {environment} "
                  f"--from-snapshot N), which pins them again",
                  pinned={d.name: view(d) for d in pinned})


def colour_environments(environment: str) -> list[str]:
    """``production`` -> ``production-blue``, ``production-green``: the colours of an environment released
    blue-green, whose deployments a rollback of its release pins and a release switched live unpins."""
    return [f"{environment}-{colour}" for colour in COLOURS]


def blue_green_of(repo: DeploymentsRepo, environment: str) -> str | None:
    """The environment released blue-green that ``environment`` is, or is a colour of (None: neither)."""
    candidates = [environment] + [environment.removesuffix(f"-{c}") for c in COLOURS if environment.endswith(f"-{c}")]
    for name in candidates:
        # Its file (or one manifest) says blue_green; a file is read even with errors, so that a pin holds.
        topology = repo.topologies.get(name)
        if topology is not None and topology.blue_green is not None:
            return name
    return None


def release_pins(session: Session, repo: DeploymentsRepo, environment: str) -> list[Deployment]:
    """The pinned deployments of the colours of the blue-green environment ``environment`` is (or is a colour
    of): a rollback of its release pinned them. None for any other environment."""
    released = blue_green_of(repo, environment)
    return [] if released is None else pinned_in(session, colour_environments(released))


def pinned_in(session: Session, environments: list[str]) -> list[Deployment]:
    """The pinned deployments of ``environments``."""
    return list(session.scalars(select(Deployment).where(Deployment.environment.in_(environments),
                                                         Deployment.pinned_by.is_not(None))
                                .order_by(Deployment.name)))


def release_refusal(environment: str, pinned: list[Deployment]) -> Pinned:
    """The refusal of a change of a blue-green environment a rollback pinned (409 on the API): who, when, and
    how to unpin it."""
    first = pinned[0]
    return Pinned(f"environment {environment!r} is {words(first)}: Sami leaves its colours "
                  f"({', '.join(d.name for d in pinned)}) as they are until it is unpinned (sami env unpin "
                  f"{environment}, or the Unpin button on its page /environments/{environment}) or a new release "
                  f"is switched live (sami env release {environment} --version SERVICE=TAG, then sami env release "
                  f"{environment} --switch)",
                  pinned={d.name: view(d) for d in pinned},
                  unpin={"cli": f"sami env unpin {environment}", "page": f"/environments/{environment}",
                         "api": f"POST /api/v1/environments/{environment}/unpin"})


def refuse_if_release_pinned(session: Session, repo: DeploymentsRepo, environment: str) -> None:
    """Pinned (a Conflict) when ``environment`` is released blue-green (or is one of its colours) and a rollback
    of its release pinned it."""
    pinned = release_pins(session, repo, environment)
    if pinned:
        released = blue_green_of(repo, environment) or environment
        log.info("refused a change of environment %s: %s", released, words(pinned[0]))
        raise release_refusal(released, pinned)


def refuse_if_pinned(deployment: Deployment | None) -> None:
    """Pinned (a Conflict) when ``deployment`` is pinned."""
    if deployment is not None and deployment.pinned_by is not None:
        log.info("refused a change of %s: %s", deployment.name, words(deployment),
                 extra={"deployment": deployment.name})
        raise refusal(deployment)


def pin(deployment: Deployment, *, by: str, action_id: int | None, reason: str) -> None:
    """Pin ``deployment`` in the caller's transaction (a rollback, a deploy of an environment's snapshot);
    a pin already there is replaced by this newer one. The caller commits with ``outbox.commit``."""
    states.pin(deployment, by=by, action_id=action_id, reason=reason)
    log.info("pinned %s: %s", deployment.name, reason, extra={"deployment": deployment.name})


def clear(deployment: Deployment) -> bool:
    """Clear ``deployment``'s pin in the caller's transaction (a new release, an unpin); True when it was
    pinned. The caller commits with ``outbox.commit``."""
    return states.unpin(deployment)


def unpin(session: Session, name: str, *, requested_by: str) -> Deployment:
    """Unpin deployment ``name`` and commit: CI requests and pushes change it again. Conflict when it is
    not pinned (nothing to do, and saying so beats a silent success)."""
    try:
        naming.check_name(name)
    except naming.InvalidName as exc:
        raise Invalid(str(exc)) from None
    deployment = session.scalars(select(Deployment).where(Deployment.name == name).with_for_update()
                                 .execution_options(populate_existing=True)).first()
    if deployment is None or deployment.state is DeploymentState.REMOVED:
        raise NotFound(f"no deployment named {name!r} (list them: GET /api/v1/deployments)")
    if deployment.pinned_by is None:
        raise Conflict(f"deployment {name!r} is not pinned: CI requests and pushes already change it",
                       state=str(deployment.state))
    was = words(deployment)
    clear(deployment)
    outbox.commit(session)
    log.info("unpinned %s by %s (was %s)", name, requested_by, was, extra={"deployment": name})
    return deployment


def pinned_of(session: Session, names: list[str]) -> list[Deployment]:
    """The pinned deployments among ``names``."""
    if not names:
        return []
    return list(session.scalars(select(Deployment).where(Deployment.name.in_(names),
                                                         Deployment.pinned_by.is_not(None))
                                .order_by(Deployment.name)))
