"""Sami's settings: read from ``SAMI_*`` environment variables, or a dict in tests."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from .targets import DEFAULT_TARGET, Target, TargetsError, default_target, load_targets_file

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MODES = ("development", "production", "test")
_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,40}$")


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the variable."""

    def __init__(self, variable: str, problem: str):
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


def _default_instance() -> str:
    return str(PROJECT_ROOT / "instance")


@dataclass(frozen=True)
class Settings:
    """Every setting of a Sami process; ``load_settings`` builds one from the environment."""

    mode: str = "development"
    instance_dir: str = field(default_factory=_default_instance)
    database_url: str = ""
    redis_url: str = ""
    secret_key: str = field(default="", repr=False)
    webhook_secret: str = field(default="", repr=False)
    project_name: str = "sami"
    base_domain: str = "127.0.0.1:8000"
    namespace: str = "sami"
    public_url: str = "http://127.0.0.1:8000"
    deployments_repo: str = str(PROJECT_ROOT / "examples" / "deployments")
    deployments_ref: str = ""
    deployments_token: str = field(default="", repr=False)
    static_root: str = ""
    # Where environments run (bot.core.targets): SAMI_TARGETS names a targets file; without one,
    # the single target "default" is made from the settings above and Sami's own environment.
    targets_file: str = ""
    targets: tuple[Target, ...] = ()
    default_target: str = DEFAULT_TARGET
    script_timeout: int = 1800
    status_timeout: int = 600
    check_interval: int = 60
    reconcile_interval: int = 300  # seconds between reconciliation rounds against GitHub
    redeliver_interval: int = 600  # seconds between rounds looking for missed webhook deliveries
    # Seconds an update from a pull request push waits for newer pushes to replace it; 0: none.
    pr_debounce_seconds: int = 5
    retention_days: int = 14
    max_request_bytes: int = 1024 * 1024
    log_level: str = "INFO"
    log_format: str = "text"
    github_api_url: str = "https://api.github.com"
    github_timeout: int = 10  # seconds to wait for each answer from GitHub
    github_token: str = field(default="", repr=False)
    github_app_id: int | None = None
    github_app_private_key: str = field(default="", repr=False)
    # owner/name or owner/* patterns; empty: the repositories the manifests name
    github_repositories: tuple[str, ...] = ()
    # The status page: who may read it, and Sign in with GitHub (an OAuth App's credentials).
    page_read: str = "public"
    github_web_url: str = "https://github.com"
    github_oauth_client_id: str = ""
    github_oauth_client_secret: str = field(default="", repr=False)
    admins: tuple[str, ...] = ()
    admin_team: str = ""  # org/team-slug whose members are admins of the page
    metrics_token: str = field(default="", repr=False)
    metrics_port: int = 0  # workers and the scheduler serve /metrics here; 0: they do not
    shutdown_grace: int = 25

    @property
    def target_names(self) -> tuple[str, ...]:
        """The names environment files may use."""
        return tuple(t.name for t in self.targets) or (DEFAULT_TARGET,)

    def target(self, name: str | None) -> Target:
        """The target called ``name`` (None: the default target); KeyError names an unknown one."""
        wanted = name or self.default_target
        for target in self.targets:
            if target.name == wanted:
                return target
        if wanted == DEFAULT_TARGET and not self.targets:
            return default_target(self.static_root)
        raise KeyError(f"unknown target {wanted!r} (known: {', '.join(self.target_names)})")

    @property
    def embedded(self) -> bool:
        """True when no Redis is configured: queue, worker and scheduler run in-process."""
        return not self.redis_url


# variable name, Settings field, parser; parsers raise ValueError with a readable problem
def _int(lo: int, hi: int):
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"expected a whole number, got {raw!r}") from None
        if not lo <= value <= hi:
            raise ValueError(f"must be between {lo} and {hi}, got {value}")
        return value

    return parse


def _choice(*choices: str):
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {raw!r}")
        return value

    return parse


# Drivers for a plain postgresql:// URL, the one Sami installs first. SQLAlchemy's own default
# changes between versions (psycopg2 in 2.0, psycopg 3 in 2.1), so it is not left to choose.
_POSTGRESQL_DRIVERS = ("psycopg2", "psycopg")
_DRIVER_HINT = "use postgresql://user@host/sami or sqlite:///path"


def database_url(raw: str) -> str:
    """The SQLAlchemy URL for ``raw``: ``postgresql://`` names an installed driver.

    Raises ValueError saying what to change for an unsupported database or a driver that is
    not installed (or is an asyncio one).
    """
    try:
        url = make_url(raw)
    except ArgumentError:
        raise ValueError("not a database URL (example: postgresql://user@host/sami)") from None
    backend = url.get_backend_name()
    if backend not in ("postgresql", "sqlite"):
        raise ValueError(f"unsupported database {backend!r}: use postgresql or sqlite")
    if url.drivername == "postgresql":
        rest = raw.split(":", 1)[1]
        for driver in _POSTGRESQL_DRIVERS:
            candidate = f"postgresql+{driver}:{rest}"
            if _driver_problem(make_url(candidate)) is None:
                return candidate
        raise ValueError("no PostgreSQL driver is installed: install psycopg2-binary (Sami's dependency)")
    problem = _driver_problem(url)
    if problem:
        raise ValueError(problem)
    return raw


