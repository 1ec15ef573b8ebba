"""Serves static_file deployments from the static root (the embedded default's web server)."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, abort, current_app, send_from_directory

from bot.core.naming import NAME_RE

bp = Blueprint("sites", __name__)


@bp.get("/sites/<name>/")
@bp.get("/sites/<name>/<path:path>")
def site(name: str, path: str = "index.html"):
    """A file of a static_file deployment's current release."""
    if not NAME_RE.match(name):
        abort(404)
    root = Path(current_app.config["SAMI"].static_root) / name / "current"
    if not root.is_dir():
        abort(404)
    if path.endswith("/"):
        path += "index.html"
    # send_from_directory refuses paths that leave the folder.
    response = send_from_directory(root.resolve(), path, max_age=0)
    # A site shares Sami's address but not its trust: the sandbox gives its pages an origin of their own,
    # so their scripts cannot read the status page or act with a visitor's session.
    response.headers["Content-Security-Policy"] = SITE_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


SITE_POLICY = "sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads"
