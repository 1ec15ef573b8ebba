"""The GitHub client against GitHub's own API description (Prism) and a recording fake GitHub."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from bot.core.config import ConfigError, settings_from_mapping
from bot.github.client import GitHubClient, GitHubError, RateLimited, RepositoryHook
from tests.github.conftest import APP_ID, CANARY_TOKEN, app_client, token_client
from tests.support.github_mock import Reply
from tests.support.servers import free_port

PULLS = "/repos/acme/web/pulls"


def pr(number: int, state: str = "open") -> dict:
    return {"number": number, "state": state, "head": {"sha": f"{number:040d}"}}


# -- against GitHub's API description ------------------------------------------------------------


def test_token_client_reads_pull_requests_the_way_the_description_says(github_mock):
    client = token_client(github_mock.url)
    pulls = client.list_open_pull_requests("octocat/Hello-World")
    assert [p["number"] for p in pulls] == [1347]
    assert client.get_pull_request("octocat/Hello-World", 1347)["number"] == 1347
    assert client.get_repository("octocat/Hello-World")["full_name"] == "octocat/Hello-World"
    assert client.authenticated_user()["login"] == "octocat"


def test_app_client_finds_the_installation_and_gets_a_token(github_mock, app_key):
    client = app_client(github_mock.url, app_key)
    assert client.app()["id"] == 1
    assert client.installation_id("octocat/Hello-World") == 1
    assert [p["number"] for p in client.list_open_pull_requests("octocat/Hello-World")] == [1347]
    assert "POST /app/installations/1/access_tokens" in github_mock.log().replace("     ", " ").replace(
        "[HTTP SERVER] post", "POST")


def test_hook_deliveries_are_listed_and_redelivered_as_described(github_mock, app_key):
    client = app_client(github_mock.url, app_key)
    deliveries = client.list_hook_deliveries()
    assert [d["guid"] for d in deliveries] == ["0b989ba4-242f-11e5-81e1-c7b6966d2516"] * 2
    client.redeliver(12345678)
    hook = RepositoryHook("octocat/Hello-World", 12345678)
    token = token_client(github_mock.url)
    assert token.list_hook_deliveries(hook=hook)[0]["id"] == 12345678
    token.redeliver(12345678, hook=hook)
    assert token.repository_hooks("octocat/Hello-World")[0]["config"]["url"]


def test_a_request_that_breaks_the_description_is_an_error(prism_server):
    offset = len(prism_server.log())
    client = token_client(prism_server.url)
    with pytest.raises(GitHubError) as caught:
        client._call("GET", "/repos/acme/web/pulls?state=bogus")
    assert caught.value.status == 422
    assert "does not match GitHub's API description" in caught.value.message
    assert "state must be equal to one of the allowed values" in caught.value.message
    # ... and the github_mock fixture would fail a test whose code swallowed that error.
    assert prism_server.request_violations(offset)


# -- pages, errors and rate limits (the recording fake) ------------------------------------------


def test_every_page_is_read_and_a_pull_request_counts_once(token_fake):
    token_fake.on("GET", PULLS, Reply(200, [pr(3), pr(2)], {"Link": '<{url}/repos/acme/web/pulls?page=2>; rel="next"'}))
    token_fake.on("GET", PULLS + "?page=2", Reply(200, [pr(2), pr(1)]))
    client = token_client(token_fake.url)
    assert [p["number"] for p in client.list_open_pull_requests("acme/web")] == [3, 2, 1]
    first = token_fake.calls("GET", PULLS)[0]
    assert first.query == {"state": "open", "per_page": "100"}
    assert first.headers["accept"] == "application/json"
    assert first.headers["x-github-api-version"] == "2022-11-28"
    assert first.headers["user-agent"].startswith("Sami/")


def test_an_error_on_page_two_is_never_a_shorter_list(token_fake):
    token_fake.on("GET", PULLS, Reply(200, [pr(3)], {"Link": '<{url}/repos/acme/web/pulls?page=2>; rel="next"'}))
    token_fake.on("GET", PULLS + "?page=2", Reply(500, {"message": "Server Error"}))
    client = token_client(token_fake.url)
    with pytest.raises(GitHubError) as caught:
        client.list_open_pull_requests("acme/web")
    assert caught.value.status == 500
    assert str(caught.value) == "GET /repos/acme/web/pulls: GitHub answered 500: Server Error"


def test_a_next_page_elsewhere_is_not_followed(token_fake):
    token_fake.on("GET", PULLS, Reply(200, [pr(3)], {"Link": '<https://evil.example/steal?page=2>; rel="next"'}))
    with pytest.raises(GitHubError, match="points away"):
        token_client(token_fake.url).list_open_pull_requests("acme/web")


def test_a_used_up_primary_rate_limit_raises_rate_limited_with_its_reset(token_fake):
    reset = int(time.time()) + 120
    token_fake.on("GET", PULLS, Reply(403, {"message": "API rate limit exceeded for installation ID 1."},
                                      {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)}))
    client = token_client(token_fake.url)
    with pytest.raises(RateLimited) as caught:
        client.list_open_pull_requests("acme/web")
    assert caught.value.status == 403
    assert 100 <= caught.value.retry_after <= 121
    # GitHub asks clients not to keep calling until the reset: the next call is not even sent.
    with pytest.raises(RateLimited, match="not sent"):
        client.get_pull_request("acme/web", 3)
    assert len(token_fake.requests) == 1


def test_the_last_request_of_the_hour_succeeds_and_the_next_one_waits(token_fake):
    token_fake.on("GET", PULLS + "/3", Reply(200, pr(3), {"X-RateLimit-Remaining": "0",
                                                          "X-RateLimit-Reset": str(int(time.time()) + 60)}))
    client = token_client(token_fake.url)
    assert client.get_pull_request("acme/web", 3)["number"] == 3
    with pytest.raises(RateLimited):
        client.get_pull_request("acme/web", 3)
    assert len(token_fake.requests) == 1


@pytest.mark.parametrize("status", [403, 429])
def test_a_secondary_rate_limit_raises_rate_limited_with_retry_after(token_fake, status):
    token_fake.on("GET", PULLS, Reply(status, {"message": "You have exceeded a secondary rate limit."},
                                      {"Retry-After": "30"}))
    client = token_client(token_fake.url)
    with pytest.raises(RateLimited) as caught:
        client.list_open_pull_requests("acme/web")
    assert caught.value.retry_after == 30
    assert caught.value.status == status
    with pytest.raises(RateLimited, match="not sent"):
        client.get_pull_request("acme/web", 3)
    assert len(token_fake.requests) == 1


def test_a_secondary_rate_limit_without_retry_after_waits_a_minute(token_fake):
    token_fake.on("GET", PULLS, Reply(403, {"message": "You have exceeded a secondary rate limit. Please wait a "
                                                       "few minutes before you try again."}))
    with pytest.raises(RateLimited) as caught:
        token_client(token_fake.url).list_open_pull_requests("acme/web")
    assert caught.value.retry_after == 60


def test_a_forbidden_answer_that_is_no_rate_limit_is_a_plain_error(token_fake):
    token_fake.on("GET", PULLS, Reply(403, {"message": "Resource not accessible by integration"},
                                      {"X-RateLimit-Remaining": "4000"}))
    with pytest.raises(GitHubError) as caught:
        token_client(token_fake.url).list_open_pull_requests("acme/web")
    assert type(caught.value) is GitHubError
    assert caught.value.status == 403


def test_unchanged_pages_come_from_the_cache_on_a_304(token_fake):
    token_fake.on("GET", PULLS, Reply(200, [pr(3)], {"ETag": '"page-1"', "Link": '<{url}/repos/acme/web/pulls?page=2>; '
                                                                                  'rel="next"'}),
                  Reply(304, None, {"ETag": '"page-1"'}))
    token_fake.on("GET", PULLS + "?page=2", Reply(200, [pr(1)], {"ETag": '"page-2"'}),
                  Reply(200, [pr(1), pr(2, "open")], {"ETag": '"page-2b"'}))
    client = token_client(token_fake.url)
    assert [p["number"] for p in client.list_open_pull_requests("acme/web")] == [3, 1]
    # Page 1 unchanged (304: not counted against the rate limit), page 2 changed.
    assert [p["number"] for p in client.list_open_pull_requests("acme/web")] == [3, 1, 2]
    pages = {page: [r.headers.get("if-none-match") for r in token_fake.requests if r.query.get("page") == page]
             for page in (None, "2")}
    assert pages == {None: [None, '"page-1"'], "2": [None, '"page-2"']}


def test_a_repository_name_cannot_reach_another_path(token_fake):
    client = token_client(token_fake.url)
    for name in ("acme/../app", "acme", "acme/web/pulls", "../x/y", "acme/web?x=1"):
        with pytest.raises(ValueError, match="not a repository name"):
            client.list_open_pull_requests(name)
    assert token_fake.requests == []


def test_github_out_of_reach_is_an_error_with_status_0():
    client = token_client(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(GitHubError) as caught:
        client.get_pull_request("acme/web", 1)
    assert caught.value.status == 0
    assert "could not reach GitHub" in caught.value.message


# -- App authentication --------------------------------------------------------------------------


def app_routes(fake, installation: int = 7) -> None:
    fake.on("GET", "/repos/acme/web/installation", Reply(200, {"id": installation}))
    fake.on("POST", f"/app/installations/{installation}/access_tokens", Reply(201, "issue-token"))
    fake.on("GET", PULLS, Reply(200, [pr(3)]))
    fake.on("GET", PULLS + "/3", Reply(200, pr(3)))


def test_an_app_looks_up_the_installation_once_and_reuses_its_token(fake_github, app_key):
    app_routes(fake_github)
    client = app_client(fake_github.url, app_key)
    for _ in range(3):
        assert client.list_open_pull_requests("acme/web")[0]["number"] == 3
        client.get_pull_request("acme/web", 3)
    assert len(fake_github.calls("GET", "/repos/acme/web/installation")) == 1
    assert len(fake_github.calls("POST", "/app/installations/7/access_tokens")) == 1
    lookup = fake_github.calls("GET", "/repos/acme/web/installation")[0]
    assert lookup.authorization.startswith("Bearer ey")  # the App's JWT, verified by the fake
    token = next(iter(fake_github.tokens))
    assert {r.authorization for r in fake_github.calls("GET")[1:]} == {f"token {token}"}


def test_a_token_about_to_expire_is_replaced_before_it_is_used(fake_github, app_key):
    app_routes(fake_github)
    fake_github.token_lifetime = 4 * 60  # inside the 5-minute margin
    client = app_client(fake_github.url, app_key)
    client.get_pull_request("acme/web", 3)
    client.get_pull_request("acme/web", 3)
    assert len(fake_github.calls("POST", "/app/installations/7/access_tokens")) == 2


def test_a_token_github_no_longer_takes_is_replaced_once(fake_github, app_key):
    app_routes(fake_github)
    client = app_client(fake_github.url, app_key)
    client.get_pull_request("acme/web", 3)
    fake_github.expired.update(fake_github.tokens)  # revoked, or GitHub's clock is ahead of ours
    assert client.get_pull_request("acme/web", 3)["number"] == 3
    assert len(fake_github.calls("POST", "/app/installations/7/access_tokens")) == 2
    statuses = [r.path for r in fake_github.calls("GET", PULLS + "/3")]
    assert len(statuses) == 3  # ok, refused, ok with the new token


def test_threads_share_one_installation_token(fake_github, app_key):
    app_routes(fake_github)
    client = app_client(fake_github.url, app_key)
    errors = []

    def read():
        try:
            client.get_pull_request("acme/web", 3)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(fake_github.calls("POST", "/app/installations/7/access_tokens")) == 1


def test_a_repository_without_the_app_is_a_404(fake_github, app_key):
    with pytest.raises(GitHubError) as caught:
        app_client(fake_github.url, app_key).get_pull_request("acme/other", 1)
    assert caught.value.status == 404
    assert "/repos/acme/other/installation" in caught.value.message


def test_a_wrong_app_key_is_refused_by_github(fake_github):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    with pytest.raises(GitHubError) as caught:
        GitHubClient(fake_github.url, app_id=APP_ID, private_key=other).app()
    assert caught.value.status == 401
    assert "JSON web token could not be decoded" in str(caught.value)


# -- secrets stay secret -------------------------------------------------------------------------


def test_tokens_and_jwts_stay_out_of_logs_errors_and_reprs(fake_github, token_fake, app_key, caplog):
    caplog.set_level(logging.DEBUG)
    for name in ("github", "github.Requester", "urllib3"):
        caplog.set_level(logging.DEBUG, logger=name)
    failures: list[BaseException] = []
    # Token: refused, a server error, out of reach.
    token_fake.on("GET", PULLS, Reply(401, {"message": "Bad credentials"}))
    token_fake.on("GET", PULLS + "/1", Reply(500, {"message": "Server Error"}))
    token = token_client(token_fake.url)
    for call in (lambda: token.list_open_pull_requests("acme/web"), lambda: token.get_pull_request("acme/web", 1),
                 lambda: token_client(f"http://127.0.0.1:{free_port()}").get_pull_request("acme/web", 1)):
        with pytest.raises(GitHubError) as caught:
            call()
        failures.append(caught.value)
    # App: a token issued and used, then a failure.
    app_routes(fake_github)
    fake_github.on("GET", PULLS + "/9", Reply(502, {"message": "Bad Gateway"}))
    app = app_client(fake_github.url, app_key)
    app.get_pull_request("acme/web", 3)
    with pytest.raises(GitHubError) as caught:
        app.get_pull_request("acme/web", 9)
    failures.append(caught.value)
    jwts = {r.authorization.split(" ", 1)[1] for r in fake_github.requests if r.authorization.startswith("Bearer")}
    secrets = {CANARY_TOKEN, *fake_github.tokens, *jwts, app_key[0].splitlines()[1]}
    assert len(secrets) >= 4
    texts = [caplog.text, repr(token), repr(app), *(str(f) for f in failures), *(repr(f) for f in failures)]
    for secret in secrets:
        for text in texts:
            assert secret not in text


# -- settings ------------------------------------------------------------------------------------


def test_no_credentials_no_client_and_an_app_wins_over_a_token(app_key, tmp_path):
    assert GitHubClient.from_settings(settings_from_mapping({"instance_dir": str(tmp_path)})) is None
    token = GitHubClient.from_settings(settings_from_mapping({"github_token": CANARY_TOKEN,
                                                              "instance_dir": str(tmp_path)}))
    assert token.mode == "token" and token.base_url == "https://api.github.com"
    app = GitHubClient.from_settings(settings_from_mapping({
        "github_token": CANARY_TOKEN, "github_app_id": str(APP_ID), "github_app_private_key": app_key[0],
        "github_api_url": "https://github.example.com/api/v3/", "instance_dir": str(tmp_path)}))
    assert app.mode == "app" and app.base_url == "https://github.example.com/api/v3"
    assert repr(app) == "<GitHubClient https://github.example.com/api/v3 (App 4242)>"


def test_the_client_waits_for_an_answer_as_long_as_sami_github_timeout_says(token_fake, tmp_path):
    answered = threading.Event()
    token_fake.on("GET", "/repos/acme/web", Reply(200, {"full_name": "acme/web"}, held_until=answered))
    client = GitHubClient.from_settings(settings_from_mapping({
        "github_token": CANARY_TOKEN, "github_api_url": token_fake.url, "github_timeout": 1,
        "instance_dir": str(tmp_path)}))
    try:
        with pytest.raises(GitHubError) as caught:
            client.get_repository("acme/web")
    finally:
        answered.set()
    assert caught.value.status == 0 and "could not reach GitHub" in caught.value.message
    assert len(token_fake.calls("GET", "/repos/acme/web")) == 1  # it reached GitHub; no answer came in time


@pytest.mark.parametrize(("config", "variable"), [
    ({"github_app_id": "12"}, "SAMI_GITHUB_APP_PRIVATE_KEY"),
    ({"github_app_private_key": "KEY"}, "SAMI_GITHUB_APP_ID"),
    ({"github_app_id": "12", "github_app_private_key": "BROKEN"}, "SAMI_GITHUB_APP_PRIVATE_KEY"),
])
def test_half_an_app_or_a_broken_key_names_the_variable(app_key, config, variable, tmp_path):
    if "KEY" in config.get("github_app_private_key", ""):
        config = {**config, "github_app_private_key": app_key[0]}
    if config.get("github_app_private_key") == "BROKEN":
        config = {**config, "github_app_private_key": "-----BEGIN RSA PRIVATE KEY-----\nnope\n"
                                                      "-----END RSA PRIVATE KEY-----\n"}
    with pytest.raises(ConfigError) as caught:
        GitHubClient.from_settings(settings_from_mapping({**config, "instance_dir": str(tmp_path)}))
    assert caught.value.variable == variable
    assert "nope" not in str(caught.value)
