"""Fixtures of the control script tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.control_scripts.helpers import RecordingStandIns


@pytest.fixture
def stand_ins(tmp_path: Path) -> RecordingStandIns:
    return RecordingStandIns(tmp_path, ("docker", "docker-compose", "helm", "kubectl"))
