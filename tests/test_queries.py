"""The deployment list and deliveries queries (bot/services/queries.py) and their API endpoints, on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from werkzeug.datastructures import MultiDict

from bot.core.models import Delivery, DeliveryStatus, Deployment
from bot.core.states import DeploymentState as S
from bot.services import queries
from bot.services.tokens import Scopes, create_token

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _deployment(name, service, environment, state, minutes, **extra):
    return Deployment(name=name, service=service, environment=environment, type="static", state=state,
                      created_at=T0, updated_at=T0 + timedelta(minutes=minutes), **extra)


@pytest.fixture
def deployments(db_session):
    rows = [
        _deployment("web-stage", "web", "stage", S.RUNNING, 5, tag="v1"),
        _deployment("web-prod", "web", "prod", S.FAILURE, 1, tag="v0"),
        _deployment("web-pr-7", "web", "pr-7", S.RUNNING, 9, tag="abc1234", pull_request=7,
                    source_repo="acme/web", sha="abc1234def"),
        _deployment("api-stage", "api", "stage", S.CLEANUP_FAILED, 2, tag="v2"),
        _deployment("api-prod", "api", "prod", S.ARCHIVED, 7, tag="v3"),
        _deployment("api-pr-7", "api", "pr-7", S.UPDATE_PENDING, 3, pull_request=7, source_repo="acme/api"),
        _deployment("old-stage", "old", "stage", S.REMOVED, 4),
    ]
    db_session.add_all(rows)
    db_session.commit()
    return rows


def names(session, scopes=None, **args):
    flt = queries.DeploymentFilter.from_args(MultiDict(args))
    return [d.name for d in queries.list_deployments(session, flt, scopes).rows]


def test_filters(db_session, deployments):
    assert names(db_session) == ["api-pr-7", "api-prod", "api-stage", "web-pr-7", "web-prod", "web-stage"]
    assert names(db_session, service="api") == ["api-pr-7", "api-prod", "api-stage"]
    assert names(db_session, environment="stage") == ["api-stage", "web-stage"]
    assert names(db_session, state=["Running", "Archived"]) == ["api-prod", "web-pr-7", "web-stage"]
    assert names(db_session, state="Removed") == ["old-stage"]
    assert "old-stage" in names(db_session, all="1")
    assert names(db_session, pull_request="7") == ["api-pr-7", "web-pr-7"]
    assert names(db_session, repository="acme/web") == ["web-pr-7"]
    assert names(db_session, q="STAGE") == ["api-stage", "web-stage"]
    assert names(db_session, q="abc1234d") == ["web-pr-7"]  # a sha prefix
    assert names(db_session, q="v3") == ["api-prod"]  # a tag
    assert names(db_session, q="%") == []  # wildcards are literal


def test_sorts(db_session, deployments):
    assert names(db_session, sort="-updated") == ["web-pr-7", "api-prod", "web-stage", "api-pr-7", "api-stage",
                                                  "web-prod"]
    # attention: Failure and CleanupFailed first, then the most recently changed
    assert names(db_session, sort="attention")[:2] == ["api-stage", "web-prod"]
    assert names(db_session, sort="attention")[2:] == ["web-pr-7", "api-prod", "web-stage", "api-pr-7"]
    assert names(db_session, sort="state")[:2] == ["api-prod", "api-stage"]  # Archived, CleanupFailed


@pytest.mark.parametrize("sort", queries.SORTS)
def test_cursor_pages_cover_every_row_once(db_session, deployments, sort):
    whole = names(db_session, sort=sort, limit="200")
    seen, cursor = [], None
    while True:
        args = MultiDict({"sort": sort, "limit": "2", **({"cursor": cursor} if cursor else {})})
        page = queries.list_deployments(db_session, queries.DeploymentFilter.from_args(args), None)
        seen += [d.name for d in page.rows]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == whole and len(whole) == 6


def test_scopes_limit_the_list(db_session, deployments):
    scoped = Scopes(services=("web",), environments=("stage", "pr-7"), actions=("read",))
    assert names(db_session, scopes=scoped) == ["web-pr-7", "web-stage"]
    assert names(db_session, scopes=Scopes(actions=("deploy",))) == []
    assert len(names(db_session, scopes=Scopes(admin=True))) == 6


@pytest.mark.parametrize(("args", "message"), [
    ({"state": "Bogus"}, "unknown state"),
    ({"sort": "size"}, "unknown sort"),
    ({"limit": "500"}, "from 1 to 200"),
    ({"pull_request": "x"}, "pull request number"),
    ({"pull_request": "²"}, "pull request number"),
    ({"limit": "²"}, "from 1 to 200"),
    ({"repository": "no-slash"}, "owner/name"),
    ({"service": "Web!"}, "lowercase name"),
    ({"cursor": "garbage"}, "start again"),
])
def test_bad_arguments_say_what_is_allowed(db_session, args, message):
    with pytest.raises(queries.QueryError, match=message):
        flt = queries.DeploymentFilter.from_args(MultiDict(args))
        queries.list_deployments(db_session, flt, None)


@pytest.mark.parametrize(("sort", "key"), [("-updated", ["2026-01-01T00:00:00", 1]),  # no time zone
                                         ("name", ["a", 2**70]), ("name", ["a", True]),
                                         ("attention", [0, "2026-01-01T00:00:00+00:00"])])
def test_forged_cursors_are_refused(db_session, sort, key):
    flt = queries.DeploymentFilter.from_args(MultiDict({"sort": sort, "cursor": queries.encode_cursor(sort, key)}))
    with pytest.raises(queries.QueryError, match="start again"):
        queries.list_deployments(db_session, flt, None)


def test_cursor_of_another_sort_is_refused(db_session, deployments):
    page = queries.list_deployments(db_session, queries.DeploymentFilter.from_args(MultiDict({"limit": "1"})), None)
    flt = queries.DeploymentFilter.from_args(MultiDict({"sort": "attention", "cursor": page.next_cursor}))
    with pytest.raises(queries.QueryError, match="another sort"):
        queries.list_deployments(db_session, flt, None)


def test_state_counts_ignore_the_state_filter(db_session, deployments):
    flt = queries.DeploymentFilter.from_args(MultiDict({"service": "web", "state": "Failure"}))
    assert queries.state_counts(db_session, flt, None) == {"Running": 2, "Failure": 1}


def _token(session, name, scopes):
    value = create_token(session, name, scopes)
    session.commit()
    return {"Authorization": f"Bearer {value}"}


def test_api_list_pages_with_next_cursor(client, db_session, deployments):
    auth = _token(db_session, "reader", Scopes(actions=("read",)))
    first = client.get("/api/v1/deployments?limit=4&sort=attention", headers=auth)
    assert first.status_code == 200, first.json
    assert [d["name"] for d in first.json["deployments"]] == ["api-stage", "web-prod", "web-pr-7", "api-prod"]
    second = client.get(f"/api/v1/deployments?limit=4&sort=attention&cursor={first.json['next_cursor']}",
                        headers=auth).json
    assert [d["name"] for d in second["deployments"]] == ["web-stage", "api-pr-7"]
    assert second["next_cursor"] is None
    wrong = client.get("/api/v1/deployments?sort=size", headers=auth)
    assert wrong.status_code == 400 and "name, -updated, state, attention" in wrong.json["error"]


def test_api_list_keeps_to_the_tokens_scopes(client, db_session, deployments):
    auth = _token(db_session, "web-only", Scopes(services=("web",), actions=("read",)))
    listed = client.get("/api/v1/deployments?state=Failure&state=CleanupFailed", headers=auth).json
    assert [d["name"] for d in listed["deployments"]] == ["web-prod"]


@pytest.fixture
def deliveries(db_session):
    rows = [Delivery(delivery_id=f"d-{i}", event="pull_request", action="opened", repository="acme/web",
                     sender="octocat", status=DeliveryStatus.PROCESSED if i % 2 else DeliveryStatus.FAILED,
                     outcome=f"outcome {i}", payload={"secret": "payload is not listed"},
                     received_at=T0 + timedelta(seconds=i)) for i in range(5)]
    db_session.add_all(rows)
    db_session.commit()
    return rows


def test_api_deliveries_newest_first_paged(client, db_session, deliveries):
    auth = _token(db_session, "reader", Scopes(actions=("read",)))
    first = client.get("/api/v1/deliveries?limit=3", headers=auth)
    assert first.status_code == 200, first.json
    assert [d["delivery_id"] for d in first.json["deliveries"]] == ["d-4", "d-3", "d-2"]
    assert set(first.json["deliveries"][0]) >= {"event", "action", "repository", "sender", "status", "outcome",
                                                "received_at"}
    assert "payload" not in first.json["deliveries"][0]
    rest = client.get(f"/api/v1/deliveries?cursor={first.json['next_cursor']}", headers=auth).json
    assert [d["delivery_id"] for d in rest["deliveries"]] == ["d-1", "d-0"] and rest["next_cursor"] is None
    assert client.get("/api/v1/deliveries?limit=%C2%B2", headers=auth).status_code == 400
    failed = client.get("/api/v1/deliveries?status=failed", headers=auth).json["deliveries"]
    assert [d["delivery_id"] for d in failed] == ["d-4", "d-2", "d-0"]


def test_api_deliveries_need_read_on_everything(client, db_session, deliveries):
    scoped = _token(db_session, "web-reader", Scopes(services=("web",), actions=("read",)))
    response = client.get("/api/v1/deliveries", headers=scoped)
    assert response.status_code == 403 and "every service" in response.json["error"]
    assert client.get("/api/v1/deliveries").status_code == 401
