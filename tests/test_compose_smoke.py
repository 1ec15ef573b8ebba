"""docker-compose.yml for real: scripts/compose-smoke builds the images here (a Debian base from
Debian's packages, Sami, PostgreSQL, Redis, the helm/kubectl add-on), starts the compose stack on a
private dockerd, requests a deployment through the API and sees it run and be served."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "a private dockerd needs root"
    for tool in ("dockerd", "docker-compose", "mmdebstrap"):
        if shutil.which(tool) is None and not os.access(f"/usr/sbin/{tool}", os.X_OK):
            return f"{tool} is not installed (scripts/install-test-deps installs it)"
    return None


@pytest.mark.timeout(1200)
def test_the_compose_stack_builds_starts_and_deploys():
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "compose-smoke")], cwd=ROOT,
                            capture_output=True, text=True, timeout=1100)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-8000:]
    summary = output.strip().splitlines()[-1]
    assert summary.startswith("compose smoke passed"), summary
    assert "'state': 'Running'" in summary and "'action': 'succeeded'" in summary and "'site': 200" in summary
    print(summary)
