"""``sami github check``: whether Sami can work with GitHub, one line per item, each saying what to fix."""

from __future__ import annotations

from pathlib import Path

from bot.core.config import Settings
from bot.core.signing import EMBEDDED_KEY_FILE
from bot.github.client import CheckLine, GitHubClient, GitHubError
from bot.github.redeliver import WEBHOOK_PATH, watched_repositories
from bot.manifests import DeploymentsRepoError
from bot.manifests.store import ManifestStore


def github_check(settings: Settings, github: GitHubClient | None, store: ManifestStore) -> list[CheckLine]:
    """Credentials, each repository Sami hears from, the webhook and its secret, the deployments repo."""
    lines = []
    try:
        repo = store.current(refresh=True)
    except DeploymentsRepoError as exc:
        repo = None
        deployments = CheckLine("deployments repo", False, str(exc))
    else:
        errors = f", {len(repo.errors)} errors (sami validate shows them)" if repo.errors else ""
        deployments = CheckLine("deployments repo", True,
                                f"{store.source} read: {len(repo.manifests)} valid manifests{errors}")
    if github is None:
        lines.append(CheckLine("credentials", False, "none: set SAMI_GITHUB_APP_ID and SAMI_GITHUB_APP_PRIVATE_KEY "
                                                     "(a GitHub App), or SAMI_GITHUB_TOKEN"))
    else:
        if repo is not None:
            repositories = watched_repositories(repo, settings.github_repositories)
        else:
            repositories = [p for p in settings.github_repositories if not p.endswith("/*")]
        checked = github.check(repositories)
        lines.extend(checked)
        if not repositories:
            lines.append(CheckLine("repositories", False, "none to check: no manifest names a repository, and "
                                                          "SAMI_GITHUB_REPOSITORIES names none"))
        if checked[0].ok:
            lines.extend(_webhooks(github, repositories, settings))
    lines.append(_secret(settings))
    lines.append(deployments)
    return lines


def _webhooks(github: GitHubClient, repositories: list[str], settings: Settings) -> list[CheckLine]:
    target = settings.public_url.rstrip("/") + WEBHOOK_PATH
    if github.mode == "app":
        try:
            config = github.app_hook_config()
        except GitHubError as exc:
            return [CheckLine("App webhook", False, exc.message)]
        return [_hook_line("App webhook", config, target)]
    lines = []
    for repository in repositories:
        name = f"webhook of {repository}"
        try:
            hooks = github.repository_hooks(repository)
        except GitHubError as exc:
            lines.append(CheckLine(name, False, f"cannot list its webhooks ({exc.message}); the token needs admin "
                                                "access to the repository to read and redeliver deliveries"))
            continue
        ours = [h for h in hooks if str((h.get("config") or {}).get("url") or "").rstrip("/") == target]
        if not ours:
            lines.append(CheckLine(name, False, f"none posts to {target} (SAMI_PUBLIC_URL{WEBHOOK_PATH}): add one "
                                                "with content type application/json and the webhook secret"))
            continue
        lines.append(_hook_line(name, ours[0].get("config") or {}, target))
    return lines


def _hook_line(name: str, config: dict, target: str) -> CheckLine:
    url = str(config.get("url") or "").rstrip("/")
    if url != target:
        return CheckLine(name, False, f"posts to {url or 'nowhere'}, not to {target} (SAMI_PUBLIC_URL{WEBHOOK_PATH})")
    if config.get("content_type") != "json":
        return CheckLine(name, False, f"sends {config.get('content_type')!r} payloads: set its content type to "
                                      "application/json")
    if not config.get("secret"):
        return CheckLine(name, False, "has no secret: give it the one in SAMI_WEBHOOK_SECRET")
    return CheckLine(name, True, f"posts JSON to {target}, signed with a secret")


def _secret(settings: Settings) -> CheckLine:
    if settings.webhook_secret:
        return CheckLine("webhook secret", True, "SAMI_WEBHOOK_SECRET is set")
    generated = Path(settings.instance_dir) / EMBEDDED_KEY_FILE
    if settings.embedded and settings.mode == "development" and generated.exists():
        return CheckLine("webhook secret", True, f"the embedded default's, generated in {generated}")
    return CheckLine("webhook secret", False, "SAMI_WEBHOOK_SECRET is empty: Sami refuses every delivery it "
                                              "cannot verify; set it to the secret of the webhook")
