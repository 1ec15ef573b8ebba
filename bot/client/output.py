"""What the client prints for people: tables that fit the terminal, states in colour on a terminal
only (the word always carries the meaning), a progress line, times as "2 min ago".

Scripts use ``--json`` instead; nothing here is meant to be parsed.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import click

from bot.core.lifecycle import STATE_WORDS

STATE_COLOURS = {
    "Running": "green", "succeeded": "green",
    "Failure": "red", "CleanupFailed": "red", "failed": "red", "timed_out": "red",
    "CreatePending": "yellow", "UpdatePending": "yellow", "ArchivePending": "yellow", "CleanupPending": "yellow",
    "queued": "yellow", "running": "yellow",
    "drift": "magenta",
    "Archived": "blue", "cancelled": "bright_black", "superseded": "bright_black", "Removed": "bright_black",
}
ELLIPSIS = "…"


def is_tty(stream=None) -> bool:
    stream = stream or sys.stdout
    return hasattr(stream, "isatty") and stream.isatty()


TONE_COLOURS = {"ok": "green", "bad": "red", "busy": "yellow", "quiet": "bright_black"}
# A deployment's state as the lists word it ("Failed (tag mismatch)"), coloured by its word's tone.
_WORD_TONES = sorted(((words[1], words[2]) for words in STATE_WORDS.values()), key=lambda wt: -len(wt[0]))


def state(text: str | None, colour: bool) -> str:
    """A state word, coloured when ``colour``."""
    text = text or "-"
    return click.style(text, fg=STATE_COLOURS.get(text)) if colour else text


def drift(deployment: dict) -> str:
    """A deployment's drift in a word: "drift" when its target runs something else than Sami deployed,
    "synced", or "-" when nothing says (its control script reports nothing)."""
    status = (deployment.get("drift") or {}).get("status")
    return {"drifted": "drift", "in_sync": "synced"}.get(status, "-")


def config_line(view: dict | None) -> str | None:
    """A requested or deployed config in one line: image or tag, overrides, secret names, its action."""
    if not view:
        return None
    words = [view.get("image") or view.get("tag") or "-"]
    overrides = view.get("overrides") or {}
    pairs = {**(overrides.get("app") or {}), **(overrides.get("deployment") or {})}
    if pairs:
        words.append(", ".join(f"{k}={v}" for k, v in sorted(pairs.items())))
    if view.get("secrets"):
        words.append("secrets " + ", ".join(view["secrets"]))
    words.append(f"(action {view.get('action_id')}, {view.get('kind')} {view.get('state')})")
    return "  ".join(words)


def running_lines(running: dict | None) -> str | None:
    """What the target reports running, a component a line: name, image or tag, replicas running/wanted."""
    if not running:
        return None
    lines = []
    for c in running.get("components") or []:
        counts = ""
        if c.get("replicas") is not None or c.get("running") is not None:
            counts = f"  {c.get('running') if c.get('running') is not None else '?'}/" \
                     f"{c.get('replicas') if c.get('replicas') is not None else '?'} running"
        lines.append(f"{c['name']}  {c.get('image') or c.get('tag') or '-'}{counts}")
    return "\n".join(lines) or "nothing"


def deployment_state(text: str, colour: bool) -> str:
    """A deployment's state in words (bot.core.lifecycle's), coloured by the tone of its first word."""
    if not colour:
        return text
    words = text.removeprefix("PINNED ")  # a pinned deployment's marker comes first (bot.client.read)
    tone = next((tone for word, tone in _WORD_TONES if words.startswith(word)), None)
    return click.style(text, fg=TONE_COLOURS[tone]) if tone else text


def print_json(document) -> None:
    click.echo(json.dumps(document, indent=2, sort_keys=True))


def ago(value: str | None, now: datetime | None = None) -> str:
    """An ISO timestamp as "just now", "5 min ago", "3 h ago", "2 d ago"."""
    if not value:
        return "-"
    try:
        then = datetime.fromisoformat(value)
    except ValueError:
        return value
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    seconds = ((now or datetime.now(UTC)) - then).total_seconds()
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h ago"
    return f"{int(seconds // 86400)} d ago"


def elapsed(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds < 3600 else \
        f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + ELLIPSIS


def cut_middle(text: str, width: int) -> str:
    """``text`` in ``width`` characters with its middle left out: the end of a URL (the part that tells
    one deployment's from another's) stays, and so does its start."""
    if len(text) <= width:
        return text
    if "://" in text:  # the scheme is the part a reader needs least
        text = text.split("://", 1)[1]
        if len(text) <= width:
            return text
    if width < 3:
        return text[:width]
    head = (width - 1) // 3
    return text[:head] + ELLIPSIS + text[len(text) - (width - 1 - head):]


def cut_around(text: str, width: int, start: int, end: int) -> str:
    """``text`` in ``width`` characters keeping ``text[start:end]`` (what tells it from its neighbours in a
    column), with a short end ("/") and then what comes before it and after it, as much as fits."""
    if len(text) <= width:
        return text
    if "://" in text:
        scheme = len(text.split("://", 1)[0]) + 3
        text, start, end = text[scheme:], max(0, start - scheme), max(0, end - scheme)
        if len(text) <= width:
            return text
    if end - start + 2 > width:
        return cut_middle(text, width)

    def size(left: int, right: int) -> int:
        return right - left + (left > 0) + (right < len(text))

    left, right = start, end
    if len(text) - end <= 3 and size(left, len(text)) <= width:  # a short end ("/") goes along
        right = len(text)
    while left > 0 and size(left - 1, right) <= width:
        left -= 1
    while right < len(text) and size(left, right + 1) <= width:
        right += 1
    return ("…" if left > 0 else "") + text[left:right] + ("…" if right < len(text) else "")


def _differing(cells: Sequence[str]) -> tuple[int, int]:
    """How many characters all ``cells`` share at their start and at their end (0, 0 for one cell)."""
    if len(set(cells)) < 2:
        return 0, 0
    def common(texts: Sequence[str]) -> int:
        first = min(texts, key=len)
        return next((n for n, ch in enumerate(first) if any(text[n] != ch for text in texts)), len(first))

    prefix, suffix = common(cells), common([cell[::-1] for cell in cells])
    shortest = min(len(cell) for cell in cells)
    return min(prefix, shortest), min(suffix, shortest - min(prefix, shortest))


# A step of a table's plan for a narrow terminal: leave out column i, or cut it down to a floor.
Drop = tuple[str, int]  # ("drop", i)
Cut = tuple[str, int, int]  # ("cut", i, floor)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, width: int | None = None,
          shrink: Sequence[int] = (), styles: dict[int, Callable[[str], str]] | None = None,
          plan: Sequence[Drop | Cut] = (), middle: Sequence[int] = ()) -> str:
    """Rows under headers, columns two spaces apart. With ``width`` (the terminal's), the columns in
    ``shrink`` give way, the widest first, so that each line fits; cells cut show "…". A ``plan``
    replaces that: its steps (leave a column out, cut one down to a floor) are taken in order until the
    lines fit; the columns in ``middle`` are cut in the middle (URLs), the others at the end.
    ``styles`` colour a column's cells after padding, so colour codes never count as width."""
    rows = [[str(cell) if cell is not None else "-" for cell in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    shown = list(range(len(headers)))

    def over() -> int:
        return sum(widths[i] for i in shown) + 2 * (len(shown) - 1) - (width or 0)

    if width and plan:
        natural = list(widths)
        cut: list[int] = []
        for step in plan:
            if over() <= 0:
                break
            if step[0] == "drop":
                shown.remove(step[1])
            else:
                column, floor = step[1], max(step[2], len(headers[step[1]]))
                widths[column] = max(min(floor, widths[column]), widths[column] - over())
                cut.append(column)
        # A column left out later may have made room: the columns cut before get it back, the last cut first.
        for column in reversed(cut):
            if column in shown and over() < 0:
                widths[column] = min(natural[column], widths[column] - over())
    elif width:
        # First down to 8 characters each, then, on a narrow terminal, down to their headers' width.
        for floors in ({i: max(len(headers[i]), 8) for i in shrink}, {i: max(len(headers[i]), 4) for i in shrink}):
            while sum(widths) + 2 * (len(widths) - 1) > width:
                candidates = [i for i in shrink if widths[i] > floors[i]]
                if not candidates:
                    break
                widest = max(candidates, key=lambda i: widths[i])
                widths[widest] -= 1
    shared = {i: _differing([row[i] for row in rows]) for i in middle}
    lines = []
    for index, row in enumerate([list(headers), *rows]):
        cells = []
        for i in shown:
            cell = row[i]
            if index and i in middle:
                prefix, suffix = shared[i]
                text = cut_around(cell, widths[i], prefix, len(cell) - suffix)
            else:
                text = _cut(cell, widths[i])
            padded = text.ljust(widths[i]) if i != shown[-1] else text
            if index and styles and i in styles:
                padded = padded.replace(text, styles[i](text), 1)
            cells.append(padded)
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def step_lines(steps: Sequence[dict], finished: bool, colour: bool) -> list[str]:
    """An action's steps, one line each as a CI job shows them: a mark (✓ passed, ✗ failed or stopped,
    ⏱ timed out, ◌ running), the script, how long it took, and what else to say ("exit 3", "4 tries").
    ``finished``: whether the action has ended (a step without an end then was stopped)."""
    width = max((len(step.get("operation") or "") for step in steps), default=0)
    lines = []
    for step in steps:
        notes = []
        code = step.get("exit_code")
        if step.get("finished_at") is None and not finished:
            mark, fg = "◌", "yellow"
            notes.append("running")
        elif step.get("finished_at") is None or (code is None and not step.get("timed_out")):
            mark, fg = "✗", "red"
            notes.append("stopped")
        elif step.get("timed_out"):
            mark, fg = "⏱", "red"
            notes.append("timed out")
        elif code == 0:
            mark, fg = "✓", "green"
        else:
            mark, fg = "✗", "red"
            notes.append(f"exit {code}")
        if (step.get("attempts") or 1) > 1:
            notes.append(f"{step['attempts']} tries")
        seconds = step.get("duration_seconds")
        took = f"{seconds:.1f} s" if seconds is not None else "-"
        line = f"{click.style(mark, fg=fg) if colour else mark} {step.get('operation') or '?':<{width}}  {took:>7}"
        if notes:
            line += "  " + " · ".join(notes)
        lines.append(line)
    return lines


def terminal_width() -> int | None:
    """The terminal's width, or None when the output is not a terminal (then nothing is cut)."""
    return shutil.get_terminal_size((100, 24)).columns if is_tty() else None


class Progress:
    """A progress line: on a terminal one line rewritten in place; otherwise a plain line whenever
    the state changes and once a minute, so that CI logs show it is alive without flooding them."""

    HEARTBEAT = 60.0

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.tty = is_tty(self.stream)
        self.last_state: str | None = None
        self.last_line_at = 0.0
        self.open = False

    def show(self, text: str, current_state: str, seconds: float) -> None:
        line = f"{text}: {state(current_state, self.tty)} · {elapsed(seconds)}"
        if self.tty:
            self.stream.write("\r\033[K" + line)
            self.stream.flush()
            self.open = True
        elif current_state != self.last_state or seconds - self.last_line_at >= self.HEARTBEAT:
            self.stream.write(line + "\n")
            self.stream.flush()
            self.last_line_at = seconds
        self.last_state = current_state

    def done(self) -> None:
        if self.open:
            self.stream.write("\n")
            self.stream.flush()
            self.open = False
