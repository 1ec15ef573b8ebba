"""Deployment names and the checks every name and value passes before it reaches a script.

The manifest loader applies the same rules to service and environment folders, so a manifest
it accepts always gives a name these checks accept. Patterns end with \\Z: '$' would let a
trailing newline through.
"""

from __future__ import annotations

import re

MAX_NAME = 63
MAX_SERVICE = 40
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,62}\Z")
SERVICE_RE = re.compile(r"^[a-z][a-z0-9-]{0,39}\Z")
# A DNS label; pr-<n> is reserved for pull request previews.
ENVIRONMENT_RE = re.compile(r"^[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
RESERVED_ENVIRONMENT_RE = re.compile(r"^pr-[0-9]+\Z")
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
# registry[:port]/path[:tag][@sha256:digest], as docker accepts them (lowercase path).
IMAGE_RE = re.compile(
    r"^(?P<name>(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?(?:@(?P<digest>sha256:[a-f0-9]{64}))?\Z"
)
OVERRIDE_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}\Z")
PULL_REQUEST_ENVIRONMENT = "pull_request"
PRODUCTION_ENVIRONMENT = "production"
STANDARD_ENVIRONMENTS = ("stage", PRODUCTION_ENVIRONMENT, PULL_REQUEST_ENVIRONMENT)

ENVIRONMENT_RULE = (
    "use stage, production, pull_request, or lowercase letters, digits and '-' starting with a letter, "
    "not ending with '-' and without '--'"
)


class InvalidName(ValueError):
    """A name or value that may not reach a control script."""


def environment_problem(environment: str) -> str | None:
    """Why ``environment`` cannot be an environment name (None when it can), as a sentence tail."""
    if environment in STANDARD_ENVIRONMENTS:
        return None
    if not isinstance(environment, str) or not ENVIRONMENT_RE.match(environment) or "--" in environment:
        return f"is not a valid environment name; {ENVIRONMENT_RULE}"
    if RESERVED_ENVIRONMENT_RE.match(environment):
        return "is reserved for pull request deployments (<service>-pr-<number>)"
    return None


def name_length_problem(service: str, environment: str, limit: int = MAX_NAME) -> str | None:
    """Why ``<service>-<environment>`` is too long for a deployment name (None when it fits)."""
    name = f"{service}-{environment}"
    if len(name) <= limit:
        return None
    return (f"the deployment name {name!r} is {len(name)} characters long; service name and environment "
            f"together must fit in {limit}")


def deployment_name(service: str, environment: str, pull_request: int | None = None) -> str:
    """``<service>-<environment>``, or ``<service>-pr-<n>`` for a pull request environment."""
    if not isinstance(service, str) or not SERVICE_RE.match(service):
        raise InvalidName(f"service name {service!r} must be lowercase letters, digits and '-', starting with a "
                          f"letter, at most {MAX_SERVICE} characters")
    if environment == PULL_REQUEST_ENVIRONMENT or pull_request is not None:
        if environment != PULL_REQUEST_ENVIRONMENT:
            raise InvalidName(f"a pull request number goes with the {PULL_REQUEST_ENVIRONMENT!r} "
                              f"environment, not {environment!r}")
        if not isinstance(pull_request, int) or isinstance(pull_request, bool) or pull_request <= 0:
            raise InvalidName(f"pull request number must be a positive integer, got {pull_request!r}")
        name = f"{service}-pr-{pull_request}"
        if len(name) > MAX_NAME:
            raise InvalidName(f"pull request number {pull_request} is too big: the deployment name {name!r} "
                              f"would be longer than {MAX_NAME} characters")
        return name
    check_environment(environment)
    problem = name_length_problem(service, environment)
    if problem:
        raise InvalidName(problem)
    return f"{service}-{environment}"


def check_environment(environment: str) -> str:
    """Return ``environment`` if it is a valid environment name, else raise InvalidName."""
    problem = environment_problem(environment)
    if problem:
        raise InvalidName(f"environment {environment!r} {problem}")
    return environment


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid deployment name, else raise InvalidName."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InvalidName(f"{name!r} is not a deployment name (lowercase letters, digits and '-', starting with a "
                          f"letter, at most {MAX_NAME} characters)")
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
    """Return ``key`` if it may name an override, else raise InvalidName."""
    if not isinstance(key, str) or not OVERRIDE_KEY_RE.match(key):
        raise InvalidName(f"override key {key!r} must start with a letter or '_' and hold only letters, digits, "
                          "'_', '.' and '-' (at most 128 characters)")
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
