"""A blue-green rollback pins the environment, through the API with the built-in static_file scripts: CI
requests and environment deploys that would change it are refused with 409 naming who pinned it, when and how
to unpin, until it is unpinned or a new release is switched live. Reading a release's status writes nothing."""

from __future__ import annotations

from sqlalchemy import MetaData, select, update

from bot.core.models import Deployment, Release
from bot.services.tokens import Scopes, create_token
from tests.pipeline.test_releases_static_file import api, release_repo, test_config  # noqa: F401  (fixtures)
from tests.web.conftest import csrf, sign_in_with_token

COLOURS = ("site-production-blue", "site-production-green")


def pins(db_session) -> dict[str, str | None]:
    db_session.expire_all()
    rows = db_session.scalars(select(Deployment).where(Deployment.name.in_(COLOURS)))
    return {d.name: d.pinned_by for d in rows}


def release(call, work, tag: str) -> None:
    prepared = call("POST", "/api/v1/environments/production/release", {"versions": {"site": tag}}, token="ci")
    assert prepared.status_code == 202, prepared.json
    work()
    switched = call("POST", "/api/v1/environments/production/release/switch")
    assert switched.status_code == 202, switched.json
    work()


def roll_back(call, work) -> dict:
    rolled = call("POST", "/api/v1/environments/production/rollback")
    assert rolled.status_code == 202, rolled.json
    work()
    return rolled.json


def ci_request(call, tag: str, environment: str = "production"):
    return call("POST", "/deployment_request", {"service": "site", "environment": environment, "tag": tag},
               token="ci")


def deployment_count(db_session) -> int:
    db_session.expire_all()
    return len(db_session.scalars(select(Deployment.id)).all())


def test_a_blue_green_rollback_pins_the_environment_until_a_release_is_switched_live(api, work, db_session):  # noqa: F811
    release(api, work, "v1")
    release(api, work, "v2")
    assert pins(db_session) == dict.fromkeys(COLOURS)
    rolled = roll_back(api, work)
    assert (rolled["kind"], rolled["from_colour"], rolled["to_colour"]) == ("rollback", "green", "blue")
    assert pins(db_session) == dict.fromkeys(COLOURS, "token:release-manager")  # both colours, at once
    pinned = api("GET", "/api/v1/deployments/site-production-blue", token="ci").json["deployment"]["pin"]
    assert pinned["reason"] == f"rollback {rolled['id']} of production from green to blue"

    # CI's next build for production: refused before anything is written, as always in a blue-green
    # environment (its own name takes no deployment: a release goes into the idle colour).
    before = deployment_count(db_session)
    refused = ci_request(api, "v3")
    assert refused.status_code == 409, refused.json
    assert refused.json["error"].startswith("environment 'production' is released blue-green")
    assert deployment_count(db_session) == before
    # A deploy of a colour: refused, naming who pinned it, when and how to unpin.
    refused = api("POST", "/api/v1/environments/production-green/deploy", {"versions": {"site": "v3"}})
    assert refused.status_code == 409, refused.json
    error = refused.json["error"]
    assert error.startswith("environment 'production' is pinned by token:release-manager at ")
    assert f"(rollback {rolled['id']} of production from green to blue)" in error
    assert "sami env unpin production" in error and "the Unpin button on its page /environments/production" in error
    assert sorted(refused.json["pinned"]) == list(COLOURS)
    assert refused.json["unpin"]["cli"] == "sami env unpin production"
    assert deployment_count(db_session) == before

    # Environment deploys of either colour: refused the same way.
    for environment in ("production-blue", "production-green"):
        answer = api("POST", f"/api/v1/environments/{environment}/deploy", {"versions": {"site": "v3"}})
        assert answer.status_code == 409, (environment, answer.json)
        assert answer.json["error"].startswith("environment 'production' is pinned by token:release-manager")
    assert api("GET", "/api/v1/environments/production-green", token="ci").json["last_run"]["operation"] == "deploy"

    # A new release is deployed into the idle colour through the pin, which stays until it is switched live.
    prepared = api("POST", "/api/v1/environments/production/release", {"versions": {"site": "v4"}}, token="ci")
    assert prepared.status_code == 202, prepared.json
    work()
    assert pins(db_session) == dict.fromkeys(COLOURS, "token:release-manager")
    assert ci_request(api, "v5").status_code == 409
    switched = api("POST", "/api/v1/environments/production/release/switch")
    assert switched.status_code == 202, switched.json
    work()
    db_session.expire_all()
    assert db_session.get(Release, switched.json["id"]).state == "live"
    assert pins(db_session) == dict.fromkeys(COLOURS)
    assert api("GET", "/api/v1/deployments/site-production-green", token="ci").json["deployment"]["pin"] is None
    deployed = api("POST", "/api/v1/environments/production-blue/deploy", {"versions": {"site": "v5"}})
    assert deployed.status_code == 202, deployed.json


