"""Sign in with GitHub: trade the authorization code for a user token, learn the login, drop the token.

Sami keeps no user token: what a person may change is looked up later with Sami's own GitHub
credentials (bot.web.auth), so the token is used for one ``GET /user`` and forgotten.
"""

from __future__ import annotations

from dataclasses import dataclass

import requests

from bot.core.config import Settings
from bot.github.client import GitHubClient, GitHubError


class OAuthError(Exception):
    """GitHub did not complete the sign-in; the message says what to check."""


@dataclass(frozen=True)
class SignedIn:
    login: str
    in_admin_team: bool


def exchange(settings: Settings, code: str, redirect_uri: str) -> SignedIn:
    """Who authorized ``code``: their login, and whether they are in SAMI_ADMIN_TEAM."""
    if not code or len(code) > 200:
        raise OAuthError("GitHub's answer carried no authorization code: start the sign-in again")
    try:
        response = requests.post(f"{settings.github_web_url}/login/oauth/access_token",
                                 timeout=settings.github_timeout,
                                 headers={"Accept": "application/json"},
                                 json={"client_id": settings.github_oauth_client_id,
                                       "client_secret": settings.github_oauth_client_secret,
                                       "code": code, "redirect_uri": redirect_uri})
        data = response.json()
    except (requests.RequestException, ValueError) as exc:
        raise OAuthError(f"could not reach GitHub to finish the sign-in ({type(exc).__name__}); try again") from None
    token = data.get("access_token") if isinstance(data, dict) else None
    if not token:
        reason = data.get("error_description") or data.get("error") if isinstance(data, dict) else None
        raise OAuthError(f"GitHub refused the sign-in: {reason or response.status_code}; check "
                         "SAMI_GITHUB_OAUTH_CLIENT_ID and SAMI_GITHUB_OAUTH_CLIENT_SECRET")
    client = GitHubClient(settings.github_api_url, token=token, timeout=settings.github_timeout)
    try:
        user = client.authenticated_user()
    except GitHubError as exc:
        raise OAuthError(f"GitHub did not say who signed in: {exc}") from None
    login = user.get("login") if isinstance(user, dict) else None
    if not login:
        raise OAuthError("GitHub's user answer has no login")
    return SignedIn(str(login), bool(settings.admin_team) and _in_team(client, settings.admin_team, str(login)))


def _in_team(client: GitHubClient, team: str, login: str) -> bool:
    """Whether ``login`` is an active member of ``org/team`` (asked with the person's own token)."""
    org, slug = team.split("/", 1)
    try:
        membership = client.team_membership(org, slug, login)
    except GitHubError as exc:
        if exc.status not in (403, 404):  # 404: not a member (or the team is hidden from them)
            raise OAuthError(f"could not look up membership of {team}: {exc}") from None
        return False
    return membership.get("state") == "active"
