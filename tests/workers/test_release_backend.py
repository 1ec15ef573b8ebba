"""Where a blue-green switch sends the entry's traffic (``--backend``), from what the colour's entry
deployment recorded and its script set."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from bot.core.config import settings_from_mapping
from bot.core.models import Deployment
from bot.services.releases import SwitchPlan
from workers.executor import ExecutorError
from workers.releases import backend_of


@pytest.fixture
def ctx(tmp_path):
    settings = settings_from_mapping({"mode": "test", "database_url": "sqlite://", "static_root": str(tmp_path)})
    return SimpleNamespace(settings=settings)


def plan(**recorded) -> SwitchPlan:
    backend = Deployment(name="web-production-green", service="web", environment="production-green", **recorded)
    return SwitchPlan(1, "production", "web", "web-production", "green", backend)


@pytest.mark.parametrize(("kind", "recorded", "expected"), [
    ("swarm", {"outputs": {"endpoint": "router-green:8080,router-green-2:8080"}}, "router-green:8080"),
    ("swarm", {"outputs": {"url": "http://web-production-green.example.test:18081/"}},
     "web-production-green.example.test:18081"),
    ("swarm", {"outputs": {"url": "https://green.example.test"}}, "green.example.test:443"),
    ("swarm", {"deployment_overrides": {"port": "18183"}}, "127.0.0.1:18183"),
    ("swarm", {"deployment_overrides": {"port": "18183", "advertise": "10.0.0.7"}}, "10.0.0.7:18183"),
    ("k8s", {"deployment_overrides": {"service.port": "8080"}}, "web-production-green:8080"),
    ("k8s", {}, "web-production-green:80"),
])
def test_the_backend_is_what_the_colour_recorded(ctx, kind, recorded, expected):
    assert backend_of(ctx, plan(**recorded), SimpleNamespace(type=kind), None) == expected


def test_a_static_site_is_switched_to_the_folder_its_colour_serves(ctx, tmp_path):
    assert backend_of(ctx, plan(), SimpleNamespace(type="static_file"), None) == str(
        tmp_path / "web-production-green" / "current")


def test_a_colour_that_records_nowhere_to_send_traffic_cannot_be_switched_to(ctx):
    with pytest.raises(ExecutorError, match="records no endpoint or URL"):
        backend_of(ctx, plan(outputs={"url": "ftp://nowhere"}), SimpleNamespace(type="swarm"), None)
