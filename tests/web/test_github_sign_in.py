"""Sign in with GitHub: the OAuth code exchange against a recording fake (GitHub's OAuth endpoints
cannot run here; FakeGitHub records what Sami sent), the user and permission lookups through Prism
serving GitHub's API description."""

from __future__ import annotations

import dataclasses
import re
import threading
import urllib.parse

import pytest

from bot.core.models import Deployment
from bot.web import auth
from tests.support.github_mock import FakeGitHub, Reply
from tests.web.conftest import csrf

OAUTH_CANARY = "gho_canaryOAuthToken0123456789abcdefghij"


@pytest.fixture
def oauth_fake():
    with FakeGitHub() as fake:
        fake.on("POST", "/login/oauth/access_token", Reply(200, {"access_token": OAUTH_CANARY, "token_type": "bearer",
                                                                 "scope": ""}))
        yield fake


@pytest.fixture
def test_config(test_config, oauth_fake, github_mock):
    return {**test_config, "github_web_url": oauth_fake.url, "github_api_url": github_mock.url,
            "github_token": "ghp_samiOwnToken0123456789abcdefghijklmn",
            "github_oauth_client_id": "Iv1.clientid", "github_oauth_client_secret": "client-secret-canary"}


def sign_in_with_github(client):
    start = client.get("/login/github?next=/services")
    assert start.status_code == 302
    target = urllib.parse.urlsplit(start.location)
    query = dict(urllib.parse.parse_qsl(target.query))
    assert target.path == "/login/oauth/authorize" and query["client_id"] == "Iv1.clientid"
    assert query["redirect_uri"].endswith("/login/github/callback")
    return client.get(f"/login/github/callback?code=the-code&state={query['state']}"), query


def test_sign_in_exchanges_the_code_and_keeps_no_github_token(client, oauth_fake, github_mock):
    done, query = sign_in_with_github(client)
    assert done.status_code == 302 and done.location == "/services"
    (exchange,) = oauth_fake.calls("POST", "/login/oauth/access_token")
    assert exchange.body == {"client_id": "Iv1.clientid", "client_secret": "client-secret-canary",
                             "code": "the-code", "redirect_uri": query["redirect_uri"]}
    html = client.get("/").get_data(as_text=True)
    assert "Signed in as <strong>octocat</strong>" in html  # Prism's example user
    cookie = client.get_cookie("sami_session").value
    assert OAUTH_CANARY not in cookie and "gho_" not in cookie


def test_the_sign_in_waits_for_github_as_long_as_sami_github_timeout_says(app, client, oauth_fake):
    answered = threading.Event()
    oauth_fake.on("POST", "/login/oauth/access_token", Reply(200, {"access_token": OAUTH_CANARY},
                                                                held_until=answered))
    _with(app, github_timeout=1)
    try:
        done, _ = sign_in_with_github(client)
    finally:
        answered.set()
    assert done.status_code == 502
    assert "could not reach GitHub to finish the sign-in (ReadTimeout)" in done.get_data(as_text=True)


def test_a_foreign_state_is_refused(client):
    client.get("/login/github")
    assert client.get("/login/github/callback?code=x&state=not-ours").status_code == 400
    client.get("/login/github")
    assert client.get("/login/github/callback?code=x&state=%C3%BCber").status_code == 400


def test_github_user_with_write_permission_may_change(client, db_session, github_mock):
    db_session.add(Deployment(name="probe-stage", service="probe", environment="stage", type="swarm",
                              state="Running", source_repo="octocat/Hello-World"))
    db_session.commit()
    sign_in_with_github(client)
    # The manifest's repository decides (acme/probe); Prism answers GitHub's example (admin): the buttons show.
    html = client.get("/deployments/probe-stage").get_data(as_text=True)
    assert ">Archive…<" in html
    assert re.search(r"get /repos/acme/probe/collaborators/octocat/permission", github_mock.log())


def test_github_user_without_permission_may_not(client, db_session, app, github_mock):
    db_session.add(Deployment(name="probe-stage", service="probe", environment="stage", type="swarm",
                              state="Running", source_repo="acme/private"))
    db_session.commit()
    with FakeGitHub() as no_access:  # what Prism's fixed examples cannot say: not a collaborator (404)
        no_access.on("GET", "/repos/acme/probe/collaborators/octocat/permission",
                     Reply(404, {"message": "Not Found"}))
        sign_in_with_github(client)
        app.config["SAMI"] = app.config["SAMI"].__class__(**{**app.config["SAMI"].__dict__,
                                                              "github_api_url": no_access.url})
        auth.init_app(app)  # a client for the GitHub just set
        html = client.get("/deployments/probe-stage").get_data(as_text=True)
        assert ">Archive…<" not in html
        refused = client.post("/deployments/probe-stage/archive", data={"csrf_token": csrf(client, "/")})
        assert refused.status_code == 403
        assert no_access.calls("GET", "/repos/acme/probe/collaborators/octocat/permission")


def _with(app, **changes):
    app.config["SAMI"] = dataclasses.replace(app.config["SAMI"], **changes)


def test_members_of_the_admin_team_are_admins(app, client, github_mock):
    _with(app, admin_team="acme/platform")
    _, query = sign_in_with_github(client)
    assert query["scope"] == "read:org"
    # Prism answers GitHub's example membership (active): octocat is an admin of the page
    assert "(admin)" in client.get("/").get_data(as_text=True)
    assert re.search(r"get /orgs/acme/teams/platform/memberships/octocat", github_mock.log())


def test_others_are_not_admins(app, client, oauth_fake):
    with FakeGitHub() as api:  # Prism's examples cannot say "not a member" (404)
        api.on("GET", "/user", Reply(200, {"login": "mona", "id": 2}))
        api.on("GET", "/orgs/acme/teams/platform/memberships/mona", Reply(404, {"message": "Not Found"}))
        _with(app, admin_team="acme/platform", github_api_url=api.url)
        sign_in_with_github(client)
        html = client.get("/").get_data(as_text=True)
        assert "Signed in as <strong>mona</strong>" in html and "(admin)" not in html
        (lookup,) = api.calls("GET", "/orgs/acme/teams/platform/memberships/mona")
        assert lookup.authorization.endswith(OAUTH_CANARY)  # asked with the person's token, not Sami's
