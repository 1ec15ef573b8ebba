"""The web layer: every blueprint Sami serves (the API, webhooks, the OpenAPI document, health,
static sites, the GitHub App setup, the status page and its live events), and ``create_app``.

It verifies, validates and answers; deciding belongs to the services, and it never calls GitHub
(but for the sign-in's own exchange) or runs a script.
"""

from __future__ import annotations

from datetime import timedelta

from flask import Flask

from bot.core.config import Settings, load_settings, settings_from_mapping
from bot.web import (
    api,
    auth,
    bodies,
    database,
    environment_pages,
    environments,
    errors,
    health,
    metrics,
    openapi,
    pages,
    queue,
    setup,
    shared,
    sites,
    webhooks,
)
from workers.context import WorkerContext


def create_app(test_config: dict | None = None, *, context: WorkerContext | None = None) -> Flask:
    """Build the web application from ``SAMI_*`` variables, or from ``test_config`` in tests.

    With ``context`` (the embedded default's worker context) the app works with its settings,
    database pool, broker, manifest store and GitHub client: one of each in the process.
    """
    if context is not None:
        settings: Settings = context.settings
    else:
        settings = load_settings() if test_config is None else settings_from_mapping(test_config)
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
        # The status page's session cookie: HttpOnly, SameSite=Lax, Secure behind https.
        SESSION_COOKIE_NAME="sami_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.public_url.startswith("https://"),
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
    )
    if context is None:
        database.init_app(app)
        queue.init_app(app)
        shared.init_app(app)
        auth.init_app(app)
    else:
        database.init_app(app, session_factory=context.session_factory)
        queue.init_app(app, context.broker)
        shared.init_app(app, context.manifests)
        auth.init_app(app, context.github)
    errors.init_app(app)
    for blueprint in (health.bp, api.bp, environments.bp, openapi.bp, sites.bp, setup.bp, pages.bp,
                      environment_pages.bp):
        app.register_blueprint(blueprint)
    webhooks.init_app(app)
    metrics.init_app(app)
    return app