def _driver_problem(url: URL) -> str | None:
    driver = url.get_driver_name()
    try:
        dialect = url.get_dialect()
    except ArgumentError:
        return f"unknown {url.get_backend_name()} driver {driver!r}: {_DRIVER_HINT}"
    if dialect.is_async:
        return f"{driver!r} is an asyncio driver, which Sami cannot use: {_DRIVER_HINT}"
    try:
        dialect.import_dbapi()
    except ImportError:
        return f"the database driver {driver!r} is not installed: {_DRIVER_HINT}"
    return None


def _redis_url(raw: str) -> str:
    if raw and not re.match(r"^(redis|rediss|unix)://", raw):
        raise ValueError("not a Redis URL (example: redis://localhost:6379/0)")
    return raw


def _name(raw: str) -> str:
    if not _NAME_RE.match(raw):
        raise ValueError("must be lowercase letters, digits and dashes, starting with a letter")
    return raw


def _github_api_url(raw: str) -> str:
    if not re.match(r"^https?://[^\s/]+(/\S*)?$", raw):
        raise ValueError("not an http(s) URL (example: https://github.example.com/api/v3)")
    return raw.rstrip("/")


def _private_key(raw: str) -> str:
    """A PEM private key, given as its text or as the path of a file holding it."""
    text = raw
    if "-----BEGIN" not in raw:
        try:
            text = Path(raw).read_text()
        except OSError as exc:
            raise ValueError(f"neither a PEM private key nor a readable file ({exc.strerror})") from None
    if "-----BEGIN" not in text or "PRIVATE KEY-----" not in text:
        raise ValueError("not a PEM private key (-----BEGIN RSA PRIVATE KEY-----)")
    return text


_REPOSITORY_PATTERN = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/(?:\*|[A-Za-z0-9._-]{1,100})$")


def _repositories(raw: str) -> tuple[str, ...]:
    patterns = tuple(part.strip() for part in raw.split(",") if part.strip())
    for pattern in patterns:
        if not _REPOSITORY_PATTERN.match(pattern):
            raise ValueError(f"{pattern!r} is not owner/name or owner/* (separate several with commas)")
    return patterns


_LOGIN_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$")


def _logins(raw: str) -> tuple[str, ...]:
    logins = tuple(part.strip().lower() for part in raw.split(",") if part.strip())
    for login in logins:
        if not _LOGIN_RE.match(login):
            raise ValueError(f"{login!r} is not a GitHub login (separate several with commas)")
    return logins


def _team(raw: str) -> str:
    if not re.match(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9][A-Za-z0-9_-]{0,99}$", raw):
        raise ValueError(f"{raw!r} is not org/team-slug (example: acme/platform)")
    return raw


def _text(raw: str) -> str:
    return raw


_VARIABLES: dict[str, tuple[str, object]] = {
    "SAMI_MODE": ("mode", _choice(*MODES)),
    "SAMI_INSTANCE_DIR": ("instance_dir", _text),
    "SAMI_DATABASE_URL": ("database_url", database_url),
    "SAMI_REDIS_URL": ("redis_url", _redis_url),
    "SAMI_SECRET_KEY": ("secret_key", _text),
    "SAMI_WEBHOOK_SECRET": ("webhook_secret", _text),
    "SAMI_PROJECT_NAME": ("project_name", _name),
    "SAMI_BASE_DOMAIN": ("base_domain", _text),
    "SAMI_NAMESPACE": ("namespace", _name),
    "SAMI_PUBLIC_URL": ("public_url", _text),
    "SAMI_DEPLOYMENTS_REPO": ("deployments_repo", _text),
    "SAMI_DEPLOYMENTS_REF": ("deployments_ref", _text),
    "SAMI_DEPLOYMENTS_TOKEN": ("deployments_token", _text),
    "SAMI_STATIC_ROOT": ("static_root", _text),
    "SAMI_TARGETS": ("targets_file", _text),
    "SAMI_SCRIPT_TIMEOUT": ("script_timeout", _int(1, 24 * 3600)),
    "SAMI_STATUS_TIMEOUT": ("status_timeout", _int(1, 24 * 3600)),
    "SAMI_CHECK_INTERVAL": ("check_interval", _int(5, 24 * 3600)),
    "SAMI_RECONCILE_INTERVAL": ("reconcile_interval", _int(60, 24 * 3600)),
    "SAMI_REDELIVER_INTERVAL": ("redeliver_interval", _int(60, 24 * 3600)),
    "SAMI_PR_DEBOUNCE_SECONDS": ("pr_debounce_seconds", _int(0, 3600)),
    "SAMI_RETENTION_DAYS": ("retention_days", _int(0, 3650)),
    "SAMI_MAX_REQUEST_BYTES": ("max_request_bytes", _int(1024, 64 * 1024 * 1024)),
    "SAMI_LOG_LEVEL": ("log_level", _choice("debug", "info", "warning", "error")),
    "SAMI_LOG_FORMAT": ("log_format", _choice("text", "json")),
    "SAMI_GITHUB_API_URL": ("github_api_url", _github_api_url),
    "SAMI_GITHUB_TIMEOUT": ("github_timeout", _int(1, 600)),
    "SAMI_GITHUB_TOKEN": ("github_token", _text),
    "SAMI_GITHUB_APP_ID": ("github_app_id", _int(1, 2**63 - 1)),
    "SAMI_GITHUB_APP_PRIVATE_KEY": ("github_app_private_key", _private_key),
    "SAMI_GITHUB_REPOSITORIES": ("github_repositories", _repositories),
    "SAMI_PAGE_READ": ("page_read", _choice("public", "login")),
    "SAMI_GITHUB_WEB_URL": ("github_web_url", _github_api_url),
    "SAMI_GITHUB_OAUTH_CLIENT_ID": ("github_oauth_client_id", _text),
    "SAMI_GITHUB_OAUTH_CLIENT_SECRET": ("github_oauth_client_secret", _text),
    "SAMI_ADMINS": ("admins", _logins),
    "SAMI_ADMIN_TEAM": ("admin_team", _team),
    "SAMI_METRICS_TOKEN": ("metrics_token", _text),
    "SAMI_METRICS_PORT": ("metrics_port", _int(0, 65535)),
    "SAMI_SHUTDOWN_GRACE": ("shutdown_grace", _int(0, 24 * 3600)),
}

