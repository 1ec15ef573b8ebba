"""`/sami release ENVIRONMENT` in a pull request comment, end to end: GitHub's example issue_comment payload,
signed and posted to the webhook, processed by an RQ worker. A writer of the repository who is not among
the environment's release_approvers is refused with the reason and nothing switches; an approver's
comment switches the entry, and the sticky comment says who released what."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from bot.core.models import Delivery, Release
from bot.services import releases
from tests.github.conftest import token_client
from tests.github.test_conversation import NUMBER, REPOSITORY, comment_payload, send_outbox
from tests.github.webhook_fixtures import post
from tests.pipeline import conftest as pipeline
from tests.pipeline.test_releases_static_file import release_repo  # noqa: F401  (fixture)
from tests.support.github_mock import FakeGitHub, Reply

settings, worker_ctx, services_ctx, work = pipeline.settings, pipeline.worker_ctx, pipeline.services_ctx, pipeline.work
COMMENT_ID = 492700400  # GitHub's example comment


@pytest.fixture
def test_config(test_config, release_repo, tmp_path):  # noqa: F811
    path = release_repo / "services/site/static_file/production/sami.yaml"
    manifest = {**yaml.safe_load(path.read_text()), "repository": REPOSITORY}
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    # Another blue-green environment, of another repository's application.
    other = release_repo / "services/other/static_file/elsewhere"
    shutil.copytree(path.parent / "site", other / "site")
    (other / "sami.yaml").write_text(yaml.safe_dump({**manifest, "service_name": "other", "repository": "acme/other"},
                                                    sort_keys=False))
    (release_repo / "environments/elsewhere.yaml").write_text(yaml.safe_dump(
        {"version": "v1beta", "components": ["other"], "blue_green": {"entry": "other"}}))
    return {**test_config, "deployments_repo": str(release_repo), "static_root": str(tmp_path / "sites"),
            "base_domain": "example.test", "public_url": "https://sami.example.test"}


class Writers(FakeGitHub):
    """GitHub answering that Mallory and alice may write to the repository, and taking Sami's answers."""

    def __init__(self):
        super().__init__()
        for login in ("Mallory", "alice"):
            self.on("GET", f"/repos/{REPOSITORY}/collaborators/{login}/permission",
                    Reply(200, {"permission": "write", "role_name": "write", "user": {"login": login}}))
        self.on("POST", f"/repos/{REPOSITORY}/issues/{NUMBER}/comments", Reply(201, {"id": 900, "body": ""}))
        self.on("PATCH", f"/repos/{REPOSITORY}/issues/comments/900", Reply(200, {"id": 900, "body": ""}))
        for content in ("eyes", "confused", "rocket"):
            self.on("POST", f"/repos/{REPOSITORY}/issues/comments/{COMMENT_ID}/reactions",
                    Reply(201, {"id": 1, "content": content}))


def outcome(db_session, delivery: str) -> str:
    db_session.expire_all()
    return db_session.scalars(select(Delivery.outcome).where(Delivery.delivery_id == delivery)).one()


def test_only_a_release_approver_releases_from_a_comment_of_the_environments_repository(
        client, db_session, worker_ctx, services_ctx, work, settings):
    repo = worker_ctx.manifests.current()
    prepared = releases.prepare(db_session, repo, "production", services_ctx, versions={"site": "v1"},
                                requested_by="token:ci", origin="api")
    work()
    with Writers() as fake:
        worker_ctx.github = token_client(fake.url)
        assert post(client, "issue_comment", comment_payload("/sami release production", login="Mallory"),
                    delivery="r-1").status_code == 202
        work()
        said = outcome(db_session, "r-1")
        assert said.startswith("refused /sami release production: github:Mallory may not release 'production'")
        assert "only token:release-manager, alice may" in said
        db_session.expire_all()
        assert db_session.get(Release, prepared.id).state == "awaiting"  # not switched
        send_outbox(db_session, worker_ctx, work)
        replies = [r.body["body"] for r in fake.calls("POST", f"/repos/{REPOSITORY}/issues/{NUMBER}/comments")]
        assert any("github:Mallory may not release 'production'" in body for body in replies), replies

        assert post(client, "issue_comment", comment_payload("/sami release production", login="alice"),
                    delivery="r-2").status_code == 202
        work()
        assert outcome(db_session, "r-2") == f"release {prepared.id} of production switching to blue"
        work()  # the switch
        db_session.expire_all()
        done = db_session.get(Release, prepared.id)
        assert (done.state, done.switched_by, done.source_repo, done.pull_request) == (
            "live", "github:alice", REPOSITORY, NUMBER)
        assert (Path(settings.static_root) / "site-production" / "current" / "index.html").is_file()
        send_outbox(db_session, worker_ctx, work)
        bodies = [r.body["body"] for r in fake.calls("POST", f"/repos/{REPOSITORY}/issues/{NUMBER}/comments")]
        bodies += [r.body["body"] for r in fake.calls("PATCH", f"/repos/{REPOSITORY}/issues/comments/900")]
        assert any(f"release {prepared.id} of production: nothing → blue, live, by github:alice" in body
                   for body in bodies), bodies

        post(client, "issue_comment", comment_payload("/sami release elsewhere", login="alice"), delivery="r-3")
        work()
        assert outcome(db_session, "r-3") == ("refused /sami release elsewhere: environment 'elsewhere' does not "
                                              f"belong to {REPOSITORY} (none of its components' manifests names it)")



def test_a_member_of_an_approving_team_releases_from_a_comment_and_a_github_error_refuses(
        client, db_session, worker_ctx, services_ctx, work, release_repo):  # noqa: F811
    env = release_repo / "environments/production.yaml"
    data = yaml.safe_load(env.read_text())
    data["blue_green"]["release_approvers"] = ["token:release-manager", "team:acme/release-managers"]
    env.write_text(yaml.safe_dump(data))
    repo = worker_ctx.manifests.current(refresh=True)
    prepared = releases.prepare(db_session, repo, "production", services_ctx, versions={"site": "v1"},
                                requested_by="token:ci", origin="api")
    work()
    with Writers() as fake:
        worker_ctx.github = token_client(fake.url)
        fake.on("GET", "/orgs/acme/teams/release-managers/memberships/Mallory", Reply(502, {"message": "Bad Gateway"}))
        fake.on("GET", "/orgs/acme/teams/release-managers/memberships/alice",
                Reply(200, {"state": "active", "role": "member", "url": "https://api.github.com/x"}))
        post(client, "issue_comment", comment_payload("/sami release production", login="Mallory"), delivery="t-1")
        work()
        said = outcome(db_session, "t-1")
        assert said.startswith("refused /sami release production: github:Mallory may not release 'production': Sami "
                               "could not learn from GitHub whether they are a member of the teams that may "
                               "(team:acme/release-managers: GitHub answered 502"), said
        assert said.endswith("only token:release-manager, team:acme/release-managers (its members on GitHub) may "
                             "(release_approvers in its environment file)"), said
        db_session.expire_all()
        assert db_session.get(Release, prepared.id).state == "awaiting"

        post(client, "issue_comment", comment_payload("/sami release production", login="alice"), delivery="t-2")
        work()
        assert outcome(db_session, "t-2") == f"release {prepared.id} of production switching to blue"
        assert fake.calls("GET", "/orgs/acme/teams/release-managers/memberships/alice")
