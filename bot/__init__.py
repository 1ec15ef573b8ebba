"""Sami: a GitHub-driven deployment bot."""

from __future__ import annotations

from flask import Flask

from bot import bodies
from bot.config import Settings, load_settings, settings_from_mapping

__version__ = "0.1.0"


def create_app(test_config: dict | None = None) -> Flask:
    """Build the web application from ``SAMI_*`` variables, or from ``test_config`` in tests."""
    settings: Settings = load_settings() if test_config is None else settings_from_mapping(test_config)
    app = Flask(__name__, instance_path=settings.instance_dir, instance_relative_config=False)
    # Bodies: the size limit holds for chunked ones too; malformed or too deeply nested JSON is a 400.
    app.request_class = bodies.Request
    app.json = bodies.JSONProvider(app)
    app.config.update(
        SAMI=settings,
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        TESTING=settings.mode == "test",
        JSON_SORT_KEYS=False,
    )

    from bot import api, db, errors, github_setup_page, health, metrics, openapi, queue, sites, web, webhooks

    db.init_app(app)
    queue.init_app(app)
    errors.init_app(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(sites.bp)
    app.register_blueprint(github_setup_page.bp)
    webhooks.init_app(app)
    web.init_app(app)
    metrics.init_app(app)
    return app
