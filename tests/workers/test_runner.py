"""The control-script runner against real processes."""

from __future__ import annotations

import os
import stat
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.core.models import Action, Deployment
from bot.core.states import DeploymentState
from tests.support.procs import alive
from workers.actionlog import ActionLog
from workers.runner import MASK, MIN_MASKED_LENGTH, Masker, ScriptNotFound, StopScript, run_control_script

ENV = {"PATH": "/usr/bin:/bin"}


def script(tmp_path, body: str, name: str = "op"):
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def all_gone(pids, within: float = 5.0) -> bool:
    """Whether every pid has ended within ``within`` seconds (a SIGKILL takes a moment to land)."""
    deadline = time.monotonic() + within
    pids = list(pids)
    while any(alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_exit_code_and_streams(tmp_path):
    result = run_control_script([script(tmp_path, 'echo out; echo err >&2; exit 3\n')], env=ENV, timeout=10)
    assert result.exit_code == 3
    assert not result.ok and not result.timed_out
    assert result.stdout == "out\n"
    assert result.stderr == "err\n"


def test_a_script_starts_with_the_default_signal_dispositions(tmp_path):
    """Python ignores SIGPIPE; a script must not inherit that (a pipeline's writer would fail with EPIPE
    instead of ending quietly when its reader has gone)."""
    result = run_control_script([script(tmp_path, "grep SigIgn /proc/$$/status\n")], env=ENV, timeout=10)
    ignored = int(result.stdout.split()[1], 16)
    assert ignored & (1 << (13 - 1)) == 0, result.stdout  # SIGPIPE is 13


def test_arguments_are_not_interpreted_by_a_shell(tmp_path):
    marker = tmp_path / "pwned"
    argv = [script(tmp_path, 'printf "%s\\n" "$@"\n'), "--name", f"$(touch {marker})", "a b;c"]
    result = run_control_script(argv, env=ENV, timeout=10)
    assert result.stdout.splitlines() == ["--name", f"$(touch {marker})", "a b;c"]
    assert not marker.exists()


def test_secrets_are_masked_in_output_and_callbacks(tmp_path):
    seen = []
    result = run_control_script(
        [script(tmp_path, 'echo "token=$SAMI_SECRET_API"; echo "$SAMI_SECRET_API" >&2\n')],
        env={**ENV, "SAMI_SECRET_API": "canary-5ecret-value"}, timeout=10,
        secrets=["canary-5ecret-value"], on_output=seen.append)
    assert "canary-5ecret-value" not in result.stdout + result.stderr + "".join(seen)
    assert result.stdout == f"token={MASK}\n"
    assert f"! {MASK}\n" in seen


# Secret values as a manifest's secrets may hold them: any printable text on one line, without leading or
# trailing blanks (those are not masked) and without the mask's own character.
SECRETS = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters="*"),
                  min_size=MIN_MASKED_LENGTH, max_size=64).filter(lambda value: value == value.strip())

# The secret alone on a line, at its start, in its middle, at its end, written in two parts, and on stderr.
PRINT_EVERYWHERE = """printf '%s\\n' "$SECRET"
printf '%s is the value\\n' "$SECRET"
printf 'using %s here\\n' "$SECRET"
printf 'token=%s\\n' "$SECRET"
printf '%s' "$SECRET_HEAD"; sleep 0.05; printf '%s\\n' "$SECRET_TAIL"
printf '%s\\n' "$SECRET" >&2
"""


