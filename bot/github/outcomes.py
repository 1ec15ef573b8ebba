"""What handling a webhook delivery came to, as typed values rather than text read back by its first word.

``Result`` is what happened to one environment (or one `/sami` command): its kind says what callers
act on (an environment waiting for a pending action has the delivery tried again, a held deploy
keeps a comment's 👀); its text is the line people read. ``Outcome`` is what a handler returns
for the whole delivery: the delivery job records its kind as the delivery's status and its text as
the delivery's outcome, the line the API and the pages show.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass


class Kind(enum.StrEnum):
    """How a delivery ended; the values are the delivery statuses they are recorded as."""

    PROCESSED = "processed"  # the handler acted on it (or found nothing left to do)
    IGNORED = "ignored"  # not Sami's to act on
    RETRYING = "retrying"  # it cannot be decided yet: tried again later
    FAILED = "failed"  # the handler raised, or kept asking to be retried


@dataclass(frozen=True)
class Outcome:
    """What handling a delivery came to: its kind, and the line recorded on the delivery."""

    kind: Kind
    text: str

    def __str__(self) -> str:
        return self.text

    @classmethod
    def processed(cls, text: str) -> Outcome:
        return cls(Kind.PROCESSED, text)

    @classmethod
    def ignored(cls, reason: str) -> Outcome:
        return cls(Kind.IGNORED, f"ignored: {reason}")

    @classmethod
    def retrying(cls, after_seconds: float, attempts: int, reason: str) -> Outcome:
        return cls(Kind.RETRYING, f"retrying in {after_seconds:g} s (try {attempts}): {reason}")

    @classmethod
    def failed(cls, reason: str) -> Outcome:
        return cls(Kind.FAILED, f"failed: {reason}")

    @classmethod
    def of(cls, parts: Iterable[Result | Outcome]) -> Outcome:
        """The outcome of several results (or of several pull requests' outcomes): their lines joined;
        ignored when every one of them was."""
        parts = list(parts)
        ignored = bool(parts) and all(part.is_ignored for part in parts)
        return cls(Kind.IGNORED if ignored else Kind.PROCESSED, "; ".join(part.text for part in parts))

    @property
    def is_ignored(self) -> bool:
        return self.kind is Kind.IGNORED


class Did(enum.StrEnum):
    """What happened to one environment or one command; but for DONE, the first word of its line."""

    DONE = "done"  # created, updated, restored, archived, queued, answered
    UNCHANGED = "unchanged"  # already as wanted, or cannot change now
    SKIPPED = "skipped"  # nothing to do: it was never deployed
    WAITING = "waiting"  # an action is pending on it: to be done once that settles
    HELD = "held"  # waits for green checks, or for a writer's approval of a fork's commit
    REFUSED = "refused"  # not done, and will not be until something changes (red checks, a bad command)
    FAILED = "failed"  # it could not be done
    IGNORED = "ignored"  # not Sami's to act on


    @classmethod
    def of_line(cls, line: str) -> Did:
        """What a recorded line says was done: its first word when that is a kind's word (``Result.said``), else
        DONE."""
        word = line.strip().split(" ", 1)[0].rstrip(":")
        return next((did for did in cls if did is not cls.DONE and did.value == word), cls.DONE)


@dataclass(frozen=True)
class Result:
    """What happened to one environment (or one command): its kind, and the line that says it."""

    did: Did
    text: str

    def __str__(self) -> str:
        return self.text

    @classmethod
    def said(cls, did: Did, rest: str) -> Result:
        """A result whose line starts with its kind's word: ``Result.said(Did.HELD, "web-pr-3: ...")``."""
        return cls(did, f"{did} {rest}")

    @property
    def is_ignored(self) -> bool:
        return self.did is Did.IGNORED
