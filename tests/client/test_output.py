"""The client's tables, colours and progress line, and its reading of the server's errors."""

from __future__ import annotations

import io

from bot.client import output
from bot.client.http import explain, next_steps

ROWS = [["web-pr-1234", "Running", "https://web-pr-1234.example.test/a/very/long/path"],
        ["docs-stage", "Failure", "http://127.0.0.1:8000/sites/docs-stage/"]]


def test_a_table_fits_the_width_by_cutting_the_columns_that_may_shrink():
    text = output.table(["NAME", "STATE", "URL"], ROWS, width=40, shrink=(2,))
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 40
    assert lines[1].startswith("web-pr-1234  Running  https://") and lines[1].endswith(output.ELLIPSIS)
    assert output.table(["NAME", "STATE", "URL"], ROWS).splitlines()[1].endswith("/a/very/long/path"), \
        "without a width (not a terminal) nothing is cut"


def test_colour_codes_do_not_count_as_width():
    plain = output.table(["NAME", "STATE", "URL"], ROWS)
    coloured = output.table(["NAME", "STATE", "URL"], ROWS, styles={1: lambda s: output.state(s, True)})
    assert "\x1b[32mRunning\x1b[0m" in coloured and "\x1b[31mFailure\x1b[0m" in coloured
    strip = coloured.replace("\x1b[32m", "").replace("\x1b[31m", "").replace("\x1b[0m", "")
    assert strip == plain
    assert output.state("Running", False) == "Running"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_rewrites_one_line_on_a_terminal_and_prints_state_changes_otherwise():
    tty = Terminal()
    progress = output.Progress(tty)
    for seconds, state in ((0, "queued"), (1, "running"), (2, "running"), (3, "succeeded")):
        progress.show("create web-stage (action 7)", state, seconds)
    progress.done()
    assert tty.getvalue().count("\r\x1b[K") == 4 and tty.getvalue().endswith("0:03\n")
    plain = io.StringIO()
    progress = output.Progress(plain)
    for seconds, state in ((0, "queued"), (1, "running"), (2, "running"), (61.5, "running"), (62, "succeeded")):
        progress.show("create web-stage (action 7)", state, seconds)
    progress.done()
    assert plain.getvalue().splitlines() == [
        "create web-stage (action 7): queued · 0:00", "create web-stage (action 7): running · 0:01",
        "create web-stage (action 7): running · 1:01", "create web-stage (action 7): succeeded · 1:02"]


def test_a_409_names_the_commands_that_the_state_allows():
    assert next_steps("Archived") == "from Archived you can: sami restore, sami cleanup"
    assert next_steps("CleanupFailed") == "from CleanupFailed you can: sami cleanup, sami delete"
    assert next_steps("UpdatePending", 7) == "follow it with `sami wait 7`, or stop it with `sami cancel 7`"
    message = explain(409, "deployment 'x' is archived: restore it first (POST /api/v1/deployments/x/restore)",
                      {"state": "Archived"}, "POST", "/api/v1/deployments")
    assert message == ("deployment 'x' is archived: restore it first (sami restore x); from Archived you can: "
                       "sami restore, sami cleanup")


def test_the_readme_lists_every_exit_status():
    from pathlib import Path

    from bot.client.exits import DESCRIPTIONS

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme.split("| exit status | meaning |", 1)[1].split("\n\n", 1)[0]
    rows = [line.split("|")[1:3] for line in table.strip().splitlines()[1:]]
    assert [int(code) for code, _ in rows] == [int(code) for code in DESCRIPTIONS]
    for (_, meaning), description in zip(rows, DESCRIPTIONS.values(), strict=True):
        assert meaning.strip().replace("`", "").startswith(description.split(" (")[0].split(",")[0])


def test_on_a_narrow_terminal_the_columns_give_way_down_to_their_headers():
    text = output.table(["NAME", "STATE", "URL"], ROWS, width=24, shrink=(0, 2))
    assert max(len(line) for line in text.splitlines()) <= 24
    assert text.splitlines()[1] == "web-p…  Running  https:…", "STATE, not in shrink, stays whole"


