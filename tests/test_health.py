"""/healthz and /readyz against the real database and Redis."""

from __future__ import annotations

from bot.web import create_app
from tests.support.servers import free_port


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok"}


def test_readyz_when_everything_answers(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json["checks"] == {"database": "ok", "redis": "ok"}


def test_readyz_with_redis_down_is_degraded_but_ready(test_config, session_factory):
    """Requests are still accepted and recorded without Redis (the sweep queues them later), so a
    load balancer must keep sending them."""
    app = create_app({**test_config, "redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    app.extensions["sami.db"] = session_factory
    response = app.test_client().get("/readyz")
    assert response.status_code == 200
    assert response.json["status"] == "degraded" and response.json["degraded"] == ["redis"]
    assert response.json["checks"] == {"database": "ok", "redis": "unreachable"}


def test_readyz_names_both_when_the_database_and_redis_are_down(test_config):
    app = create_app({**test_config, "database_url": f"postgresql+psycopg2://nobody@127.0.0.1:{free_port()}/sami",
                      "redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.json["down"] == ["database", "redis"]


def test_readyz_names_the_database_when_it_is_down(test_config):
    url = f"postgresql+psycopg2://nobody@127.0.0.1:{free_port()}/sami"
    app = create_app({**test_config, "database_url": url})
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.json["down"] == ["database"]


def test_embedded_default_is_ready_without_services(tmp_path):
    from bot.core import db

    config = {"mode": "test", "instance_dir": str(tmp_path), "redis_url": ""}
    app = create_app(config)
    db.upgrade(app.config["SAMI"].database_url)
    response = app.test_client().get("/readyz")
    assert response.status_code == 200
    assert response.json["checks"] == {"database": "ok", "redis": "ok (embedded)"}


def test_readyz_says_to_migrate_a_database_without_tables(tmp_path):
    # A server started before `sami db upgrade` answers every request 500: readiness says why.
    from bot.core import db

    app = create_app({"mode": "test", "instance_dir": str(tmp_path), "redis_url": ""})
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.json["down"] == ["database"]
    assert response.json["checks"]["database"] == "not migrated: run `sami db upgrade` (or `sami serve --migrate`)"
    db.upgrade(app.config["SAMI"].database_url)
    assert app.test_client().get("/readyz").status_code == 200


def test_errors_are_json(client):
    response = client.get("/no/such/page")
    assert response.status_code == 404
    assert response.json["error"] == "no such page or API endpoint"
    response = client.post("/healthz")
    assert response.status_code == 405
    assert "use GET" in response.json["error"]


def test_static_sites_cannot_be_left(client, app, tmp_path):
    from pathlib import Path

    root = Path(app.config["SAMI"].static_root)
    release = root / "docs-stage" / "releases" / "v1"
    release.mkdir(parents=True)
    (release / "index.html").write_text("<h1>docs</h1>")
    (root / "docs-stage" / "current").symlink_to(release)
    (root / "secret.txt").write_text("not for the web")
    with client.get("/sites/docs-stage/") as response:
        assert response.get_data(as_text=True) == "<h1>docs</h1>"
    for path in ("/sites/docs-stage/../secret.txt", "/sites/docs-stage/%2e%2e/secret.txt",
                 "/sites/docs-stage/..%2fsecret.txt", "/sites/Bad_Name/", "/sites/docs-stage/nope.html"):
        with client.get(path) as response:
            assert response.status_code == 404, path
            assert "not for the web" not in response.get_data(as_text=True)


def test_static_sites_run_in_an_origin_of_their_own(client, app):
    # A site is served from Sami's own address: without a sandbox its scripts could read the status page
    # with the visitor's session (CSRF token included) and archive or clean up deployments as them.
    from pathlib import Path

    release = Path(app.config["SAMI"].static_root) / "docs-stage" / "releases" / "v1"
    release.mkdir(parents=True)
    (release / "index.html").write_text("<script>fetch('/deployments/docs-stage')</script>")
    (Path(app.config["SAMI"].static_root) / "docs-stage" / "current").symlink_to(release)
    with client.get("/sites/docs-stage/") as response:
        assert response.status_code == 200
        policy = response.headers["Content-Security-Policy"]
        assert policy.split(";")[0].split()[0] == "sandbox" and "allow-same-origin" not in policy
        assert response.headers["X-Content-Type-Options"] == "nosniff"
