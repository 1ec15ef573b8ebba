"""Names: the manifest loader and bot.core.naming accept the same environments and deployment names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.core import naming
from bot.manifests import load_deployments_repo

MANIFEST = """\
version: v1beta
service_name: {service}
type: static_file
"""


def _loader_accepts(root: Path, service: str, environment: str, type_: str = "static_file") -> bool:
    folder = root / "services" / service / type_ / environment
    folder.mkdir(parents=True)
    (folder / "sami.yaml").write_text(MANIFEST.format(service=service).replace("static_file", type_))
    return load_deployments_repo(root).find(service, environment) is not None


def _naming_accepts(service: str, environment: str) -> bool:
    try:
        naming.deployment_name(service, environment, 1 if environment == "pull_request" else None)
    except naming.InvalidName:
        return False
    return True


@pytest.mark.parametrize(
    "environment",
    ["stage", "production", "pull_request", "qa", "e" * 40, "e" * 41, "e" * 45, "e" * 59, "e" * 60, "e" * 61,
     "pr-1", "pr-x", "a--b", "a-", "-a", "Stage", "9a"],
)
def test_loader_and_naming_agree_on_environments(tmp_path: Path, environment: str) -> None:
    assert _loader_accepts(tmp_path, "web", environment) is _naming_accepts("web", environment)


def test_a_45_character_environment_is_deployable() -> None:
    environment = "e" * 45
    assert naming.deployment_name("web", environment) == f"web-{environment}"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    service=st.from_regex(r"[a-z][a-z0-9]{0,39}", fullmatch=True),
    environment=st.from_regex(r"[a-z][a-z0-9-]{0,62}", fullmatch=True),
)
def test_loader_and_naming_agree_on_generated_names(tmp_path_factory, service: str, environment: str) -> None:
    root = tmp_path_factory.mktemp("names")
    assert _loader_accepts(root, service, environment) is _naming_accepts(service, environment)


MESSAGES = [
    lambda: naming.check_environment("e" * 70),
    lambda: naming.check_environment("pr-3"),
    lambda: naming.check_environment("a--b"),
    lambda: naming.deployment_name("s" * 40, "e" * 30),
    lambda: naming.deployment_name("Web", "stage"),
    lambda: naming.check_name("Web"),
    lambda: naming.check_override_key("1KEY"),
    lambda: naming.check_tag("bad tag"),
]


@pytest.mark.parametrize("call", MESSAGES)
def test_messages_say_what_is_allowed_not_a_regex(call) -> None:
    with pytest.raises(naming.InvalidName) as caught:
        call()
    message = str(caught.value)
    assert not re.search(r"[\^$]|\(\?|\[a-z|\{0,", message.replace("'", "")), message


def test_length_message_names_both_parts() -> None:
    with pytest.raises(naming.InvalidName, match=r"is 71 characters long; service name and environment together "
                                                 r"must fit in 63"):
        naming.deployment_name("s" * 40, "e" * 30)


@pytest.mark.parametrize(
    "call",
    [lambda: naming.check_name("web-stage\n"), lambda: naming.check_tag("v1\n"),
     lambda: naming.check_environment("stage-eu\n"), lambda: naming.check_override_key("KEY\n"),
     lambda: naming.split_image("local/web:v1\n")],
)
def test_a_trailing_newline_is_not_part_of_a_valid_name(call) -> None:
    with pytest.raises(naming.InvalidName):
        call()
