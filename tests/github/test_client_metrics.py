"""GitHub calls and the rate limit GitHub reports reach Sami's metrics (read in this process,
where the client ran; /metrics of real processes is tests/test_metrics.py)."""

from __future__ import annotations

import time

import pytest
from prometheus_client import REGISTRY

from bot.github.client import GitHubError, RateLimited
from tests.github.conftest import token_client
from tests.support.github_mock import Reply
from tests.support.servers import free_port

PULLS = "/repos/acme/web/pulls"


def sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_calls_are_counted_by_status_and_the_remaining_rate_limit_is_kept(token_fake):
    reset = str(int(time.time()) + 600)
    token_fake.on("GET", PULLS + "/3", Reply(200, {"number": 3, "state": "open", "head": {"sha": "0" * 40}},
                                             {"X-RateLimit-Remaining": "4321", "X-RateLimit-Reset": reset}))
    token_fake.on("GET", PULLS + "/4", Reply(404, {"message": "Not Found"},
                                             {"X-RateLimit-Remaining": "4320", "X-RateLimit-Reset": reset}))
    ok, missing = sample("sami_github_api_calls_total", method="GET", status="200"), \
        sample("sami_github_api_calls_total", method="GET", status="404")
    client = token_client(token_fake.url)
    client.get_pull_request("acme/web", 3)
    assert sample("sami_github_rate_limit_remaining", credential="token") == 4321
    with pytest.raises(GitHubError):
        client.get_pull_request("acme/web", 4)
    assert sample("sami_github_api_calls_total", method="GET", status="200") - ok == 1
    assert sample("sami_github_api_calls_total", method="GET", status="404") - missing == 1
    assert sample("sami_github_rate_limit_remaining", credential="token") == 4320


def test_a_used_up_limit_shows_zero_and_a_call_not_sent_is_not_counted(token_fake):
    token_fake.on("GET", PULLS + "/5", Reply(403, {"message": "API rate limit exceeded"},
                                             {"X-RateLimit-Remaining": "0",
                                              "X-RateLimit-Reset": str(int(time.time()) + 120)}))
    refused = sample("sami_github_api_calls_total", method="GET", status="403")
    client = token_client(token_fake.url)
    with pytest.raises(RateLimited):
        client.get_pull_request("acme/web", 5)
    with pytest.raises(RateLimited, match="not sent"):
        client.get_pull_request("acme/web", 5)
    assert sample("sami_github_api_calls_total", method="GET", status="403") - refused == 1
    assert sample("sami_github_rate_limit_remaining", credential="token") == 0


def test_github_unreachable_counts_as_status_zero():
    unreachable = sample("sami_github_api_calls_total", method="GET", status="0")
    client = token_client(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(GitHubError):
        client.get_pull_request("acme/web", 1)
    assert sample("sami_github_api_calls_total", method="GET", status="0") - unreachable == 1