@pytest.fixture
def action_id(db_session):
    deployment = Deployment(name="web-stage", service="web", environment="stage", type="swarm",
                            state=DeploymentState.UPDATE_PENDING)
    db_session.add(deployment)
    db_session.commit()
    action = Action(deployment_id=deployment.id, kind="update", requested_by="test", origin="cli")
    db_session.add(action)
    db_session.commit()
    return action.id


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(secret=SECRETS, split=st.floats(0.01, 0.99))
def test_a_secret_is_masked_wherever_it_is_printed(tmp_path, session_factory, db_session, action_id, secret, split):
    cut = max(1, min(len(secret) - 1, round(len(secret) * split)))
    env = {**ENV, "SECRET": secret, "SECRET_HEAD": secret[:cut], "SECRET_TAIL": secret[cut:]}
    # What the worker does with a script's output: live lines appended to the action's stored log.
    db_session.execute(Action.__table__.update().where(Action.id == action_id).values(log=""))
    db_session.commit()
    stored = ActionLog(session_factory, action_id)
    live: list[str] = []

    def on_output(line: str) -> None:
        live.append(line)
        stored.write(line)

    result = run_control_script([script(tmp_path, PRINT_EVERYWHERE)], env=env, timeout=20, secrets=[secret],
                                on_output=on_output)
    stored.flush()
    printed = [secret, f"{secret} is the value", f"using {secret} here", f"token={secret}", secret]
    expected = [line.replace(secret, MASK) + "\n" for line in printed]
    assert result.stdout.splitlines(keepends=True) == expected
    assert result.stderr == f"{MASK}\n"
    assert sorted(live) == sorted([*expected, f"! {MASK}\n"])
    db_session.expire_all()
    log = db_session.get(Action, action_id).log
    assert log == "".join(live)


def test_masker_masks_longest_first_and_ignores_tiny_values():
    mask = Masker(["abcdef", "abcdefghij", "xyz"])
    assert mask("abcdefghij abcdef xyz") == f"{MASK} {MASK} xyz"


def test_output_arrives_while_the_script_runs(tmp_path):
    seen = []
    got_first = threading.Event()

    def on_output(line):
        seen.append((line, time.monotonic()))
        got_first.set()

    release = tmp_path / "release"
    argv = [script(tmp_path, f'echo started; while [ ! -e {release} ]; do sleep 0.05; done; echo done\n')]
    thread = threading.Thread(target=lambda: run_control_script(argv, env=ENV, timeout=20, on_output=on_output))
    thread.start()
    assert got_first.wait(10), "the first line did not arrive before the script ended"
    assert [line for line, _ in seen] == ["started\n"]
    release.touch()
    thread.join(10)
    assert [line for line, _ in seen] == ["started\n", "done\n"]


def test_timeout_stops_the_whole_process_group(tmp_path):
    pids = tmp_path / "pids"
    body = f'sleep 300 & echo $! > {pids}; echo $$ >> {pids}; trap "" TERM; wait\n'
    started = time.monotonic()
    result = run_control_script([script(tmp_path, body)], env=ENV, timeout=1, kill_grace=1)
    assert result.timed_out
    assert result.exit_code is None
    assert time.monotonic() - started < 15
    assert all_gone(map(int, pids.read_text().split())), "a process of the script survived the timeout"


def test_output_is_capped(tmp_path):
    body = "i=0; while [ $i -lt 2000 ]; do echo 0123456789; i=$((i+1)); done\n"
    result = run_control_script([script(tmp_path, body)], env=ENV, timeout=20, max_output=1000)
    assert result.exit_code == 0
    assert 1000 <= len(result.stdout) < 1100


def test_ticks_while_running(tmp_path):
    ticks = []
    run_control_script([script(tmp_path, "sleep 1\n")], env=ENV, timeout=10, on_tick=lambda: ticks.append(1),
                       tick_seconds=0.2)
    assert len(ticks) >= 2


