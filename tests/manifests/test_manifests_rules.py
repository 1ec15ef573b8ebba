"""One failing fixture per rule: each names where it goes and the error it must produce."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot.manifests import load_deployments_repo

from .conftest import FIXTURES, STACK

RULES = sorted((FIXTURES / "rules").glob("*.yaml"))
_EXPECT = re.compile(r"^# expect: (?:(\d+):(\d+)|-) \| ([^|]*) \| (.+)$")


def _header(text: str) -> tuple[str, list[tuple[int | None, int | None, str, str]]]:
    place = "services/web/swarm/stage/sami.yaml"
    expected = []
    for line in text.splitlines():
        if line.startswith("# place: "):
            place = line.removeprefix("# place: ").strip()
        elif line.startswith("# expect: "):
            match = _EXPECT.match(line)
            assert match, f"bad expect line: {line}"
            row, col, field, message = match.groups()
            expected.append((int(row) if row else None, int(col) if col else None, field.strip(), message))
        elif not line.startswith("#"):
            break
    return place, expected


def test_there_is_a_fixture_per_rule() -> None:
    assert len(RULES) >= 50


@pytest.mark.parametrize("fixture", RULES, ids=[p.stem for p in RULES])
def test_rule_fixture_reports_its_error(fixture: Path, repo_dir: Path) -> None:
    text = fixture.read_text()
    place, expected = _header(text)
    assert expected, f"{fixture.name} declares no expected error"
    target = repo_dir / place
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    (target.parent / "stack.yml").write_text(STACK)

    repo = load_deployments_repo(repo_dir)

    assert not repo.ok
    assert repo.manifests == ()
    got = [(e.line, e.column, e.field, e.message, e.path) for e in repo.errors]
    assert len(got) == len(expected), "\n".join(str(e) for e in repo.errors)
    for (line, column, field, message), error in zip(expected, repo.errors, strict=True):
        assert error.path == place
        assert (error.line, error.column) == (line, column), str(error)
        assert error.field == field, str(error)
        assert message in error.message, str(error)
