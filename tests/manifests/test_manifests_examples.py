"""The sample deployments repo in examples/deployments is complete and valid."""

from __future__ import annotations

from bot.manifests import Kind, PrDeploy, ServiceType, ThirdPartyMode, load_deployments_repo

from .conftest import EXAMPLES


def test_examples_are_valid() -> None:
    repo = load_deployments_repo(EXAMPLES)
    assert repo.ok, "\n".join(str(e) for e in repo.errors)
    assert {(m.service_name, m.type, m.environment) for m in repo.manifests} == {
        ("web", ServiceType.SWARM, "stage"),
        ("web", ServiceType.SWARM, "production"),
        ("web", ServiceType.SWARM, "pull_request"),
        ("notes", ServiceType.COMPOSE, "stage"),
        ("api", ServiceType.K8S, "stage"),
        ("api", ServiceType.K8S, "pull_request"),
        ("docs", ServiceType.STATIC_FILE, "stage"),
        ("docs", ServiceType.STATIC_FILE, "pull_request"),
        ("nightly-report", ServiceType.CRON, "stage"),
        ("cache", ServiceType.SWARM, "stage"),
    }


def test_example_environment_file() -> None:
    repo = load_deployments_repo(EXAMPLES, targets=["default"])
    assert repo.ok, "\n".join(str(e) for e in repo.errors)
    stage = repo.topology("stage")
    assert stage is not None and stage.path == "environments/stage.yaml" and stage.target is None
    assert set(stage.components) == {m.service_name for m in repo.manifests if m.environment == "stage"}
    cache = repo.find("cache", "stage")
    assert cache is not None and cache.kind is Kind.THIRD_PARTY and cache.mode is ThirdPartyMode.INTERNAL
    assert (cache.engine, cache.size, cache.image) == ("redis", 1, "local/redis")
    assert repo.topology("production").implicit


def test_example_values_other_parts_rely_on() -> None:
    repo = load_deployments_repo(EXAMPLES)
    for environment in ("stage", "production", "pull_request"):
        web = repo.find("web", environment)
        assert web is not None
        assert web.files == ("stack.yml",) and web.image == "local/web"
        assert web.update_image is not None and web.update_image.path == "services.web.image"
        assert web.url == "http://{name}.{base_domain}"
        assert web.allowed_deployment_overrides == ("port", "replicas")
        assert web.allowed_app_overrides == ("LOG_LEVEL",)
    web_pr = repo.find("web", "pull_request")
    assert web_pr is not None
    assert (web_pr.pr_deploy, web_pr.ttl, web_pr.repository) == (PrDeploy.ON, 604800, "acme/web")
    api_pr = repo.find("api", "pull_request")
    assert api_pr is not None and api_pr.pr_deploy is PrDeploy.LABEL and api_pr.files == ("chart",)
    docs_pr = repo.find("docs", "pull_request")
    assert docs_pr is not None
    assert docs_pr.pr_deploy is PrDeploy.ON and docs_pr.repository == "acme/docs"
    assert docs_pr.render_url(name="docs-pr-3", base_domain="localhost:8000") == (
        "http://localhost:8000/sites/docs-pr-3/"
    )
    assert repo.find("notes", "stage").files == ("compose.yml",)  # type: ignore[union-attr]
    assert repo.find("nightly-report", "stage").files == ("stack.yml",)  # type: ignore[union-attr]
