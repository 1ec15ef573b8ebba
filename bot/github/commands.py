"""The `/sami ...` commands in a pull request comment: a pure parser and the help reply.

A command is a line that starts with ``/sami`` (after any leading whitespace), then a verb and its
arguments separated by spaces or commas. Everything else in a comment is conversation and is
ignored, and so are lines that people quote or paste as examples: lines inside fenced code blocks
(```` ``` ```` or ``~~~``) and quoted lines (``> ...``). The verb is read case-insensitively
(``/sami Deploy`` is ``/sami deploy``: phones capitalise words); the ``/sami`` prefix and service
names are not, because a service name names a folder and a deployment as written.

The parser decides nothing about permissions or services that exist: it returns what was asked
(``Command``) and what could not be read (``CommandError``), each with its line number, and the
caller decides. A line with an error yields no command; a caller that runs the commands of a
comment with errors runs only part of what its author asked, so it should answer the errors and
run nothing.
"""

from __future__ import annotations

import difflib
import enum
import re
from dataclasses import dataclass
from typing import NamedTuple

from bot.core.naming import MAX_SERVICE, SERVICE_RE

PREFIX = "/sami"
MAX_COMMENT_BYTES = 64 * 1024
MAX_COMMANDS = 10
MAX_SERVICES = 20
# How much of a user's word an error message repeats.
MAX_ECHO = 40

SERVICE_RULE = f"lowercase letters, digits and '-', starting with a letter, at most {MAX_SERVICE} characters"


class Verb(enum.StrEnum):
    """What a `/sami` command asks for."""

    DEPLOY = "deploy"
    UPDATE = "update"
    ARCHIVE = "archive"
    RESTORE = "restore"
    ROLLBACK = "rollback"
    RELEASE = "release"
    UNPIN = "unpin"
    STATUS = "status"
    HELP = "help"


STATE_CHANGING = frozenset({Verb.DEPLOY, Verb.UPDATE, Verb.ARCHIVE, Verb.RESTORE, Verb.ROLLBACK, Verb.RELEASE,
                            Verb.UNPIN})
# Verbs whose one argument is an environment (released blue-green), not a service.
TAKES_ENVIRONMENT = frozenset({Verb.RELEASE})
# How many services each verb takes at most (None: any number up to MAX_SERVICES).
MAX_ARGUMENTS: dict[Verb, int | None] = {
    Verb.DEPLOY: None,
    Verb.UPDATE: None,
    Verb.ARCHIVE: None,
    Verb.RESTORE: None,
    Verb.ROLLBACK: 1,
    Verb.RELEASE: 1,
    Verb.UNPIN: None,
    Verb.STATUS: 0,
    Verb.HELP: 0,
}


@dataclass(frozen=True)
class Command:
    """One `/sami` command as written on line ``line`` (1-based) of the comment."""

    verb: Verb
    services: tuple[str, ...]
    line: int

    @property
    def state_changing(self) -> bool:
        """Whether running it changes a deployment (and so needs write permission)."""
        return self.verb in STATE_CHANGING

    def __str__(self) -> str:
        return " ".join((PREFIX, self.verb, *self.services))


@dataclass(frozen=True)
class CommandError:
    """A `/sami` line that could not be read; line 0 means the whole comment."""

    line: int
    message: str


class ParsedComment(NamedTuple):
    """The commands of a comment and the errors in it, in the order of their lines."""

    commands: tuple[Command, ...]
    errors: tuple[CommandError, ...]


# Any indentation: a fence inside a list item is indented, and a pasted example there is still code.
FENCE_RE = re.compile(r"^[ \t]*(`{3,}|~{3,})(.*)\Z")
LINE_BREAK_RE = re.compile(r"\r\n|\r|\n")
SEPARATOR_RE = re.compile(r"[\s,]+")


def comment_lines(body: str) -> list[str]:
    """The lines of a comment as GitHub numbers them (``\\r\\n``, ``\\r`` or ``\\n`` ends a line)."""
    return LINE_BREAK_RE.split(body)


def command_lines(body: str) -> list[tuple[int, str]]:
    """``(line number, text after /sami)`` of every line that is a command, outside code and quotes."""
    found = []
    fence: str | None = None
    for number, line in enumerate(comment_lines(body), start=1):
        opening = FENCE_RE.match(line)
        if fence is not None:
            # A fence closes with the same character, at least as long, and nothing after it.
            if opening and opening.group(1)[0] == fence[0] and len(opening.group(1)) >= len(fence) \
                    and not opening.group(2).strip():
                fence = None
            continue
        if opening and not (opening.group(1)[0] == "`" and "`" in opening.group(2)):
            fence = opening.group(1)
            continue
        text = line.lstrip()
        if not text.startswith(PREFIX):
            continue  # conversation, a quoted line ("> /sami ...") or a list item
        rest = text[len(PREFIX):]
        if rest and not rest[0].isspace():
            continue  # "/samizdat", "/sami-bot": another word
        found.append((number, rest))
    return found


