"""The sticky pull request comment: Markdown rendered from plain data, nothing else.

One comment per pull request, found again by its first line (``MARKER``) and edited in place. The
renderer is pure and deterministic: the same rows, times and notices give the same text, so the
caller edits the comment only when the text changes.

Every value that a user, a manifest or a script chose (tags, URLs, messages, logins) is escaped:
Markdown and HTML in it are shown as text, line breaks and ``|`` cannot break the table, ``@`` does
not mention anyone, and only ``http(s)`` URLs become links. The comment stays under GitHub's limit
by leaving out the last rows and saying how many were left out.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from bot.core.lifecycle import (
    ACTION_WORDS,
    STATE_WORDS,
    ActionState,
    DeploymentState,
    FailureReason,
    last_deploy_failed,
    last_deploy_words,
    short_reason,
)

MARKER = "<!-- sami:sticky-comment -->"
# GitHub refuses a comment body over 65,536 characters; counted here in UTF-16 units, never fewer.
MAX_COMMENT_CHARS = 65_536
MAX_ROWS = 50
MAX_URL = 2000
MAX_TEXT = 100
NONE = "—"

S = DeploymentState
DRIFT_BADGE = "🟣 Drift"
PIN_BADGE = "📌 Pinned"


@dataclass(frozen=True)
class EnvironmentRow:
    """One deployment of the pull request as the comment shows it."""

    service: str
    name: str
    state: DeploymentState | str
    failure_reason: FailureReason | str | None = None
    url: str | None = None
    tag: str | None = None
    sha: str | None = None
    updated_at: datetime | None = None
    action_id: int | None = None
    action_state: ActionState | str | None = None
    action_kind: str | None = None
    page_url: str | None = None
    # The tag it ran before, while an update is pending ("Updating (was v1)").
    previous_tag: str | None = None
    # What a deploy waits for before it starts, e.g. "CI" ("Waiting for CI").
    waiting_for: str | None = None
    # What differs between what runs and what Sami deployed, in words, while the deployment drifts.
    drift: str | None = None
    # Why it failed, in the worker's words (a generic failure's short reason comes from it).
    status_message: str | None = None
    # The last deploy (create, update, restore, rollback): its kind, state and tag.
    deploy_kind: str | None = None
    deploy_state: ActionState | str | None = None
    deploy_tag: str | None = None
    # Who pinned it (a rollback did), and why; None when it is not pinned.
    pinned_by: str | None = None
    pin_reason: str | None = None


@dataclass(frozen=True)
class PreviewComponent:
    """One component of a pull request's whole-environment preview: what runs, and what its last run did."""

    service: str
    state: DeploymentState | str | None  # None: not deployed (yet, or any more)
    failure_reason: FailureReason | str | None = None
    status_message: str | None = None
    tag: str | None = None
    url: str | None = None
    endpoint: str | None = None
    status: str = "waiting"  # in the run: waiting, queued, succeeded, failed, skipped
    message: str | None = None  # the run's note (why it failed or was skipped)
    data: str | None = None  # a third-party service's: empty, seeded, seed failed: ..., shared


@dataclass(frozen=True)
class Preview:
    """A pull request's whole-environment preview (``preview_of``) and its last run."""

    environment: str
    source: str | None
    run_id: int
    operation: str
    run_state: str  # running, succeeded, failed
    components: tuple[PreviewComponent, ...]
    page_url: str | None = None


@dataclass(frozen=True)
class LastCommand:
    """The last `/sami` command on the pull request and what became of it."""

    text: str  # as written, e.g. "/sami deploy web"
    author: str  # the GitHub login
    result: str  # e.g. "accepted", "refused: alice may only read this repository"


# --- escaping ---------------------------------------------------------------------------------

# ASCII punctuation that Markdown reads (CommonMark lets any of it be backslash-escaped).
# Values never start a line, so the marks that only count there (# - + 1.) are left as they are.
_MARKDOWN_PUNCTUATION = set("\\`*_{}[]()!|~$")
_HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}
_SPACES = re.compile(r"\s+")
_CODE_SAFE = re.compile(r"[A-Za-z0-9_.:/+@-]{1,128}\Z")
_COMMAND_SAFE = re.compile(r"/sami(?: [A-Za-z0-9_.,-]+)*\Z")
_UNPIN_SAFE = re.compile(r"sami unpin [a-z0-9-]{1,63}\Z")
_HEX_SHA = re.compile(r"[0-9a-fA-F]{7,64}\Z")
_URL = re.compile(r"https?://[^\s<>\"'`\\]+\Z", re.IGNORECASE)
_URL_KEEP = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~:/?#@!$&*+,;=%")
# A word joiner after "@": the text still reads "@name" but GitHub mentions nobody.
_NO_MENTION = "@\u2060"


