"""The sticky comment renderer: golden files, badge and age tables, and hostile values."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.core.states import ActionState, DeploymentState, FailureReason
from bot.github.comment import (
    MARKER,
    MAX_COMMENT_CHARS,
    EnvironmentRow,
    LastCommand,
    Preview,
    PreviewComponent,
    action_badge,
    age,
    escape_text,
    render_sticky_comment,
    safe_url,
    state_badge,
)

GOLDEN = Path(__file__).parent / "golden"
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
HEAD = "3f2c1ab9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f"
PAGE = "https://sami.example.test/actions/"


def row(service="web", state=DeploymentState.RUNNING, **fields):
    fields.setdefault("name", f"{service}-pr-42")
    return EnvironmentRow(service=service, state=state, **fields)


def three_rows():
    return [
        row("web", DeploymentState.UPDATE_PENDING, tag="3f2c1ab", previous_tag="9b0d2e4",
            url="https://web-pr-42.example.test", updated_at=NOW - timedelta(seconds=10), action_id=12,
            action_state=ActionState.RUNNING, action_kind="update", page_url=PAGE + "12"),
        row("api", tag="v1.2", sha=HEAD, url="https://api-pr-42.example.test/", updated_at=NOW - timedelta(minutes=2),
            action_id=11, action_state=ActionState.SUCCEEDED, action_kind="create", page_url=PAGE + "11"),
        row("worker", DeploymentState.FAILURE, failure_reason=FailureReason.TIMED_OUT, tag="3f2c1ab",
            updated_at=NOW - timedelta(minutes=5), action_id=10, action_state=ActionState.TIMED_OUT,
            action_kind="create", page_url=PAGE + "10"),
    ]


def a_preview(**changes) -> Preview:
    fields = dict(
        environment="pr-42-86f279", source="stage", run_id=12, operation="deploy", run_state="failed",
        page_url="https://sami.example.test/environments/pr-42-86f279",
        components=(
            PreviewComponent("pay", DeploymentState.RUNNING, tag="2024.1", endpoint="pay.example.com:443",
                             status="succeeded", data="shared"),
            PreviewComponent("cache", DeploymentState.FAILURE, FailureReason.GENERIC,
                             "seed failed: 1 command(s) failed (exit 1)", tag="7",
                             endpoint="cache-pr-42-86f279_m0:6379",
                             status="failed", message="action 31 failed: seed failed: 1 command(s) failed (exit 1)",
                             data="seed failed: 1 command(s) failed (exit 1)"),
            PreviewComponent("web", None, status="skipped",
                             message="not run: cache failed (action 31 failed: seed failed)"),
        ))
    fields.update(changes)
    return Preview(**fields)


CASES = {
    "preview_environment": lambda: render_sticky_comment(
        [], pr_number=42, head_sha=HEAD, now=NOW, public_url="https://sami.example.test", preview=a_preview()),
    "three_environments": lambda: render_sticky_comment(
        three_rows(), pr_number=42, head_sha=HEAD, now=NOW, public_url="https://sami.example.test",
        last_command=LastCommand("/sami deploy web", "alice", "accepted")),
    "fork_waiting_for_approval": lambda: render_sticky_comment(
        [], pr_number=7, head_sha=HEAD, now=NOW, public_url="https://sami.example.test", awaiting_approval=True),
    "archived_and_waiting_for_ci": lambda: render_sticky_comment(
        [row("api", DeploymentState.ARCHIVED, tag="v1.2", updated_at=NOW - timedelta(days=3), action_id=30,
             action_state=ActionState.SUCCEEDED, action_kind="archive", page_url=PAGE + "30"),
         row("web", DeploymentState.RUNNING, waiting_for="CI", tag="v1.1", updated_at=NOW - timedelta(hours=2))],
        pr_number=42, head_sha=HEAD, now=NOW),
    "truncated": lambda: render_sticky_comment(
        [row(f"svc{i:02d}", tag="v1", updated_at=NOW) for i in range(8)], pr_number=42, head_sha=HEAD, now=NOW,
        public_url="https://sami.example.test", max_rows=5),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case):
    path = GOLDEN / f"{case}.md"
    text = CASES[case]()
    if os.environ.get("SAMI_UPDATE_GOLDEN"):
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8")


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_input_same_text(case):
    assert CASES[case]() == CASES[case]()


def test_row_order_does_not_change_the_text():
    rows = three_rows()
    first = render_sticky_comment(rows, pr_number=42, head_sha=HEAD, now=NOW)
    assert render_sticky_comment(list(reversed(rows)), pr_number=42, head_sha=HEAD, now=NOW) == first


def test_marker_is_the_first_line():
    text = render_sticky_comment(three_rows(), pr_number=42, head_sha=HEAD, now=NOW)
    assert text.splitlines()[0] == MARKER == "<!-- sami:sticky-comment -->"


@pytest.mark.parametrize(("state", "reason", "badge"), [
    (DeploymentState.RUNNING, None, "🟢 Running"),
    (DeploymentState.CREATE_PENDING, None, "🟡 Creating"),
    (DeploymentState.UPDATE_PENDING, None, "🟡 Updating"),
    (DeploymentState.ARCHIVE_PENDING, None, "🟡 Archiving"),
    (DeploymentState.CLEANUP_PENDING, None, "🟡 Cleaning up"),
    (DeploymentState.FAILURE, None, "🔴 Failed"),
    (DeploymentState.FAILURE, FailureReason.GENERIC, "🔴 Failed"),
    (DeploymentState.FAILURE, FailureReason.TAG_MISMATCH, "🔴 Failed (tag mismatch)"),
    (DeploymentState.FAILURE, FailureReason.PARTIAL_AVAILABILITY, "🔴 Failed (partly available)"),
    (DeploymentState.FAILURE, "timed_out", "🔴 Failed (timed out)"),
    (DeploymentState.FAILURE, "<b>new</b>", "🔴 Failed (&lt;b&gt;new&lt;/b&gt;)"),
    (DeploymentState.CLEANUP_FAILED, None, "🔴 Cleanup failed"),
    (DeploymentState.ARCHIVED, None, "⚪ Archived"),
    (DeploymentState.REMOVED, None, "⚫ Removed"),
    ("Running", None, "🟢 Running"),
    ("Sideways|x", None, "❔ Sideways\\|x"),
])
def test_state_badges(state, reason, badge):
    assert state_badge(state, reason) == badge


def test_every_state_has_a_badge_with_words():
    for state in DeploymentState:
        icon, _, words = state_badge(state).partition(" ")
        assert icon and words and words[0].isupper()


@pytest.mark.parametrize(("state", "badge"), [
    (ActionState.QUEUED, "⏳ queued"),
    (ActionState.RUNNING, "🔄 running"),
    (ActionState.SUCCEEDED, "✅ succeeded"),
    (ActionState.FAILED, "❌ failed"),
    (ActionState.TIMED_OUT, "⌛ timed out"),
    (ActionState.CANCELLED, "⏹️ cancelled"),
    (ActionState.SUPERSEDED, "⏭️ superseded"),
    ("exploded", "❔ exploded"),
])
def test_action_badges(state, badge):
    assert action_badge(state) == badge


@pytest.mark.parametrize(("delta", "words"), [
    (timedelta(seconds=0), "just now"),
    (timedelta(seconds=59), "just now"),
    (timedelta(seconds=-30), "just now"),
    (timedelta(minutes=-10), "just now"),
    (timedelta(seconds=60), "1 min ago"),
    (timedelta(minutes=3, seconds=59), "3 min ago"),
    (timedelta(minutes=59), "59 min ago"),
    (timedelta(hours=1), "1 h ago"),
    (timedelta(hours=23, minutes=59), "23 h ago"),
    (timedelta(days=1), "1 day ago"),
    (timedelta(days=2, hours=5), "2 days ago"),
    (timedelta(days=29), "29 days ago"),
    (timedelta(days=30), "on 2024-04-01"),
])
def test_ages(delta, words):
    assert age(NOW - delta, NOW) == words


def test_age_of_nothing_and_of_naive_times():
    assert age(None, NOW) == "—"
    assert age(datetime(2024, 5, 1, 11, 57), NOW) == "3 min ago"  # naive: read as UTC


# --- hostile values ---------------------------------------------------------------------------

def _table_rows(text):
    return [line for line in text.splitlines() if line.startswith("| ")]


def _cells(line):
    # A cell boundary is a "|" that no backslash escapes.
    return re.split(r"(?<!\\)\|", line)[1:-1]


HOSTILE = [
    "a|b",
    "<script>alert(1)</script>",
    "](javascript:alert(1))",
    "[click](javascript:alert(1))",
    "![img](https://evil.test/x.png)",
    "line\nbreak| --- |\n| injected | row |",
    "`code` ``more``",
    "@everyone @org/team",
    "**bold** _it_ ~~gone~~ $x^2$",
    "<!-- sami:sticky-comment -->",
    "\u202egnp.exe",
    "back\\slash\\|",
    "&lt;already&gt;",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_cannot_break_the_table_or_add_links(value):
    rows = [row("web", tag=value, url=value, page_url=value, action_id=1, action_kind=value,
                action_state=value, failure_reason=value, previous_tag=value, waiting_for=value),
            row("api", DeploymentState.FAILURE, failure_reason=value, tag=value, sha=value, url=value,
                previous_tag=value, action_id=2, action_kind=value, action_state=ActionState.FAILED,
                page_url="https://ok.example.test/2")]
    text = render_sticky_comment(rows, pr_number=1, head_sha=value, now=NOW, public_url=value,
                                 last_command=LastCommand(value, value, value))
    table = _table_rows(text)
    assert len(table) == 2 + len(rows)
    for line in table:
        assert len(_cells(line)) == 6, line
    assert "<script" not in text and "<b" not in text
    assert text.count("<!--") == 1  # the marker only
    assert not re.search(r"(?<!\\)\]\((?!https?://)", text)  # every link goes to http(s)
    assert not re.search(r"@(?!\u2060)\w", text)  # nobody is mentioned
    assert "\u202e" not in text


def test_only_http_urls_become_links():
    for url in ["javascript:alert(1)", "data:text/html,x", "ftp://files.example.test", "//evil.test",
                "https://", "https://@evil.test", "https://github.com@evil.test/", "https://a b.test",
                "https://x.test/\"onmouseover=\"", None, 42]:
        assert safe_url(url) is None, url
    assert safe_url("https://x.test/a(b)|c[d]") == "https://x.test/a%28b%29%7Cc%5Bd%5D"
    assert safe_url("http://x.test/é") == "http://x.test/%C3%A9"
    assert safe_url("HTTPS://X.test/?q=1&r=2#f") == "HTTPS://X.test/?q=1&r=2#f"


def test_a_url_with_markup_is_a_working_link_with_escaped_text():
    text = render_sticky_comment([row("web", url="https://x.test/a_b*c|d")], pr_number=1, head_sha=None, now=NOW)
    assert "[x.test/a\\_b\\*c\\|d](https://x.test/a_b*c%7Cd)" in text


def test_escape_text():
    assert escape_text("a|b") == "a\\|b"
    assert escape_text("<i>&") == "&lt;i&gt;&amp;"
    assert escape_text("x\r\n\ty") == "x y"
    assert escape_text("a\x00b\x1bc") == "abc"
    assert escape_text("@alice") == "@\u2060alice"
    assert escape_text("v1.2-rc+3 #4") == "v1.2-rc+3 #4"
    assert escape_text("x" * 500, 10) == "x" * 9 + "…"


def test_tags_are_code_when_plain_and_escaped_text_otherwise():
    text = render_sticky_comment([row("web", tag="v1.2_rc-3"), row("api", tag="a`b|c")], pr_number=1,
                                 head_sha=None, now=NOW)
    assert "`v1.2_rc-3`" in text
    assert "a\\`b\\|c" in text


# --- size -------------------------------------------------------------------------------------

def test_many_rows_stay_under_githubs_limit_and_say_how_many_were_left_out():
    big = "https://x.test/" + "é" * 1900  # 1,900 characters, 5,700 once encoded
    rows = [row(f"s{i:03d}", url=big, tag="t" * 128, page_url=big, action_id=i, action_kind="update")
            for i in range(200)]
    text = render_sticky_comment(rows, pr_number=1, head_sha=HEAD, now=NOW, public_url="https://sami.example.test",
                                 max_rows=1000)
    assert len(text.encode("utf-16-le")) // 2 <= MAX_COMMENT_CHARS
    shown = len(_table_rows(text)) - 2
    assert 0 < shown < 200
    assert f"…and {200 - shown} more environments: see the [status page](https://sami.example.test)." in text
    assert text.rstrip().endswith("UTC</sub>")


@pytest.mark.parametrize("limit", [1500, 2000, 3000, 5000])
def test_small_limits_are_kept(limit):
    rows = [row(f"s{i:02d}", url=f"https://s{i}.example.test", tag="v1", updated_at=NOW) for i in range(80)]
    text = render_sticky_comment(rows, pr_number=1, head_sha=HEAD, now=NOW, limit=limit, max_rows=100)
    assert len(text) <= limit
    assert "more environments." in text


def test_one_more_environment_is_singular():
    rows = [row(f"s{i}") for i in range(3)]
    text = render_sticky_comment(rows, pr_number=1, head_sha=HEAD, now=NOW, max_rows=2)
    assert "…and 1 more environment." in text


def test_drift_has_its_own_badge_beside_the_state_and_is_escaped():
    drifted = row("web", tag="v1", drift="web-pr-42_web: image local/web:hand (deployed local/web:v1)")
    failed = row("api", DeploymentState.FAILURE, failure_reason=FailureReason.TAG_MISMATCH, tag="v1")
    text = render_sticky_comment([drifted, failed], pr_number=42, head_sha=HEAD, now=NOW)
    web_line = next(line for line in text.splitlines() if line.startswith("| web |"))
    api_line = next(line for line in text.splitlines() if line.startswith("| api |"))
    assert "🟢 Running · 🟣 Drift: web-pr-42\\_web: image local/web:hand \\(deployed local/web:v1\\)" in web_line
    assert "Drift" not in api_line and "🔴 Failed (tag mismatch)" in api_line
    hostile = render_sticky_comment([row("web", drift="x | [y](http://e.test) @bob\n| z")], pr_number=42,
                                    head_sha=HEAD, now=NOW)
    web_line = next(line for line in hostile.splitlines() if line.startswith("| web |"))
    assert web_line.count(" | ") == 5 and "](" not in web_line and "@bob" not in web_line  # six cells, no more


def test_a_pinned_environment_says_who_pinned_it_and_how_to_unpin():
    pinned = row("web", tag="v1", pinned_by="github:alice", pin_reason="rollback to v1 (the configuration of action 3)")
    text = render_sticky_comment([pinned, row("api", tag="v2")], pr_number=42, head_sha=HEAD, now=NOW)
    web_line = next(line for line in text.splitlines() if line.startswith("| web |"))
    api_line = next(line for line in text.splitlines() if line.startswith("| api |"))
    assert "🟢 Running · 📌 Pinned by github:alice after a rollback; `/sami unpin web` or `sami unpin web-pr-42`" \
        in web_line
    assert "Pinned" not in api_line
    hostile = render_sticky_comment([row("web", pinned_by="x | [y](http://e.test) @bob", pin_reason="z")],
                                    pr_number=42, head_sha=HEAD, now=NOW)
    web_line = next(line for line in hostile.splitlines() if line.startswith("| web |"))
    assert web_line.count(" | ") == 5 and "](" not in web_line and "@bob" not in web_line
    assert "after a rollback" not in web_line


def test_a_preview_lists_every_component_with_its_link_and_run_result():
    body = CASES["preview_environment"]()
    assert "No environments for this pull request yet" not in body
    assert "**Preview environment `pr-42-86f279`** (like `stage`) · deploy run 12: ❌ failed" in body
    rows = [line for line in body.splitlines() if line.startswith(("| pay", "| cache", "| web"))]
    assert len(rows) == 3
    assert "`pay.example.com:443`" in rows[0] and "✅ succeeded · data: shared" in rows[0]
    assert "❌ failed · data: seed failed" in rows[1]
    assert rows[2].startswith("| web | not deployed | — | — | ⏭️ skipped — not run: cache failed")


def test_a_preview_escapes_what_others_chose():
    body = render_sticky_comment([], pr_number=1, head_sha=None, now=NOW, preview=a_preview(components=(
        PreviewComponent("web", DeploymentState.RUNNING, url="javascript:alert(1)", tag="v1", status="failed",
                         message="<img src=x> | @alice [x](https://evil.test)"),)))
    assert "javascript" not in body
    assert "<img" not in body and "@alice" not in body and "](https://evil.test)" not in body
    row = next(line for line in body.splitlines() if line.startswith("| web"))
    assert row.count(" | ") == 4, "a value cannot add table cells"