def parse_comment(body: str) -> ParsedComment:
    """Read the `/sami` commands in a pull request comment; never raises."""
    if not isinstance(body, str):
        return ParsedComment((), ())
    size = len(body.encode("utf-8", "surrogatepass"))
    if size > MAX_COMMENT_BYTES:
        return ParsedComment((), (CommandError(0, f"the comment is {size} bytes long; Sami reads commands only "
                                                  f"in comments of at most {MAX_COMMENT_BYTES} bytes"),))
    commands: list[Command] = []
    errors: list[CommandError] = []
    seen: dict[tuple[Verb, tuple[str, ...]], int] = {}
    lines = command_lines(body)
    for index, (number, rest) in enumerate(lines):
        if index == MAX_COMMANDS:
            errors.append(CommandError(number, f"a comment may hold at most {MAX_COMMANDS} commands; this one and "
                                               f"the {len(lines) - index - 1} after it were not read"))
            break
        command, error = _parse_line(number, rest)
        if error:
            errors.append(error)
            continue
        assert command is not None
        key = (command.verb, command.services)
        if key in seen:
            errors.append(CommandError(number, f"`{command}` repeats line {seen[key]}; write each command once"))
            continue
        seen[key] = number
        commands.append(command)
    return ParsedComment(tuple(commands), tuple(errors))


def _parse_line(number: int, rest: str) -> tuple[Command | None, CommandError | None]:
    words = [word for word in SEPARATOR_RE.split(rest) if word]
    if not words:
        return None, CommandError(number, f"`{PREFIX}` needs a command: {_verbs()}; `{PREFIX} help` explains them")
    word, arguments = words[0], words[1:]
    try:
        verb = Verb(word.lower())
    except ValueError:
        return None, CommandError(number, _unknown_verb(word))
    limit = MAX_ARGUMENTS[verb]
    if verb in TAKES_ENVIRONMENT and not arguments:
        return None, CommandError(number, f"`{PREFIX} {verb}` needs the environment to release, e.g. "
                                          f"`{PREFIX} {verb} production`")
    if limit == 0 and arguments:
        return None, CommandError(number, f"`{PREFIX} {verb}` takes no arguments (got {len(arguments)})")
    if limit is not None and len(arguments) > limit:
        return None, CommandError(number, f"`{PREFIX} {verb}` takes at most {limit} service (got {len(arguments)}); "
                                          f"write one `{PREFIX} {verb}` line per service")
    if len(arguments) > MAX_SERVICES:
        return None, CommandError(number, f"a command may name at most {MAX_SERVICES} services "
                                          f"(got {len(arguments)})")
    problems = []
    for service in dict.fromkeys(arguments):
        if not SERVICE_RE.match(service):
            problems.append(_bad_service(service))
    if problems:
        return None, CommandError(number, "; ".join(problems))
    repeated = sorted({service for service in arguments if arguments.count(service) > 1})
    if repeated:
        return None, CommandError(number, f"{', '.join(_quote(s) for s in repeated)} named more than once")
    return Command(verb, tuple(arguments), number), None


def _quote(word: str) -> str:
    """A user's word for an error message: shortened, and shown as Python would (no line breaks)."""
    if len(word) > MAX_ECHO:
        word = word[:MAX_ECHO] + "…"
    return repr(word)


def _verbs() -> str:
    return ", ".join(Verb)


def _unknown_verb(word: str) -> str:
    close = difflib.get_close_matches(word.lower(), list(Verb), n=1, cutoff=0.6)
    hint = f"did you mean `{PREFIX} {close[0]}`?" if close else f"the commands are {_verbs()}"
    return f"unknown command {_quote(word)}: {hint} (`{PREFIX} help` explains them)"


def _bad_service(service: str) -> str:
    message = f"{_quote(service)} is not a service name: use {SERVICE_RULE}"
    lowered = service.lower()
    if lowered != service and SERVICE_RE.match(lowered):
        message += f" (did you mean {lowered!r}?)"
    return message


def help_text(services: tuple[str, ...] | list[str] = ()) -> str:
    """The Markdown reply to `/sami help`; ``services`` are those this pull request may deploy."""
    lines = [
        "**Sami commands** — one per line in a pull request comment:",
        "",
        "| Command | What it does |",
        "| --- | --- |",
        f"| `{PREFIX} deploy [service…]` | Create this pull request's environments (all its services, or "
        "those named); on a pull request from a fork, approves the current commit |",
        f"| `{PREFIX} update [service…]` | Deploy the pull request's latest commit again |",
        f"| `{PREFIX} archive [service…]` | Stop the environments; they can be restored |",
        f"| `{PREFIX} restore [service…]` | Bring archived environments back |",
        f"| `{PREFIX} rollback [service]` | Go back to the last successful deploy before the current one; it stays "
        "there (pinned) until unpinned |",
        f"| `{PREFIX} unpin [service…]` | Let pushes deploy again over a rollback |",
        f"| `{PREFIX} release environment` | Switch a blue-green environment of this repository to the release "
        "awaiting it (its release approvers only) |",
        f"| `{PREFIX} status` | Refresh the status comment |",
        f"| `{PREFIX} help` | Show this help |",
        "",
        "Without a service, a command applies to every service of this pull request. Commands that change "
        "an environment need write access to the repository. Lines in code blocks and quotes are not read.",
    ]
    names = [service for service in services if isinstance(service, str) and SERVICE_RE.match(service)]
    if names:
        lines += ["", "Services: " + ", ".join(f"`{service}`" for service in sorted(set(names))) + "."]
    return "\n".join(lines) + "\n"