def _clean(value: object, limit: int) -> str:
    """One line of printable text: no control or bidi characters, whitespace collapsed, shortened."""
    text = "" if value is None else str(value)
    text = "".join(" " if ch.isspace() else ch for ch in text
                   if ch.isspace() or unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co", "Cn"))
    text = _SPACES.sub(" ", text).strip()
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


def escape_text(value: object, limit: int = MAX_TEXT) -> str:
    """``value`` as literal text in Markdown and in a table cell: nothing in it is markup."""
    out = []
    for ch in _clean(value, limit):
        if ch in _HTML:
            out.append(_HTML[ch])
        elif ch in _MARKDOWN_PUNCTUATION:
            out.append("\\" + ch)
        elif ch == "@":
            out.append(_NO_MENTION)
        else:
            out.append(ch)
    return "".join(out)


def code(value: object, limit: int = 128, pattern: re.Pattern[str] = _CODE_SAFE) -> str:
    """``value`` in a code span when it is a plain token (a tag, a sha), otherwise as escaped text."""
    text = _clean(value, limit)
    if pattern.match(text):
        return f"`{text}`"
    return escape_text(text, limit)


def safe_url(url: object) -> str | None:
    """``url`` ready to be a link target when it is an http(s) URL with a host, else None."""
    if not isinstance(url, str) or len(url) > MAX_URL or not _URL.match(url):
        return None
    host = url.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    if not host or "@" in host:  # user@host reads as one site and opens another
        return None
    # Anything a link destination or a table could read as syntax is percent-encoded.
    return "".join(ch if ch in _URL_KEEP else "".join(f"%{b:02X}" for b in ch.encode("utf-8")) for ch in url)


def link(label: str, url: object) -> str:
    """A Markdown link with an already escaped ``label``, or just the label when ``url`` is not http(s)."""
    target = safe_url(url)
    return f"[{label}]({target})" if target else label


# --- words ------------------------------------------------------------------------------------


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def age(then: datetime | None, now: datetime) -> str:
    """How long ago ``then`` was, in words: "just now", "3 min ago", "5 h ago", "2 days ago", a date."""
    if then is None:
        return NONE
    then, now = _as_utc(then), _as_utc(now)
    seconds = int((now - then).total_seconds())
    if seconds < 60:
        return "just now"  # also a time a little ahead of ours: clocks differ
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 86400:
        return f"{seconds // 3600} h ago"
    days = seconds // 86400
    if days < 30:
        return "1 day ago" if days == 1 else f"{days} days ago"
    return f"on {then:%Y-%m-%d}"


def state_badge(state: DeploymentState | str, failure_reason: FailureReason | str | None = None,
                message: str | None = None) -> str:
    """The state as an icon and words, e.g. "🔴 Failed (tag mismatch)"; the icon never stands alone."""
    try:
        icon, words, _tone = STATE_WORDS[DeploymentState(state)]
    except ValueError:
        return f"❔ {escape_text(state, 40)}"
    reason = short_reason(state, failure_reason, message)
    if reason:
        words = f"{words} ({escape_text(reason, 60)})"
    return f"{icon} {words}"


def action_badge(state: ActionState | str) -> str:
    """An action's state as an icon and a word, e.g. "✅ succeeded"."""
    try:
        icon, word, _tone = ACTION_WORDS[ActionState(state)]
    except ValueError:
        return f"❔ {escape_text(state, 40)}"
    return f"{icon} {word}"


def short_sha(sha: str | None) -> str | None:
    """The first 7 characters of a commit sha, as GitHub shows it."""
    if not sha:
        return None
    return sha[:7] if _HEX_SHA.match(sha) else _clean(sha, 12)


# --- the comment ------------------------------------------------------------------------------


def _state_cell(row: EnvironmentRow) -> str:
    if row.waiting_for:
        return f"⏳ Waiting for {escape_text(row.waiting_for, 40)}"
    cell = state_badge(row.state, row.failure_reason, row.status_message)
    if row.previous_tag and str(row.state) == S.UPDATE_PENDING:
        cell += f" (was {code(row.previous_tag)})"
    if row.drift:
        # Its own badge: the target was changed outside Sami, which is not a failure of what Sami deployed.
        cell += f" · {DRIFT_BADGE}: {escape_text(row.drift, 160)}"
    if row.pinned_by:
        # Pushes leave it where a rollback took it: say who, and the two ways out.
        after = " after a rollback" if str(row.pin_reason or "").startswith("rollback") else ""
        cell += (f" · {PIN_BADGE} by {escape_text(row.pinned_by, 60)}{after}; "
                 f"{code(f'/sami unpin {row.service}', 80, _COMMAND_SAFE)} or "
                 f"{code(f'sami unpin {row.name}', 80, _UNPIN_SAFE)}")
    if row.deploy_state is not None and last_deploy_failed(row.state, row.deploy_state):
        # Still running what ran before: the last deploy did not take.
        words = last_deploy_words(row.deploy_kind or "deploy", row.deploy_state)
        cell += f" · {action_badge(row.deploy_state).split(' ', 1)[0]} last deploy: {escape_text(words, 40)}"
        if row.deploy_tag:
            cell += f" ({code(row.deploy_tag)})"
    return cell


def _url_cell(row: EnvironmentRow) -> str:
    target = safe_url(row.url)
    if not target:
        return NONE
    label = str(row.url).split("://", 1)[1].rstrip("/")
    return f"[{escape_text(label, 80)}]({target})"


def _tag_cell(row: EnvironmentRow) -> str:
    parts = []
    if row.tag:
        parts.append(code(row.tag))
    sha = short_sha(row.sha)
    if sha and not (row.tag and str(row.tag).startswith(sha)):
        parts.append(code(sha))
    return " · ".join(parts) or NONE


def _action_cell(row: EnvironmentRow) -> str:
    if row.action_id is None:
        return NONE
    kind = escape_text(row.action_kind or "action", 30)
    # "log", not "#<id>": GitHub would link "#123" to issue 123.
    return link(f"{kind} log", row.page_url) if safe_url(row.page_url) else f"{kind} (action {int(row.action_id)})"


def _row(row: EnvironmentRow, now: datetime) -> str:
    cells = [escape_text(row.service, 63), _state_cell(row), _url_cell(row), _tag_cell(row),
             age(row.updated_at, now), _action_cell(row)]
    return "| " + " | ".join(cells) + " |"


def _last_action_line(rows: Sequence[EnvironmentRow], now: datetime) -> str | None:
    with_actions = [row for row in rows if row.action_id is not None and row.action_state is not None]
    if not with_actions:
        return None
    row = max(with_actions, key=lambda r: int(r.action_id or 0))
    kind = escape_text(row.action_kind or "action", 30)
    line = (f"**Last action:** {kind} of {escape_text(row.service, 63)} (action {int(row.action_id or 0)})"
            f" {action_badge(row.action_state or '')}")
    if row.updated_at is not None:
        line += f" · {age(row.updated_at, now)}"
    if safe_url(row.page_url):
        line += " · " + link("log", row.page_url)
    return line


def _last_command_line(command: LastCommand) -> str:
    return (f"**Last command:** {code(command.text, 200, _COMMAND_SAFE)} by {escape_text(command.author, 39)}"
            f" — {escape_text(command.result, 200)}")


def _approval_notice(head_sha: str | None) -> str:
    sha = short_sha(head_sha)
    commit = f"commit {code(sha)}" if sha else "this commit"
    return ("> ⏸️ **Waiting for approval** — this pull request comes from a fork, so Sami deploys it only "
            f"after someone with write access comments `/sami deploy`. An approval holds for {commit} only; "
            "a new push needs a new approval.")


def _ci_failed_notice(head_sha: str | None, summary: str) -> str:
    sha = short_sha(head_sha)
    commit = f"commit {code(sha)}" if sha else "this commit"
    return (f"> 🔴 **CI failed** at {commit}: {escape_text(summary, 200)}. Nothing is deployed until its checks "
            "pass; a new push is checked again.")


RUN_STATUS = {"waiting": "⏳ waiting", "queued": "⏳ queued", "succeeded": "✅ succeeded", "failed": "❌ failed",
              "skipped": "⏭️ skipped"}
RUN_STATE = {"running": "⏳ running", "succeeded": "✅ succeeded", "failed": "❌ failed"}


def _preview_link_cell(component: PreviewComponent) -> str:
    parts = []
    if safe_url(component.url):
        label = str(component.url).split("://", 1)[1].rstrip("/")
        parts.append(f"[{escape_text(label, 80)}]({safe_url(component.url)})")
    if component.endpoint:  # a third-party service's host:port
        parts.append(code(component.endpoint) if _CODE_SAFE.match(component.endpoint)
                     else escape_text(component.endpoint, 120))
    return " · ".join(parts) or NONE


def _preview_run_cell(component: PreviewComponent) -> str:
    cell = RUN_STATUS.get(component.status) or f"❔ {escape_text(component.status, 20)}"
    if component.data:
        cell += f" · data: {escape_text(component.data, 120)}"
    if component.message and component.status in ("failed", "skipped") and not (
            component.data and component.data in component.message):  # a failed seed says it once
        cell += f" — {escape_text(component.message, 160)}"
    return cell


def _preview_row(component: PreviewComponent) -> str:
    state = state_badge(component.state, component.failure_reason, component.status_message) \
        if component.state is not None else "not deployed"
    cells = [escape_text(component.service, 63), state, _preview_link_cell(component),
             code(component.tag) if component.tag else NONE, _preview_run_cell(component)]
    return "| " + " | ".join(cells) + " |"


def render_preview(preview: Preview, max_rows: int = MAX_ROWS) -> list[str]:
    """The lines of a pull request's whole-environment preview: a line about it and its last run, then
    every component (deploy order) with its state, link, version and result in that run."""
    about = f"**Preview environment {code(preview.environment, 63)}**"
    if preview.source:
        about += f" (like {code(preview.source, 63)})"
    run = RUN_STATE.get(preview.run_state) or escape_text(preview.run_state, 20)
    about += f" · {escape_text(preview.operation, 20)} run {int(preview.run_id)}: {run}"
    if safe_url(preview.page_url):
        about += " · " + link("environment page", preview.page_url)
    lines = [about, "", "| Component | State | Link | Version | This run |", "| --- | --- | --- | --- | --- |"]
    lines += [_preview_row(component) for component in preview.components[:max_rows]]
    left_out = len(preview.components) - max_rows
    if left_out > 0:
        lines += ["", f"…and {left_out} more component{'s' if left_out > 1 else ''} on the environment page."]
    return lines


def _length(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


MAX_RELEASE_LINES = 3  # the latest releases and rollbacks asked for on the pull request


def render_sticky_comment(rows: Sequence[EnvironmentRow], *, pr_number: int, head_sha: str | None,
                          now: datetime, public_url: str | None = None, awaiting_approval: bool = False,
                          last_command: LastCommand | None = None, max_rows: int = MAX_ROWS,
                          limit: int = MAX_COMMENT_CHARS, ci_failed: str | None = None,
                          releases: Sequence[str] = (), preview: Preview | None = None) -> str:
    """The sticky comment's Markdown for pull request ``pr_number``; the same input gives the same text.
    With ``preview`` (the pull request's whole-environment preview), its components come first."""
    sha = short_sha(head_sha)
    title = f"### Sami environments for #{int(pr_number)}"
    if sha:
        title += f" at {code(sha)}"
    head = [MARKER, title, ""]
    if awaiting_approval:
        head += [_approval_notice(head_sha), ""]
    if ci_failed:
        head += [_ci_failed_notice(head_sha, ci_failed), ""]
    if preview is not None:
        head += [*render_preview(preview, max_rows), ""]

    ordered = sorted(rows, key=lambda r: (str(r.service), str(r.name), r.action_id or 0))
    status_page = link("status page", public_url) if safe_url(public_url) else None
    outcome = [line for line in (_last_action_line(ordered, now),
                                 _last_command_line(last_command) if last_command else None) if line]
    outcome += [f"🔀 {escape_text(line)}" for line in releases[:MAX_RELEASE_LINES]]
    tail = [""]
    if outcome:
        tail += ["  \n".join(outcome), ""]  # two spaces: a line break, not a new paragraph
    footer = "<sub>Comment `/sami help` for the commands"
    if status_page:
        footer += f" · {status_page}"
    footer += f" · as of {_as_utc(now):%Y-%m-%d %H:%M} UTC</sub>"
    tail.append(footer)

    if not ordered and preview is not None:
        return "\n".join(head[:-1] + tail) + "\n"
    if not ordered:
        body = ["No environments for this pull request yet. Comment `/sami deploy` to create them."]
        return "\n".join(head + body + tail) + "\n"

    table = ["| Service | State | URL | Tag | Updated | Log |", "| --- | --- | --- | --- | --- | --- |"]
    fixed = _length("\n".join(head + table + tail)) + 2
    more_line_room = 120 + (_length(status_page) if status_page else 0)
    shown: list[str] = []
    used = fixed
    for index, row in enumerate(ordered):
        line = _row(row, now)
        left_after = len(ordered) - index - 1
        room = limit - (more_line_room if left_after else 0)
        if index >= max_rows or used + _length(line) + 1 > room:
            break
        shown.append(line)
        used += _length(line) + 1
    body = table + shown
    left_out = len(ordered) - len(shown)
    if left_out:
        more = f"…and {left_out} more environment{'s' if left_out > 1 else ''}"
        body += ["", more + (f": see the {status_page}." if status_page else ".")]
    return "\n".join(head + body + tail) + "\n"
