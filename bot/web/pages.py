"""The status page: deployments, one deployment, services, deliveries, and the writes behind login.

Server-rendered HTML that works without JavaScript; ``static/sami.js`` adds live updates from
``/events``. Reads go through bot.services.queries like the API's; writes call bot.services like the API's,
after the viewer's permission and the form's CSRF token are checked.
"""

from __future__ import annotations

import logging
import re
import secrets
import urllib.parse
from datetime import UTC, datetime

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from markupsafe import Markup, escape
from sqlalchemy import select
from sqlalchemy.orm import selectinload, undefer
from werkzeug.exceptions import HTTPException

from bot.core import signing
from bot.core.errors import Invalid, SamiError
from bot.core.lifecycle import SERVING_STATES, action_word, last_deploy_words, short_reason, state_word, state_words
from bot.core.models import Action, ActionStep, ApiToken, Deployment
from bot.core.naming import PRODUCTION_ENVIRONMENT
from bot.core.states import DeploymentState, IllegalTransition
from bot.github.outcomes import Did
from bot.services import actions, deployments, drift, history, pins, queries
from bot.services.tokens import Scopes, TokenError, authenticate, create_token
from bot.web import auth, errors, events, oauth, shared
from bot.web.database import get_session
from bot.web.events import last_deploy_note, tone

log = logging.getLogger(__name__)
bp = Blueprint("pages", __name__, template_folder="templates", static_folder="static",
               static_url_path="/static/page")
MASK = "••••"
SECRET_WORDS = ("SECRET", "TOKEN", "PASSWORD", "PASSWD", "PRIVATE", "CREDENTIAL", "API_KEY", "APIKEY")
WRITES = ("update", "archive", "restore", "cleanup", "rollback", "delete", "reconcile", "unpin")
# The permission each write needs, as the API asks for it (rollback, reconcile, unpin and cancelling an update:
# deploy).
NEEDS = {"update": "deploy", "rollback": "deploy", "reconcile": "deploy", "create": "deploy", "archive": "archive",
         "restore": "restore", "cleanup": "cleanup", "delete": "admin", "unpin": "deploy"}
# The states in which the page offers each write (the services refuse the others anyway).
OFFERED_IN = {"update": ("Running", "Failure"), "rollback": ("Running", "Failure"), "archive": ("Running", "Failure"),
              "restore": ("Archived",), "cleanup": ("Archived", "CleanupFailed"), "delete": ("CleanupFailed",),
              "reconcile": ("Running", "Failure")}
# Writes nothing undoes: the form asks for the deployment's name typed out, and the handler compares it.
TYPED_NAME = ("cleanup", "delete")
# The most of a log the page shows at once; the whole of it is a download away.
LOG_SHOWN = 20000


# -- helpers the templates use ----------------------------------------------------------------------

def ago(value: datetime | None, now: datetime | None = None) -> str:
    """'just now', '5 min ago', '3 h ago', '2 days ago'."""
    if value is None:
        return "—"
    seconds = int(((now or datetime.now(UTC)) - value).total_seconds())
    if seconds < 45:
        return "just now"
    if seconds < 3600:
        return f"{max(1, round(seconds / 60))} min ago"
    if seconds < 86400 * 2:
        return f"{round(seconds / 3600)} h ago"
    return f"{round(seconds / 86400)} days ago"


