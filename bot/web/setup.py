"""``GET /github/setup`` and ``/github/setup/done``: create Sami's GitHub App from the browser.

Served only in development mode, and only while Sami has no GitHub credentials: Sami has no login
yet, and whoever finishes this flow decides which App Sami trusts. Elsewhere, ``sami github setup``
does the same from the server's shell.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, current_app, request

from bot.github import setup

bp = Blueprint("github_setup", __name__)


def _html(text: str, status: int = 200) -> Response:
    response = Response(text, status=status, mimetype="text/html")
    # The done page shows the webhook secret, and its URL held the code.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def _refusal() -> Response | None:
    settings = current_app.config["SAMI"]
    if settings.mode != "development":
        return _html(setup.error_page("The GitHub App setup page is served in development mode only (Sami has no "
                                      "login yet): run `sami github setup` on the server instead."), 403)
    problem = setup.credentials_problem(settings)
    if problem:
        return _html(setup.error_page(problem[0].upper() + problem[1:] + "."), 409)
    return None


def _states() -> setup.StateStore:
    return setup.StateStore(Path(current_app.config["SAMI"].instance_dir) / setup.STATE_FOLDER)


@bp.get("/github/setup")
def start() -> Response:
    """The form that posts Sami's App manifest to GitHub (``?org=NAME`` for an organization's App)."""
    refused = _refusal()
    if refused:
        return refused
    settings = current_app.config["SAMI"]
    public_url = settings.public_url.rstrip("/")
    name = request.args.get("name") or setup.default_name(public_url)
    manifest = setup.app_manifest(public_url, name=name, redirect_url=f"{public_url}/github/setup/done")
    try:
        action = setup.new_app_url(settings.github_api_url, _states().issue(), request.args.get("org"))
    except setup.SetupError as exc:
        return _html(setup.error_page(str(exc)), 400)
    return _html(setup.form_page(manifest, action, auto_submit=False, warning=setup.loopback_warning(public_url)))


@bp.get("/github/setup/done")
def done() -> Response:
    """GitHub sent the browser back: check the state, convert the code, write the App's files."""
    refused = _refusal()
    if refused:
        return refused
    settings = current_app.config["SAMI"]
    try:
        result = setup.complete(request.args.get("code"), request.args.get("state"), states=_states(),
                                api_url=settings.github_api_url, instance_dir=settings.instance_dir,
                                timeout=settings.github_timeout)
    except setup.SetupError as exc:
        return _html(setup.error_page(str(exc)), exc.status)
    return _html(setup.done_page(result, show_secret=True))
