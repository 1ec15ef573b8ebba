"""The one client Sami talks to GitHub through, handed in to whatever needs it (never global).

Built on PyGithub's requester: authentication as a GitHub App (a JWT signed with the App's key,
exchanged for an installation access token per installation) or with a plain token, the base URL
of GitHub or a GitHub Enterprise Server, connection pooling. On top of it, a narrow interface
that returns GitHub's JSON as plain dicts (the same shapes webhook payloads carry), conditional
requests with ETags, a deadline per round of requests, and errors as small exceptions:
``RateLimited`` (wait ``retry_after`` seconds; nothing here sleeps), ``DeadlinePassed`` (the round's
time is up; the request was not sent) and ``GitHubError`` (status and message). Tokens and JWTs
never appear in logs, exception messages or reprs.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import cachetools
import github
import requests
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from github import Auth
from urllib3.util.retry import Retry

from bot import __version__
from bot.core import metrics
from bot.core.config import ConfigError, Settings

log = logging.getLogger(__name__)

_TOKEN_FIELD = re.compile(r'("token"\s*:\s*")[^"]*(")')


class _RedactTokens(logging.Filter):
    """PyGithub logs response bodies at DEBUG level, and the answer to a request for an installation
    token holds that token: blank every "token" field of what its requester logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if '"token"' in message:
            record.msg, record.args = _TOKEN_FIELD.sub(r"\1(removed)\2", message), ()
        return True


logging.getLogger("github.Requester").addFilter(_RedactTokens())

API_VERSION = "2022-11-28"
PER_PAGE = 100
MAX_PAGES = 100  # a guard against a server that keeps answering rel="next"
TOKEN_MARGIN = timedelta(minutes=5)  # an installation token this close to expiring is replaced
SECONDARY_LIMIT_WAIT = 60.0  # GitHub: after a secondary rate limit without Retry-After, wait a minute
ETAG_PAGES = 2000  # cached pages of conditional listings (least recently used are dropped)
PERMISSION_TTL = 60.0  # seconds a looked-up repository permission is trusted (commands and the page)
PERMISSIONS_KEPT = 4096
_REPOSITORY = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}$")


class GitHubError(Exception):
    """GitHub answered with an error, or could not be reached (status 0)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class RateLimited(GitHubError):
    """A primary or secondary rate limit: try again in ``retry_after`` seconds."""

    def __init__(self, retry_after: float, message: str, status: int = 403):
        super().__init__(status, message)
        self.retry_after = retry_after


class DeadlinePassed(GitHubError):
    """The round's deadline passed before this request: it was not sent, and what is left waits for the next round."""

    def __init__(self, message: str):
        super().__init__(0, message)


@dataclass(frozen=True)
class Deadline:
    """The time a round of requests stops: none is sent once ``clock()`` reaches ``at``."""

    at: float
    clock: Callable[[], float] = time.monotonic

    @classmethod
    def after(cls, seconds: float, clock: Callable[[], float] = time.monotonic) -> Deadline:
        """The deadline ``seconds`` from now on ``clock``."""
        return cls(clock() + seconds, clock)

    def passed(self) -> bool:
        """Whether the round's time is up."""
        return self.clock() >= self.at


@dataclass(frozen=True)
class RepositoryHook:
    """A repository's webhook, whose deliveries token-authenticated Sami lists and redelivers."""

    repository: str
    hook_id: int


