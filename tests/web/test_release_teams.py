"""release_approvers naming a GitHub team (team:ORG/SLUG), on the status page: a person signed in with GitHub
releases when GitHub's API says they are an active member (Prism serving GitHub's description answers its
example membership, active), and is refused, told who may, teams included, when GitHub says they are not
(404), that the membership is pending, or answers with an error (a recording fake says what Prism's fixed
examples cannot). An error never lets anyone through."""

from __future__ import annotations

import re

import pytest
import yaml

from bot.core.errors import NotAllowed
from bot.core.models import Release
from bot.services import releases
from bot.web import auth
from tests.github.conftest import token_client
from tests.pipeline.test_releases_static_file import write_release_repo
from tests.support.github_mock import FakeGitHub, Reply
from tests.web.conftest import csrf
from tests.web.test_github_sign_in import oauth_fake, sign_in_with_github  # noqa: F401  (fixture)

TEAM = "team:acme/release-managers"
WHO = {"requested_by": "token:ci", "origin": "api"}
MEMBERSHIP = "/orgs/acme/teams/release-managers/memberships/octocat"


@pytest.fixture
def test_config(test_config, oauth_fake, github_mock, tmp_path):  # noqa: F811
    repo = write_release_repo(tmp_path / "release-deployments")
    manifest = repo / "services/site/static_file/production/sami.yaml"
    manifest.write_text(yaml.safe_dump({**yaml.safe_load(manifest.read_text()), "repository": "acme/site"}))
    env = repo / "environments/production.yaml"
    data = yaml.safe_load(env.read_text())
    data["blue_green"]["release_approvers"] = ["token:release-manager", TEAM]
    env.write_text(yaml.safe_dump(data))
    return {**test_config, "deployments_repo": str(repo), "github_web_url": oauth_fake.url,
            "github_api_url": github_mock.url, "github_token": "ghp_samiOwnToken0123456789abcdefghijklmn",
            "github_oauth_client_id": "Iv1.clientid", "github_oauth_client_secret": "client-secret-canary"}


def released(db_session, worker_ctx, services_ctx, work, tag: str) -> Release:
    prepared = releases.prepare(db_session, worker_ctx.manifests.current(), "production", services_ctx,
                                versions={"site": tag}, **WHO)
    work()
    return prepared


def ask(client, kind: str) -> str:
    return client.post(f"/environments/production/{kind}", data={"csrf_token": csrf(client, "/environments/production"),
                                                                  "confirmed": "yes"},
                       follow_redirects=True).get_data(as_text=True)


def test_a_member_of_an_approving_team_releases_from_the_page(client, db_session, worker_ctx, services_ctx, work,
                                                              github_mock):
    prepared = released(db_session, worker_ctx, services_ctx, work, "v1")
    sign_in_with_github(client)  # octocat, Prism's example user; its example permission is admin
    page = client.get("/environments/production").get_data(as_text=True)
    assert "Release blue</button>" in page and "not-approver" not in page
    assert re.search(r"get /orgs/acme/teams/release-managers/memberships/octocat", github_mock.log())
    said = ask(client, "release")
    assert f"release {prepared.id} accepted" in said, said
    work()
    db_session.expire_all()
    done = db_session.get(Release, prepared.id)
    assert (done.state, done.switched_by) == ("live", "github:octocat")


@pytest.mark.parametrize(("reply", "words"), [
    (Reply(404, {"message": "Not Found"}), "github:octocat may not release 'production': only token:release-manager, "
                                           f"{TEAM} (its members on GitHub) may"),
    (Reply(200, {"state": "pending", "role": "member", "url": "https://api.github.com/x"}),
     f"only token:release-manager, {TEAM} (its members on GitHub) may"),
    (Reply(502, {"message": "Server Error"}), "github:octocat may not release &#39;production&#39;: Sami could not "
                                              f"learn from GitHub whether they are a member of the teams that may "
                                              f"({TEAM}: GitHub answered 502"),
    (Reply(403, {"message": "Resource not accessible by integration"}), f"({TEAM}: GitHub answered 403: "),
])
def test_no_membership_or_a_github_error_refuses(app, client, db_session, worker_ctx, services_ctx, work, reply,
                                                 words):
    prepared = released(db_session, worker_ctx, services_ctx, work, "v1")
    with FakeGitHub() as fake:
        fake.on("GET", "/repos/acme/site/collaborators/octocat/permission",
                Reply(200, {"permission": "write", "role_name": "write", "user": {"login": "octocat"}}))
        fake.on("GET", MEMBERSHIP, reply)
        sign_in_with_github(client)
        auth.init_app(app, client=token_client(fake.url))
        page = client.get("/environments/production").get_data(as_text=True)
        assert f"Only token:release-manager, {TEAM} may release or roll back production." in page
        said = ask(client, "release")
        assert words.replace("'", "&#39;") in said, said
        assert fake.calls("GET", MEMBERSHIP)
    db_session.expire_all()
    assert db_session.get(Release, prepared.id).state == "awaiting"  # nothing switched
    assert releases.live(db_session, "production") is None


def test_the_service_refuses_without_a_way_to_ask_github(db_session, worker_ctx, services_ctx, work):
    released(db_session, worker_ctx, services_ctx, work, "v1")
    repo = worker_ctx.manifests.current()
    with pytest.raises(NotAllowed, match=r"could not learn from GitHub .*GitHub is not asked here"):
        releases.switch(db_session, repo, "production", services_ctx, requested_by="github:octocat", origin="page")
    # Teams hold people, not API tokens: a token is matched by token:NAME only, and GitHub is not asked.
    with pytest.raises(NotAllowed, match=f"only token:release-manager, {TEAM} \\(its members on GitHub\\)"):
        releases.switch(db_session, repo, "production", services_ctx, requested_by="token:release-managers",
                        origin="api", teams=lambda *_: pytest.fail("GitHub asked about a token"))
    done = releases.switch(db_session, repo, "production", services_ctx, requested_by="token:release-manager",
                           origin="api", teams=lambda *_: pytest.fail("GitHub asked about a token"))
    assert done.state == "switching"
