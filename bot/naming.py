"""Deployment names and the checks every name and value passes before it reaches a script."""

from __future__ import annotations

import re

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
SERVICE_RE = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
# A DNS label; pr-<n> is reserved for pull request previews (the manifest loader says the same).
ENVIRONMENT_RE = re.compile(r"^(?!pr-[0-9]+$)(?!.*--)[a-z](?:[a-z0-9-]{0,38}[a-z0-9])?$")
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
# registry[:port]/path[:tag][@sha256:digest], as docker accepts them (lowercase path).
IMAGE_RE = re.compile(
    r"^(?P<name>(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?(?:@(?P<digest>sha256:[a-f0-9]{64}))?$"
)
OVERRIDE_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")
PULL_REQUEST_ENVIRONMENT = "pull_request"


class InvalidName(ValueError):
    """A name or value that may not reach a control script."""


def deployment_name(service: str, environment: str, pull_request: int | None = None) -> str:
    """``<service>-<environment>``, or ``<service>-pr-<n>`` for a pull request environment."""
    if not SERVICE_RE.match(service or ""):
        raise InvalidName(f"service name {service!r} must be lowercase letters, digits and dashes")
    if environment == PULL_REQUEST_ENVIRONMENT or pull_request is not None:
        if environment != PULL_REQUEST_ENVIRONMENT:
            raise InvalidName(f"a pull request number goes with the {PULL_REQUEST_ENVIRONMENT!r} "
                              f"environment, not {environment!r}")
        if not isinstance(pull_request, int) or isinstance(pull_request, bool) or pull_request <= 0:
            raise InvalidName(f"pull request number must be a positive integer, got {pull_request!r}")
        name = f"{service}-pr-{pull_request}"
    else:
        check_environment(environment)
        name = f"{service}-{environment}"
    if not NAME_RE.match(name):
        raise InvalidName(f"deployment name {name!r} is longer than 63 characters")
    return name


def check_environment(environment: str) -> str:
    """Return ``environment`` if it is ``pull_request`` or matches ENVIRONMENT_RE."""
    if environment != PULL_REQUEST_ENVIRONMENT and not ENVIRONMENT_RE.match(environment or ""):
        raise InvalidName(f"environment {environment!r} must be {PULL_REQUEST_ENVIRONMENT!r} or match "
                          f"{ENVIRONMENT_RE.pattern}")
    return environment


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid deployment name, else raise InvalidName."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InvalidName(f"{name!r} is not a deployment name (lowercase letters, digits, dashes; "
                          "at most 63 characters)")
    return name


def check_tag(tag: str) -> str:
    """Return ``tag`` if docker would accept it as an image tag, else raise InvalidName."""
    if not isinstance(tag, str) or not TAG_RE.match(tag):
        raise InvalidName(f"tag {tag!r} is not a valid image tag (letters, digits, '_', '.', '-'; "
                          "at most 128 characters)")
    return tag


def split_image(image: str) -> tuple[str, str | None, str | None]:
    """Split ``name[:tag][@digest]`` into its parts, or raise InvalidName."""
    match = IMAGE_RE.match(image) if isinstance(image, str) else None
    if not match or len(image) > 512:
        raise InvalidName(f"image {image!r} is not a valid image reference (name[:tag][@sha256:...])")
    return match.group("name"), match.group("tag"), match.group("digest")


def check_override_key(key: str) -> str:
    if not isinstance(key, str) or not OVERRIDE_KEY_RE.match(key):
        raise InvalidName(f"override key {key!r} must match {OVERRIDE_KEY_RE.pattern}")
    return key


# A git branch or tag name as `git check-ref-format --allow-onelevel` accepts it, narrowed to what
# no shell or argument parser reads as anything else: ASCII letters, digits and . _ - / + @.
REF_RE = re.compile(r"^[A-Za-z0-9._/+@-]{1,255}\Z")


def check_ref(ref: str) -> str:
    """Return ``ref`` if it is a safe git branch or tag name, else raise InvalidName."""
    if not isinstance(ref, str) or not REF_RE.match(ref):
        problem = "it may only have ASCII letters, digits and . _ - / + @ (1 to 255 of them)"
    elif ref.startswith("-"):
        problem = "it must not start with '-'"
    elif ref == "@":
        problem = "'@' alone names no branch"
    elif ".." in ref:
        problem = "it must not contain '..'"
    elif ref.startswith("/") or ref.endswith("/") or "//" in ref:
        problem = "it must not start or end with '/' or contain '//'"
    elif ref.endswith("."):
        problem = "it must not end with '.'"
    elif any(part.startswith(".") or part.endswith(".lock") for part in ref.split("/")):
        problem = "no part between '/' may start with '.' or end with '.lock'"
    else:
        return ref
    raise InvalidName(f"ref {ref!r} is not a branch or tag name: {problem}")
