"""The marketing-ops dashboard: overview, contacts, one contact and its actions."""

from __future__ import annotations

import yaml
from flask import (
    Blueprint,
    abort,
    current_app,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response as BaseResponse

from nurture.contacts import current_engagement, profile
from nurture.content import sample_variables
from nurture.db import sessions, write_transaction
from nurture.explain import explain
from nurture.feedback import move_stage, set_paused, suppress
from nurture.models import Contact, Enrollment, Suppression
from nurture.reports import (
    cached_history,
    find_contacts,
    overview,
    planned,
    score_history,
    timeline,
    unknown_messages,
    workflow_stats,
)
from nurture.runtime import Runtime
from nurture.stats import content_stats
from nurture.web.auth import login_required

bp = Blueprint("dashboard", __name__)


def _runtime() -> Runtime:
    runtime: Runtime = current_app.extensions["nurture"]
    return runtime


@bp.get("/")
@login_required
def overview_page() -> str:
    runtime = _runtime()
    settings, now = runtime.project.settings, runtime.clock.now()
    history = cached_history(runtime.database, settings, now)
    with sessions(runtime.database)() as db:
        data = overview(db, settings, now, history)
    return render_template("overview.html", data=data, settings=runtime.project.settings)


def _number(name: str) -> float | None:
    value = request.args.get(name, "").strip()
    try:
        return float(value) if value else None
    except ValueError:
        return None


@bp.get("/contacts")
@login_required
def contacts_page() -> str:
    runtime = _runtime()
    settings = runtime.project.settings
    stage = request.args.get("stage") or None
    workflow = request.args.get("workflow") or None
    with sessions(runtime.database)() as db:
        found = find_contacts(
            db,
            query=request.args.get("q", ""),
            stage=stage if stage in settings.stage_names else None,
            workflow=workflow if workflow in runtime.project.workflows else None,
            fit_min=_number("fit"),
            fit_max=_number("fit_max"),
            engagement_min=_number("engagement"),
            engagement_max=_number("engagement_max"),
            page=int(_number("page") or 1),
        )
    return render_template(
        "contacts.html",
        found=found,
        args=request.args,
        stages=settings.stage_names,
        workflows=sorted(runtime.project.workflows),
    )


@bp.get("/contacts/<int:contact_id>")
@login_required
def contact_page(contact_id: int) -> str:
    runtime = _runtime()
    now = runtime.clock.now()
    with sessions(runtime.database)() as db:
        contact = _contact(db, contact_id)
        entries = timeline(db, contact_id)
        scores = score_history(db, contact_id)
        enrollments = list(
            db.scalars(select(Enrollment).where(Enrollment.contact_id == contact_id))
        )
        suppressed = db.scalar(select(Suppression).where(Suppression.email == contact.email))
    return render_template(
        "contact.html",
        contact=contact,
        engagement=current_engagement(contact, runtime.project.settings, now),
        entries=entries,
        enrollments=enrollments,
        suppressed=suppressed,
        plan=explain(runtime, contact.email),
        stages=runtime.project.settings.stage_names,
        scores=scores,
    )


@bp.post("/contacts/<int:contact_id>/action")
@login_required
def contact_action(contact_id: int) -> BaseResponse | tuple[str, int]:
    runtime = _runtime()
    now = runtime.clock.now()
    who = f"dashboard: {session['user']}"
    action = request.form.get("action", "")
    with write_transaction(runtime.database) as db:
        contact = _contact(db, contact_id)
        project = runtime.project
        if action in ("pause", "resume"):
            set_paused(db, project, contact.email, action == "pause", who, now)
        elif action == "do_not_contact":
            suppress(db, contact.email, "do_not_contact", who, now)
        elif action == "stage":
            try:
                reason = f"{request.form.get('reason', '').strip()} ({who})"
                if not request.form.get("reason", "").strip():
                    raise ValueError("reason: say why the stage changes")
                move_stage(db, project, contact.email, request.form.get("stage", ""), reason, now)
            except ValueError as exc:
                return render_template("error.html", message=str(exc)), 422
        else:
            abort(400, description="unknown action")
    return redirect(url_for("dashboard.contact_page", contact_id=contact_id))


@bp.get("/workflows")
@login_required
def workflows_page() -> str:
    runtime = _runtime()
    with sessions(runtime.database)() as db:
        steps, waiting = workflow_stats(db, runtime.project)
    return render_template(
        "workflows.html", steps=steps, waiting=waiting, workflows=runtime.project.workflows
    )


@bp.get("/content")
@login_required
def content_page() -> str:
    runtime = _runtime()
    project = runtime.project
    chosen = request.args.get("piece") or next(iter(sorted(project.content)), "")
    piece = project.content.get(chosen)
    if piece is None:
        abort(404)
    variables = sample_variables(
        project.settings.custom_fields, project.settings.sender.model_dump()
    )
    email = request.args.get("contact", "").strip()
    with sessions(runtime.database)() as db:
        lines = {(line.content_id, line.variant): line for line in content_stats(db)}
        if email:
            found = db.scalar(select(Contact).where(Contact.email == email.lower()))
            if found is None:
                abort(404)
            variables["contact"] = profile(found, project.settings)
    rendered = piece.render(variables, language=variables["contact"].get("language"))
    return render_template(
        "content.html",
        pieces=sorted(project.content),
        chosen=chosen,
        rendered=rendered,
        email=email,
        lines=[line for key, line in sorted(lines.items(), key=str) if key[0] == chosen],
    )


@bp.get("/queue")
@login_required
def queue_page() -> str:
    runtime = _runtime()
    with sessions(runtime.database)() as db:
        count, rows = planned(db, runtime.clock.now())
        unknown = unknown_messages(db)
    return render_template("queue.html", count=count, rows=rows, unknown=unknown)


@bp.post("/queue/<int:message_id>")
@login_required
def settle_message(message_id: int) -> BaseResponse:
    outcome = request.form.get("outcome")
    if outcome not in ("sent", "release"):
        abort(400, description="outcome must be sent or release")
    if not _runtime().dispatcher.settle(message_id, sent=outcome == "sent"):
        abort(404)
    return redirect(url_for("dashboard.queue_page"))


@bp.get("/settings")
@login_required
def settings_page() -> str:
    settings = _runtime().project.settings
    shown = {
        name: yaml.safe_dump(
            settings.model_dump(mode="json", include={name}), sort_keys=False, allow_unicode=True
        )
        for name in ("stages", "disqualify", "scoring", "caps", "account_pause", "handoff")
    }
    return render_template("settings.html", shown=shown)


def _contact(db: Session, contact_id: int) -> Contact:
    contact = db.get(Contact, contact_id)
    if contact is None:
        abort(404)
    return contact
