"""The status page's environment view: an environment's components in deploy order with state,
version and endpoint, and its last whole-environment run. Reads go through bot.services.environments
like the API's."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for

from bot.core.errors import Invalid, NotFound, SamiError
from bot.core.models import Deployment
from bot.github.teams import TeamMembership
from bot.services import environments, releases
from bot.web import auth, pages, shared
from bot.web.database import get_session

bp = Blueprint("environment_pages", __name__, template_folder="templates")
bp.context_processor(pages._template_globals)


@bp.before_request
def _guard():
    if request.method == "POST":
        auth.check_csrf(request.form.get("csrf_token"))
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


def _environment(session, repo, name: str) -> environments.Environment:
    """The environment ``name``, or the page's 404 / 400 saying why not."""
    try:
        return environments.environment(session, repo, name)
    except NotFound as exc:
        abort(404, exc.message)
    except Invalid as exc:
        abort(400, exc.message)


@bp.get("/environments/<name>")
def environment_page(name: str):
    """One environment: components in deploy order with state, version and endpoint; its last run."""
    session, repo = get_session(), shared.manifests().current()
    env = _environment(session, repo, name)
    if not all(_readable(c.service, name) for c in env.components):
        abort(404, f"no environment named {name!r}")
    view = environments.status(session, repo, name)
    blue_green = None
    if env.template == name and env.topology.blue_green is not None:
        blue_green = releases.status(session, repo, name, shared.services_context())
        viewer = auth.current_viewer()
        blue_green["may_write"] = _may_write(viewer, env, name)
        blue_green["may_release"] = blue_green["may_write"] and _may_release(session, repo, name, viewer)
    return render_template("environment.html", env=view, blue_green=blue_green)


def _teams() -> TeamMembership:
    """Who is in the approvers' GitHub teams, asked with Sami's GitHub client (None without credentials)."""
    return TeamMembership(current_app.extensions.get("sami.github"))


def _may_release(session, repo, name: str, viewer) -> bool:
    """Whether to offer ``viewer`` the release buttons; a team membership GitHub cannot confirm offers none."""
    try:
        return releases.may_release(releases.blue_green(session, repo, name), viewer.requested_by, _teams())
    except releases.MembershipUnknown:
        return False


def _may_write(viewer, env: environments.Environment, name: str) -> bool:
    """Whether ``viewer`` may deploy the environment: its entry's deployment, as the permission checks see it."""
    if viewer is None:
        return False
    manifest = env.component(env.topology.blue_green.entry).manifest
    entry = Deployment(name=f"{manifest.service_name}-{name}", service=manifest.service_name, environment=name)
    return auth.may_change(viewer, "deploy", entry, manifest)


@bp.post("/environments/<name>/<any(release, rollback, unpin):kind>")
def release(name: str, kind: str):
    """Release (switch the entry to the colour awaiting release), roll back, or unpin what a rollback pinned,
    once confirmed; the services decide who may (release_approvers) and whether it can be done now."""
    viewer = auth.current_viewer()
    if viewer is None:
        abort(401, "sign in to release")
    session, repo = get_session(), shared.manifests().current()
    env = _environment(session, repo, name)
    if env.topology.blue_green is None or env.template != name:
        abort(400, f"environment {name!r} is not released blue-green")
    if not _may_write(viewer, env, name):
        abort(403, f"{viewer.name} may not deploy {name}")
    back = url_for("environment_pages.environment_page", name=name)
    try:
        state = releases.status(session, repo, name)
        if request.form.get("confirmed") != "yes":
            return _confirm(kind, name, state, back)
        if kind == "unpin":
            unpinned = environments.unpin(session, repo, name, requested_by=viewer.requested_by)
            flash(f"{', '.join(unpinned)} unpinned: CI requests and environment deploys change {name} again", "ok")
            return redirect(back)
        if kind == "release":
            done = releases.switch(session, repo, name, shared.services_context(),
                                   requested_by=viewer.requested_by, origin="page", teams=_teams())
        else:
            done = releases.rollback(session, repo, name, shared.services_context(),
                                     requested_by=viewer.requested_by, origin="page", teams=_teams())
        flash(f"{done.kind} {done.id} accepted: the entry switches to {done.to_colour}", "ok")
    except SamiError as exc:
        session.rollback()
        flash(exc.message, "error")
    return redirect(back)


def _confirm(kind: str, name: str, state: dict, back: str):
    live = state["live"]["colour"] if state["live"] else "nothing"
    if kind == "unpin":
        pinned = state["pinned"]
        facts = [("Environment", name), ("Pinned", ", ".join(p["deployment"] for p in pinned) or "nothing")]
        if pinned:
            facts.append(("By", f"{pinned[0]['by']} ({pinned[0]['reason']})"))
        return pages._confirm(title=f"Unpin {name}?", lines=[
            f"A rollback pinned {name}: CI requests and environment deploys leave its colours as they are.",
            "Once unpinned, the next CI request or environment deploy that changes them goes through."],
            facts=facts, danger=False, action=url_for("environment_pages.release", name=name, kind=kind),
            fields={}, button=f"Unpin {name}", back=back)
    if kind == "release":
        to = state["idle"]["colour"]
        lines = [f"The entry of {name} switches from {live} to {to}: everyone using {name} gets what QA tested "
                 f"on {to}.", f"{live.capitalize()} keeps running for a rollback, then is archived."]
    else:
        to = (state.get("previous") or {}).get("colour") or "the previous colour"
        lines = [f"The entry of {name} switches back from {live} to {to} at once."]
    facts = [("Environment", name), ("Entry", state["entry_deployment"]), ("Live now", live), ("Switches to", to)]
    what = "Release" if kind == "release" else "Roll back"
    return pages._confirm(title=f"{what} {name}?", lines=lines, facts=facts, danger=kind == "rollback",
                          action=url_for("environment_pages.release", name=name, kind=kind), fields={},
                          button=f"{what} {name}", back=back)