def test_sami_env_unpin_ends_a_blue_green_rollbacks_pin(api, work, db_session):  # noqa: F811
    release(api, work, "v1")
    release(api, work, "v2")
    roll_back(api, work)
    assert api("POST", "/api/v1/environments/production-green/deploy", {"versions": {"site": "v3"}}) \
        .status_code == 409
    unpinned = api("POST", "/api/v1/environments/production/unpin")
    assert unpinned.status_code == 200, unpinned.json
    assert unpinned.json == {"environment": "production", "unpinned": list(COLOURS)}
    assert pins(db_session) == dict.fromkeys(COLOURS)
    again = api("POST", "/api/v1/environments/production/unpin")
    assert again.status_code == 409 and "is pinned" in again.json["error"]
    deployed = api("POST", "/api/v1/environments/production-green/deploy", {"versions": {"site": "v3"}})
    assert deployed.status_code == 202, deployed.json
    work()
    # A rollback switched live does not unpin: rolling back again pins again, and only a release unpins.
    roll_back(api, work)
    assert pins(db_session) == dict.fromkeys(COLOURS, "token:release-manager")


def test_the_environment_page_shows_the_pin_and_unpins_it(api, app, work, db_session):  # noqa: F811
    release(api, work, "v1")
    release(api, work, "v2")
    rolled = roll_back(api, work)
    writer = create_token(db_session, "writer-page", Scopes(services=("*",), environments=("*",),
                                                            actions=("read", "deploy")))
    db_session.commit()
    client = app.test_client()
    assert "Unpin production" not in client.get("/environments/production").get_data(as_text=True)  # anonymous
    sign_in_with_token(client, writer)
    page = client.get("/environments/production").get_data(as_text=True)
    assert "📌 Pinned</span> by token:release-manager · " in page
    assert f"after rollback {rolled['id']} of production from green to blue" in page
    assert "sami env unpin production" in page and "Unpin production</button>" in page
    token = csrf(client, "/environments/production")
    asked = client.post("/environments/production/unpin", data={"csrf_token": token})
    assert asked.status_code == 200 and "Unpin production?" in asked.get_data(as_text=True)
    assert pins(db_session) == dict.fromkeys(COLOURS, "token:release-manager")  # asked first, nothing done
    done = client.post("/environments/production/unpin", data={"csrf_token": token, "confirmed": "yes"},
                       follow_redirects=True).get_data(as_text=True)
    assert "site-production-blue, site-production-green unpinned" in done and 'id="pinned"' not in done
    assert pins(db_session) == dict.fromkeys(COLOURS)
    again = client.post("/environments/production/unpin", data={"csrf_token": token, "confirmed": "yes"},
                        follow_redirects=True).get_data(as_text=True)
    assert "no component of environment &#39;production&#39; is pinned" in again


def database(db_session) -> dict[str, list[tuple]]:
    """Every row of every table, in order: what a read must leave as it found it."""
    db_session.expire_all()
    tables = MetaData()
    tables.reflect(bind=db_session.get_bind())
    return {name: sorted(map(tuple, db_session.execute(table.select()).all()), key=repr)
            for name, table in sorted(tables.tables.items())}


def test_reading_a_releases_status_writes_nothing(api, app, work, db_session):  # noqa: F811
    prepared = api("POST", "/api/v1/environments/production/release", {"versions": {"site": "v1"}}, token="ci")
    assert prepared.status_code == 202, prepared.json
    work()
    # The release's run has succeeded, but nothing has recorded it yet (a run ended by the reaper or a cancel
    # is advanced by the scheduler's step): the reads show what it becomes and leave the row as it is.
    db_session.execute(update(Release).where(Release.id == prepared.json["id"]).values(state="deploying"))
    db_session.commit()
    assert api("GET", "/api/v1/environments/production/releases", token="ci").status_code == 200  # token's last use
    page = app.test_client()
    before = database(db_session)
    shown = api("GET", "/api/v1/environments/production/releases", token="ci").json
    assert shown["awaiting_release"] is True and shown["pending"]["state"] == "awaiting"
    assert shown["releases"][0]["state"] == "awaiting"
    one = api("GET", f"/api/v1/environments/production/releases/{prepared.json['id']}", token="ci").json
    assert one["state"] == "awaiting"
    html = page.get("/environments/production").get_data(as_text=True)
    assert "Awaiting release: blue" in html
    assert database(db_session) == before
    db_session.expire_all()
    assert db_session.get(Release, prepared.json["id"]).state == "deploying"
    # The switch (a write) records it, and goes on.
    switched = api("POST", "/api/v1/environments/production/release/switch")
    assert switched.status_code == 202, switched.json
    work()
    db_session.expire_all()
    assert db_session.get(Release, prepared.json["id"]).state == "live"
