"""The `/sami` comment parser: tables of comments and what they ask for, and a property test."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.github.commands import (
    MAX_COMMANDS,
    Command,
    CommandError,
    Verb,
    comment_lines,
    help_text,
    parse_comment,
)

D, U, A, R, B, S, H = Verb.DEPLOY, Verb.UPDATE, Verb.ARCHIVE, Verb.RESTORE, Verb.ROLLBACK, Verb.STATUS, Verb.HELP

# (comment body, expected commands as (verb, services, line))
COMMANDS = [
    ("/sami deploy", [(D, (), 1)]),
    ("/sami deploy web", [(D, ("web",), 1)]),
    ("/sami deploy web api", [(D, ("web", "api"), 1)]),
    ("/sami deploy web, api", [(D, ("web", "api"), 1)]),
    ("/sami deploy web,api", [(D, ("web", "api"), 1)]),
    ("/sami update", [(U, (), 1)]),
    ("/sami update web", [(U, ("web",), 1)]),
    ("/sami archive web", [(A, ("web",), 1)]),
    ("/sami restore web", [(R, ("web",), 1)]),
    ("/sami rollback", [(B, (), 1)]),
    ("/sami rollback web", [(B, ("web",), 1)]),
    ("/sami status", [(S, (), 1)]),
    ("/sami help", [(H, (), 1)]),
    # the verb is read case-insensitively; the prefix is not
    ("/sami Deploy web", [(D, ("web",), 1)]),
    ("/sami STATUS", [(S, (), 1)]),
    ("/Sami deploy", []),
    # leading whitespace, tabs, trailing whitespace, Windows and old Mac line ends
    ("   /sami deploy web  ", [(D, ("web",), 1)]),
    ("\t/sami\tdeploy\tweb", [(D, ("web",), 1)]),
    ("thanks!\r\n/sami deploy web\r\n", [(D, ("web",), 2)]),
    ("thanks!\r/sami status", [(S, (), 2)]),
    # several commands, one per line, conversation around them
    ("LGTM, let's try it:\n\n/sami deploy web\n/sami archive api\nthanks",
     [(D, ("web",), 3), (A, ("api",), 4)]),
    # not commands: conversation, mentions of the command, quotes, code, other words
    ("please run /sami deploy", []),
    ("`/sami deploy`", []),
    ("- /sami deploy", []),
    ("> /sami deploy web", []),
    ("  > /sami deploy web", []),
    (">/sami deploy web", []),
    ("> > /sami deploy web", []),
    ("/samizdat deploy", []),
    ("/sami-bot deploy", []),
    ("sami deploy", []),
    ("", []),
    # fenced code blocks, of backticks or tildes, closed by a fence at least as long
    ("```\n/sami deploy web\n```\n/sami status", [(S, (), 4)]),
    ("```sh\n/sami deploy web\n```", []),
    ("~~~\n/sami deploy web\n~~~\n/sami help", [(H, (), 4)]),
    ("````\n```\n/sami deploy\n````\n/sami status", [(S, (), 5)]),
    ("```\n/sami deploy\n~~~\n/sami archive\n```\n/sami status", [(S, (), 6)]),
    ("- example:\n    ```\n    /sami deploy\n    ```\n/sami status", [(S, (), 5)]),
    # an unclosed fence runs to the end of the comment
    ("/sami status\n```\n/sami deploy", [(S, (), 1)]),
    # "```" followed by text with a backtick is inline code, not a fence
    ("```/sami``` is the bot\n/sami status", [(S, (), 2)]),
]


@pytest.mark.parametrize(("body", "expected"), COMMANDS)
def test_commands(body, expected):
    commands, errors = parse_comment(body)
    assert errors == ()
    assert [(c.verb, c.services, c.line) for c in commands] == expected


# (comment body, expected errors as (line, words the message holds))
ERRORS = [
    ("/sami", [(1, ["needs a command", "deploy", "help"])]),
    ("/sami   ", [(1, ["needs a command"])]),
    ("/sami deplyo web", [(1, ["unknown command 'deplyo'", "did you mean `/sami deploy`?"])]),
    ("/sami stauts", [(1, ["did you mean `/sami status`?"])]),
    ("/sami rollbak", [(1, ["did you mean `/sami rollback`?"])]),
    ("/sami frobnicate", [(1, ["unknown command 'frobnicate'", "the commands are deploy, update"])]),
    ("/sami deploy Web", [(1, ["'Web' is not a service name", "lowercase letters", "did you mean 'web'?"])]),
    ("/sami deploy web_api", [(1, ["'web_api' is not a service name", "lowercase letters, digits and '-'"])]),
    ("/sami deploy 1web", [(1, ["'1web' is not a service name", "starting with a letter"])]),
    ("/sami deploy " + "a" * 41, [(1, ["is not a service name", "at most 40 characters", "…"])]),
    ("/sami deploy ../etc", [(1, ["'../etc' is not a service name"])]),
    ("/sami deploy <script>", [(1, ["'<script>' is not a service name"])]),
    ("/sami deploy web API x_y", [(1, ["'API' is not", "'x_y' is not"])]),
    ("/sami rollback web api", [(1, ["`/sami rollback` takes at most 1 service (got 2)"])]),
    ("/sami status web", [(1, ["`/sami status` takes no arguments"])]),
    ("/sami help me", [(1, ["`/sami help` takes no arguments"])]),
    ("/sami deploy web web", [(1, ["'web' named more than once"])]),
    ("/sami deploy web\n/sami deploy web", [(2, ["`/sami deploy web` repeats line 1"])]),
    ("/sami status\n/sami Status", [(2, ["repeats line 1"])]),
    ("/sami deploy " + " ".join(f"s{i}" for i in range(21)), [(1, ["at most 20 services (got 21)"])]),
]


@pytest.mark.parametrize(("body", "expected"), ERRORS)
def test_errors(body, expected):
    errors = parse_comment(body).errors
    assert [e.line for e in errors] == [line for line, _ in expected]
    for error, (_, words) in zip(errors, expected, strict=True):
        for word in words:
            assert word in error.message


def test_a_line_with_an_error_gives_no_command_and_the_others_still_do():
    commands, errors = parse_comment("/sami deploy web\n/sami deplyo api\n/sami status")
    assert commands == (Command(D, ("web",), 1), Command(S, (), 3))
    assert [e.line for e in errors] == [2]


def test_twenty_services_are_enough():
    services = tuple(f"s{i}" for i in range(20))
    commands, errors = parse_comment("/sami deploy " + " ".join(services))
    assert errors == ()
    assert commands[0].services == services


def test_at_most_ten_commands_per_comment():
    body = "\n".join(f"/sami deploy s{i}" for i in range(13))
    commands, errors = parse_comment(body)
    assert len(commands) == MAX_COMMANDS
    assert errors == (CommandError(11, "a comment may hold at most 10 commands; this one and the 2 after it "
                                       "were not read"),)


def test_a_comment_over_64_kb_is_not_read():
    body = "/sami deploy web\n" + "x" * (64 * 1024)
    commands, errors = parse_comment(body)
    assert commands == ()
    assert len(errors) == 1
    assert errors[0].line == 0
    assert "at most 65536 bytes" in errors[0].message


def test_the_size_limit_counts_bytes():
    body = "/sami status\n" + "é" * (32 * 1024)  # 2 bytes each
    assert parse_comment(body).errors[0].line == 0
    assert parse_comment("/sami status\n" + "e" * (32 * 1024)).commands == (Command(S, (), 1),)


@pytest.mark.parametrize(("verb", "state_changing"),
                         [(D, True), (U, True), (A, True), (R, True), (B, True), (S, False), (H, False)])
def test_state_changing(verb, state_changing):
    assert Command(verb, (), 1).state_changing is state_changing


def test_command_is_frozen_and_reads_as_written():
    command = Command(D, ("web", "api"), 3)
    with pytest.raises(AttributeError):
        command.verb = S  # type: ignore[misc]
    assert str(command) == "/sami deploy web api"
    assert command.verb == "deploy"


def test_help_text_lists_every_command():
    text = help_text()
    for verb in Verb:
        assert f"`/sami {verb}" in text
    assert "Services:" not in text


def test_help_text_names_only_valid_services_once_and_sorted():
    text = help_text(["web", "api", "web", "<b>x</b>"])
    assert "Services: `api`, `web`." in text
    assert "<b>" not in text


def test_unknown_word_is_shortened_in_the_message():
    errors = parse_comment("/sami " + "x" * 500).errors
    assert len(errors[0].message) < 200


lines = st.lists(
    st.one_of(
        st.text(max_size=40),
        st.sampled_from(["/sami", "/sami deploy", "/sami deploy web", "> /sami status", "```", "~~~", "  ````",
                         "/sami help", "/sami rollback a b", "\t/sami Update x", "/sami\u2028deploy"]),
        st.builds(lambda a, b: f"{a}/sami {b}", st.text(max_size=5), st.text(max_size=20)),
    ),
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), lines.map("\n".join), lines.map("\r\n".join)))
def test_never_raises_and_reads_commands_only_from_sami_lines(body):
    commands, errors = parse_comment(body)
    assert len(commands) <= MAX_COMMANDS
    text_lines = comment_lines(body)
    for command in commands:
        line = text_lines[command.line - 1].lstrip()
        assert line.startswith("/sami")
        assert command.verb in Verb
    for error in errors:
        assert 0 <= error.line <= len(text_lines)
        assert isinstance(error.message, str) and error.message
