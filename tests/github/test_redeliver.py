"""Recovery of missed webhook deliveries: which ones are redelivered (the recording fake, the real
database and Redis) and that the requests match GitHub's API description (Prism)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from bot.core.models import Delivery
from bot.github.client import Deadline, RepositoryHook
from bot.github.redeliver import (
    LocalAskedMemory,
    RedisAskedMemory,
    missed_deliveries,
    redeliver_missed,
)
from tests.github.conftest import app_client, token_client
from tests.support.github_mock import ANSWER_TIMEOUT, Reply
from workers.github_rounds import redeliver_round

NOW = datetime.now(UTC).replace(microsecond=0)
DELIVERIES = "/app/hook/deliveries"


def attempt(id_: int, guid: str, code: int, minutes_ago: float, *, redelivery: bool = False) -> dict:
    """One delivery attempt as GitHub lists it."""
    status = {0: "failed to connect", 200: "OK", 202: "Accepted"}.get(code, f"Invalid HTTP Response: {code}")
    return {"id": id_, "guid": guid, "delivered_at": (NOW - timedelta(minutes=minutes_ago)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"), "redelivery": redelivery, "duration": 0.3, "status": status, "status_code": code,
        "event": "pull_request", "action": "opened", "installation_id": 7, "repository_id": 11}


# Newest first, as GitHub lists them.
HISTORY = [
    attempt(61, "g6-recorded-ok", 202, 1),
    attempt(52, "g2-redelivered", 200, 2, redelivery=True),
    attempt(41, "g4-failed-twice", 503, 3, redelivery=True),
    attempt(40, "g4-failed-twice", 0, 10),
    attempt(31, "g3-recorded", 500, 11),
    attempt(21, "g2-redelivered", 500, 12),
    attempt(11, "g1-connect-failed", 0, 20),
    attempt(5, "g0-too-old", 0, 300),
]


@pytest.fixture
def app_fake(fake_github):
    fake_github.on("GET", DELIVERIES, Reply(200, HISTORY[:4], {"Link": '<{url}/app/hook/deliveries?cursor=v1%3A40&'
                                                                         'per_page=100>; rel="next"'}))
    fake_github.on("GET", DELIVERIES + "?cursor=v1:40&per_page=100", Reply(200, HISTORY[4:]))
    for id_ in (5, 11, 41):
        fake_github.on("POST", f"{DELIVERIES}/{id_}/attempts", Reply(202, {}))
    return fake_github


@pytest.fixture
def recorded(db_session):
    db_session.add(Delivery(delivery_id="g3-recorded", event="pull_request", action="opened"))
    db_session.commit()


def redelivered(fake) -> list[str]:
    return [r.path for r in fake.calls("POST")]


def test_only_deliveries_that_never_got_through_and_are_unknown_are_redelivered(
        app_fake, app_key, session_factory, recorded, redis_client):
    report = redeliver_missed(session_factory, app_client(app_fake.url, app_key), RedisAskedMemory(redis_client),
                              since=NOW - timedelta(hours=1))
    assert [m.guid for m in report.missed] == ["g1-connect-failed", "g4-failed-twice"]
    assert report.asked == ["g1-connect-failed", "g4-failed-twice"] and report.failed == {}
    # The newest attempt of each; the one too old to matter is not even listed past its page.
    assert redelivered(app_fake) == [f"{DELIVERIES}/11/attempts", f"{DELIVERIES}/41/attempts"]
    assert all(r.authorization.startswith("Bearer ") for r in app_fake.requests)  # the App's own JWT
    assert str(report.missed[0]) == (f"g1-connect-failed pull_request.opened (0 'failed to connect' at "
                                     f"{HISTORY[6]['delivered_at']})")


def test_a_delivery_is_asked_for_once_per_window(app_fake, app_key, session_factory, recorded, redis_client):
    client = app_client(app_fake.url, app_key)
    memory = RedisAskedMemory(redis_client, window=timedelta(hours=1))
    redeliver_missed(session_factory, client, memory, since=NOW - timedelta(hours=1))
    again = redeliver_missed(session_factory, client, memory, since=NOW - timedelta(hours=1))
    assert again.asked == [] and again.already_asked == ["g1-connect-failed", "g4-failed-twice"]
    assert len(redelivered(app_fake)) == 2
    keys = [f"sami:github:redelivery:{guid}" for guid in again.already_asked]
    assert all(3_500_000 < redis_client.pttl(key) <= 3_600_000 for key in keys)
    # The window passes (Redis expires the keys, as it would an hour later) and GitHub still lists
    # them as failed: they are asked for again.
    for key in keys:
        redis_client.pexpire(key, 1)
    while any(redis_client.exists(key) for key in keys):
        time.sleep(0.01)
    assert redeliver_missed(session_factory, client, memory, since=NOW - timedelta(hours=1)).asked == [
        "g1-connect-failed", "g4-failed-twice"]
    assert len(redelivered(app_fake)) == 4


def test_a_refused_request_is_not_remembered(app_fake, app_key, session_factory, recorded):
    app_fake.on("POST", f"{DELIVERIES}/11/attempts", Reply(422, {"message": "Validation Failed"}), Reply(202, {}))
    client, memory = app_client(app_fake.url, app_key), LocalAskedMemory()
    first = redeliver_missed(session_factory, client, memory, since=NOW - timedelta(hours=1))
    assert first.asked == ["g4-failed-twice"]
    assert first.failed == {"g1-connect-failed": f"POST {DELIVERIES}/11/attempts: GitHub answered 422: "
                                                 "Validation Failed"}
    assert redeliver_missed(session_factory, client, memory, since=NOW - timedelta(hours=1)).asked == [
        "g1-connect-failed"]


def test_a_dry_run_asks_nothing_and_remembers_nothing(app_fake, app_key, session_factory, recorded):
    memory = LocalAskedMemory()
    report = redeliver_missed(session_factory, app_client(app_fake.url, app_key), memory,
                              since=NOW - timedelta(hours=1), dry_run=True)
    assert report.asked == ["g1-connect-failed", "g4-failed-twice"]
    assert redelivered(app_fake) == [] and not memory.asked("g1-connect-failed")


def test_a_rate_limit_stops_the_round(app_fake, app_key, session_factory, recorded):
    app_fake.on("POST", f"{DELIVERIES}/11/attempts", Reply(429, {"message": "slow down"}, {"Retry-After": "60"}))
    memory = LocalAskedMemory()
    report = redeliver_missed(session_factory, app_client(app_fake.url, app_key), memory,
                              since=NOW - timedelta(hours=1))
    assert report.retry_after == 60 and report.asked == []
    assert redelivered(app_fake) == [f"{DELIVERIES}/11/attempts"]  # g4 waits for the next round
    assert not memory.asked("g1-connect-failed")


def test_a_round_past_its_deadline_asks_for_nothing_more(app_fake, app_key, session_factory, recorded):
    # The round's clock ticks once per request GitHub receives: the deadline passes after both pages.
    client, memory = app_client(app_fake.url, app_key), LocalAskedMemory()
    with client.deadline(Deadline.after(2, clock=lambda: len(app_fake.requests))):
        report = redeliver_missed(session_factory, client, memory, since=NOW - timedelta(hours=1))
    assert [r.method for r in app_fake.requests] == ["GET", "GET"] and redelivered(app_fake) == []
    assert report.asked == [] and list(report.failed) == ["deadline"]
    assert not memory.asked("g1-connect-failed")  # left for the next round, which asks
    assert redeliver_missed(session_factory, client, memory, since=NOW - timedelta(hours=1)).asked == [
        "g1-connect-failed", "g4-failed-twice"]


def test_a_failed_listing_redelivers_nothing(fake_github, app_key, session_factory):
    fake_github.on("GET", DELIVERIES, Reply(500, {"message": "Server Error"}))
    report = redeliver_missed(session_factory, app_client(fake_github.url, app_key), LocalAskedMemory(),
                              since=NOW - timedelta(hours=1))
    assert report.failed == {"app webhook": f"GET {DELIVERIES}: GitHub answered 500: Server Error"}
    assert report.missed == [] and redelivered(fake_github) == []


def test_with_a_token_the_repository_webhook_that_posts_to_sami_is_read(token_fake, session_factory):
    hooks = "/repos/acme/probe/hooks"
    token_fake.on("GET", hooks, Reply(200, [
        {"id": 8, "config": {"url": "https://ci.example.com/hook"}},
        {"id": 9, "config": {"url": "https://sami.example.com/webhooks/github"}}]))
    token_fake.on("GET", f"{hooks}/9/deliveries", Reply(200, [attempt(77, "t1", 502, 5)]))
    token_fake.on("POST", f"{hooks}/9/deliveries/77/attempts", Reply(202, {}))
    token_fake.on("GET", "/repos/acme/other/hooks", Reply(200, []))
    report = redeliver_missed(session_factory, token_client(token_fake.url), LocalAskedMemory(),
                              since=NOW - timedelta(hours=1), repositories=["acme/probe", "acme/other"],
                              public_url="https://sami.example.com/")
    assert report.asked == ["t1"] and report.missed[0].hook == RepositoryHook("acme/probe", 9)
    assert report.failed == {"acme/other": "no webhook of acme/other posts to https://sami.example.com/webhooks/github"}
    assert redelivered(token_fake) == [f"{hooks}/9/deliveries/77/attempts"]


def test_missed_deliveries_reads_githubs_records():
    assert [m.delivery_id for m in missed_deliveries(HISTORY, {"g3-recorded"})] == [5, 11, 41]
    # A delivery still pending (no status code yet) is not a failure.
    assert missed_deliveries([{**attempt(1, "p", 0, 1), "status_code": None}], set()) == []


# -- GitHub's API description --------------------------------------------------------------------


def test_listing_webhook_deliveries_matches_githubs_description(github_mock, app_key, session_factory):
    # Prism's example: one delivery, delivered then redelivered, both OK: nothing is missed.
    report = redeliver_missed(session_factory, app_client(github_mock.url, app_key), LocalAskedMemory(),
                              since=datetime(2019, 1, 1, tzinfo=UTC))
    assert report.missed == [] and report.failed == {}
    token = redeliver_missed(session_factory, token_client(github_mock.url), LocalAskedMemory(),
                             since=datetime(2019, 1, 1, tzinfo=UTC), repositories=["octocat/Hello-World"],
                             public_url="https://example.com/webhook".removesuffix("/webhook"))
    assert token.failed == {"octocat/Hello-World": "no webhook of octocat/Hello-World posts to "
                                                   "https://example.com/webhooks/github"}


# -- the round as a queue job ----------------------------------------------------------------------


@pytest.fixture
def worker(app_fake, app_key, session_factory, redis_client, tmp_path):
    """A new worker context each call, as another worker process has: what they share is in Redis."""
    from bot.core.config import settings_from_mapping
    from workers.context import build_context
    from workers.queue import RQBroker

    def build():
        settings = settings_from_mapping({"instance_dir": str(tmp_path)})
        ctx = build_context(settings, broker=RQBroker(redis_client), session_factory=session_factory)
        ctx.github = app_client(app_fake.url, app_key)
        return ctx

    return build


def test_a_round_looks_back_a_day_first_then_an_hour_before_the_last_full_round(app_fake, recorded, worker):
    first = redeliver_round(NOW.isoformat(), ctx=worker())
    # Five hours ago is inside the first round's day.
    assert first.asked == ["g0-too-old", "g1-connect-failed", "g4-failed-twice"]
    app_fake.on("GET", DELIVERIES, Reply(200, [attempt(90, "g8-new", 502, 30), attempt(80, "g7-older", 502, 90),
                                               *HISTORY]))
    app_fake.on("POST", f"{DELIVERIES}/90/attempts", Reply(202, {}))
    later = redeliver_round((NOW + timedelta(minutes=10)).isoformat(), ctx=worker())
    # Back to an hour before the last round: g7 (90 minutes old) is out of reach, the rest asked already.
    assert later.asked == ["g8-new"]


def test_a_rate_limited_round_holds_back_the_next_rounds_of_every_worker(app_fake, recorded, worker):
    app_fake.on("GET", DELIVERIES, Reply(429, {"message": "slow down"}, {"Retry-After": "600"}))
    assert redeliver_round(NOW.isoformat(), ctx=worker()).retry_after == 600
    assert redeliver_round((NOW + timedelta(minutes=9)).isoformat(), ctx=worker()) is None
    assert len(app_fake.requests) == 1
    assert redeliver_round((NOW + timedelta(minutes=10)).isoformat(), ctx=worker()) is not None
    assert len(app_fake.requests) == 2


# -- the command ---------------------------------------------------------------------------------


def test_sami_github_redeliver_lists_asks_and_remembers(app_fake, app_key, tmp_path, redis_url):
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SAMI_")},
           "SAMI_INSTANCE_DIR": str(tmp_path / "instance"), "SAMI_REDIS_URL": redis_url,
           "SAMI_GITHUB_API_URL": app_fake.url, "SAMI_GITHUB_APP_ID": "4242", "SAMI_GITHUB_APP_PRIVATE_KEY": app_key[0],
           "SAMI_GITHUB_TIMEOUT": str(ANSWER_TIMEOUT)}

    def sami(*args):
        return subprocess.run([sys.executable, "-m", "bot.cli", *args], env=env, capture_output=True, text=True,
                              timeout=60, cwd=Path(__file__).resolve().parents[2])

    assert sami("db", "upgrade").returncode == 0
    with Session(create_engine(f"sqlite:///{tmp_path / 'instance' / 'sami.sqlite3'}")) as session:
        session.add(Delivery(delivery_id="g3-recorded", event="pull_request", action="opened"))
        session.commit()
    dry = sami("github", "redeliver", "--since", "1", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines() == [
        f"would ask  g1-connect-failed pull_request.opened (0 'failed to connect' at {HISTORY[6]['delivered_at']})",
        f"would ask  g4-failed-twice pull_request.opened (503 'Invalid HTTP Response: 503' at "
        f"{HISTORY[2]['delivered_at']})",
        "2 missed deliveries in the last 1 hours; 2 would be asked for again"]
    assert redelivered(app_fake) == []
    done = sami("github", "redeliver", "--since", "1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "2 missed deliveries in the last 1 hours; 2 asked for again"
    assert redelivered(app_fake) == [f"{DELIVERIES}/11/attempts", f"{DELIVERIES}/41/attempts"]
    again = sami("github", "redeliver", "--since", "1")
    assert again.stdout.splitlines()[-1] == "2 missed deliveries in the last 1 hours; 0 asked for again, 2 asked " \
                                            "for within the last 30 minutes"
    assert len(redelivered(app_fake)) == 2
    nothing = sami("github", "redeliver", "--since", "100")
    assert nothing.returncode == 2 and "100" in nothing.stderr
