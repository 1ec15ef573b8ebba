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


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, width: int | None = None,
          shrink: Sequence[int] = (), styles: dict[int, Callable[[str], str]] | None = None) -> str:
    """Rows under headers, columns two spaces apart. With ``width`` (the terminal's), the columns in
    ``shrink`` give way, the widest first, so that each line fits; cells cut show "…".
    ``styles`` colour a column's cells after padding, so colour codes never count as width."""
    rows = [[str(cell) if cell is not None else "-" for cell in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    if width:
        # First down to 8 characters each, then, on a narrow terminal, down to their headers' width.
        for floors in ({i: max(len(headers[i]), 8) for i in shrink}, {i: max(len(headers[i]), 4) for i in shrink}):
            while sum(widths) + 2 * (len(widths) - 1) > width:
                candidates = [i for i in shrink if widths[i] > floors[i]]
                if not candidates:
                    break
                widest = max(candidates, key=lambda i: widths[i])
                widths[widest] -= 1
    lines = []
    for index, row in enumerate([list(headers), *rows]):
        cells = []
        for i, cell in enumerate(row):
            text = _cut(cell, widths[i])
            padded = text.ljust(widths[i]) if i < len(row) - 1 else text
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
