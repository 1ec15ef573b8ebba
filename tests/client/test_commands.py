"""The client commands against a real `sami serve`: deployments that succeed and fail, following
a running action's log, --json read back, and each error's message and exit code."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from bot.client.exits import Exit
from tests.client.conftest import BROKEN_MANIFEST, LONG_LINK
from tests.support.procs import wait_until
from tests.support.sami_server import ROOT
from tests.support.servers import free_port

pytestmark = pytest.mark.slow

ANSI = "\x1b["
SAMI = str(Path(sys.executable).parent / "sami")  # the installed command: completion goes by its name


def test_request_wait_deploys_the_static_site_and_exits_0(server):
    done = server.run("request", "docs", "stage", "--tag", "v1", "--wait")
    assert done.returncode == Exit.OK, done.stderr
    assert "create docs-stage (action " in done.stdout
    assert "docs-stage is Running" in done.stdout
    site = f"{server.url}/sites/docs-stage/"
    assert f"app: {site}" in done.stdout
    assert "# check: passed" in done.stdout, "the log's tail is shown"
    assert ANSI not in done.stdout + done.stderr, "no colour when the output is not a terminal"
    # the progress lines: plain lines on stderr (not a terminal), one per state
    progress = [line for line in done.stderr.splitlines() if line.startswith("create docs-stage (action")]
    assert progress and progress[-1].split(": ", 1)[1].startswith("succeeded · ")
    with urllib.request.urlopen(site, timeout=10) as response:
        assert "<html" in response.read().decode().lower()


def test_request_wait_json_has_the_stable_shape(server):
    done = server.run("request", "docs", "pull_request", "--pull-request", "5", "--tag", "abc1234",
                      "--repository", "acme/docs", "--ref", "feature/x", "--wait", "--json")
    assert done.returncode == Exit.OK, done.stderr
    document = json.loads(done.stdout)
    assert set(document) == {"deployment", "action_id", "kind", "state", "status_url", "result"}
    assert document["deployment"] == "docs-pr-5" and document["kind"] == "create"
    result = document["result"]
    assert set(result) == {"outcome", "action", "deployment", "log_tail"}
    assert result["outcome"] == "succeeded" and result["action"]["id"] == document["action_id"]
    assert result["deployment"]["state"] == "Running"
    assert result["deployment"]["source"] == {"repository": "acme/docs", "pull_request": 5, "ref": "feature/x",
                                              "sha": None}
    # without --wait: the same keys, no result
    again = server.run("request", "docs", "pull_request", "--pull-request", "5", "--tag", "abc1235", "--json")
    assert again.returncode == Exit.OK, again.stderr
    accepted = json.loads(again.stdout)
    assert set(accepted) == set(document) and accepted["result"] is None and accepted["kind"] == "update"
    assert server.run("wait", str(accepted["action_id"])).returncode == Exit.OK


def test_request_wait_on_a_failing_deployment_exits_1_with_the_reason(server):
    done = server.run("request", "probe", "pull_request", "--pull-request", "11", "--tag", "t1",
                      "--deployment-override", "fail=create", "--wait")
    assert done.returncode == Exit.FAILED, done.stderr
    assert "create probe-pr-11 (action" in done.stdout and ") failed in " in done.stdout
    assert "error: create failed (exit 1): probe: create failed on purpose" in done.stdout
    assert "probe-pr-11 is Failed: create failed (exit 1)" in done.stdout
    failed = server.run("request", "probe", "pull_request", "--pull-request", "11", "--tag", "t2",
                        "--deployment-override", "fail=update", "--wait", "--json")
    assert failed.returncode == Exit.FAILED, failed.stderr
    document = json.loads(failed.stdout)
    assert document["result"]["outcome"] == "failed"
    assert document["result"]["deployment"]["state"] == "Failure"
    assert "create failed on purpose" not in document["result"]["log_tail"]
    assert "update failed on purpose" in document["result"]["log_tail"]
    # KEY alone removes the override: the next update succeeds
    fixed = server.run("request", "probe", "pull_request", "--pull-request", "11", "--tag", "t3",
                       "--deployment-override", "fail", "--wait")
    assert fixed.returncode == Exit.OK, fixed.stdout + fixed.stderr
    assert "probe-pr-11 is Running" in fixed.stdout


def _action(server, *args: str) -> int:
    accepted = server.run(*args, "--json")
    assert accepted.returncode == Exit.OK, accepted.stderr
    return json.loads(accepted.stdout)["action_id"]


def test_logs_follow_streams_a_running_action_until_it_ends(server):
    action_id = _action(server, "request", "probe", "pull_request", "--pull-request", "12", "--tag", "t1",
                        "--deployment-override", "sleep=4")
    with subprocess.Popen([sys.executable, "-m", "bot.cli", "logs", str(action_id), "--follow"],
                          env=server.client_env(server.admin), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, cwd=ROOT) as follow:
        try:
            lines = []
            while not any(line.startswith("probe create of probe-pr-12") for line in lines):
                line = follow.stdout.readline()
                assert line, f"the output ended early: {lines} {follow.stderr.read()}"
                lines.append(line)
            # printed while the script still sleeps: the action is running
            assert server.api(f"/api/v1/actions/{action_id}")["state"] == "running"
            rest = follow.stdout.read()
            assert follow.wait(60) == Exit.OK, follow.stderr.read()
        finally:
            follow.kill()
    streamed = "".join(lines) + rest
    assert "# check: passed" in streamed
    whole = server.run("logs", str(action_id))
    assert whole.returncode == Exit.OK
    steps, log = whole.stdout.split("---\n", 1)
    assert log == server.api(f"/api/v1/actions/{action_id}/log")["log"]
    # what was streamed is the whole log, once, and then the steps as they ended (they changed meanwhile)
    assert streamed.count("# check: passed") == 1 and log in streamed
    assert streamed.endswith(log + "---\n" + steps), streamed
    document = json.loads(server.run("logs", str(action_id), "--json").stdout)
    assert document["log"] == log and document["state"] == "succeeded" and document["finished"] is True


def test_logs_shows_the_actions_steps_before_its_log(server):
    action_id = _action(server, "request", "probe", "pull_request", "--pull-request", "16", "--tag", "t1",
                        "--deployment-override", "fail=create")
    assert server.run("wait", str(action_id)).returncode == Exit.FAILED
    shown = server.run("logs", str(action_id))
    assert shown.returncode == Exit.OK, shown.stderr
    # By the deployment's name: its newest action's, the same output, and which action on stderr.
    by_name = server.run("logs", "probe-pr-16")
    assert by_name.stdout == shown.stdout and f"probe-pr-16: action {action_id} (create, failed)" in by_name.stderr
    assert server.run("logs", "no-such-deployment").returncode == Exit.NOT_FOUND
    lines = shown.stdout.splitlines()
    # one line a step: its mark, its script, how long it took, and its exit code when it is not 0
    assert re.fullmatch(r"✓ config_check +\d+\.\d s", lines[0]), lines
    assert re.fullmatch(r"✗ create +\d+\.\d s  exit 1", lines[1]), lines
    assert lines[2] == "---"
    assert shown.stdout.split("---\n", 1)[1] == server.api(f"/api/v1/actions/{action_id}/log")["log"]
    document = json.loads(server.run("logs", str(action_id), "--json").stdout)
    assert [(s["operation"], s["exit_code"], s["timed_out"]) for s in document["steps"]] == [
        ("config_check", 0, False), ("create", 1, False)]
    assert document["log"] == shown.stdout.split("---\n", 1)[1]


def test_wait_gives_up_after_its_timeout_with_exit_5_and_the_action_goes_on(server):
    action_id = _action(server, "request", "probe", "pull_request", "--pull-request", "13", "--tag", "t1",
                        "--deployment-override", "sleep=4")
    waited = server.run("wait", str(action_id), "--timeout", "1")
    assert waited.returncode == Exit.TIMED_OUT
    assert f"is still running after 0:01; it goes on on the server: sami wait {action_id}" in waited.stderr
    done = server.run("wait", str(action_id), "--json")
    assert done.returncode == Exit.OK, done.stderr
    assert json.loads(done.stdout)["outcome"] == "succeeded"


def test_archive_restore_cleanup_and_what_is_refused_in_between(server):
    assert server.run("request", "probe", "pull_request", "--pull-request", "14", "--tag", "t1",
                      "--wait").returncode == Exit.OK
    created = server.run("create", "probe", "pull_request", "--pull-request", "14", "--tag", "t2")
    assert created.returncode == Exit.BAD_INPUT
    assert "deployment probe-pr-14 exists (Running): change it with `sami update probe-pr-14`" in created.stderr
    updated = server.run("update", "probe-pr-14", "--tag", "t2", "--wait")
    assert updated.returncode == Exit.OK, updated.stdout + updated.stderr
    assert server.api("/api/v1/deployments/probe-pr-14")["deployment"]["tag"] == "t2"
    archived = server.run("archive", "probe-pr-14", "--wait")
    assert archived.returncode == Exit.OK and "probe-pr-14 is Archived" in archived.stdout
    refused = server.run("update", "probe-pr-14", "--tag", "t3")
    assert refused.returncode == Exit.BAD_INPUT
    assert "is archived: restore it first (sami restore probe-pr-14)" in refused.stderr
    assert "from Archived you can: sami restore, sami cleanup" in refused.stderr
    restored = server.run("restore", "probe-pr-14", "--wait")
    assert restored.returncode == Exit.OK and "probe-pr-14 is Running" in restored.stdout
    assert server.run("archive", "probe-pr-14", "--wait").returncode == Exit.OK
    # Without a terminal a cleanup needs --yes; on one, the name must be typed out.
    unconfirmed = server.run("cleanup", "probe-pr-14")
    assert unconfirmed.returncode == Exit.BAD_INPUT
    assert "give --yes to remove deployment probe-pr-14" in unconfirmed.stderr
    status, shown = _on_terminal(server, "cleanup", "probe-pr-14", typed="probe-pr-1")
    assert status == Exit.BAD_INPUT and "Type probe-pr-14 to go on" in shown and "nothing was done" in shown, shown
    assert server.api("/api/v1/deployments/probe-pr-14")["deployment"]["state"] == "Archived"
    cleaned = server.run("cleanup", "probe-pr-14", "--yes", "--wait", "--json")
    assert cleaned.returncode == Exit.OK, cleaned.stderr
    result = json.loads(cleaned.stdout)["result"]
    assert result["outcome"] == "succeeded" and result["deployment"] is None
    gone = server.run("info", "probe-pr-14")
    assert gone.returncode == Exit.NOT_FOUND
    assert gone.stderr.strip() == "sami: no deployment named 'probe-pr-14' (list them: sami list)"


def test_list_info_and_services_read_back_as_json_and_as_tables(server):
    assert server.run("request", "docs", "stage", "--tag", "v1", "--wait").returncode == Exit.OK
    listed = json.loads(server.run("list", "--service", "docs", "--json").stdout)
    assert set(listed) == {"deployments", "next_cursor"}
    assert "docs-stage" in [d["name"] for d in listed["deployments"]]
    assert {d["service"] for d in listed["deployments"]} == {"docs"}
    failures = json.loads(server.run("list", "--state", "Failure", "--json").stdout)["deployments"]
    assert all(d["state"] == "Failure" for d in failures)
    table = server.run("list", "--service", "docs")
    assert table.returncode == Exit.OK
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["NAME", "STATE", "DRIFT", "SERVICE", "ENVIRONMENT", "TAG", "URL", "PR", "UPDATED"]
    row = next(r for r in rows if r.startswith("docs-stage "))
    assert row.split()[1:6] == ["Running", "synced", "docs", "stage", "v1"]
    info = json.loads(server.run("info", "docs-stage", "--json").stdout)
    assert set(info) == {"deployment", "actions", "requested", "deployed", "running"}
    assert info["deployment"]["name"] == "docs-stage" and info["actions"][0]["kind"] in ("create", "update")
    shown = server.run("info", "docs-stage").stdout
    assert "state:                Running" in shown and "ACTION  KIND" in shown
    services = json.loads(server.run("services", "--json").stdout)
    assert {(m["service"], m["environment"]) for m in services["manifests"]} >= {("docs", "stage"),
                                                                                 ("probe", "pull_request")}
    assert [(e["path"], e["line"], e["field"]) for e in services["errors"]] == [(BROKEN_MANIFEST, 4, "url")]
    text = server.run("services").stdout
    assert "1 manifest error(s):" in text
    assert f"{BROKEN_MANIFEST}:4:6: url: expected a string, found the number 42" in text
    # a scoped token sees its service only, and no error outside it
    scoped = json.loads(server.run("services", "--json", token="reader").stdout)
    assert {m["service"] for m in scoped["manifests"]} == {"docs"} and scoped["errors"] == []


def test_an_unreachable_server_is_exit_6_naming_the_address(server):
    url = f"http://127.0.0.1:{free_port()}"
    done = server.run("list", url=url)
    assert done.returncode == Exit.UNREACHABLE
    assert done.stderr.strip() == (f"sami: cannot reach {url}: connection refused. Is the server running, and is "
                                   "the address right (--url, SAMI_URL or sami login)?")
    assert "Traceback" not in done.stderr
    as_json = server.run("list", "--json", url=url)
    assert json.loads(as_json.stdout) == {"error": done.stderr.strip().removeprefix("sami: "), "status": None,
                                          "exit_code": 6}


def test_a_url_that_is_not_the_server_root_says_so(server):
    done = server.run("list", url=f"{server.url}/sites/docs-stage")
    assert done.returncode == Exit.NOT_FOUND
    assert "the server has no GET /api/v1/deployments: is the address the Sami server's root URL" in done.stderr
    bad = server.run("list", url="sami.example.com")
    assert bad.returncode == Exit.BAD_INPUT and "is not a server address" in bad.stderr


def test_a_wrong_or_missing_token_is_exit_3_with_the_fix(server):
    wrong = server.run("list", token="sami_not-a-real-token")
    assert wrong.returncode == Exit.REFUSED
    assert wrong.stderr.startswith("sami: the server refused the token (")
    assert "check SAMI_TOKEN or --token, or run `sami login` with a valid one" in wrong.stderr
    missing = server.run("list", token=None)
    assert missing.returncode == Exit.REFUSED
    assert "no token: set SAMI_TOKEN, run `sami login`, or give --token" in missing.stderr


def test_a_token_out_of_scope_is_exit_3_naming_the_missing_scope(server):
    done = server.run("request", "docs", "stage", "--tag", "v9", token="reader")
    assert done.returncode == Exit.REFUSED
    assert done.stderr.strip() == (
        "sami: token 'docs-reader' may not deploy on docs/stage (its scopes: actions=read services=docs "
        "environments=*). It lacks the 'deploy' scope there: ask an admin for a token with "
        "`sami token create NAME --action deploy --service docs --environment stage`")
    logs = server.run("logs", "1", token="reader", )
    assert logs.returncode == Exit.REFUSED
    assert "This needs an admin token (sami token create NAME --admin)" in logs.stderr
    as_json = json.loads(server.run("request", "docs", "stage", "--tag", "v9", "--json", token="reader").stdout)
    assert as_json["status"] == 403 and as_json["exit_code"] == 3


def test_conflicts_and_bad_input_are_exit_2_naming_what_is_allowed(server):
    assert server.run("request", "docs", "stage", "--tag", "v1", "--wait").returncode == Exit.OK
    restore = server.run("restore", "docs-stage")
    assert restore.returncode == Exit.BAD_INPUT
    assert "cannot become CreatePending (from Running it can become: ArchivePending, Failure, UpdatePending)" \
        in restore.stderr
    assert restore.stderr.rstrip().endswith("from Running you can: sami update, sami archive")
    as_json = json.loads(server.run("restore", "docs-stage", "--json").stdout)
    assert as_json["status"] == 409 and as_json["exit_code"] == 2
    unknown = server.run("request", "nope", "stage", "--tag", "v1")
    assert unknown.returncode == Exit.BAD_INPUT
    assert "unknown service 'nope' (known: " in unknown.stderr and "docs" in unknown.stderr
    override = server.run("request", "docs", "stage", "--tag", "v1", "-o", "NOT_ALLOWED=1")
    assert override.returncode == Exit.BAD_INPUT and "not allowed by the manifest" in override.stderr
    usage = server.run("request", "docs", "stage")
    assert usage.returncode == Exit.BAD_INPUT and "give --tag or --image" in usage.stderr
    missing = server.run("wait", "999999")
    assert missing.returncode == Exit.NOT_FOUND and missing.stderr.strip() == "sami: no action 999999"
    delete = server.run("delete", "docs-stage")
    assert delete.returncode == Exit.BAD_INPUT and "give --yes" in delete.stderr
    running = server.run("delete", "docs-stage", "--yes")
    assert running.returncode == Exit.BAD_INPUT and "cannot become Removed" in running.stderr
    for done in (restore, unknown, override, usage, missing, delete, running):
        assert "Traceback" not in done.stderr


def test_login_saves_url_and_token_for_the_other_commands_and_only_for_that_server(server, tmp_path):
    env = server.client_env(XDG_CONFIG_HOME=str(tmp_path / "config"))
    del env["SAMI_URL"]
    logged = server.run("login", "--url", server.url, stdin=server.reader + "\n", env=env)
    assert logged.returncode == Exit.OK, logged.stderr
    config = tmp_path / "config" / "sami" / "config.json"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stat.S_IMODE(config.parent.stat().st_mode) == 0o700
    assert json.loads(config.read_text()) == {"url": server.url, "token": server.reader}
    assert server.reader not in logged.stdout + logged.stderr
    listed = server.run("list", "--json", env=env)
    assert listed.returncode == Exit.OK, listed.stderr
    assert {d["service"] for d in json.loads(listed.stdout)["deployments"]} <= {"docs"}
    # another server address does not get the saved token, and the message says whose it is
    elsewhere = f"http://127.0.0.1:{free_port()}"
    for other in (server.run("list", "--url", elsewhere, env=env),
                  server.run("list", env={**env, "SAMI_URL": elsewhere + "/"})):
        assert other.returncode == Exit.REFUSED
        assert other.stderr.strip() == (f"sami: the saved token is for {server.url}; pass --token or SAMI_TOKEN for "
                                        f"{elsewhere}, or run `sami login --url {elsewhere}`")
    refused = server.run("login", "--url", server.url, stdin="sami_wrong\n", env=env)
    assert refused.returncode == Exit.REFUSED
    # what was just done is no fix: it says where a token comes from
    assert refused.stderr.startswith(f"sami: the server at {server.url} refused this token; a token comes from "
                                     "`sami token create NAME`"), refused.stderr
    assert "sami login" not in refused.stderr
    assert json.loads(config.read_text())["token"] == server.reader, "a refused token is not saved"
    assert not [p for p in config.parent.iterdir() if p.name != "config.json"]


@pytest.mark.parametrize("command", [["cancel"], ["logs"], ["wait"], ["rollback", "docs-stage", "--to"]])
def test_an_action_id_that_is_not_a_whole_number_is_exit_2_saying_what_it_is(server, command):
    name = command[-1] if command[-1].startswith("--") else "ACTION_ID"
    # ("ABC": not a deployment's name either, which `sami logs` also takes)
    for value, wanted in (("ABC", "a whole number"), ("1.5", "a whole number"), ("0", "1 or more")):
        done = server.run(*command, value)
        assert done.returncode == Exit.BAD_INPUT
        assert done.stderr == f"sami: {name} must be {wanted} (an action's id, as `sami info NAME` lists them)\n"
        assert done.stdout == ""
    as_json = server.run(*command, "ABC", "--json")
    assert as_json.returncode == Exit.BAD_INPUT
    assert json.loads(as_json.stdout) == {"error": f"{name} must be a whole number (an action's id, as `sami info "
                                                   "NAME` lists them)", "status": None, "exit_code": 2}


def test_info_aligns_every_field_and_lists_the_links_under_one_label(server):
    assert server.run("request", "probe", "pull_request", "--pull-request", "21", "--tag", "t1",
                      "--wait").returncode == Exit.OK
    shown = server.run("info", "probe-pr-21")
    assert shown.returncode == Exit.OK, shown.stderr
    fields = shown.stdout.split("\n\n")[0].splitlines()
    column = len("state:                ")
    for line in fields:
        label, value = line[:column], line[column:]
        assert re.fullmatch(r"[a-z ]+: *| *", label) and value[:1] not in ("", " "), line
    links = [line[column:] for line in fields[fields.index(next(f for f in fields if f.startswith("links:"))):]][:3]
    width = len(LONG_LINK) + 2
    assert links == [f"{'app':<{width}}https://probe-pr-21.example.test",
                     f"{'logs':<{width}}https://logs.example.test/probe-pr-21",
                     f"{LONG_LINK:<{width}}https://grafana.example.test/d/probe-pr-21"]


def test_every_client_command_has_an_example_and_the_exit_codes_in_its_help(server):
    from bot.client.commands import COMMANDS

    for command in COMMANDS:
        shown = server.run(command.name, "--help", token=None)
        assert shown.returncode == 0, shown.stderr
        assert "Example:\n      sami " + command.name in shown.stdout, command.name
        assert "Exit status:" in shown.stdout


def test_shell_completion_offers_commands_and_deployment_names(server):
    assert server.run("request", "docs", "stage", "--tag", "v1", "--wait").returncode == Exit.OK
    env = server.client_env(server.admin, _SAMI_COMPLETE="bash_complete", COMP_WORDS="sami info docs-s",
                            COMP_CWORD="2")
    done = subprocess.run([SAMI], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert "plain,docs-stage" in done.stdout.splitlines(), done.stdout + done.stderr
    env.update(COMP_WORDS="sami req", COMP_CWORD="1")
    done = subprocess.run([SAMI], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.stdout.splitlines() == ["plain,request"]
    script = subprocess.run([SAMI], env={**os.environ, "_SAMI_COMPLETE": "bash_source"}, capture_output=True,
                            text=True, timeout=60, cwd=ROOT)
    assert "_sami_completion()" in script.stdout


def test_waiting_shows_progress_lines_then_ends(server):
    """Plain progress lines (not a terminal): one per state, each with the elapsed time."""
    action_id = _action(server, "request", "probe", "pull_request", "--pull-request", "15", "--tag", "t1",
                        "--deployment-override", "sleep=2")
    started = time.monotonic()
    done = server.run("wait", str(action_id))
    assert done.returncode == Exit.OK
    states = [line.split(": ", 1)[1].split(" · ")[0] for line in done.stderr.splitlines()]
    assert states[-1] == "succeeded" and "running" in states
    assert len(states) == len(set(states)), "a line per state, not per poll"
    assert time.monotonic() - started >= 1
    wait_until(lambda: server.api(f"/api/v1/actions/{action_id}")["state"] == "succeeded", 10, "the action's end")


def test_list_filters_sorts_and_pages_as_the_server_does(server):
    for number in (21, 22, 23):
        assert server.run("request", "probe", "pull_request", "--pull-request", str(number), "--tag", f"t{number}",
                          "--repository", "acme/probe", "--wait").returncode == Exit.OK
    names = []
    cursor = None
    while True:
        args = ["list", "--service", "probe", "--service", "docs", "--repository", "acme/probe",
                "-q", "probe-pr-2", "--limit", "2", "--json"]
        page = json.loads(server.run(*args, *(["--cursor", cursor] if cursor else [])).stdout)
        assert len(page["deployments"]) <= 2
        names += [d["name"] for d in page["deployments"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert names == ["probe-pr-21", "probe-pr-22", "probe-pr-23"]
    previews = json.loads(server.run("list", "--environment", "pull_request", "--service", "probe", "-q", "probe-pr-2",
                                     "--json").stdout)["deployments"]
    assert [d["name"] for d in previews] == ["probe-pr-21", "probe-pr-22", "probe-pr-23"]
    one = json.loads(server.run("list", "--pull-request", "22", "--json").stdout)["deployments"]
    assert [d["name"] for d in one] == ["probe-pr-22"]
    newest = json.loads(server.run("list", "--service", "probe", "--sort", "-updated", "--json").stdout)
    stamps = [d["updated_at"] for d in newest["deployments"]]
    assert stamps == sorted(stamps, reverse=True)
    table = server.run("list", "--service", "probe", "-q", "probe-pr-2", "--limit", "1")
    assert table.returncode == Exit.OK and len(table.stdout.splitlines()) == 2
    assert table.stderr.startswith("more: add --cursor ")
    bad = server.run("list", "--cursor", "not-a-cursor")
    assert bad.returncode == Exit.BAD_INPUT and "start again without it" in bad.stderr


def test_rollback_goes_back_to_the_previous_good_tag_or_a_given_action(server):
    first = _action(server, "request", "probe", "pull_request", "--pull-request", "41", "--tag", "t1")
    assert server.run("wait", str(first)).returncode == Exit.OK
    assert server.run("update", "probe-pr-41", "--tag", "t2", "--wait").returncode == Exit.OK
    said = server.run("rollback", "probe-pr-41")
    assert said.returncode == Exit.OK, said.stderr
    # where it goes, before it is asked for and in the answer
    before, answer = said.stdout.splitlines()[:2]
    assert before == f"rolling probe-pr-41 back to t1 (the configuration of action {first})"
    assert answer.startswith(f"accepted: rollback of probe-pr-41 to t1 (the configuration of action {first}) "
                             "(action "), answer
    assert server.run("wait", re.search(r"\(action (\d+), ", answer)[1]).returncode == Exit.OK
    # The rollback pinned it: an update is refused unless it unpins on purpose.
    refused = server.run("update", "probe-pr-41", "--tag", "t2")
    assert refused.returncode == Exit.BAD_INPUT and "is pinned by token:ci-admin" in refused.stderr, refused.stderr
    assert server.run("update", "probe-pr-41", "--tag", "t2", "--unpin", "--wait").returncode == Exit.OK
    back = server.run("rollback", "probe-pr-41", "--wait", "--json")
    assert back.returncode == Exit.OK, back.stderr
    document = json.loads(back.stdout)
    # the newest good configuration before t2: the first rollback's
    assert document["rollback_to"]["tag"] == "t1" and document["rollback_to"]["action_id"] > first
    assert document["result"]["deployment"]["tag"] == "t1" and document["result"]["deployment"]["state"] == "Running"
    to = server.run("rollback", "probe-pr-41", "--to", str(first), "--wait")
    assert to.returncode == Exit.OK and "probe-pr-41 is Running" in to.stdout
    missing = server.run("rollback", "nope-stage")
    assert missing.returncode == Exit.NOT_FOUND


def test_a_pinned_deployment_shows_in_list_and_info_until_sami_unpin(server):
    for tag in ("p1", "p2"):
        assert server.run("request", "probe", "pull_request", "--pull-request", "43", "--tag", tag,
                          "--wait").returncode == Exit.OK
    assert server.run("rollback", "probe-pr-43", "--wait").returncode == Exit.OK
    listed = server.run("list", "-q", "probe-pr-43").stdout.splitlines()
    assert listed[1].split()[:3] == ["probe-pr-43", "PINNED", "Running"], listed
    info = server.run("info", "probe-pr-43").stdout
    pinned = next(line for line in info.splitlines() if line.startswith("pinned:"))
    assert "by token:ci-admin, " in pinned and "after a rollback to p1 (the configuration of action" in pinned
    assert "are refused until it is unpinned: sami unpin probe-pr-43" in info
    # CI's request is refused, exit 2, with how to unpin and not the state's next steps.
    refused = server.run("request", "probe", "pull_request", "--pull-request", "43", "--tag", "p3")
    assert refused.returncode == Exit.BAD_INPUT
    assert "sami unpin probe-pr-43" in refused.stderr and "from Running you can" not in refused.stderr

    unpinned = server.run("unpin", "probe-pr-43", "--json")
    assert unpinned.returncode == Exit.OK, unpinned.stderr
    assert json.loads(unpinned.stdout)["deployment"]["pin"] is None
    assert server.run("list", "-q", "probe-pr-43").stdout.splitlines()[1].split()[1] == "Running"
    assert "pinned:" not in server.run("info", "probe-pr-43").stdout
    again = server.run("unpin", "probe-pr-43")
    assert again.returncode == Exit.BAD_INPUT and "is not pinned" in again.stderr
    assert server.run("unpin", "probe-pr-43", token="reader").returncode == Exit.NOT_FOUND
    assert server.run("request", "probe", "pull_request", "--pull-request", "43", "--tag", "p3",
                      "--wait").returncode == Exit.OK


def test_clone_makes_a_new_deployment_with_the_same_configuration(server):
    assert server.run("request", "docs", "stage", "--tag", "v7", "--wait").returncode == Exit.OK
    cloned = server.run("clone", "docs-stage", "--name", "docs-copy", "--wait")
    assert cloned.returncode == Exit.OK, cloned.stdout + cloned.stderr
    assert "docs-copy is Running" in cloned.stdout
    copy = server.api("/api/v1/deployments/docs-copy")["deployment"]
    assert (copy["service"], copy["environment"], copy["tag"]) == ("docs", "stage", "v7")
    again = server.run("clone", "docs-stage", "--name", "docs-copy")
    assert again.returncode == Exit.BAD_INPUT and "is taken" in again.stderr
    nothing = server.run("clone", "docs-stage")
    assert nothing.returncode == Exit.BAD_INPUT and "give the clone's 'environment', its 'name', or both" \
        in nothing.stderr


def test_cancel_stops_a_running_action(server):
    action_id = _action(server, "request", "probe", "pull_request", "--pull-request", "42", "--tag", "t1",
                        "--deployment-override", "sleep=30")
    wait_until(lambda: server.api(f"/api/v1/actions/{action_id}")["state"] == "running", 30, "the action to run")
    started = time.monotonic()
    cancelled = server.run("cancel", str(action_id), "--wait")
    assert cancelled.returncode == Exit.OK, cancelled.stdout + cancelled.stderr
    assert time.monotonic() - started < 25, "the script was stopped, not waited for"
    assert f"create probe-pr-42 (action {action_id}) cancelled" in cancelled.stdout
    assert server.api(f"/api/v1/actions/{action_id}")["state"] == "cancelled"
    waited = server.run("wait", str(action_id))
    assert waited.returncode == Exit.FAILED, "waiting on a cancelled action says it did not succeed"
    again = server.run("cancel", str(action_id))
    assert again.returncode == Exit.BAD_INPUT
    assert f"action {action_id} already ended (cancelled); there is nothing to cancel" in again.stderr


def _on_terminal(server, *args: str, columns: int = 80, typed: str | None = None) -> tuple[int, str]:
    """Run `sami ARGS` with its output on a pseudo-terminal ``columns`` wide; its status and output. With
    ``typed``, its input is the terminal too, and ``typed`` and Enter are typed on it."""
    import fcntl
    import pty
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = server.client_env(server.admin)
    env.pop("COLUMNS", None)
    env.pop("LINES", None)
    stdin = subprocess.DEVNULL if typed is None else follower
    with subprocess.Popen([sys.executable, "-m", "bot.cli", *args], env=env, stdin=stdin,
                          stdout=follower, stderr=follower, cwd=ROOT) as process:
        os.close(follower)
        if typed is not None:
            os.write(leader, typed.encode() + b"\n")  # the terminal keeps it until the prompt reads it
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the other side is closed
                break
            if not chunk:
                break
            chunks.append(chunk)
        status = process.wait(60)
    os.close(leader)
    return status, b"".join(chunks).decode()


def test_on_a_terminal_tables_fit_its_width_states_are_coloured_and_progress_is_rewritten(server):
    assert server.run("request", "docs", "stage", "--tag", "v1", "--wait").returncode == Exit.OK
    status, shown = _on_terminal(server, "list", "--service", "docs", columns=70)
    assert status == Exit.OK, shown
    lines = shown.replace("\r\n", "\n").rstrip("\n").split("\n")
    assert "\x1b[32mRunning\x1b[0m" in shown
    visible = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in lines]
    assert max(len(line) for line in visible) <= 70, visible
    names = {d["name"] for d in json.loads(server.run("list", "--service", "docs", "--json").stdout)["deployments"]}
    assert {line.split()[0] for line in visible[1:]} == names, "names stay whole: columns give way around them"
    action_id = _action(server, "request", "probe", "pull_request", "--pull-request", "51", "--tag", "t1",
                        "--deployment-override", "sleep=2")
    status, shown = _on_terminal(server, "wait", str(action_id), columns=100)
    assert status == Exit.OK, shown
    assert shown.count("\r\x1b[K") >= 2, "one line, rewritten in place"
    assert f"create probe-pr-51 (action {action_id}): \x1b[32msucceeded\x1b[0m" in shown


def test_list_fits_60_80_and_120_columns_keeping_the_name_whole(server):
    sha = "3f2c1ab9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f"
    assert server.run("request", "docs", "pull_request", "--pull-request", "77", "--tag", sha,
                      "--wait").returncode == Exit.OK
    url = server.api("/api/v1/deployments/docs-pr-77")["deployment"]["links"][0]["url"]
    assert url.endswith("/sites/docs-pr-77/")
    for columns in (60, 80, 120):
        status, shown = _on_terminal(server, "list", "--service", "docs", "-q", "docs-pr-77", columns=columns)
        assert status == Exit.OK, shown
        lines = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in shown.replace("\r\n", "\n").rstrip("\n").split("\n")]
        assert max(len(line) for line in lines) <= columns, (columns, lines)
        header, row = lines
        assert header.split()[:2] == ["NAME", "STATE"] and row.split()[:2] == ["docs-pr-77", "Running"], lines
        assert sha[:7] in row.split() and sha[:8] not in row, "a sha as tag is shortened to 7 characters"
        if columns >= 80:  # the URL's end, which tells deployments apart, stays; its middle goes first
            assert re.search(r"\S*/docs-pr-77/(\s|$)", row), (columns, row)
    # without a terminal nothing is cut or left out
    plain = server.run("list", "--service", "docs", "-q", "docs-pr-77").stdout.splitlines()
    assert plain[0].split() == ["NAME", "STATE", "DRIFT", "SERVICE", "ENVIRONMENT", "TAG", "URL", "PR", "UPDATED"]
    assert url in plain[1]


def test_a_failed_deploy_reads_the_same_in_list_and_info(server):
    assert server.run("request", "probe", "pull_request", "--pull-request", "61", "--tag", "t1",
                      "--wait").returncode == Exit.OK
    failed = server.run("update", "probe-pr-61", "--tag", "t2", "--deployment-override", "fail=update", "--wait")
    assert failed.returncode == Exit.FAILED
    row = next(line for line in server.run("list", "-q", "probe-pr-61").stdout.splitlines()
               if line.startswith("probe-pr-61 "))
    assert "  Failed (update exit 1)  " in row  # the page's and the comment's words, with the short reason
    shown = server.run("info", "probe-pr-61").stdout
    assert "state:                Failed (update exit 1)" in shown
    assert re.search(r"last deploy:\s+update to t2 failed \(action \d+, (just now|1 min ago)\)", shown), shown


def test_github_send_posts_to_the_server_that_login_saved(server, tmp_path):
    env = server.client_env(XDG_CONFIG_HOME=str(tmp_path / "config"))
    del env["SAMI_URL"]
    assert server.run("login", "--url", server.url, stdin=server.reader + "\n", env=env).returncode == Exit.OK
    secret = (Path(server.env["SAMI_INSTANCE_DIR"]) / "webhook-secret").read_text().strip()
    sent = server.run("github", "send", "ping", str(ROOT / "examples" / "github" / "ping.json"), "--delivery",
                      "saved-url-1", env={**env, "SAMI_WEBHOOK_SECRET": secret})
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert sent.stdout.startswith("202 ") or sent.stdout.startswith("200 "), sent.stdout
    deliveries = server.api("/api/v1/deliveries")["deliveries"]
    assert "saved-url-1" in [d["delivery_id"] for d in deliveries]
