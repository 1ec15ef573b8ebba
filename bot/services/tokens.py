"""API tokens: shown once, stored as a SHA-256 hash, scoped to services, environments and actions."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.core.models import ApiToken

PREFIX = "sami"
TOKEN_RE = re.compile(r"^sami_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
TOKEN_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}$")
# What a token may do; "admin" may do everything, including reading logs and managing tokens.
ACTIONS = ("deploy", "archive", "restore", "cleanup", "read")
# Writing last_used_at on every request would make each read a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class TokenError(Exception):
    """A token is missing, malformed, unknown or revoked (401), or a token command failed."""


@dataclass(frozen=True)
class Scopes:
    """What a token may touch; ``*`` matches everything."""

    services: tuple[str, ...] = ("*",)
    environments: tuple[str, ...] = ("*",)
    actions: tuple[str, ...] = ("read",)
    admin: bool = False

    @classmethod
    def from_dict(cls, data: dict) -> Scopes:
        return cls(
            services=tuple(data.get("services", ("*",))),
            environments=tuple(data.get("environments", ("*",))),
            actions=tuple(data.get("actions", ("read",))),
            admin=bool(data.get("admin", False)),
        )

    def to_dict(self) -> dict:
        return {"services": list(self.services), "environments": list(self.environments),
                "actions": list(self.actions), "admin": self.admin}

    def may_read_path(self, path: str) -> bool:
        """Whether a path of the deployments repo lies in a folder these scopes may read.

        The layout is services/<service>/<type>/<environment>/...: a token scoped to services and
        environments sees those folders; what lies outside any service's folder only admin sees.
        """
        parts = path.split("/")
        if self.admin:
            return True
        if len(parts) < 2 or parts[0] != "services" or not parts[1]:
            return False
        return self.allows("read", parts[1], parts[3] if len(parts) > 3 else None)

    def allows(self, action: str, service: str | None = None, environment: str | None = None) -> bool:
        """Whether these scopes allow ``action`` on ``service`` in ``environment``."""
        if self.admin:
            return True
        if action not in self.actions:
            return False
        if service is not None and "*" not in self.services and service not in self.services:
            return False
        return not (environment is not None and "*" not in self.environments
                    and environment not in self.environments)

    def describe(self) -> str:
        if self.admin:
            return "admin"
        return (f"actions={','.join(self.actions)} services={','.join(self.services)} "
                f"environments={','.join(self.environments)}")


def _hash(secret: str) -> str:
    # The secret is 256 random bits, so a plain SHA-256 is enough (no password stretching needed).
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(session: Session, name: str, scopes: Scopes, created_by: str | None = None) -> str:
    """Store a new token and return its value; the value is not kept and cannot be shown again."""
    if not TOKEN_NAME_RE.match(name):
        raise TokenError(f"token name {name!r} must be letters, digits and . _ @ - (at most 100)")
    unknown = set(scopes.actions) - set(ACTIONS)
    if unknown:
        raise TokenError(f"unknown action scope {sorted(unknown)}: choose from {', '.join(ACTIONS)}")
    if session.scalars(select(ApiToken).where(ApiToken.name == name)).first():
        raise TokenError(f"a token named {name!r} exists already; revoke it or choose another name")
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    session.add(ApiToken(name=name, token_id=token_id, secret_hash=_hash(secret),
                         scopes=scopes.to_dict(), created_by=created_by))
    session.flush()
    return f"{PREFIX}_{token_id}_{secret}"


def authenticate(session: Session, value: str | None, now: datetime | None = None) -> ApiToken:
    """The live token whose value is ``value``, or TokenError (with no hint which part was wrong)."""
    match = TOKEN_RE.match(value or "")
    if not match:
        raise TokenError("missing or malformed token: send 'Authorization: Bearer sami_...'")
    token_id, secret = match.groups()
    token = session.scalars(select(ApiToken).where(ApiToken.token_id == token_id)).first()
    # Compare even when the id is unknown, so timing does not tell which ids exist.
    expected = token.secret_hash if token else _hash("unknown token")
    if not hmac.compare_digest(expected, _hash(secret)) or token is None or token.revoked_at:
        raise TokenError("invalid or revoked token")
    now = now or datetime.now(UTC)
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
        token.last_used_at = now
    return token


def revoke_token(session: Session, name: str, now: datetime | None = None) -> ApiToken:
    """Revoke the token called ``name``; it stops working at once."""
    token = session.scalars(select(ApiToken).where(ApiToken.name == name)).first()
    if token is None:
        raise TokenError(f"no token named {name!r} (see: sami token list)")
    if token.revoked_at is None:
        token.revoked_at = now or datetime.now(UTC)
    return token


def list_tokens(session: Session) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).order_by(ApiToken.name)))
