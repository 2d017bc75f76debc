"""The marketing-ops dashboard: overview, contacts, one contact and its actions, segments."""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import Any

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
from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response as BaseResponse

from nurture import audiences, segments
from nurture.contacts import current_engagement, profile
from nurture.content import preview_unsubscribe_url, render_email, sample_contact
from nurture.core.winner import CONFIDENCE, MIN_SENDS
from nurture.db import sessions, write_transaction
from nurture.diagram import workflow_svgs
from nurture.errors import InvalidValue
from nurture.explain import explain
from nurture.feedback import move_stage, set_paused, suppress
from nurture.lift import METHOD as LIFT_METHOD
from nurture.lift import MIN_PEOPLE as LIFT_MIN_PEOPLE
from nurture.lift import cached_lifts, holdouts, stage_label
from nurture.lift import heading as lift_heading
from nurture.models import Contact, Enrollment, SubjectWinner, Suppression
from nurture.redact import redact
from nurture.reports import (
    cached_history,
    content_totals,
    find_contacts,
    overview,
    planned,
    score_history,
    subject_lines,
    subject_test,
    timeline,
    unknown_messages,
    workflow_stats,
    workflow_versions,
)
from nurture.runtime import Runtime
from nurture.segments import Segment
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
        custom=_custom_fields(contact, runtime.project.settings.custom_fields),
    )


def _custom_fields(contact: Contact, declared: Iterable[str]) -> list[tuple[str, Any]]:
    """The contact's custom fields: every declared one (empty ones too, in declared order),
    then any the contact holds that nurture.yaml no longer declares."""
    values = contact.custom or {}
    names = list(declared)
    return [(name, values.get(name)) for name in names] + [
        (name, value) for name, value in sorted(values.items()) if name not in names
    ]


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
                    raise InvalidValue("reason", "say why the stage changes")
                move_stage(db, project, contact.email, request.form.get("stage", ""), reason, now)
            except ValueError as exc:
                return render_template("error.html", message=str(exc)), 422
        else:
            abort(400, description="unknown action")
    return redirect(url_for("dashboard.contact_page", contact_id=contact_id))


@bp.get("/segments")
@login_required
def segments_page() -> str:
    runtime = _runtime()
    project, now = runtime.project, runtime.clock.now()
    rows = []
    with sessions(runtime.database)() as db:
        for name, found in sorted(project.segments.items()):
            members = segments.audience(db, project.settings, found, project.content_ids(), now)
            rows.append((name, found, segments.count(db, members)))
    return render_template("segments.html", rows=rows)


def _segment(name: str) -> Segment:
    found = _runtime().project.segments.get(name)
    if found is None:
        abort(404, description=f"no segment {name[:100]!r}")
    return found


@bp.get("/segments/<name>")
@login_required
def segment_page(name: str) -> str:
    """A segment: how many are in it now, a sample, its export, and its enrollment (a dry
    run first when a workflow is chosen; applying it is a POST)."""
    runtime = _runtime()
    project, now = runtime.project, runtime.clock.now()
    found = _segment(name)
    with sessions(runtime.database)() as db:
        members = segments.audience(db, project.settings, found, project.content_ids(), now)
        total = segments.count(db, members)
        sample = segments.page(db, members, 1)
    chosen = request.args.get("workflow") or None
    preview = None
    if chosen is not None:
        if chosen not in project.workflows:
            abort(404, description=f"no workflow {chosen[:100]!r}")
        preview = audiences.enroll(runtime.database, project, chosen, name, now, dry_run=True)
    return render_template(
        "segment.html",
        name=name,
        segment=found,
        total=total,
        sample=sample,
        workflows=sorted(project.workflows),
        entering={w.id for w in project.workflows.values() if w.enter.segment == name},
        preview=preview,
        schedule=audiences.schedule_lines(preview, project.settings.timezone) if preview else [],
    )


@bp.get("/segments/<name>.csv")
@login_required
def segment_export(name: str) -> BaseResponse:
    runtime = _runtime()
    project, now = runtime.project, runtime.clock.now()
    found = _segment(name)
    out = io.StringIO()
    with sessions(runtime.database)() as db:
        members = segments.audience(db, project.settings, found, project.content_ids(), now)
        segments.export(db, members, project.settings, out)
    return BaseResponse(
        out.getvalue(),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
    )


