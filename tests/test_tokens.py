"""API tokens on the real database: hashed, scoped, revocable."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from bot.core.models import ApiToken
from bot.services.tokens import Scopes, TokenError, authenticate, create_token, revoke_token


def test_token_is_stored_hashed_and_authenticates(db_session):
    value = create_token(db_session, "ci-web", Scopes(services=("web",), actions=("deploy",)))
    db_session.commit()
    stored = db_session.scalars(select(ApiToken)).one()
    assert value.startswith(f"sami_{stored.token_id}_")
    secret = value.split("_", 2)[2]
    assert secret not in stored.secret_hash and len(stored.secret_hash) == 64
    assert authenticate(db_session, value).name == "ci-web"
    assert stored.last_used_at is not None


@pytest.mark.parametrize("bad", [None, "", "Bearer x", "sami_000000000000_" + "A" * 43, "sami_zz_short"])
def test_bad_values_are_refused(db_session, bad):
    create_token(db_session, "ci", Scopes())
    with pytest.raises(TokenError):
        authenticate(db_session, bad)


def test_a_wrong_secret_for_a_known_id_is_refused(db_session):
    value = create_token(db_session, "ci", Scopes())
    tampered = value[:-1] + ("A" if value[-1] != "A" else "B")
    with pytest.raises(TokenError, match="invalid or revoked"):
        authenticate(db_session, tampered)


def test_revoked_tokens_stop_working(db_session):
    value = create_token(db_session, "ci", Scopes())
    revoke_token(db_session, "ci")
    with pytest.raises(TokenError, match="invalid or revoked"):
        authenticate(db_session, value)
    with pytest.raises(TokenError, match="no token named 'other'"):
        revoke_token(db_session, "other")


def test_names_are_unique_and_checked(db_session):
    create_token(db_session, "ci", Scopes())
    with pytest.raises(TokenError, match="exists already"):
        create_token(db_session, "ci", Scopes())
    with pytest.raises(TokenError, match="token name"):
        create_token(db_session, "bad name!", Scopes())
    with pytest.raises(TokenError, match="unknown action scope"):
        create_token(db_session, "ci2", Scopes(actions=("destroy",)))


@pytest.mark.parametrize(("scopes", "action", "service", "environment", "allowed"), [
    (Scopes(services=("web",), environments=("stage",), actions=("deploy",)), "deploy", "web", "stage", True),
    (Scopes(services=("web",), environments=("stage",), actions=("deploy",)), "deploy", "web", "production", False),
    (Scopes(services=("web",), environments=("stage",), actions=("deploy",)), "deploy", "api", "stage", False),
    (Scopes(services=("web",), environments=("stage",), actions=("deploy",)), "archive", "web", "stage", False),
    (Scopes(actions=("deploy",)), "deploy", "anything", "anywhere", True),
    (Scopes(actions=("read",)), "admin", None, None, False),
    (Scopes(admin=True, actions=()), "cleanup", "web", "production", True),
    (Scopes(admin=True, actions=()), "admin", None, None, True),
])
def test_scopes(scopes, action, service, environment, allowed):
    assert scopes.allows(action, service, environment) is allowed