def test_only_the_given_environment_reaches_the_script(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMI_DATABASE_URL", "postgresql://user:password@db/sami")
    result = run_control_script([script(tmp_path, "env\n")], env=ENV, timeout=10)
    assert "SAMI_DATABASE_URL" not in result.stdout


def test_missing_or_non_executable_script(tmp_path):
    with pytest.raises(ScriptNotFound):
        run_control_script([str(tmp_path / "nope")], env=ENV, timeout=5)
    plain = tmp_path / "plain"
    plain.write_text("#!/bin/sh\n")
    with pytest.raises(ScriptNotFound):
        run_control_script([str(plain)], env=ENV, timeout=5)


def test_a_script_that_closes_its_output_still_times_out_and_ticks(tmp_path):
    ticks = []
    started = time.monotonic()
    result = run_control_script([script(tmp_path, "exec >/dev/null 2>&1; sleep 300\n")], env=ENV, timeout=1.5,
                                kill_grace=1, on_tick=lambda: ticks.append(1), tick_seconds=0.3)
    assert result.timed_out
    assert time.monotonic() - started < 10
    assert len(ticks) >= 2


def test_a_failing_callback_does_not_abandon_the_script(tmp_path):
    calls = []

    def broken_heartbeat():
        calls.append(1)
        raise ConnectionError("database went away")

    result = run_control_script([script(tmp_path, "sleep 1; echo done\n")], env=ENV, timeout=10,
                                on_tick=broken_heartbeat, tick_seconds=0.2)
    assert result.exit_code == 0 and result.stdout == "done\n"
    assert len(calls) >= 2


def test_stop_script_from_a_callback_stops_the_process_group(tmp_path):
    pids = tmp_path / "pids"

    def lease_lost():
        raise StopScript("lease lost")

    with pytest.raises(StopScript):
        run_control_script([script(tmp_path, f"sleep 300 & echo $! > {pids}; echo $$ >> {pids}; wait\n")],
                           env=ENV, timeout=60, on_tick=lease_lost, tick_seconds=0.5, kill_grace=1)
    assert all_gone(list(map(int, pids.read_text().split())))


def test_multi_line_secrets_are_masked_line_by_line(tmp_path):
    key = "-----BEGIN KEY-----\nAAAABBBBCCCCDDDD\nEEEEFFFFGGGGHHHH\n-----END KEY-----"
    result = run_control_script([script(tmp_path, 'printf "%s\\n" "$KEY"\n')], env={**ENV, "KEY": key},
                                timeout=10, secrets=[key])
    assert "AAAABBBB" not in result.stdout and "EEEEFFFF" not in result.stdout
    assert result.stdout.count(MASK) == 4


RUN_AND_HANG = """
import sys
from workers.runner import run_control_script
run_control_script([sys.argv[1]], env={"PATH": "/usr/bin:/bin"}, timeout=600, label="sami-action-77")
"""


def test_a_killed_runner_takes_the_script_and_its_children_with_it(tmp_path):
    """The worker process dies (SIGKILL, no clean-up): the script and what it started in the
    background die too, through the supervisor that leads their group."""
    import os
    import signal
    import subprocess
    import sys

    child = tmp_path / "child"
    body = f'sleep 300 &\necho $! > {child}\necho $$ > {tmp_path / "script"}\nwait\n'
    worker = subprocess.Popen([sys.executable, "-c", RUN_AND_HANG, script(tmp_path, body)])
    try:
        deadline = time.monotonic() + 10
        while not (child.exists() and child.read_text().strip() and (tmp_path / "script").exists()):
            assert time.monotonic() < deadline, "the script did not start"
            time.sleep(0.05)
        child_pid, script_pid = int(child.read_text()), int((tmp_path / "script").read_text())
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(10)
        deadline = time.monotonic() + 10
        while alive(child_pid) or alive(script_pid):
            assert time.monotonic() < deadline, "the script's group outlived its worker"
            time.sleep(0.05)
    finally:
        worker.kill()


def test_the_exit_status_of_a_script_killed_by_a_signal_is_kept(tmp_path):
    result = run_control_script([script(tmp_path, "kill -TERM $$\n")], env=ENV, timeout=10)
    assert result.exit_code == -15 and not result.ok


def test_a_script_group_is_found_by_its_label_only(tmp_path):
    from workers.runner import find_script_group, kill_script_group

    pids = []
    thread = threading.Thread(target=run_control_script, args=([script(tmp_path, "sleep 300\n")],),
                              kwargs={"env": ENV, "timeout": 600, "label": "sami-action-5",
                                      "on_start": pids.append})
    thread.start()
    deadline = time.monotonic() + 10
    while not pids:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    (pgid,) = pids
    assert find_script_group(pgid, "sami-action-5")
    assert not find_script_group(pgid, "sami-action-6")
    assert not kill_script_group(pgid, "sami-action-6")
    assert not find_script_group(os.getpid(), "sami-action-5")
    assert kill_script_group(pgid, "sami-action-5")
    thread.join(15)
    assert not thread.is_alive()
