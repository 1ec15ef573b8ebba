"""Creating Sami's GitHub App in one click, with GitHub's App-manifest flow.

Sami posts a manifest (the App's name, URLs, permissions and events) to GitHub's "new App" page
with a random ``state``; the person confirms there; GitHub sends the browser back to the manifest's
``redirect_url`` with a one-time ``code`` and the same ``state``; Sami checks the state (so nobody
else's code gets in) and trades the code for the App's id, private key and webhook secret, which
it writes to the instance folder for the operator to load into Sami's environment.

What is here has no web framework in it: the manifest, GitHub's web host, the state store, the
conversion's result and the files. The page (``bot/web/setup.py``) and ``sami github
setup`` (a server of its own on 127.0.0.1) both use it.
"""

from __future__ import annotations

import hashlib
import html
import ipaddress
import json
import logging
import os
import re
import secrets
import shlex
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot.core.config import Settings
from bot.github.client import GitHubError, convert_app_manifest

log = logging.getLogger(__name__)

STATE_TTL = 600.0  # seconds a state is good for: the person has ten minutes on GitHub's page
ENV_FILE = "github-app.env"
STATE_FOLDER = "github-setup-states"
NAME_LIMIT = 34  # GitHub's longest App name
# The code is sent once and never retried (GitHub takes it once): its answer is waited for at least this long.
CONVERSION_TIMEOUT = 30.0

# What Sami's client and webhook handlers need (README, "Connecting GitHub").
PERMISSIONS = {
    "metadata": "read",
    "contents": "read",  # pushes to the deployments repo
    "pull_requests": "read",
    "checks": "read",  # require_checks
    "deployments": "write",
    "statuses": "write",
    "issues": "write",  # the sticky comment on a pull request
}
EVENTS = ("pull_request", "push", "issue_comment", "check_suite", "workflow_run", "status")

_ORG = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$")
_STATE = re.compile(r"^[A-Za-z0-9_-]{20,100}$")


class SetupError(Exception):
    """The setup cannot go on; the message says why and what to do, in one line. ``status``: 400 for
    what came back from the browser, 502 for what GitHub answered."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class StateRejected(SetupError):
    """The ``state`` that came back is missing, unknown, used or expired: nothing is converted."""


# -- the manifest ------------------------------------------------------------------------------


def app_manifest(public_url: str, *, name: str, redirect_url: str) -> dict[str, Any]:
    """The App manifest GitHub creates Sami's App from: webhooks to ``public_url``, GitHub back to
    ``redirect_url`` with the code."""
    public_url = public_url.rstrip("/")
    return {
        "name": name[:NAME_LIMIT],
        "url": public_url,
        "description": "Sami: per-pull-request staging environments, deployed from GitHub.",
        "hook_attributes": {"url": f"{public_url}/webhooks/github", "active": True},
        "redirect_url": redirect_url,
        "public": False,
        "default_permissions": dict(PERMISSIONS),
        "default_events": list(EVENTS),
    }


def default_name(public_url: str) -> str:
    """``Sami (host)``, cut to GitHub's limit; GitHub's page lets the person change it."""
    host = urllib.parse.urlsplit(public_url).hostname or "local"
    return f"Sami ({host[:NAME_LIMIT - len('Sami ()')]})"


def web_host(api_url: str) -> str:
    """GitHub's web address for its REST API's: api.github.com -> github.com, a GitHub Enterprise
    Server's https://HOST/api/v3 -> https://HOST, api.X (GHE.com) -> X."""
    parts = urllib.parse.urlsplit(api_url.rstrip("/"))
    host = parts.netloc
    path = parts.path
    if path.endswith("/api/v3"):
        path = path[: -len("/api/v3")]
    elif host.startswith("api.") and not path:
        host = host[len("api."):]
    return urllib.parse.urlunsplit((parts.scheme, host, path, "", ""))


def check_organization(org: str) -> str:
    """``org`` if it is a GitHub organization's name; raises SetupError otherwise (it goes into a URL)."""
    if not _ORG.match(org or ""):
        raise SetupError(f"{org!r} is not a GitHub organization name")
    return org


def new_app_url(api_url: str, state: str, org: str | None = None) -> str:
    """The page of GitHub's a manifest is posted to: a user's App, or ``org``'s."""
    where = f"/organizations/{check_organization(org)}/settings/apps/new" if org else "/settings/apps/new"
    return f"{web_host(api_url)}{where}?" + urllib.parse.urlencode({"state": state})


def loopback_warning(public_url: str) -> str | None:
    """Why GitHub cannot deliver webhooks to ``public_url``, when it is a local or private address."""
    host = urllib.parse.urlsplit(public_url).hostname or ""
    try:
        private = host == "localhost" or not ipaddress.ip_address(host).is_global
    except ValueError:
        private = host.endswith((".local", ".localhost", ".internal"))
    if not private:
        return None
    return (f"SAMI_PUBLIC_URL is {public_url}, which GitHub cannot reach: it may refuse the webhook URL, and "
            "cannot deliver to it. Set SAMI_PUBLIC_URL to the address GitHub reaches Sami at first, or change "
            "the App's webhook URL later in its settings.")