def exact(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else ""


def masked_config(values: dict | None, secret_names) -> list[tuple[str, str]]:
    """KEY, value pairs with the values of secrets (and of keys that look like one) as ••••."""
    names = {n.upper() for n in secret_names or ()}
    shown = []
    for key, value in sorted((values or {}).items()):
        upper = str(key).upper()
        secret = upper in names or any(word in upper for word in SECRET_WORDS)
        shown.append((key, MASK if secret else str(value)))
    return shown


def duration(ms: int | None) -> str:
    if ms is None:
        return "—"
    seconds = ms / 1000
    return f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds // 60)} min {int(seconds % 60)} s"


def step_view(step: ActionStep, action: Action) -> dict[str, str]:
    """How a step shows in the history, as a CI job's step: a mark (✓ ✗ ⏱ ◌) with the word it stands
    for (the mark is never the only cue), a tone for its colour, how long it took, and what else to say
    ("exit 3", "timed out", "4 tries")."""
    notes = []
    if step.finished_at is None and not action.state.finished:
        mark, word, tone_ = "◌", "running", "busy"
        notes.append(word)
    elif step.finished_at is None or (step.exit_code is None and not step.timed_out):
        # stopped by a cancel, or by its worker's end; or it could not start
        mark, word, tone_ = "✗", "stopped", "bad"
        notes.append(word)
    elif step.timed_out:
        mark, word, tone_ = "⏱", "timed out", "bad"
        notes.append(word)
    elif step.exit_code == 0:
        mark, word, tone_ = "✓", "passed", "ok"
    else:
        mark, word, tone_ = "✗", "failed", "bad"
        notes.append(f"exit {step.exit_code}")
    if step.attempts > 1:
        notes.append(f"{step.attempts} tries")
    took = step.duration_seconds
    return {"mark": mark, "word": word, "tone": tone_, "note": " · ".join(notes),
            "took": duration(round(took * 1000)) if took is not None else ""}


def elapsed(since: datetime | None, now: datetime | None = None) -> str:
    """How long ago ``since`` was, as a running clock: '42 s', '3 min 05 s', '2 h 07 min'."""
    if since is None:
        return "—"
    seconds = max(0, int(((now or datetime.now(UTC)) - since).total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def log_tail(text: str, limit: int = LOG_SHOWN) -> tuple[str, int]:
    """The end of a log to show, at most ``limit`` characters from the start of a line, and how many lines
    were left out before it (0: it is whole). A last line longer than ``limit`` is shown from its end."""
    if len(text) <= limit:
        return text, 0
    tail = text[-limit:]
    if text[-limit - 1] != "\n":
        newline = tail.find("\n")
        if 0 <= newline < len(tail) - 1:
            tail = tail[newline + 1:]
    return tail, text[:len(text) - len(tail)].count("\n") or 1


def web_link(url: object) -> str | None:
    """``url`` if it is an http(s) address: a link a script reported must not run script in the page."""
    text = str(url or "")
    return text if text.lower().startswith(("http://", "https://")) else None


def github_url(repo: str | None, kind: str = "", value: object = None) -> str | None:
    if not repo:
        return None
    base = current_app.config["SAMI"].github_web_url.rstrip("/")
    path = f"/{repo}" + (f"/{kind}/{value}" if kind and value is not None else "")
    return base + path


def page_url(args: dict, **changes) -> str:
    """This list's URL with ``changes`` (None removes an argument); filters stay in the URL."""
    merged = {**args, **changes}
    query = urllib.parse.urlencode([(k, item) for k, v in merged.items() if v not in (None, "", [])
                                    for item in (v if isinstance(v, list) else [v])])
    return url_for("pages.index") + (f"?{query}" if query else "")


_LONG_HEX = re.compile(r"[0-9a-f]{16,}")
_BREAKS = re.compile(r"(/)")


@bp.app_template_filter("short_tag")
def short_tag(tag: str | None) -> str:
    """A tag as the list shows it: a commit sha in it (16 or more hex digits) cut to its first 7, as git does."""
    return _LONG_HEX.sub(lambda match: match[0][:7] + "…", tag or "")


@bp.app_template_filter("breakable")
def breakable(text: str | None) -> Markup:
    """``text`` escaped, with a line-break opportunity after each /: a narrow screen breaks a path between its
    folders, never in the middle of a name."""
    return Markup("").join(escape(part) + (Markup("<wbr>") if _BREAKS.fullmatch(part) else "")
                           for part in _BREAKS.split(text or ""))


@bp.context_processor
def _template_globals():
    return {"viewer": auth.current_viewer(), "csrf_token": auth.csrf_token, "ago": ago, "exact": exact,
            "tone": tone, "duration": duration, "github_url": github_url, "web_link": web_link,
            "step_view": step_view, "elapsed": elapsed, "state_word": state_word, "short_reason": short_reason,
            "last_deploy_note": last_deploy_note, "last_deploy_words": last_deploy_words, "action_word": action_word,
            "oauth": bool(current_app.config["SAMI"].github_oauth_client_id)}


def _needs_login() -> bool:
    return current_app.config["SAMI"].page_read == "login" and auth.current_viewer() is None


@bp.before_request
def _guard():
    if request.method == "POST":
        auth.check_csrf(request.form.get("csrf_token"))
    public = {"pages.login", "pages.login_token", "pages.login_github", "pages.login_github_callback",
              "pages.login_once", "pages.login_once_redeem", "pages.static", "pages.logout"}
    if request.endpoint not in public and _needs_login():
        return redirect(url_for("pages.login", next=request.full_path.removesuffix("?")))
    return None


@bp.after_request
def _not_framed(response):
    """Its buttons change deployments: no other page may frame it and catch a click (clickjacking)."""
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Content-Security-Policy", "frame-ancestors 'none'")
    return response


@bp.errorhandler(HTTPException)
def _page_error(exc: HTTPException):
    return render_template("error.html", code=exc.code, message=exc.description), exc.code


@bp.app_errorhandler(404)
def _no_such_path(exc: HTTPException):
    """A path no route has: a browser gets the page's own 404 with its navigation, a program the API's JSON."""
    if not errors.wants_page():
        return errors.http_error_response(exc)
    return render_template("error.html", code=404, message=f"There is no page at {request.path}.",
                           **_template_globals()), 404


def _read_scopes():
    viewer = auth.current_viewer()
    return viewer.read_scopes if viewer else None


def _may_read(deployment: Deployment) -> bool:
    scopes = _read_scopes()
    return scopes is None or scopes.admin or scopes.allows("read", deployment.service, deployment.environment)


# -- reading ----------------------------------------------------------------------------------------

@bp.get("/")
def index():
    """The deployments, those needing attention first; filters, search and page in the URL."""
    try:
        flt = queries.DeploymentFilter.from_args(request.args, default_sort="attention")
        page = queries.list_deployments(get_session(), flt, _read_scopes())
    except queries.QueryError as exc:
        abort(400, exc.message)
    counts = queries.state_counts(get_session(), flt, _read_scopes())
    args = {k: request.args.getlist(k) if k in ("state", "service", "environment") else v
            for k, v in request.args.items() if k != "cursor"}
    last_deploys = queries.last_deploys(get_session(), [d.id for d in page.rows])
    return render_template("index.html", page=page, flt=flt, counts=counts, args=args, page_url=page_url,
                           states=[s.value for s in DeploymentState], sorts=queries.SORTS,
                           attention_states=[s.value for s in queries.ATTENTION_STATES], last_deploys=last_deploys,
                           serving_states=SERVING_STATES)


def _readable_deployment(name: str) -> Deployment:
    row = get_session().scalars(select(Deployment).where(Deployment.name == name)).first()
    if row is None or not _may_read(row):
        abort(404, f"no deployment {name!r}")
    return row


def _shown_log(action: Action | None) -> dict | None:
    """What the page shows of ``action``'s log (admins only: scripts can print anything): its end from a
    line's start, how many lines came before it, and the length the live tail goes on from."""
    viewer = auth.current_viewer()
    if action is None or viewer is None or not viewer.admin:
        return None
    text = get_session().get(Action, action.id, options=[undefer(Action.log)]).log or ""
    tail, omitted = log_tail(text)
    return {"text": tail, "omitted": omitted, "offset": len(text), "truncated": action.log_truncated}


@bp.get("/deployments/<name>")
def deployment(name: str):
    """One deployment: the action in progress (or the last one) with its steps and log, state, links, source,
    config (secrets masked), and the history newest first."""
    session_ = get_session()
    row = _readable_deployment(name)
    actions = list(session_.scalars(select(Action).where(Action.deployment_id == row.id)
                                    .options(selectinload(Action.steps)).order_by(Action.id.desc()).limit(50)))
    viewer = auth.current_viewer()
    manifest = _manifest_of(row)
    secret_names = manifest.secrets if manifest else ()
    unfinished = [a for a in actions if not a.state.finished]
    current = next((a for a in unfinished if a.state == "running"), unfinished[0] if unfinished else None)
    shown = current or (actions[0] if actions else None)
    may = {kind: auth.may_change(viewer, NEEDS[kind], row, manifest) for kind in WRITES} if viewer else {}
    rollback_to = None
    if may.get("rollback") and row.state in OFFERED_IN["rollback"]:
        try:  # the button names where it goes, and sends that target
            rollback_to = history.rollback_target(session_, row.name)
        except SamiError:
            may["rollback"] = False  # nothing earlier to go back to (the service says so too)
    offers = {kind for kind, states in OFFERED_IN.items() if may.get(kind) and row.state in states}
    if may.get("unpin") and row.pinned_by is not None:
        offers.add("unpin")
    cancellable = {a.id for a in actions if viewer and not a.state.finished
                   and auth.may_change(viewer, NEEDS.get(a.kind, "admin"), row, manifest)}
    config = {"app": masked_config({**(manifest.app_overrides if manifest else {}), **(row.app_overrides or {})},
                                   secret_names),
              "deployment": masked_config({**(manifest.deployment_overrides if manifest else {}),
                                           **(row.deployment_overrides or {})}, secret_names)}
    views = drift.config_views(session_, row, secret_names)
    last_deploy = queries.last_deploys(session_, [row.id]).get(row.id)
    return render_template("deployment.html", d=row, actions=actions, config=config, secret_names=secret_names,
                           shown=shown, current=current, log=_shown_log(shown), manifest=manifest,
                           cancellable=cancellable, serving=row.state in SERVING_STATES,
                           offers=offers, last_deploy=last_deploy, rollback_to=rollback_to, views=views, may=may)


@bp.get("/deployments/<name>/actions/<int:action_id>")
def action_page(name: str, action_id: int):
    """One action of a deployment: what, who, when, its steps, and for admins its log."""
    row = _readable_deployment(name)
    action = get_session().get(Action, action_id, options=[selectinload(Action.steps)])
    if action is None or action.deployment_id != row.id:
        abort(404, f"no action {action_id} of {name}")
    viewer = auth.current_viewer()
    cancellable = bool(viewer and not action.state.finished
                       and auth.may_change(viewer, NEEDS.get(action.kind, "admin"), row, _manifest_of(row)))
    return render_template("action.html", d=row, a=action, log=_shown_log(action), cancellable=cancellable)


@bp.get("/deployments/<name>/actions/<int:action_id>/log.txt")
def action_log_text(name: str, action_id: int):
    """An action's whole log as plain text (admins), secrets masked as the page shows them."""
    viewer = auth.current_viewer()
    if viewer is None or not viewer.admin:
        abort(403, "logs are for admins: they can hold what scripts print")
    row = _readable_deployment(name)
    action = get_session().get(Action, action_id, options=[undefer(Action.log)])
    if action is None or action.deployment_id != row.id:
        abort(404, f"no action {action_id} of {name}")
    # nosniff: a log that prints HTML stays text in every browser
    return Response(action.log or "", mimetype="text/plain", headers={
        "Content-Disposition": f'attachment; filename="{row.name}-action-{action.id}.log"',
        "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"})



def _manifest_of(row: Deployment):
    try:
        return shared.manifests().current().find(row.service, row.environment)
    except Exception:  # the page still shows what the database knows when the repo is unreadable
        log.warning("deployments repo unreadable while showing %s", row.name, exc_info=True)
        return None


def _whole_number(text: str) -> bool:
    """Digits 0-9 only, at most 18 of them (``str.isdigit`` also holds for '²', which ``int`` refuses)."""
    return text.isascii() and text.isdigit() and len(text) <= 18


@bp.get("/deployments/<name>/log")
def deployment_log(name: str):
    """An action's log from ``offset`` on (admins), for the page's live tail."""
    viewer = auth.current_viewer()
    if viewer is None or not viewer.admin:
        abort(403, "logs are for admins: they can hold what scripts print")
    action_id = request.args.get("action", "")
    offset = request.args.get("offset", "0")
    if not _whole_number(action_id) or not _whole_number(offset):
        abort(400, "'action' and 'offset' must be whole numbers")
    action = get_session().get(Action, int(action_id), options=[undefer(Action.log)])
    if action is None or action.deployment.name != name:
        abort(404, f"no action {action_id} of {name}")
    text = action.log or ""
    return jsonify(log=text[int(offset):], offset=len(text), finished=action.state.finished,
                   state=str(action.state))


@bp.get("/services")
def services_page():
    """The services the deployments repo defines, and its manifest errors at file:line."""
    scopes = _read_scopes()
    repo = shared.manifests().current()
    everything = Scopes(admin=True)
    manifests = [m for m in repo.manifests if scopes is None or scopes.allows("read", m.service_name, m.environment)]
    errors = [e for e in repo.errors if (scopes or everything).may_read_path(e.path)]
    viewer = auth.current_viewer()
    deployable = {(m.service_name, m.environment) for m in manifests if viewer and not _for_pull_requests(m)
                  and auth.may_change(viewer, "deploy", _would_be(m), m)}
    running = queries.running_tags(get_session()) if deployable else {}
    made = queries.deployments_by_manifest(get_session(), [(m.service_name, m.environment) for m in manifests], scopes)
    return render_template("services.html", repo=repo, manifests=manifests, errors=errors, deployable=deployable,
                           running=running, made=made,
                           may_deploy_any=any(not _for_pull_requests(m) for m in manifests))


def _for_pull_requests(manifest) -> bool:
    return manifest.is_pull_request_environment


def _would_be(manifest) -> Deployment:
    """The deployment a manifest would make (not stored): what permission checks look at."""
    return Deployment(name="", service=manifest.service_name, environment=manifest.environment,
                      source_repo=manifest.repository)


@bp.post("/services/deploy")
def deploy():
    """Create or update the deployment of a service in an environment at a tag, as the viewer."""
    viewer = auth.current_viewer()
    if viewer is None:
        abort(401, "sign in to deploy")
    service, environment = request.form.get("service", ""), request.form.get("environment", "")
    tag = (request.form.get("tag") or "").strip()
    manifest = shared.manifests().current().find(service, environment)
    if manifest is None or _for_pull_requests(manifest):
        abort(404, f"no manifest for {service!r} in {environment!r} to deploy from here")
    if not auth.may_change(viewer, "deploy", _would_be(manifest), manifest):
        abort(403, f"{viewer.name} may not deploy {service} in {environment}")
    if environment == PRODUCTION_ENVIRONMENT and request.form.get("confirmed") != "yes":
        now = queries.running_tags(get_session()).get((service, environment))
        return _confirm(
            title=f"Deploy {service} {tag or '(the default tag)'} to production?", danger=False,
            lines=[f"This replaces what {service} serves in production: people using it see the new version."],
            facts=[("Service", service), ("Environment", environment), ("Runs now", now or "nothing yet"),
                   ("Will run", tag or "(the default tag)")],
            action=url_for("pages.deploy"), fields={"service": service, "environment": environment, "tag": tag},
            button=f"Deploy {tag or service} to production", back=url_for("pages.services_page"))
    req = deployments.DeploymentRequest(service=service, environment=environment, tag=tag or None,
                                     requested_by=viewer.requested_by, origin="page")
    try:
        result = deployments.request_deployment(get_session(), shared.manifests().current(), req,
                                                shared.services_context())
    except SamiError as exc:
        get_session().rollback()
        flash(exc.message, "error")
        return redirect(url_for("pages.services_page"))
    flash(f"{result.kind} of {result.deployment} accepted (action {result.action_id})", "ok")
    return redirect(url_for("pages.deployment", name=result.deployment))


@bp.get("/deliveries")
def deliveries():
    """Recent GitHub deliveries and what each caused."""
    if not queries.may_read_deliveries(_read_scopes()):
        abort(403, "deliveries span every service: they need read on all services, or admin")
    try:
        page = queries.list_deliveries(get_session(), request.args)
    except queries.QueryError as exc:
        abort(400, exc.message)
    lines = {d.id: [part for part in (d.outcome or "").split("; ") if part] for d in page.rows}
    candidates = {word for parts in lines.values() for part in parts for word in _NAME_WORD.findall(part)}
    known = queries.existing_deployments(get_session(), sorted(candidates))
    shown = [{"delivery": d, "badge": delivery_badge(str(d.status), lines[d.id]),
              "outcome": [linked_names(part, known) for part in lines[d.id]]} for d in page.rows]
    chosen = {"event": request.args.get("event", ""), "status": request.args.get("status", "")}
    return render_template("deliveries.html", page=page, shown=shown, chosen=chosen,
                           events=queries.delivery_events(get_session()), statuses=queries.DELIVERY_STATUSES)


# A word that could be a deployment's name (letters, digits and hyphens, with at least one hyphen).
_NAME_WORD = re.compile(r"(?<![\w/.-])[a-z][a-z0-9]*(?:-[a-z0-9]+)+(?![\w/-])")
# What a delivery's status badge says when its lines tell more than "processed": the first of these found.
_TELLING = ((Did.FAILED, "bad"), (Did.REFUSED, "bad"), (Did.HELD, "busy"), (Did.WAITING, "busy"))
_STATUS_TONE = {"processed": "ok", "failed": "bad", "ignored": "quiet"}


def delivery_badge(status: str, lines: list[str]) -> dict[str, str]:
    """A delivery's badge: its status, except that a processed one whose lines say held, waiting, refused or
    failed shows that word (a deploy waiting for checks is not the green of one that was done)."""
    if status == "processed":
        said = {Did.of_line(line) for line in lines}
        for did, tone_ in _TELLING:
            if did in said:
                return {"word": str(did), "tone": tone_, "title": f"processed: {did} (see the outcome)"}
    return {"word": status, "tone": _STATUS_TONE.get(status, "busy"), "title": status}


def linked_names(line: str, known: set[str]) -> Markup:
    """``line`` escaped, with each deployment name in it a link to that deployment's page."""
    out, last = Markup(""), 0
    for match in _NAME_WORD.finditer(line):
        if match[0] in known:
            out += escape(line[last:match.start()]) + Markup('<a href="{}">{}</a>').format(
                url_for("pages.deployment", name=match[0]), match[0])
            last = match.end()
    return out + escape(line[last:])


# -- writing ----------------------------------------------------------------------------------------

def _confirm(*, title: str, lines: list[str], facts: list[tuple[str, str]], action: str, fields: dict,
             button: str, back: str, danger: bool, typed_name: str | None = None, error: str | None = None):
    """The page that asks before a write: the form again, with ``confirmed`` set (or the name to type)."""
    return render_template("confirm.html", title=title, lines=lines, facts=facts, action=action, fields=fields,
                           button=button, back=back, danger=danger, typed_name=typed_name,
                           error=error), 422 if error else 200


def _confirm_change(kind: str, row: Deployment):
    """The confirmation a write on ``row`` still needs, as a page to answer; None when it has it (or needs
    none). The typed name is compared here: a form posted without JavaScript is held to it too."""
    back = url_for("pages.deployment", name=row.name)
    action = url_for("pages.change", name=row.name, kind=kind)
    if kind in TYPED_NAME:
        typed = request.form.get("confirm")
        if typed is not None and typed.strip() == row.name:
            return None
        error = None if typed is None else f"{typed.strip() or 'nothing'!r} is not {row.name!r}: nothing was done"
        if kind == "cleanup":
            title, button = f"Clean up {row.name}?", f"Clean up {row.name}"
            lines = [f"Cleanup runs {row.service}'s cleanup script on {row.name}: it removes the deployment and "
                     "deletes its volumes and the data in them.", "This cannot be undone."]
        else:
            title, button = f"Delete the record of {row.name}?", f"Delete {row.name}"
            lines = [f"Its cleanup failed. Deleting marks {row.name} removed without running anything: what the "
                     "cleanup left behind stays where it is, for you to remove by hand.", "This cannot be undone."]
        return _confirm(title=title, lines=lines, facts=_facts(row), action=action, fields={}, button=button,
                        back=back, danger=True, typed_name=row.name, error=error)
    if kind == "unpin":
        if request.form.get("confirmed") == "yes":
            return None
        return _confirm(title=f"Unpin {row.name}?", danger=False, action=action, fields={},
                        lines=[f"A rollback pinned {row.name}: CI requests and pushes to the deployments repo are "
                               "refused, so it stays at the version it was rolled back to.",
                               "Once unpinned, the next CI request or push that changes it deploys over that version."],
                        facts=[*_facts(row), ("Pinned", pins.words(row))], button=f"Unpin {row.name}", back=back)
    production = row.environment == PRODUCTION_ENVIRONMENT and kind in ("update", "rollback")
    if (kind != "archive" and not production) or request.form.get("confirmed") == "yes":
        return None
    if kind == "archive":
        return _confirm(title=f"Archive {row.name}?", danger=False, facts=_facts(row), action=action, fields={},
                        lines=[f"{row.name} stops serving at its links until it is restored.",
                               "Its data stays: Restore brings it back."],
                        button=f"Archive {row.name}", back=back)
    tag = (request.form.get("tag") or "").strip()
    fields = {"tag": tag} if kind == "update" else {"action_id": request.form.get("action_id") or ""}
    what = f"Deploy {tag} to" if kind == "update" else "Roll back"
    will_run = [("Will run", tag)] if kind == "update" else []
    if kind == "rollback":
        to = fields["action_id"]
        try:  # the target the button named, or the previous good configuration
            target = history.rollback_target(get_session(), row.name, int(to) if _whole_number(to) else None)
            will_run = [("Goes back to", target.words)]
        except SamiError:
            pass  # the rollback itself says why it cannot be done
    return _confirm(title=f"{what} {row.name} in production?", danger=False, action=action, fields=fields,
                    lines=[f"This replaces what {row.name} serves in production: people using it see the change."],
                    facts=_facts(row) + will_run,
                    button=f"{what} {row.name}", back=back)


def _facts(row: Deployment) -> list[tuple[str, str]]:
    return [("Deployment", row.name), ("Environment", row.environment),
            ("State", state_words(row.state, row.failure_reason, row.status_message)),
            ("Runs now", row.tag or "—")]


@bp.post("/deployments/<name>/<any(update, archive, restore, cleanup, rollback, delete, reconcile, unpin):kind>")
def change(name: str, kind: str):
    """A write from the page: the same services call as the API's, as the signed-in viewer, once confirmed."""
    viewer = auth.current_viewer()
    if viewer is None:
        abort(401, "sign in to change deployments")
    session_ = get_session()
    row = deployments.get_deployment(session_, name)
    manifest = _manifest_of(row)
    if not auth.may_change(viewer, NEEDS[kind], row, manifest):
        abort(403, f"{viewer.name} may not {kind} {name}")
    asking = _confirm_change(kind, row)
    if asking is not None:
        return asking
    try:
        if kind == "update":
            tag = (request.form.get("tag") or "").strip()
            if not tag:
                raise Invalid("give the tag to deploy")
            req = deployments.DeploymentRequest(service=row.service, environment=row.environment, tag=tag,
                                             pull_request=row.pull_request, source_repo=row.source_repo,
                                             requested_by=viewer.requested_by, origin="page")
            result = deployments.request_deployment(session_, shared.manifests().current(), req,
                                                    shared.services_context())
        elif kind == "rollback":
            to = request.form.get("action_id") or None
            if to is not None and not _whole_number(to):
                raise Invalid("'action_id' must be an action's number")
            result = history.rollback_deployment(session_, shared.manifests().current(), name,
                                                     shared.services_context(),
                                                  to_action_id=int(to) if to else None,
                                                  requested_by=viewer.requested_by, origin="page")
        elif kind == "delete":
            deployments.delete_deployment(session_, name, requested_by=viewer.requested_by, origin="page")
            flash(f"the record of {name} is deleted", "ok")
            return redirect(url_for("pages.deployment", name=name))
        elif kind == "unpin":
            pins.unpin(session_, name, requested_by=viewer.requested_by)
            flash(f"{name} is unpinned: CI requests and pushes to the deployments repo change it again", "ok")
            return redirect(url_for("pages.deployment", name=name))
        elif kind == "reconcile":
            result = history.reconcile_deployment(session_, shared.manifests().current(), name,
                                                  shared.services_context(), requested_by=viewer.requested_by,
                                                  origin="page")
        else:
            operation = {"archive": deployments.archive_deployment, "restore": deployments.restore_deployment,
                         "cleanup": deployments.cleanup_deployment}[kind]
            result = operation(session_, shared.manifests().current(), name, shared.services_context(),
                               requested_by=viewer.requested_by, origin="page")
        what = f"{kind} of {name}"
        if result.rollback_to:
            what += f" to {history.RollbackTarget(**result.rollback_to).words}"
        flash(f"{what} accepted (action {result.action_id}); state {state_word(result.state)}", "ok")
    except SamiError as exc:
        session_.rollback()
        flash(exc.message, "error")
    except IllegalTransition as exc:
        session_.rollback()
        flash(str(exc), "error")
    return redirect(url_for("pages.deployment", name=name))


@bp.post("/deployments/<name>/actions/<int:action_id>/cancel")
def cancel(name: str, action_id: int):
    """Cancel a queued action, or stop a running one's script."""
    viewer = auth.current_viewer()
    if viewer is None:
        abort(401, "sign in to cancel actions")
    session_ = get_session()
    action = session_.get(Action, action_id)
    if action is None or action.deployment.name != name:
        abort(404, f"no action {action_id} of {name}")
    if not auth.may_change(viewer, NEEDS.get(action.kind, "admin"), action.deployment,
                           _manifest_of(action.deployment)):
        abort(403, f"{viewer.name} may not cancel {action.kind} actions of {name}")
    try:
        action = actions.cancel_action(session_, action_id, shared.services_context(),
                                            requested_by=viewer.requested_by,
                                        origin="page")
        flash(f"action {action_id} ({action.kind}) is {action.state}"
              + (": its script is being stopped" if action.cancel_requested_at and not action.state.finished else ""),
              "ok")
    except SamiError as exc:
        session_.rollback()
        flash(exc.message, "error")
    return redirect(url_for("pages.deployment", name=name))


# -- signing in -------------------------------------------------------------------------------------

def _next_url() -> str:
    return safe_next(request.values.get("next") or session.get("next") or "/")


_LOCAL_PATH = re.compile(r"/(?![/\\])[\x21-\x7e]*")


def safe_next(target: str) -> str:
    """``target`` when it is a path of this site, else ``/``: never a URL somewhere else. Browsers drop
    tabs and newlines from a URL and read a backslash as a slash (``/<TAB>/evil`` is ``//evil``), so
    only printable ASCII without spaces or backslashes is kept (a browser sends a page's path encoded)."""
    return target if _LOCAL_PATH.fullmatch(target) and "\\" not in target else "/"


@bp.get("/login")
def login():
    return render_template("login.html", next=_next_url())


@bp.post("/login/token")
def login_token():
    """Sign in with a Sami token; the session keeps its public id, never the token."""
    try:
        token = authenticate(get_session(), (request.form.get("token") or "").strip())
    except TokenError:
        flash("that token is not valid (or revoked): create one with sami token create", "error")
        return redirect(url_for("pages.login", next=_next_url()))
    get_session().commit()
    target = _next_url()
    auth.sign_in({"kind": "token", "token_id": token.token_id})
    return redirect(target)


@bp.post("/logout")
def logout():
    auth.sign_out()
    return redirect(url_for("pages.index"))


@bp.get("/login/github")
def login_github():
    """Send the visitor to GitHub to authorize; ``state`` ties the answer to this session."""
    settings = current_app.config["SAMI"]
    if not settings.github_oauth_client_id:
        abort(404, "Sign in with GitHub is not set up (SAMI_GITHUB_OAUTH_CLIENT_ID)")
    state = secrets.token_urlsafe(24)
    session["oauth_state"] = state
    session["next"] = _next_url()
    wanted = {"client_id": settings.github_oauth_client_id, "state": state, "redirect_uri": _callback_url(),
              "allow_signup": "false"}
    if settings.admin_team:
        wanted["scope"] = "read:org"  # to see the person's membership of the admin team
    query = urllib.parse.urlencode(wanted)
    return redirect(f"{settings.github_web_url}/login/oauth/authorize?{query}")


def _callback_url() -> str:
    return current_app.config["SAMI"].public_url.rstrip("/") + url_for("pages.login_github_callback")


@bp.get("/login/github/callback")
def login_github_callback():
    expected = session.pop("oauth_state", None)
    state = request.args.get("state", "")
    if not expected or not secrets.compare_digest(expected.encode(), state.encode()):
        abort(400, "the sign-in answer does not belong to this browser session: start again")
    if request.args.get("error"):
        abort(403, f"GitHub did not sign you in: {request.args.get('error_description') or request.args['error']}")
    try:
        who = oauth.exchange(current_app.config["SAMI"], request.args.get("code", ""), _callback_url())
    except oauth.OAuthError as exc:
        abort(502, str(exc))
    target = session.pop("next", "/")
    auth.sign_in({"kind": "github", "login": who.login, "team_admin": who.in_admin_team})
    log.info("signed in with GitHub: %s%s", who.login, " (admin team)" if who.in_admin_team else "")
    return redirect(safe_next(target))


@bp.get("/login/once")
def login_once():
    """The embedded default's one-time link: the code travels in the URL fragment (never logged);
    the page's script posts it, or a visitor without JavaScript pastes it."""
    return render_template("login_once.html")


@bp.post("/login/once")
def login_once_redeem():
    """Redeem the one-time code: a fresh admin token's session, revoked when it signs out (or with sami
    token revoke)."""
    code = (request.form.get("code") or "").strip()
    if not signing.redeem_one_time_code(current_app.config["SAMI"].instance_dir, code):
        abort(403, "this sign-in link was used already or has expired: restart the server for a new one, or "
                   "sign in with a token")
    name = f"page-admin-{datetime.now(UTC):%Y%m%d%H%M%S}-{secrets.token_hex(2)}"
    create_token(get_session(), name, Scopes(admin=True), created_by=auth.ONE_TIME_CREATOR)
    get_session().commit()
    token = get_session().scalars(select(ApiToken).where(ApiToken.name == name)).one()
    auth.sign_in({"kind": "token", "token_id": token.token_id})
    return redirect(url_for("pages.index"))


@bp.get("/events")
def live_events():
    """Server-sent events: ``change`` with the deployments that changed (those the viewer may read)."""
    scopes = _read_scopes()
    signed_in = session.get("viewer")
    token_id = str(signed_in["token_id"]) if isinstance(signed_in, dict) and signed_in.get("kind") == "token" else None
    if scopes is None or scopes.admin:
        return events.stream_response(lambda change: True, token_id)
    return events.stream_response(lambda change: scopes.allows("read", change["service"], change["environment"]),
                                  token_id)
