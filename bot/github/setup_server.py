"""The small web server of ``sami github setup``: on 127.0.0.1, for a browser on the same machine.

It serves the form that posts Sami's App manifest to GitHub (submitted at once), then waits for
GitHub to send the browser back to ``/done`` with the code, converts it, writes the App's files and
stops. A return with a bad state is refused and the wait goes on; an answer from GitHub that is an
error, or no answer before the timeout, ends it with a SetupError.
"""

from __future__ import annotations

import logging
import time
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

from bot.core.config import Settings
from bot.github import setup

log = logging.getLogger(__name__)


class LocalSetup:
    """One run of the App-manifest flow through a server on 127.0.0.1:``port`` (0: any free port)."""

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
        self.server = HTTPServer(("127.0.0.1", port), self._handler())
        self.port = self.server.server_address[1]
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

    def _form(self) -> str:
        manifest = setup.app_manifest(self.public_url, name=self.name, redirect_url=f"{self.url}done")
        action = setup.new_app_url(self.settings.github_api_url, self.states.issue(), self.org)
        return setup.form_page(manifest, action, auto_submit=True, warning=setup.loopback_warning(self.public_url))

    def _done(self, query: dict[str, str]) -> tuple[int, str]:
        try:
            self.result = setup.complete(query.get("code"), query.get("state"), states=self.states,
                                         api_url=self.settings.github_api_url, instance_dir=self.settings.instance_dir,
                                         timeout=self.settings.github_timeout)
        except setup.StateRejected as exc:
            self.note(f"refused a return to {self.url}done: {exc}")
            return 400, setup.error_page(str(exc))
        except setup.SetupError as exc:
            self.failure = exc
            return exc.status, setup.error_page(str(exc))
        return 200, setup.done_page(self.result, show_secret=False)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        local = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urllib.parse.urlsplit(self.path)
                # Only a browser on this machine that asked for this server (not a page of another site that
                # made its own name resolve to 127.0.0.1) gets the form and its state.
                if self.headers.get("Host") not in (f"127.0.0.1:{local.port}", f"localhost:{local.port}"):
                    self._answer(403, setup.error_page(f"open {local.url} in a browser on this machine"))
                elif parts.path == "/":
                    self._answer(200, local._form())
                elif parts.path == "/done":
                    self._answer(*local._done(dict(urllib.parse.parse_qsl(parts.query))))
                else:
                    self._answer(404, setup.error_page(f"nothing here: open {local.url}"))

            def _answer(self, status: int, page: str) -> None:
                body = page.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.send_header("Referrer-Policy", "no-referrer")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass  # the query string holds the code

        return Handler
