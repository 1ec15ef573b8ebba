"""The status page's environment view: an environment's components in deploy order with state,
version and endpoint, and its last whole-environment run. Reads go through bot.services.environments
like the API's."""

from __future__ import annotations

from flask import Blueprint, abort, redirect, render_template, request, url_for

from bot.core.errors import Invalid, NotFound
from bot.services import environments
from bot.web import pages, shared
from bot.web.database import get_session

bp = Blueprint("environment_pages", __name__, template_folder="templates")
bp.context_processor(pages._template_globals)


@bp.before_request
def _guard():
    if pages._needs_login():
        return redirect(url_for("pages.login", next=request.full_path.removesuffix("?")))
    return None


bp.after_request(pages._not_framed)


def _readable(service: str, environment: str) -> bool:
    scopes = pages._read_scopes()
    return scopes is None or scopes.admin or scopes.allows("read", service, environment)


@bp.get("/environments")
def environments_page():
    """The environments (of the deployments repo, and those Sami cloned) and their components."""
    session, repo = get_session(), shared.manifests().current()
    names = sorted({m.environment for m in repo.manifests if m.environment != "pull_request"}
                   | set(repo.topologies) | set(environments.cloned_names(session)))
    rows = []
    for name in names:
        try:
            env = environments.environment(session, repo, name)
        except (Invalid, NotFound) as exc:
            rows.append({"name": name, "template": None, "components": [], "problem": exc.message})
            continue
        if all(_readable(c.service, name) for c in env.components):
            rows.append({"name": name, "template": env.template, "components": [c.service for c in env.components],
                         "problem": None})
    return render_template("environments.html", rows=rows)


@bp.get("/environments/<name>")
def environment_page(name: str):
    """One environment: components in deploy order with state, version and endpoint; its last run."""
    session, repo = get_session(), shared.manifests().current()
    try:
        env = environments.environment(session, repo, name)
    except NotFound as exc:
        abort(404, exc.message)
    except Invalid as exc:
        abort(400, exc.message)
    if not all(_readable(c.service, name) for c in env.components):
        abort(404, f"no environment named {name!r}")
    view = environments.status(session, repo, name)
    return render_template("environment.html", env=view)
