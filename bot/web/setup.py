"""``GET /github/setup`` and ``/github/setup/done``: create Sami's GitHub App from the browser.

Served only in development mode, and only while Sami has no GitHub credentials: Sami has no login
yet, and whoever finishes this flow decides which App Sami trusts. Elsewhere, ``sami github setup``
does the same from the server's shell, through ``LocalSetup``: the same flow on a server of its own
on 127.0.0.1 for the length of the setup.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from flask import Blueprint, Flask, Response, current_app, request
from werkzeug.serving import WSGIRequestHandler, make_server

from bot.core.config import Settings
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


def _complete(settings: Settings, states: setup.StateStore) -> setup.SetupResult:
    """GitHub sent the browser back with ``?code=&state=``: check the state, convert the code, write
    the App's files (both flows)."""
    return setup.complete(request.args.get("code"), request.args.get("state"), states=states,
                          api_url=settings.github_api_url, instance_dir=settings.instance_dir,
                          timeout=settings.github_timeout)


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
    try:
        result = _complete(current_app.config["SAMI"], _states())
    except setup.SetupError as exc:
        return _html(setup.error_page(str(exc)), exc.status)
    return _html(setup.done_page(result, show_secret=True))


# -- sami github setup: the same flow from the server's shell ----------------------------------------

class _Quiet(WSGIRequestHandler):
    """No access log: the return's query string holds the code."""

    def log(self, *args) -> None:
        pass


class LocalSetup:
    """``sami github setup``: the flow above for a browser on this machine, served on
    127.0.0.1:``port`` (0: any free port) until GitHub sends the browser back.

    The form is submitted at once; a return with a bad state is refused and the wait goes on; an
    error from GitHub, or no return before the timeout, ends it with a SetupError. Whoever runs the
    command has the server's shell, so neither the mode nor a login is asked for, and the done page
    does not show the webhook secret (the terminal does).
    """

    def __init__(self, settings: Settings, *, org: str | None = None, name: str | None = None, port: int = 0,
                 timeout: float = setup.STATE_TTL, note: Callable[[str], None] = lambda line: None):
        self.settings = settings
        self.org = org
        self.public_url = settings.public_url.rstrip("/")
        self.name = name or setup.default_name(self.public_url)
        self.timeout = timeout
        self.note = note  # a line for the person at the terminal
        self.states = setup.StateStore(Path(settings.instance_dir) / setup.STATE_FOLDER)
        self.result: setup.SetupResult | None = None
        self.failure: setup.SetupError | None = None
        if org:
            setup.check_organization(org)  # before listening
        app = Flask(__name__)
        app.before_request(self._only_this_machine)
        app.add_url_rule("/", "form", self._form)
        app.add_url_rule("/done", "done", self._done)
        app.register_error_handler(404, lambda _error: _html(setup.error_page(f"nothing here: open {self.url}"), 404))
        self.server = make_server("127.0.0.1", port, app, request_handler=_Quiet)
        self.port = self.server.server_port
        self.url = f"http://127.0.0.1:{self.port}/"

    def run(self) -> setup.SetupResult:
        """Serve until the App is created (its result), GitHub refuses, or the time is up (SetupError)."""
        deadline = time.monotonic() + self.timeout
        self.server.timeout = 0.5
        try:
            while self.result is None and self.failure is None:
                if time.monotonic() > deadline:
                    raise setup.SetupError(f"no answer from GitHub within {self.timeout / 60:.0f} minutes: run "
                                           "`sami github setup` again")
                self.server.handle_request()
        finally:
            self.server.server_close()
        if self.failure is not None:
            raise self.failure
        return self.result

    def _only_this_machine(self) -> Response | None:
        # Only a browser on this machine that asked for this server (not a page of another site that
        # made its own name resolve to 127.0.0.1) gets the form and its state.
        if request.host not in (f"127.0.0.1:{self.port}", f"localhost:{self.port}"):
            return _html(setup.error_page(f"open {self.url} in a browser on this machine"), 403)
        return None

    def _form(self) -> Response:
        manifest = setup.app_manifest(self.public_url, name=self.name, redirect_url=f"{self.url}done")
        action = setup.new_app_url(self.settings.github_api_url, self.states.issue(), self.org)
        warning = setup.loopback_warning(self.public_url)
        return _html(setup.form_page(manifest, action, auto_submit=True, warning=warning))

    def _done(self) -> Response:
        try:
            self.result = _complete(self.settings, self.states)
        except setup.StateRejected as exc:
            self.note(f"refused a return to {self.url}done: {exc}")
            return _html(setup.error_page(str(exc)), 400)
        except setup.SetupError as exc:
            self.failure = exc
            return _html(setup.error_page(str(exc)), exc.status)
        return _html(setup.done_page(self.result, show_secret=False))
