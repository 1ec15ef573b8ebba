"""`sami validate`: check a deployments repo and report every problem."""

from __future__ import annotations

import json
from typing import Any

import click

from bot.core.targets import TargetsError, load_targets_file

from . import DeploymentsRepoError, load_deployments_repo
from .model import DeploymentsRepo, ManifestError
from .topology import ENVIRONMENTS_DIR, Topology


class SourceUnreadable(click.ClickException):
    """The deployments repo could not be read at all (exit code 2)."""

    exit_code = 2


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def github_annotation(error: ManifestError) -> str:
    """One GitHub Actions workflow command (::error ...) for an error."""
    props = [f"file={_escape_property(error.path)}"]
    if error.line is not None:
        props.append(f"line={error.line}")
        if error.column is not None:
            props.append(f"col={error.column}")
    if error.field:
        props.append(f"title={_escape_property(error.field)}")
    return f"::error {','.join(props)}::{_escape_data(error.message)}"


def _report(repo: DeploymentsRepo, output_format: str, prefix: str) -> None:
    def shown(error: ManifestError) -> ManifestError:
        if not prefix:
            return error
        return ManifestError(f"{prefix}/{error.path}", error.line, error.column, error.field, error.message)

    # Environment files are reported only when the repo has them: other repos read as before.
    files = [t for t in repo.topologies.values() if t.name not in repo.invalid_environments and t.path is not None]
    with_files = bool(repo.environment_files) or any(e.path.startswith(f"{ENVIRONMENTS_DIR}/") for e in repo.errors)
    if output_format == "json":
        answer = {
            "ok": repo.ok,
            "sha": repo.sha,
            "manifests": [m.to_dict() for m in repo.manifests],
            "errors": [shown(e).to_dict() for e in repo.errors],
        }
        if with_files:
            answer["environments"] = [_topology_dict(t) for t in sorted(files, key=lambda t: t.name)]
        click.echo(json.dumps(answer, indent=2))
        return
    if output_format == "github":
        for error in repo.errors:
            click.echo(github_annotation(shown(error)))
    else:
        for error in repo.errors:
            click.echo(str(shown(error)))
    count = len(repo.manifests)
    noun = "manifest" if count == 1 else "manifests"
    env_noun = "environment file" if len(files) == 1 else "environment files"
    if repo.ok:
        click.echo(f"{count} {noun} and {len(files)} {env_noun} valid" if with_files else f"{count} {noun} valid")
    else:
        problems = len(repo.errors)
        also = f", {len(files)} valid {env_noun}" if with_files else ""
        click.echo(
            f"{problems} problem{'s' if problems != 1 else ''} found; {count} valid {noun}{also}",
            err=output_format == "github",
        )


def _topology_dict(topology: Topology) -> dict[str, Any]:
    return {
        "name": topology.name,
        "path": topology.path,
        "components": list(topology.components),
        "target": topology.target,
        "overrides": dict(topology.overrides),
        "preview_of": topology.preview_of,
    }


@click.command("validate")
@click.argument("path", default=".", required=False)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json", "github"]),
    default="text",
    show_default=True,
    help="text for people, json for scripts, github for GitHub Actions annotations.",
)
@click.option("--json", "as_json", is_flag=True,
              help="The same as --format json, as the other sami commands say it: every error with its path "
                   "(the file), line, column, field and message.")
@click.option("--ref", default=None, help="Branch, tag or commit to check (git sources only).")
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Where git sources are mirrored (default: ~/.cache/sami/deployments).",
)
@click.option(
    "--relative-to",
    "prefix",
    default="",
    help="Prefix for reported paths, e.g. the deployments repo's folder inside a checkout.",
)
@click.option(
    "--targets",
    "targets_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Sami's targets file (as SAMI_TARGETS): environment files naming other targets are errors. "
    "Without it target names are not checked.",
)
def validate(path: str, output_format: str, as_json: bool, ref: str | None, cache_dir: str | None,
             prefix: str, targets_file: str | None) -> None:
    """Validate the deployments repo at PATH (a folder or a git URL): exit 0 when valid.

    \b
    Example:
        sami validate ../deployments
        sami validate ../deployments --json
    """
    if as_json:
        if output_format not in ("text", "json"):
            raise click.UsageError(f"--json and --format {output_format} ask for two outputs: give one")
        output_format = "json"
    targets = None
    if targets_file is not None:
        try:
            targets = [t.name for t in load_targets_file(targets_file, "/")[0]]
        except TargetsError as exc:
            raise SourceUnreadable(str(exc)) from None
    try:
        repo = load_deployments_repo(path, ref=ref, cache_dir=cache_dir, targets=targets)
    except DeploymentsRepoError as exc:
        if output_format == "json":  # still one document: a script reads why
            click.echo(json.dumps({"ok": False, "sha": None, "manifests": [], "errors": [
                {"path": None, "line": None, "column": None, "field": None, "message": str(exc)}]}, indent=2))
        raise SourceUnreadable(str(exc)) from None
    _report(repo, output_format, prefix.rstrip("/"))
    if not repo.ok:
        raise SystemExit(1)
