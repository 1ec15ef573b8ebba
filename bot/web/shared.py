"""What the blueprints share within a request: the app's manifest store and the services' context
(settings, the broker, what the caller may read). The request's database session is
``bot.web.database.get_session``; the broker, ``bot.web.queue.get_broker``."""

from __future__ import annotations

from flask import current_app

from bot.manifests.store import ManifestStore
from bot.services import deployments
from bot.web.queue import get_broker


def manifests() -> ManifestStore:
    """The app's manifest store (made from its settings by ``create_app``)."""
    return current_app.extensions["sami.manifests"]


def services_context(may_read=None) -> deployments.Context:
    """What the services need from this app: its settings and broker, and ``may_read`` (whether the
    caller may know of a deployment of (service, environment))."""
    return deployments.Context.from_settings(current_app.config["SAMI"], get_broker(current_app), may_read)


def init_app(app, store: ManifestStore | None = None) -> None:
    """Give the app its manifest store: ``store`` (shared with the embedded worker), or one made from
    its settings."""
    app.extensions["sami.manifests"] = store or ManifestStore.from_settings(app.config["SAMI"])


def secret_names(deployment) -> tuple[str, ...]:
    """The names (never the values) of the secrets ``deployment``'s manifest gives its scripts; none when the
    deployments repo cannot be read or no longer has its manifest."""
    try:
        manifest = manifests().current().find(deployment.service, deployment.environment)
    except Exception:  # the git host is down: the page and the API still answer
        return ()
    return tuple(manifest.secrets) if manifest is not None else ()