def credentials_problem(settings: Settings) -> str | None:
    """Why a new App should not be created now (credentials are set, or an App waits to be loaded)."""
    if settings.github_app_id or settings.github_app_private_key or settings.github_token:
        return ("GitHub is configured already (SAMI_GITHUB_APP_ID, SAMI_GITHUB_APP_PRIVATE_KEY or "
                "SAMI_GITHUB_TOKEN is set): unset them to create another App")
    pending = Path(settings.instance_dir) / ENV_FILE
    if pending.exists():
        return f"an App was created already and waits in {pending}: load it into Sami's environment, or remove it"
    return None


# -- the state ---------------------------------------------------------------------------------


class StateStore:
    """States handed out with a manifest, each taken back once within ``ttl`` seconds.

    Kept as files in a folder of the instance (named by the state's hash, holding its expiry), so
    every web process of a Sami sees the same ones, and taking one (deleting its file) happens once.
    """

    def __init__(self, folder: Path, ttl: float = STATE_TTL, clock: Callable[[], float] = time.time):
        self.folder = Path(folder)
        self.ttl = ttl
        self.clock = clock

    def issue(self) -> str:
        """A new random state, remembered for ``ttl`` seconds."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._prune()
        state = secrets.token_urlsafe(32)
        descriptor = os.open(self._path(state), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(f"{self.clock() + self.ttl:.3f}\n")
        return state

    def take(self, state: str | None) -> None:
        """Accept ``state`` once; raises StateRejected when it is missing, unknown, used or expired."""
        if not state:
            raise StateRejected("no state came back with GitHub's answer: start the setup again")
        if not _STATE.match(state):
            raise StateRejected("the state that came back is not one Sami handed out: start the setup again")
        path = self._path(state)
        try:
            expires = float(path.read_text())
            path.unlink()  # whoever deletes it took it; a second request finds nothing
        except (FileNotFoundError, ValueError):
            raise StateRejected("the state that came back is unknown or used already: start the setup "
                                "again") from None
        if expires <= self.clock():
            raise StateRejected(f"the setup took longer than {self.ttl / 60:.0f} minutes: start the setup again")

    def _path(self, state: str) -> Path:
        return self.folder / hashlib.sha256(state.encode()).hexdigest()

    def _prune(self) -> None:
        now = self.clock()
        for path in self.folder.iterdir():
            try:
                if float(path.read_text()) <= now:
                    path.unlink()
            except (OSError, ValueError):
                continue


# -- the result --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreatedApp:
    """The App GitHub created; its secrets stay out of reprs."""

    id: int
    slug: str
    html_url: str
    client_id: str
    pem: str = field(repr=False)
    webhook_secret: str | None = field(repr=False)

    @classmethod
    def from_conversion(cls, data: dict[str, Any]) -> CreatedApp:
        """The App in GitHub's answer to a conversion (client_secret is not kept: nothing uses it)."""
        pem = data.get("pem")
        if not isinstance(pem, str) or "-----BEGIN" not in pem or "PRIVATE KEY-----" not in pem:
            raise SetupError("GitHub's answer holds no private key: delete the App in GitHub's settings and start "
                             "again", 502)
        html_url = str(data.get("html_url") or "")
        return cls(id=int(data["id"]), slug=str(data.get("slug") or ""), html_url=html_url.rstrip("/"),
                   client_id=str(data.get("client_id") or ""), pem=pem,
                   webhook_secret=data.get("webhook_secret") or None)

    @property
    def install_url(self) -> str:
        """Where the App is installed on repositories."""
        return f"{self.html_url}/installations/new"


@dataclass(frozen=True)
class SetupResult:
    """What the setup left: the App, and the two files it wrote."""

    app: CreatedApp
    env_file: Path
    key_file: Path

    def next_steps(self) -> list[str]:
        """What the operator does next, one step a line (no secret in them)."""
        steps = [
            f"Load {self.env_file} into Sami's environment (for example: set -a; . {self.env_file}; set +a, "
            "systemd's EnvironmentFile=, or docker's --env-file), then restart Sami.",
            f"Install the App on the application repositories and the deployments repo: {self.app.install_url}",
            "Then run `sami github check`.",
        ]
        if not self.app.webhook_secret:
            steps.insert(1, "GitHub made no webhook secret: set one in the App's settings, and the same in "
                            "SAMI_WEBHOOK_SECRET.")
        return steps


def _write_new(path: Path, text: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)


def _env_value(value: str) -> str:
    return value if re.fullmatch(r"[A-Za-z0-9_./:@+=-]*", value) else shlex.quote(value)


