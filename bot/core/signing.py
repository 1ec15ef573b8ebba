"""The webhook secret and its signatures: SAMI_WEBHOOK_SECRET, or the embedded default's secret
generated once into the instance folder, and the ``X-Hub-Signature-256`` value GitHub sends."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from bot.core.config import Settings

EMBEDDED_KEY_FILE = "webhook-secret"


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
