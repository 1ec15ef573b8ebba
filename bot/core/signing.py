"""The secrets Sami keeps in its instance folder and what is checked against them: the webhook
secret (SAMI_WEBHOOK_SECRET, or the embedded default's generated one) and its ``X-Hub-Signature-256``
signatures, and the embedded default's one-time sign-in code."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from pathlib import Path

from bot.core.config import Settings

EMBEDDED_KEY_FILE = "webhook-secret"
ONE_TIME_TTL = 3600  # seconds the embedded default's sign-in link works
ONE_TIME_FILE = "signin-link"


def embedded_secret(instance_dir: str) -> tuple[str, bool, Path]:
    """The embedded default's webhook secret, generated once into the instance folder (mode
    0600): the secret, whether it was generated now, and its file."""
    path = Path(instance_dir) / EMBEDDED_KEY_FILE
    try:
        return path.read_text().strip(), False, path
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(32)
    # Written whole to a file of its own, then linked into place: a second process starting at the
    # same time either links first or reads the complete file, never half of it.
    temporary = path.with_name(f".{EMBEDDED_KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(value + "\n")
        try:
            os.link(temporary, path)
        except FileExistsError:
            return path.read_text().strip(), False, path
    finally:
        temporary.unlink(missing_ok=True)
    return value, True, path


def webhook_secret(settings: Settings) -> str:
    """The secret deliveries are signed with: SAMI_WEBHOOK_SECRET, else the embedded default's
    generated one (no Redis, development mode); empty when there is none."""
    if settings.webhook_secret:
        return settings.webhook_secret
    if settings.embedded and settings.mode == "development":
        return embedded_secret(settings.instance_dir)[0]
    return ""


def signature(secret: bytes, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value GitHub sends with ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def _digest(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def make_one_time_code(instance_dir: str, now: float | None = None) -> str:
    """A new one-time sign-in code; only its hash is stored (0600), replacing any earlier one."""
    code = secrets.token_urlsafe(24)
    path = Path(instance_dir) / ONE_TIME_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({"sha256": _digest(code), "expires": (now or time.time()) + ONE_TIME_TTL}, out)
    os.replace(tmp, path)
    return code


def redeem_one_time_code(instance_dir: str, code: str, now: float | None = None) -> bool:
    """True once for the current code before it expires; the code is gone afterwards either way."""
    path = Path(instance_dir) / ONE_TIME_FILE
    claimed = path.with_suffix(f".claimed-{os.getpid()}-{threading.get_ident()}")
    try:
        os.replace(path, claimed)  # atomic: of two concurrent redemptions, one gets the file
    except FileNotFoundError:
        return False
    try:
        data = json.loads(claimed.read_text())
        if not hmac.compare_digest(str(data.get("sha256")), _digest(code or "")):
            os.replace(claimed, path)  # a wrong guess does not burn the real code
            return False
        return float(data.get("expires", 0)) > (now or time.time())
    except (ValueError, OSError):
        return False
    finally:
        claimed.unlink(missing_ok=True)
