"""The checks of a commit, as ``require_checks`` reads them: check runs and commit statuses together.

Read through the API every time a decision depends on them (webhook events arrive late, out of
order or not at all, so an event only says "look again"). Sami's own commit statuses
(``sami/...``) are not checks of the code and are left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SUCCESS, PENDING, FAILURE = "success", "pending", "failure"
GREEN_CONCLUSIONS = frozenset({"success", "neutral", "skipped"})
OWN_CONTEXT = "sami/"


@dataclass(frozen=True)
class Verdict:
    """Whether a commit's checks are green, still running or red, and which ones say so."""

    state: str
    summary: str


def verdict(check_runs: list[dict[str, Any]], statuses: list[dict[str, Any]]) -> Verdict:
    """Red if any check run or status failed, pending if any is not finished (or none was reported),
    green otherwise."""
    failed, running = [], []
    for run in check_runs:
        name = str(run.get("name") or run.get("id"))
        if run.get("status") != "completed":
            running.append(name)
        elif run.get("conclusion") not in GREEN_CONCLUSIONS:
            failed.append(f"{name}: {run.get('conclusion')}")
    for status in statuses:
        context = str(status.get("context") or "")
        if context.startswith(OWN_CONTEXT):
            continue
        if status.get("state") in ("failure", "error"):
            failed.append(f"{context}: {status.get('state')}")
        elif status.get("state") == "pending":
            running.append(context)
    if failed:
        return Verdict(FAILURE, _names(failed))
    if running:
        return Verdict(PENDING, f"{len(running)} running: {_names(running)}")
    if not check_runs and not [s for s in statuses if not str(s.get("context") or "").startswith(OWN_CONTEXT)]:
        return Verdict(PENDING, "no checks reported yet")
    return Verdict(SUCCESS, f"{len(check_runs) + len(statuses)} passed")


def _names(names: list[str], shown: int = 3) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def read(github, repository: str, sha: str) -> Verdict:
    """The verdict on ``sha``'s checks, read through the API now."""
    runs = github.check_runs(repository, sha)
    statuses = (github.combined_status(repository, sha) or {}).get("statuses") or []
    return verdict(runs, statuses)