@bp.post("/segments/<name>/enroll")
@login_required
def segment_enroll(name: str) -> str:
    """Enroll the segment's people in a workflow, as confirmed on the segment's page."""
    runtime = _runtime()
    project = runtime.project
    _segment(name)
    workflow = request.form.get("workflow", "")
    if workflow not in project.workflows:
        abort(400, description="workflow: choose one of the project's workflows")
    done = audiences.enroll(
        runtime.database, project, workflow, name, runtime.clock.now(), dry_run=False
    )
    return render_template(
        "segment_enrolled.html",
        name=name,
        done=done,
        schedule=audiences.schedule_lines(done, project.settings.timezone),
    )


@bp.get("/workflows")
@login_required
def workflows_page() -> str:
    runtime = _runtime()
    with sessions(runtime.database)() as db:
        steps, waiting = workflow_stats(db, runtime.project)
        versions = workflow_versions(db)
        now, settings = runtime.clock.now(), runtime.project.settings
    lifts = cached_lifts(runtime.database, settings, holdouts(runtime.project.workflows), now)
    lanes = {
        id: [
            (phase, Markup(svg))  # escaped by nurture/diagram.py
            for phase, svg in workflow_svgs(
                workflow, {s.step: s for s in steps if s.workflow == id}
            )
        ]
        for id, workflow in runtime.project.workflows.items()
    }
    return render_template(
        "workflows.html",
        steps=steps,
        waiting=waiting,
        workflows=runtime.project.workflows,
        lanes=lanes,
        versions=versions,
        lifts=lifts,
        lift_heading=lift_heading,
        lift_method=LIFT_METHOD,
        lift_minimum=LIFT_MIN_PEOPLE,
        stage_label=stage_label,
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
    contact = sample_contact(project.settings.custom_fields)
    email = request.args.get("contact", "").strip()
    with sessions(runtime.database)() as db:
        lines = content_stats(db)
        winner = db.get(SubjectWinner, chosen)
        if email:
            found = db.scalar(select(Contact).where(Contact.email == email.lower()))
            if found is None:
                abort(404)
            contact = profile(found, project.settings)
    sender = project.settings.sender.model_dump()
    unsubscribe = preview_unsubscribe_url(project.settings.base_url)
    rendered = render_email(piece, contact, sender, unsubscribe)
    results, verdict = subject_test(
        subject_lines(piece), [line for line in lines if line.content_id == chosen]
    )
    return render_template(
        "content.html",
        pieces=sorted(project.content),
        chosen=chosen,
        rendered=rendered,
        email=email,
        results=results,
        verdict=verdict,
        promoted=winner,
        promotes=piece.front.promote_winner,
        rule=(MIN_SENDS, CONFIDENCE),
        totals=content_totals(lines),
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


#: The Settings page's sections: a title, and the settings it shows.
SETTINGS_SECTIONS = (
    ("Sender and project", ("sender", "base_url", "timezone", "custom_fields")),
    ("Stages", ("stages",)),
    ("Disqualification", ("disqualify",)),
    ("Engagement scoring", ("scoring.engagement",)),
    ("Fit scoring", ("scoring.fit",)),
    ("Caps", ("caps",)),
    ("Account pause", ("account_pause",)),
    ("Hand-off to sales", ("handoff",)),
)


@bp.get("/settings")
@login_required
def settings_page() -> str:
    """The settings as loaded, in sections; every value goes through `redact` first."""
    shown = redact(_runtime().project.settings.model_dump(mode="json"))
    sections = []
    for title, paths in SETTINGS_SECTIONS:
        values: dict[str, Any] = {}
        for path in paths:
            value: Any = shown
            for part in path.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            values[path.rsplit(".", 1)[-1]] = value
        sections.append((title, values))
    return render_template("settings.html", sections=sections)


def _contact(db: Session, contact_id: int) -> Contact:
    contact = db.get(Contact, contact_id)
    if contact is None:
        abort(404)
    return contact
