"""Membership of GitHub teams, for release_approvers' ``team:<org>/<slug>`` entries: asked of GitHub's API each
time (``GET /orgs/{org}/teams/{team_slug}/memberships/{username}``, state ``active``); an error refuses."""

from __future__ import annotations

import logging

from bot.github.client import GitHubClient, GitHubError
from bot.services.releases import MembershipUnknown

log = logging.getLogger(__name__)


class TeamMembership:
    """``(org, team_slug, login) -> bool`` through Sami's GitHub client: True for an active member; False when
    GitHub answers 404 (not a member, or a team these credentials cannot see) or the membership is pending;
    MembershipUnknown for any other answer, or without credentials."""

    def __init__(self, client: GitHubClient | None):
        self.client = client

    def __call__(self, org: str, team_slug: str, login: str) -> bool:
        if self.client is None:
            raise MembershipUnknown("Sami has no GitHub credentials to ask GitHub about teams")
        try:
            membership = self.client.team_membership(org, team_slug, login)
        except GitHubError as exc:
            if exc.status == 404:
                return False
            log.warning("could not look up %s's membership of %s/%s: %s", login, org, team_slug, exc)
            said = f"GitHub answered {exc.status}" if exc.status else "GitHub could not be reached"
            raise MembershipUnknown(f"{said}: {exc.message}") from None
        except ValueError as exc:  # a name GitHub's API cannot take
            raise MembershipUnknown(str(exc)) from None
        return isinstance(membership, dict) and membership.get("state") == "active"