# Settings that must be set (non-empty) in production mode.
_REQUIRED_IN_PRODUCTION = ("SAMI_DATABASE_URL", "SAMI_SECRET_KEY", "SAMI_WEBHOOK_SECRET")

# The shortest secret production accepts, in characters: a short one can be guessed, and with it
# page sessions (SAMI_SECRET_KEY) or webhook signatures (SAMI_WEBHOOK_SECRET) forged. GitHub's
# docs generate webhook secrets from 20 random bytes; the metrics token (optional) guards a scrape.
MIN_SECRET_LENGTHS = {"SAMI_SECRET_KEY": 32, "SAMI_WEBHOOK_SECRET": 20, "SAMI_METRICS_TOKEN": 20}
_HOW_TO_MAKE_ONE = "python3 -c 'import secrets; print(secrets.token_hex(32))'"


def load_settings(environ: Mapping[str, str] | None = None, **overrides) -> Settings:
    """Build Settings from ``SAMI_*`` variables; raise ConfigError naming the first bad one."""
    environ = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for variable, (name, parse) in _VARIABLES.items():
        raw = environ.get(variable)
        if raw is None or raw == "":
            continue
        try:
            values[name] = parse(raw)
        except ValueError as exc:
            raise ConfigError(variable, str(exc)) from None
    known = {f.name for f in fields(Settings)}
    for name, value in overrides.items():
        if name not in known:
            raise ConfigError(name, "unknown setting")
        values[name] = value
    settings = Settings(**values)
    if settings.mode == "production":
        for variable in _REQUIRED_IN_PRODUCTION:
            name = _VARIABLES[variable][0]
            if not getattr(settings, name):
                raise ConfigError(variable, "required in production mode (SAMI_MODE=production)")
        for variable, minimum in MIN_SECRET_LENGTHS.items():
            value = getattr(settings, _VARIABLES[variable][0])
            if value and len(value) < minimum:
                raise ConfigError(variable, f"must be at least {minimum} characters in production "
                                            f"(make one: {_HOW_TO_MAKE_ONE})")
    return _fill_defaults(settings)


def _fill_defaults(settings: Settings) -> Settings:
    instance = Path(settings.instance_dir)
    changes: dict[str, object] = {}
    if not settings.database_url:
        changes["database_url"] = f"sqlite:///{instance / 'sami.sqlite3'}"
    if not settings.static_root:
        changes["static_root"] = str(instance / "sites")
    if not settings.secret_key:
        # Development only (production requires it): sessions do not survive a restart.
        changes["secret_key"] = os.urandom(32).hex()
    if not settings.targets:
        static_root = str(changes.get("static_root", settings.static_root))
        if settings.targets_file:
            try:
                changes["targets"], changes["default_target"] = load_targets_file(settings.targets_file, static_root)
            except TargetsError as exc:
                raise ConfigError("SAMI_TARGETS", str(exc)) from None
        else:
            changes["targets"] = (default_target(static_root),)
    if not changes:
        return settings
    return Settings(**{**settings.__dict__, **changes})


def settings_from_mapping(config: Mapping[str, object]) -> Settings:
    """Build Settings from a dict of field names (tests), applying the same checks and defaults."""
    environ = {}
    direct = {}
    by_field = {name: variable for variable, (name, _) in _VARIABLES.items()}
    for key, value in config.items():
        if key in by_field and isinstance(value, str):
            environ[by_field[key]] = value
        else:
            direct[key] = value
    return load_settings(environ, **direct)
