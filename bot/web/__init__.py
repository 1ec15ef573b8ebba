"""The status page: its blueprint, session cookie settings and live updates."""

from __future__ import annotations

from datetime import timedelta

from flask import Flask


def init_app(app: Flask) -> None:
    """Register the page and set its session cookie: HttpOnly, SameSite=Lax, Secure behind https."""
    from bot.web import pages

    settings = app.config["SAMI"]
    app.config.update(
        SESSION_COOKIE_NAME="sami_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.public_url.startswith("https://"),
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
    )
    app.register_blueprint(pages.bp)
