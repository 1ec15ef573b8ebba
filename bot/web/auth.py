"""Who is looking at the status page, and what they may change.

A visitor signs in with GitHub (an OAuth App's web flow) or with a Sami token; either way the
session cookie (signed with SAMI_SECRET_KEY, HttpOnly, SameSite=Lax, Secure behind https) holds
who they are, never a secret: a token session keeps the token's public id and is checked against
the database on every request, so revoking the token signs the session out. Every form carries
the session's CSRF token. GitHub users may change deployments of repositories they can write to
(looked up with Sami's own GitHub credentials, remembered for a few minutes); SAMI_ADMINS may
change everything and read logs.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from dataclasses import dataclass

from flask import abort, current_app, g, session
from sqlalchemy import select

from bot.core.config import ConfigError
from bot.core.models import ApiToken, Deployment
from bot.github.client import GitHubClient, GitHubError
from bot.services.tokens import Scopes, revoke_token
from bot.web.database import get_session

log = logging.getLogger(__name__)
ONE_TIME_CREATOR = "one-time sign-in link"  # the created_by of the admin tokens the link makes


@dataclass(frozen=True)
class Viewer:
    """A signed-in person: ``kind`` is github or token; ``scopes`` only for tokens."""

    kind: str
    name: str
    admin: bool = False
    scopes: Scopes | None = None

    @property
    def requested_by(self) -> str:
        return f"{self.kind}:{self.name}"

    @property
    def read_scopes(self) -> Scopes | None:
        """What this viewer may read (None: everything)."""
        return None if self.kind == "github" or self.admin else self.scopes


def current_viewer() -> Viewer | None:
    """The signed-in viewer of this request, or None."""
    if "viewer" in g:
        return g.viewer
    data = session.get("viewer")
    viewer = None
    if isinstance(data, dict) and data.get("kind") == "github":
        login = str(data.get("login", ""))
        settings = current_app.config["SAMI"]
        # Team membership is looked up at sign-in (with the person's token) and holds for the session.
        team_admin = bool(data.get("team_admin")) and bool(settings.admin_team)
        viewer = Viewer("github", login, admin=login.lower() in settings.admins or team_admin)
    elif isinstance(data, dict) and data.get("kind") == "token":
        token = get_session().scalars(select(ApiToken).where(ApiToken.token_id == str(data.get("token_id")))).first()
        if token is not None and token.revoked_at is None:
            scopes = Scopes.from_dict(token.scopes)
            viewer = Viewer("token", token.name, admin=scopes.admin, scopes=scopes)
        else:
            session.pop("viewer", None)
    g.viewer = viewer
    return viewer


def sign_in(data: dict) -> None:
    """Start a fresh session for ``data`` (a new CSRF token too, so one from before cannot be replayed)."""
    session.clear()
    session["viewer"] = data
    session["csrf"] = secrets.token_urlsafe(32)
    session.permanent = True
    g.pop("viewer", None)


def sign_out() -> None:
    """End the session. A token the one-time link made for it is revoked too: nobody else holds it
    (it was never shown), so it would only pile up; a token the person typed in stays theirs."""
    data = session.get("viewer")
    if isinstance(data, dict) and data.get("kind") == "token":
        db = get_session()
        token = db.scalars(select(ApiToken).where(ApiToken.token_id == str(data.get("token_id")))).first()
        if token is not None and token.created_by == ONE_TIME_CREATOR:
            revoke_token(db, token.name)
            db.commit()
    session.clear()
    g.pop("viewer", None)


def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def check_csrf(form_value: str | None) -> None:
    """403 unless ``form_value`` is this session's CSRF token."""
    expected = session.get("csrf")
    if not expected or not form_value or not hmac.compare_digest(str(expected).encode(), str(form_value).encode()):
        abort(403, "the form's security token is missing or out of date: reload the page and try again")


# -- what a viewer may change ---------------------------------------------------------------------

def init_app(app, client: GitHubClient | None = None) -> None:
    """Give the app the GitHub client that answers who may change what: ``client`` (the embedded
    worker's), or the one its settings describe (None without credentials)."""
    if client is None:
        try:
            client = GitHubClient.from_settings(app.config["SAMI"])
        except ConfigError as exc:  # half an App: the setup page says so; nobody's permission can be read
            log.warning("GitHub permissions cannot be read: %s", exc)
    app.extensions["sami.github"] = client


def _github_permission(repo: str, login: str) -> str:
    """``login``'s permission on ``repo`` (the GitHub client keeps answers for a minute); "none"
    when Sami has no GitHub credentials or GitHub cannot say."""
    client = current_app.extensions["sami.github"]
    if client is None:
        return "none"
    try:
        return client.permission(repo, login)
    except (GitHubError, ValueError) as exc:
        log.warning("could not look up %s's permission on %s: %s", login, repo, exc)
        return "none"


def deployment_repository(deployment: Deployment, manifest) -> str | None:
    """The repository whose writers may change ``deployment``: its manifest's, else its source's."""
    return (getattr(manifest, "repository", None) if manifest is not None else None) or deployment.source_repo


def may_change(viewer: Viewer | None, action: str, deployment: Deployment, manifest=None) -> bool:
    """Whether ``viewer`` may ``action`` (deploy, archive, restore, cleanup) ``deployment``."""
    if viewer is None:
        return False
    if viewer.admin:
        return True
    if viewer.kind == "token":
        return viewer.scopes is not None and viewer.scopes.allows(action, deployment.service, deployment.environment)
    repo = deployment_repository(deployment, manifest)
    return bool(repo) and _github_permission(repo, viewer.name) in ("admin", "maintain", "write")