@dataclass(frozen=True)
class CheckLine:
    """One line of ``sami github check``: what was checked, whether it passed, and how it stands."""

    name: str
    ok: bool
    detail: str

    def __str__(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'}  {self.name}: {self.detail}"


def check_repository_name(repo: str) -> str:
    """``repo`` if it is ``owner/name``; raises ValueError otherwise (it becomes part of a URL path)."""
    if not isinstance(repo, str) or not _REPOSITORY.match(repo) or repo.endswith((".", "/..")):
        raise ValueError(f"{repo!r} is not a repository name (owner/name)")
    return repo


class _InstallationAuth(Auth.Auth):
    """PyGithub authentication with the current token of one installation, renewed as needed."""

    def __init__(self, tokens: _InstallationTokens, installation_id: int):
        self._tokens = tokens
        self.installation_id = installation_id

    @property
    def token_type(self) -> str:
        return "token"

    @property
    def token(self) -> str:
        return self._tokens.token(self.installation_id)

    @property
    def _masked_token(self) -> str:
        return "token (installation token removed)"

    def __repr__(self) -> str:
        return f"<installation {self.installation_id} auth>"


class _InstallationTokens:
    """Installation access tokens by installation id, each kept until TOKEN_MARGIN before it expires."""

    def __init__(self, client: GitHubClient):
        self._client = client
        self._lock = threading.Lock()
        self._tokens: dict[int, tuple[str, datetime]] = {}

    def token(self, installation_id: int) -> str:
        # One lock for all: tokens are fetched about once an hour per installation, and two
        # threads asking at once should not both create one.
        with self._lock:
            cached = self._tokens.get(installation_id)
            if cached and cached[1] - TOKEN_MARGIN > datetime.now(UTC):
                return cached[0]
            answer = self._client._call(
                "POST", f"/app/installations/{int(installation_id)}/access_tokens", as_app=True, expect=(201,))
            token, expires_at = answer["token"], _parse_time(answer.get("expires_at"))
            # Used once even when it seems already expired (a clock behind GitHub's): GitHub just made it.
            self._tokens[installation_id] = (token, expires_at or datetime.now(UTC))
            log.info("GitHub installation %s: new access token, valid until %s", installation_id,
                     expires_at.isoformat() if expires_at else "unknown")
            return token

    def forget(self, installation_id: int) -> None:
        with self._lock:
            self._tokens.pop(installation_id, None)


class GitHubClient:
    """Sami's narrow view of the GitHub REST API; one per process, shared by its threads."""

    def __init__(self, base_url: str, *, token: str = "", app_id: int | None = None, private_key: str = "",
                 timeout: int = 10, seconds_between_requests: float = 0.0, seconds_between_writes: float = 1.0):
        if not token and not (app_id and private_key):
            raise ValueError("a GitHub client needs a token, or an App id with its private key")
        self.base_url = base_url.rstrip("/")
        self.app_id = app_id if private_key else None
        self.mode = "app" if self.app_id else "token"
        self._options = {
            "base_url": self.base_url, "timeout": timeout, "user_agent": _user_agent(), "per_page": PER_PAGE,
            # Connection errors only: statuses (rate limits included) come back to Sami to decide,
            # so that a worker never sleeps through a rate limit inside PyGithub.
            "retry": Retry(total=2, connect=2, read=0, redirect=0, status=0, other=0, backoff_factor=0.5,
                           respect_retry_after_header=False, raise_on_status=False),
            "seconds_between_requests": seconds_between_requests, "seconds_between_writes": seconds_between_writes,
            "api_version": API_VERSION,
        }
        self._lock = threading.Lock()
        self._requesters: dict[object, github.Github] = {}
        self._installations: dict[str, int] = {}
        self._tokens = _InstallationTokens(self)
        self._etags: cachetools.LRUCache[str, tuple[str, list[Any], str | None]] = cachetools.LRUCache(ETAG_PAGES)
        # Who may do what, asked by PR commands and the page alike: one answer serves both for a minute.
        self._permissions: cachetools.TTLCache[tuple[str, str], str] = cachetools.TTLCache(
            PERMISSIONS_KEPT, PERMISSION_TTL)
        self._blocked_until: dict[object, float] = {}  # auth key -> monotonic time the primary limit resets
        # The deadline of the round each thread is in: threads share the client, not their rounds.
        self._round = threading.local()
        if self.app_id:
            self._app_auth: Auth.Auth | None = Auth.AppAuth(self.app_id, private_key)
            self._token_auth: Auth.Auth | None = None
        else:
            self._app_auth = None
            self._token_auth = Auth.Token(token)

    @classmethod
    def from_settings(cls, settings: Settings, **options) -> GitHubClient | None:
        """The client ``settings`` describe (an App when both are set); None without credentials."""
        if bool(settings.github_app_id) != bool(settings.github_app_private_key):
            missing = "SAMI_GITHUB_APP_PRIVATE_KEY" if settings.github_app_id else "SAMI_GITHUB_APP_ID"
            raise ConfigError(missing, "a GitHub App needs both SAMI_GITHUB_APP_ID and SAMI_GITHUB_APP_PRIVATE_KEY")
        if settings.github_app_private_key:
            _check_private_key(settings.github_app_private_key)
        elif not settings.github_token:
            return None
        options.setdefault("timeout", settings.github_timeout)
        return cls(settings.github_api_url, token=settings.github_token, app_id=settings.github_app_id,
                   private_key=settings.github_app_private_key, **options)

    def __repr__(self) -> str:
        who = f"App {self.app_id}" if self.app_id else "token"
        return f"<GitHubClient {self.base_url} ({who})>"

    @contextmanager
    def deadline(self, deadline: Deadline) -> Iterator[None]:
        """Inside the block, this thread's requests raise DeadlinePassed, unsent, once ``deadline`` passes.

        A request already sent when it passes runs to its answer or its timeout.
        """
        outer = getattr(self._round, "deadline", None)
        self._round.deadline = deadline
        try:
            yield
        finally:
            self._round.deadline = outer

    # -- pull requests ---------------------------------------------------------------------------

    def list_open_pull_requests(self, repo: str) -> list[dict[str, Any]]:
        """Every open pull request of ``repo``, all pages, each page a conditional request.

        A page GitHub answers 304 comes from the cache (and does not count against the rate
        limit). Any failure, on any page, raises: a partial list is never returned.
        """
        path = f"/repos/{check_repository_name(repo)}/pulls?" + urllib.parse.urlencode(
            {"state": "open", "per_page": PER_PAGE})
        seen: dict[int, dict[str, Any]] = {}
        for item in self._conditional_pages(path, repo=repo):
            # Pages by number shift when pull requests open meanwhile: count each one once.
            seen.setdefault(item["number"], item)
        return list(seen.values())

    def get_pull_request(self, repo: str, number: int) -> dict[str, Any]:
        """One pull request of ``repo``, in any state."""
        return self._call("GET", f"/repos/{check_repository_name(repo)}/pulls/{int(number)}", repo=repo)

    # -- the pull request conversation: comments, reactions, permissions ------------------------

    def list_issue_comments(self, repo: str, number: int) -> list[dict[str, Any]]:
        """Every comment of issue or pull request ``number`` (oldest first)."""
        return list(self._pages(f"/repos/{check_repository_name(repo)}/issues/{int(number)}/comments?"
                                f"per_page={PER_PAGE}", repo=repo))

    def create_issue_comment(self, repo: str, number: int, body: str) -> dict[str, Any]:
        """Post a comment on issue or pull request ``number``; returns it (with its ``id``)."""
        return self._call("POST", f"/repos/{check_repository_name(repo)}/issues/{int(number)}/comments", repo=repo,
                          body={"body": body}, expect=(201,))

    def update_issue_comment(self, repo: str, comment_id: int, body: str) -> dict[str, Any]:
        """Replace the body of comment ``comment_id`` (GitHubError 404 when it was deleted)."""
        return self._call("PATCH", f"/repos/{check_repository_name(repo)}/issues/comments/{int(comment_id)}",
                          repo=repo, body={"body": body})

    def add_reaction(self, repo: str, comment_id: int, content: str) -> dict[str, Any]:
        """React to comment ``comment_id`` (GitHub answers 200 when the same reaction is there already)."""
        return self._call("POST", f"/repos/{check_repository_name(repo)}/issues/comments/{int(comment_id)}/reactions",
                          repo=repo, body={"content": content}, expect=(200, 201))

    def permission(self, repo: str, user: str) -> str:
        """``user``'s permission on ``repo``: admin, maintain, write, triage, read or none (GitHub's
        404: not a collaborator). An answer is kept for ``PERMISSION_TTL`` seconds."""
        if not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})(?:\[bot\])?", user or ""):
            raise ValueError(f"{user!r} is not a GitHub login")
        key = (repo.lower(), user.lower())
        with self._lock:
            known = self._permissions.get(key)
        if known is not None:
            return known
        try:
            answer = self._call("GET", f"/repos/{check_repository_name(repo)}/collaborators/"
                                       f"{urllib.parse.quote(user)}/permission", repo=repo)
            # role_name knows maintain and triage; permission folds them into write and read.
            permission = str(answer.get("role_name") or answer.get("permission") or "none")
        except GitHubError as exc:
            if exc.status != 404:
                raise
            permission = "none"
        with self._lock:
            self._permissions[key] = permission
        return permission

    # -- Deployments and commit statuses ---------------------------------------------------------

    def create_deployment(self, repo: str, *, ref: str, environment: str, description: str,
                          transient: bool, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        """A GitHub Deployment of ``ref``; it checks no commit statuses and merges nothing (Sami decides)."""
        return self._call("POST", f"/repos/{check_repository_name(repo)}/deployments", repo=repo, expect=(201,),
                          body={"ref": ref, "environment": environment, "description": description[:140],
                                "transient_environment": transient, "auto_merge": False,
                                "required_contexts": [], "payload": payload or {},
                                "production_environment": False})

    def list_deployments(self, repo: str, *, sha: str, environment: str) -> list[dict[str, Any]]:
        """The Deployments of ``sha`` to ``environment`` (newest first)."""
        query = urllib.parse.urlencode({"sha": sha, "environment": environment, "per_page": PER_PAGE})
        return list(self._pages(f"/repos/{check_repository_name(repo)}/deployments?{query}", repo=repo))

    def create_deployment_status(self, repo: str, deployment_id: int, *, state: str, description: str,
                                 environment_url: str | None = None, log_url: str | None = None) -> dict[str, Any]:
        """A status (queued, in_progress, success, failure, error, inactive) of Deployment ``deployment_id``."""
        body: dict[str, Any] = {"state": state, "description": description[:140], "auto_inactive": True}
        if environment_url:
            body["environment_url"] = environment_url
        if log_url:
            body["log_url"] = log_url
        return self._call("POST", f"/repos/{check_repository_name(repo)}/deployments/{int(deployment_id)}/statuses",
                          repo=repo, body=body, expect=(201,))

    def check_runs(self, repo: str, sha: str) -> list[dict[str, Any]]:
        """The check runs of commit ``sha`` (the first 100; a commit rarely has more)."""
        if not re.fullmatch(r"[0-9a-f]{40}", sha or ""):
            raise ValueError(f"{sha!r} is not a commit sha")
        answer = self._call("GET", f"/repos/{check_repository_name(repo)}/commits/{sha}/check-runs?"
                                   f"per_page={PER_PAGE}", repo=repo)
        return list((answer or {}).get("check_runs") or [])

    def combined_status(self, repo: str, sha: str) -> dict[str, Any]:
        """The combined commit status of ``sha``: its ``state`` and the latest status per context."""
        if not re.fullmatch(r"[0-9a-f]{40}", sha or ""):
            raise ValueError(f"{sha!r} is not a commit sha")
        return self._call("GET", f"/repos/{check_repository_name(repo)}/commits/{sha}/status?per_page={PER_PAGE}",
                          repo=repo)

    def create_commit_status(self, repo: str, sha: str, *, state: str, context: str, description: str,
                             target_url: str | None = None) -> dict[str, Any]:
        """A commit status (pending, success, failure, error) named ``context`` on ``sha``."""
        if not re.fullmatch(r"[0-9a-f]{40}", sha or ""):
            raise ValueError(f"{sha!r} is not a commit sha")
        body: dict[str, Any] = {"state": state, "context": context, "description": description[:140]}
        if target_url:
            body["target_url"] = target_url
        return self._call("POST", f"/repos/{check_repository_name(repo)}/statuses/{sha}", repo=repo, body=body,
                          expect=(201,))

    # -- repositories and installations ----------------------------------------------------------

    def get_repository(self, repo: str) -> dict[str, Any]:
        """``repo`` as GitHub describes it (raises GitHubError 404 when the credentials cannot see it)."""
        return self._call("GET", f"/repos/{check_repository_name(repo)}", repo=repo)

    def installation_id(self, repo: str) -> int:
        """The id of the App's installation on ``repo`` (looked up once, then remembered)."""
        key = check_repository_name(repo).lower()
        with self._lock:
            if key in self._installations:
                return self._installations[key]
        installation = self._call("GET", f"/repos/{repo}/installation", as_app=True)
        with self._lock:
            self._installations[key] = int(installation["id"])
        return int(installation["id"])

    def app(self) -> dict[str, Any]:
        """The App these credentials are (App authentication only)."""
        return self._call("GET", "/app", as_app=True)

    def app_hook_config(self) -> dict[str, Any]:
        """Where the App's webhook posts, and whether it has a secret (shown as asterisks)."""
        return self._call("GET", "/app/hook/config", as_app=True)

    def team_membership(self, org: str, team_slug: str, login: str) -> dict[str, Any]:
        """``login``'s membership of ``org``'s team ``team_slug`` (GitHubError 404 when none)."""
        for part in (org, team_slug, login):
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}", part or ""):
                raise ValueError(f"{part!r} is not a GitHub organization, team or login name")
        return self._call("GET", f"/orgs/{org}/teams/{team_slug}/memberships/{login}")

    def authenticated_user(self) -> dict[str, Any]:
        """The user a token belongs to (token authentication only)."""
        return self._call("GET", "/user")

    def repository_hooks(self, repo: str) -> list[dict[str, Any]]:
        """The webhooks of ``repo`` (the token needs admin access to it)."""
        return list(self._pages(f"/repos/{check_repository_name(repo)}/hooks?per_page={PER_PAGE}", repo=repo))

    # -- webhook deliveries ----------------------------------------------------------------------

    def list_hook_deliveries(self, *, since: datetime | None = None,
                             hook: RepositoryHook | None = None) -> list[dict[str, Any]]:
        """Deliveries of the App's webhook (or of a repository's ``hook``), newest first, back to ``since``."""
        path = self._deliveries_path(hook) + f"?per_page={PER_PAGE}"
        found = []
        for item in self._pages(path, as_app=hook is None, repo=hook.repository if hook else None):
            delivered_at = _parse_time(item.get("delivered_at"))
            if since is not None and delivered_at is not None and delivered_at < since:
                break  # GitHub lists them newest first
            found.append(item)
        return found

    def redeliver(self, delivery_id: int, *, hook: RepositoryHook | None = None) -> None:
        """Ask GitHub to deliver delivery ``delivery_id`` again (it answers 202 and does it soon)."""
        self._call("POST", f"{self._deliveries_path(hook)}/{int(delivery_id)}/attempts", as_app=hook is None,
                   repo=hook.repository if hook else None, expect=(202,))

    def _deliveries_path(self, hook: RepositoryHook | None) -> str:
        if hook is None:
            if not self.app_id:
                raise GitHubError(0, "webhook deliveries of an App need App credentials (SAMI_GITHUB_APP_ID)")
            return "/app/hook/deliveries"
        return f"/repos/{check_repository_name(hook.repository)}/hooks/{int(hook.hook_id)}/deliveries"

    # -- sami github check -----------------------------------------------------------------------

    def check(self, repositories: Iterable[str]) -> list[CheckLine]:
        """Whether the credentials work and reach each of ``repositories``, one line each."""
        lines = []
        try:
            if self.app_id:
                app = self.app()
                lines.append(CheckLine("credentials", True, f"GitHub App {app.get('slug') or app.get('name')!r} "
                                                            f"(id {app.get('id')}) at {self.base_url}"))
            else:
                user = self.authenticated_user()
                lines.append(CheckLine("credentials", True, f"token of {user.get('login')!r} at {self.base_url}"))
        except GitHubError as exc:
            lines.append(CheckLine("credentials", False, _check_failure(exc, self.mode)))
            return lines  # nothing else can work
        for repo in repositories:
            try:
                if self.app_id:
                    installation = self.installation_id(repo)
                    lines.append(CheckLine(f"repository {repo}", True, f"the App is installed (installation "
                                                                       f"{installation})"))
                else:
                    permissions = self.get_repository(repo).get("permissions") or {}
                    granted = [name for name in ("admin", "push", "pull") if permissions.get(name)]
                    lines.append(CheckLine(f"repository {repo}", True,
                                           f"readable with the token ({', '.join(granted) or 'read'})"))
            except GitHubError as exc:
                if exc.status == 404:
                    what = ("the App is not installed on it (install it, or add the repository to the "
                            "installation)") if self.app_id else "the token cannot see it"
                    lines.append(CheckLine(f"repository {repo}", False, what))
                else:
                    lines.append(CheckLine(f"repository {repo}", False, exc.message))
        return lines

    # -- requests --------------------------------------------------------------------------------

    def _requester(self, *, as_app: bool, repo: str | None) -> tuple[object, github.Github]:
        if as_app:
            key: object = "app"
            auth = self._app_auth
            if auth is None:
                raise GitHubError(0, "this call needs App credentials (SAMI_GITHUB_APP_ID and its private key)")
        elif self.app_id:
            if repo is None:
                raise GitHubError(0, "with App credentials, this call needs a repository (its installation)")
            installation = self.installation_id(repo)
            key, auth = installation, _InstallationAuth(self._tokens, installation)
        else:
            key, auth = "token", self._token_auth
        with self._lock:
            client = self._requesters.get(key)
            if client is None:
                client = self._requesters[key] = github.Github(auth=auth, **self._options)
        return key, client

    def _call(self, verb: str, path: str, *, as_app: bool = False, repo: str | None = None,
              expect: tuple[int, ...] = (200,), body: Any = None) -> Any:
        status, _, data = self._send(verb, path, as_app=as_app, repo=repo, body=body)
        if status not in expect:
            raise GitHubError(status, f"{verb} {_path_only(path)}: GitHub answered {status}, expected "
                                      f"{' or '.join(map(str, expect))}")
        return data

    def _send(self, verb: str, path: str, *, as_app: bool = False, repo: str | None = None, body: Any = None,
              headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
        """One request; returns (status, headers, JSON) for statuses below 400, raises for the rest."""
        deadline = getattr(self._round, "deadline", None)
        if deadline is not None and deadline.passed():
            raise DeadlinePassed(f"{verb} {_path_only(path)}: the round's deadline passed (not sent)")
        key, client = self._requester(as_app=as_app, repo=repo)
        blocked = self._blocked_until.get(key)
        if blocked is not None and blocked > time.monotonic():
            wait = blocked - time.monotonic()
            raise RateLimited(wait, f"{verb} {_path_only(path)}: GitHub's rate limit is used up for "
                                    f"{wait:.0f} more seconds (not sent)")
        request_headers = {"Accept": "application/json", **(headers or {})}
        for attempt in (1, 2):
            try:
                status, response_headers, text = client.requester.requestJson(
                    verb, path, headers=dict(request_headers), input=body)
            except GitHubError:
                raise
            except (requests.RequestException, OSError) as exc:
                metrics.github_call(verb, 0, key, None)
                raise GitHubError(0, f"{verb} {_path_only(path)}: could not reach GitHub at {self.base_url} "
                                     f"({type(exc).__name__})") from None
            if status == 401 and attempt == 1 and isinstance(key, int):
                # An installation token GitHub no longer takes (revoked, or clocks disagree): once more
                # with a new one.
                log.info("GitHub refused installation %s's token; asking for a new one", key)
                self._tokens.forget(key)
                continue
            break
        self._note_rate_limit(key, response_headers)
        metrics.github_call(verb, status, key, response_headers.get("x-ratelimit-remaining"))
        data = _json(text)
        if status >= 400:
            error = _error(verb, path, status, response_headers, data)
            if isinstance(error, RateLimited):
                # GitHub: no request before the time it gave, or the limit lasts longer.
                self._blocked_until[key] = max(self._blocked_until.get(key, 0.0),
                                               time.monotonic() + error.retry_after)
            raise error
        return status, response_headers, data

    def _note_rate_limit(self, key: object, headers: dict[str, str]) -> None:
        remaining, reset = headers.get("x-ratelimit-remaining"), headers.get("x-ratelimit-reset")
        if remaining is None or reset is None:
            return
        try:
            remaining_count, reset_at = int(float(remaining)), float(reset)
        except ValueError:
            return
        if remaining_count <= 0:
            # The next request would be refused: refuse it here, until GitHub's reset time.
            self._blocked_until[key] = time.monotonic() + max(0.0, reset_at - time.time())
        else:
            self._blocked_until.pop(key, None)

    def _pages(self, path: str, *, as_app: bool = False, repo: str | None = None) -> Iterator[Any]:
        url: str | None = path
        for _ in range(MAX_PAGES):
            if url is None:
                return
            _, headers, data = self._send("GET", url, as_app=as_app, repo=repo)
            yield from _items(data, url)
            url = self._next_page(headers)
        raise GitHubError(0, f"GET {_path_only(path)}: more than {MAX_PAGES} pages; stopped")

    def _conditional_pages(self, path: str, *, repo: str) -> Iterator[Any]:
        url: str | None = path
        for _ in range(MAX_PAGES):
            if url is None:
                return
            with self._lock:
                cached = self._etags.get(url)
            headers = {"If-None-Match": cached[0]} if cached else None
            status, response_headers, data = self._send("GET", url, repo=repo, headers=headers)
            if status == 304 and cached:
                items, next_url = cached[1], cached[2]
            elif status == 200:
                items, next_url = _items(data, url), self._next_page(response_headers)
                etag = response_headers.get("etag")
                if etag:
                    with self._lock:
                        self._etags[url] = (etag, items, next_url)
            else:
                raise GitHubError(status, f"GET {_path_only(url)}: GitHub answered {status}")
            yield from items
            url = next_url
        raise GitHubError(0, f"GET {_path_only(path)}: more than {MAX_PAGES} pages; stopped")

    def _next_page(self, headers: dict[str, str]) -> str | None:
        link = headers.get("link")
        if not link:
            return None
        for part in link.split(","):
            match = re.match(r'\s*<([^>]+)>\s*;\s*rel="?next"?', part)
            if match:
                target = match.group(1)
                if not target.startswith(self.base_url + "/"):
                    raise GitHubError(0, f"GitHub's next page points away from {self.base_url}; stopped")
                return target[len(self.base_url):]
        return None


def _user_agent() -> str:
    return f"Sami/{__version__}"


def _check_private_key(pem: str) -> None:
    try:
        load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        raise ConfigError("SAMI_GITHUB_APP_PRIVATE_KEY",
                          "not a usable private key: download a new one from the App's settings") from None


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _path_only(url: str) -> str:
    return urllib.parse.urlsplit(url).path


def _json(text: str) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return {"message": text[:200]}


def _items(data: Any, url: str) -> list[Any]:
    if not isinstance(data, list):
        raise GitHubError(0, f"GET {_path_only(url)}: expected a list from GitHub, got {type(data).__name__}")
    return data


def _error(verb: str, path: str, status: int, headers: dict[str, str], data: Any) -> GitHubError:
    where = f"{verb} {_path_only(path)}"
    message = str(data.get("message") or "") if isinstance(data, dict) else ""
    message = message[:300] or "no message"
    violations = headers.get("sl-violations")
    if violations:
        # A mock serving GitHub's API description: the request broke it.
        return GitHubError(status, f"{where}: the request does not match GitHub's API description: "
                                   f"{_violations(violations)}")
    if status in (403, 429):
        retry_after = headers.get("retry-after")
        if retry_after is not None:
            try:
                wait = max(0.0, float(retry_after))
            except ValueError:
                wait = SECONDARY_LIMIT_WAIT
            return RateLimited(wait, f"{where}: GitHub's secondary rate limit, retry in {wait:.0f} s ({message})",
                               status)
        if headers.get("x-ratelimit-remaining") == "0":
            try:
                wait = max(0.0, float(headers.get("x-ratelimit-reset", "")) - time.time())
            except ValueError:
                wait = SECONDARY_LIMIT_WAIT
            return RateLimited(wait, f"{where}: GitHub's rate limit is used up, it resets in {wait:.0f} s", status)
        if "rate limit" in message.lower():
            return RateLimited(SECONDARY_LIMIT_WAIT, f"{where}: GitHub's secondary rate limit ({message})", status)
    return GitHubError(status, f"{where}: GitHub answered {status}: {message}")


def _violations(header: str) -> str:
    try:
        items = json.loads(header)
        return "; ".join(str(item.get("message")) for item in items
                         if (item.get("location") or ["request"])[0] == "request")[:500] or header[:500]
    except (ValueError, AttributeError, TypeError):
        return header[:500]


def _check_failure(exc: GitHubError, mode: str) -> str:
    if exc.status == 401:
        if mode == "app":
            return ("GitHub refused the App's JSON web token: check SAMI_GITHUB_APP_ID and that "
                    f"SAMI_GITHUB_APP_PRIVATE_KEY is a current key of that App ({exc.message})")
        return f"GitHub refused SAMI_GITHUB_TOKEN: it is wrong, expired or revoked ({exc.message})"
    return exc.message


def convert_app_manifest(code: str, *, base_url: str = "https://api.github.com", timeout: float = 30) -> dict[str, Any]:
    """The App GitHub created from a manifest: trade the one-time ``code`` it sent back for the App's id,
    slug, html_url, client_id, client_secret, webhook_secret and private key (``pem``).

    Needs no credentials (the code is the credential). Sent once, never retried: GitHub takes a code
    only once, within an hour. Raises GitHubError (404: the code is unknown, used or expired).
    """
    if not isinstance(code, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,200}", code):
        raise GitHubError(0, "the code GitHub sent back is malformed: start the App setup again")
    path = f"/app-manifests/{code}/conversions"
    url = base_url.rstrip("/") + path
    headers = {"Accept": "application/json", "User-Agent": _user_agent(), "X-GitHub-Api-Version": API_VERSION}
    try:
        response = requests.post(url, headers=headers, timeout=timeout)
    except (requests.RequestException, OSError) as exc:
        raise GitHubError(0, f"POST /app-manifests/(code)/conversions: could not reach GitHub at {base_url} "
                             f"({type(exc).__name__})") from None
    data = _json(response.text)
    if response.status_code != 201:
        # The code is a credential: it stays out of the message.
        error = _error("POST", path, response.status_code, {k.lower(): v for k, v in response.headers.items()}, data)
        raise GitHubError(error.status, error.message.replace(code, "(code)"))
    if not isinstance(data, dict) or not isinstance(data.get("id"), int) or not isinstance(data.get("pem"), str):
        raise GitHubError(0, "POST /app-manifests/(code)/conversions: GitHub's answer holds no App id and key")
    return data