def test_step_lines_mark_how_each_step_ended():
    def step(operation, exit_code, seconds=1.25, timed_out=False, attempts=1, finished=True):
        return {"operation": operation, "exit_code": exit_code, "timed_out": timed_out, "attempts": attempts,
                "duration_seconds": seconds if finished else None,
                "finished_at": "2026-01-01T00:00:01+00:00" if finished else None}

    steps = [step("config_check", 0), step("create", 7), step("update", None, 30.0, timed_out=True),
             step("check", 3, 12.5, attempts=4), step("archive", None), step("cleanup", None, finished=False)]
    assert output.step_lines(steps, finished=False, colour=False) == [
        "✓ config_check    1.2 s",
        "✗ create          1.2 s  exit 7",
        "⏱ update         30.0 s  timed out",
        "✗ check          12.5 s  exit 3 · 4 tries",
        "✗ archive         1.2 s  stopped",
        "◌ cleanup             -  running",
    ]
    # once the action is over, a step that never ended was stopped
    assert output.step_lines(steps[-1:], finished=True, colour=False) == ["✗ cleanup        -  stopped"]
    assert output.step_lines(steps[:1], finished=True, colour=True)[0].startswith("\x1b[32m✓\x1b[0m config_check")


LIST = ["NAME", "STATE", "DRIFT", "SERVICE", "ENVIRONMENT", "TAG", "URL", "PR", "UPDATED"]


def list_rows() -> list[list[str]]:
    from bot.client.read import short_tag, state_cell
    deployments = [
        {"name": "documentation-pr-1234", "state": "Running", "last_deploy": {"state": "failed"},
         "tag": "3f2c1ab9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f", "service": "documentation",
         "environment": "pull_request", "url": "https://documentation-pr-1234.preview.example.test/", "pr": "1234"},
        {"name": "documentation-pr-1235", "state": "Failure", "failure_reason": "generic",
         "status_message": "update failed (exit 1): image not found", "tag": "v2", "service": "documentation",
         "environment": "pull_request", "url": "https://documentation-pr-1235.preview.example.test/", "pr": "1235"},
    ]
    return [[d["name"], state_cell(d), "-", d["service"], d["environment"], short_tag(d["tag"]), d["url"], d["pr"],
             "3 min ago"] for d in deployments]


def test_the_list_at_60_80_and_120_columns_keeps_names_whole_and_urls_ends():
    from bot.client.read import LIST_PLAN
    for width in (60, 80, 120):
        lines = output.table(LIST, list_rows(), width=width, plan=LIST_PLAN, middle=(6,)).splitlines()
        assert max(len(line) for line in lines) <= width, (width, lines)
        assert [line.split()[0] for line in lines[1:]] == ["documentation-pr-1234", "documentation-pr-1235"]
        assert lines[1].split()[1:5] == ["Running,", "last", "deploy", "failed"], lines
        assert "Failed (update exit 1)" in lines[2]
        assert "3f2c1ab" in lines[1].split() and "3f2c1ab9" not in lines[1]
        if width >= 80:  # the URL is cut around what tells it from the others
            assert lines[0].split()[3] == "URL", lines  # service, environment, pull request and drift went first
            urls = [line.split()[6] for line in lines[1:]]  # after the name, four words of state and the tag
            assert urls[0].find("pr-1234") > 0 and urls[1].find("pr-1235") > 0, lines


def test_a_url_is_cut_around_what_differs_and_its_scheme_goes_first():
    url = "https://documentation-pr-1234.preview.example.test/"
    assert output.cut_middle(url, 100) == url
    assert output.cut_middle(url, 43) == "documentation-pr-1234.preview.example.test/"
    cut = output.cut_middle(url, 24)
    assert len(cut) == 24 and cut.startswith("documen") and cut.endswith("pr-1234.preview.example.test/"[-16:])
    paths = ["http://127.0.0.1:8000/sites/docs-stage/", "http://127.0.0.1:8000/sites/docs-pr-7/"]
    assert [output.cut_around(p, 20, 27, len(p) - 1) for p in paths] == ["…0/sites/docs-stage/", "…00/sites/docs-pr-7/"]