def write_app_files(instance_dir: str | Path, app: CreatedApp) -> SetupResult:
    """Write the App's key and ``github-app.env`` into ``instance_dir``, both mode 0600, never over a file.

    The key file is named by the App's id; if ``github-app.env`` exists already (another setup finished
    meanwhile), the settings go to ``github-app-<id>.env`` instead, so no App's key is ever lost.
    """
    folder = Path(instance_dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    key_file = folder / f"github-app-{app.id}.pem"
    _write_new(key_file, app.pem if app.pem.endswith("\n") else app.pem + "\n")
    lines = [f"# The GitHub App {app.slug or app.id!s} ({app.html_url}), created "
             f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC from Sami's App manifest; client id {app.client_id}.",
             f"SAMI_GITHUB_APP_ID={app.id}",
             f"SAMI_GITHUB_APP_PRIVATE_KEY={_env_value(str(key_file))}"]
    if app.webhook_secret:
        lines.append(f"SAMI_WEBHOOK_SECRET={_env_value(app.webhook_secret)}")
    text = "\n".join(lines) + "\n"
    env_file = folder / ENV_FILE
    try:
        _write_new(env_file, text)
    except FileExistsError:
        env_file = folder / f"github-app-{app.id}.env"
        _write_new(env_file, text)
    log.info("GitHub App %s (id %s) created; its settings are in %s", app.slug, app.id, env_file)
    return SetupResult(app, env_file, key_file)


def complete(code: str | None, state: str | None, *, states: StateStore, api_url: str, instance_dir: str | Path,
             timeout: float = CONVERSION_TIMEOUT,
             convert: Callable[..., dict[str, Any]] = convert_app_manifest) -> SetupResult:
    """GitHub came back with ``code`` and ``state``: check the state, convert the code, write the files.

    Raises StateRejected (nothing converted) or SetupError with a one-line message.
    """
    states.take(state)
    if not code:
        raise SetupError("GitHub sent no code back (was the App created?): start the setup again")
    try:
        data = convert(code, base_url=api_url, timeout=max(CONVERSION_TIMEOUT, timeout))
    except GitHubError as exc:
        if exc.status == 404:
            raise SetupError("GitHub does not know the code (it is used already, or older than an hour): start "
                             "the setup again", 502) from None
        raise SetupError(f"GitHub did not hand over the App: {exc.message}", 502) from None
    return write_app_files(instance_dir, CreatedApp.from_conversion(data))


# -- the pages (plain HTML, used by the web page and by sami github setup) ----------------------


def form_page(manifest: dict[str, Any], action: str, *, auto_submit: bool, warning: str | None = None) -> str:
    """The page that posts ``manifest`` to GitHub's ``action`` (at once, with ``auto_submit``)."""
    manifest_json = html.escape(json.dumps(manifest), quote=True)
    permissions = ", ".join(f"{name.replace('_', ' ')} {level}" for name, level in manifest["default_permissions"]
                            .items())
    body = [
        f"<h1>Create the GitHub App {html.escape(manifest['name'])}</h1>",
        f"<p>GitHub will ask you to confirm. Permissions: {html.escape(permissions)}. "
        f"Events: {html.escape(', '.join(manifest['default_events']))}. "
        f"Webhooks go to {html.escape(manifest['hook_attributes']['url'])}.</p>",
    ]
    if warning:
        body.append(f"<p><strong>{html.escape(warning)}</strong></p>")
    body.append(f'<form id="manifest-form" method="post" action="{html.escape(action, quote=True)}">'
                f'<input type="hidden" name="manifest" value="{manifest_json}">'
                '<button type="submit">Create the App on GitHub</button></form>')
    if auto_submit:
        body.append('<script>document.getElementById("manifest-form").submit();</script>')
    return _page("Create Sami's GitHub App", body)


def done_page(result: SetupResult, *, show_secret: bool) -> str:
    """What the person sees once the App exists: the files, the next steps, the webhook secret (once)."""
    app = result.app
    body = [f'<h1>GitHub App <a href="{html.escape(app.html_url, quote=True)}">{html.escape(app.slug)}</a> '
            f"created (id {app.id})</h1>",
            f"<p>Its settings are in {html.escape(str(result.env_file))}, its private key in "
            f"{html.escape(str(result.key_file))} (both readable by their owner only).</p>"]
    if show_secret and app.webhook_secret:
        body.append(f"<p>Webhook secret (shown this once; it is in the file too): "
                    f"<code>{html.escape(app.webhook_secret)}</code></p>")
    body.append("<ol>" + "".join(f"<li>{_linked(step)}</li>" for step in result.next_steps()) + "</ol>")
    return _page("Sami's GitHub App is created", body)


def error_page(message: str) -> str:
    """A one-line error."""
    return _page("Sami's GitHub App setup", [f'<p class="error">{html.escape(message)}</p>'])


def _linked(text: str) -> str:
    escaped = html.escape(text)
    return re.sub(r"(https?://[^\s<]+)", r'<a href="\1">\1</a>', escaped)


def _page(title: str, body: list[str]) -> str:
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n")
