"""Where the client finds its server and token: flags, then SAMI_URL / SAMI_TOKEN, then the file
``sami login`` writes (``$XDG_CONFIG_HOME/sami/config.json``, else ``~/.config/sami/config.json``).

The file holds a secret, so it is written mode 0600 in a 0700 folder, and replaced atomically.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from bot.client.exits import Exit
from bot.client.http import ClientError

DEFAULT_URL = "http://127.0.0.1:8000"


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "sami" / "config.json"


def read_config(path: Path | None = None) -> dict[str, str]:
    """The saved connection (empty when there is none); ClientError when the file is unreadable."""
    path = path or config_path()
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ClientError(f"cannot read {path}: {exc}; run `sami login` again to rewrite it", Exit.BAD_INPUT) from None
    if not isinstance(document, dict):
        raise ClientError(f"{path} is not a JSON object; run `sami login` again to rewrite it", Exit.BAD_INPUT)
    return {k: v for k, v in document.items() if k in ("url", "token") and isinstance(v, str)}


def write_config(url: str, token: str, path: Path | None = None) -> Path:
    """Save the connection, readable by this user only."""
    path = path or config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump({"url": url, "token": token}, handle, indent=2)
            handle.write("\n")
        os.chmod(temporary, 0o600)  # in case the file existed with wider permissions
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


@dataclass(frozen=True)
class Connection:
    url: str
    token: str | None
    url_from: str  # where the URL came from, for error messages
    token_saved_for: str | None = None  # the server a saved token is for, when it is not this one

    @classmethod
    def resolve(cls, url: str | None, token: str | None) -> Connection:
        """Flags (click fills them from SAMI_URL / SAMI_TOKEN too), else the config file, else the default URL.

        The saved token goes only to the saved server: with another ``--url`` it is not sent.
        """
        saved = read_config() if not (url and token) else {}
        saved_url = saved.get("url", "").rstrip("/")
        if url:
            if token or not saved.get("token"):
                return cls(url, token, "--url or SAMI_URL")
            if url.rstrip("/") == saved_url:
                return cls(url, saved["token"], "--url or SAMI_URL")
            return cls(url, None, "--url or SAMI_URL", token_saved_for=saved_url)
        if saved_url:
            return cls(saved_url, token or saved.get("token"), str(config_path()))
        return cls(DEFAULT_URL, token, "the default")

    def check_token(self) -> None:
        """ClientError when there is no token for this server but one saved for another: say whose it is."""
        if not self.token and self.token_saved_for:
            url = self.url.rstrip("/")
            raise ClientError(f"the saved token is for {self.token_saved_for}; pass --token or SAMI_TOKEN for {url}, "
                              f"or run `sami login --url {url}`", Exit.REFUSED)
