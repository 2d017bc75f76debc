"""Lead capture: ordinary HTML forms post to `/f/<form>`; optional double opt-in.

The form's fields, consent sentence and thank-you page are declared under `forms:` in
nurture.yaml. Bots that fill the hidden honeypot field are sent to the thank-you page and
nothing is kept. With double opt-in, the person gets a confirmation email and becomes a lead
only on confirming (a POST from the page the link opens, so a link scanner confirms nothing).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from flask import Blueprint, abort, current_app, redirect, render_template, request
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response as BaseResponse

from nurture.config import Form
from nurture.contacts import normalize_email
from nurture.db import write_transaction
from nurture.feedback import record_event, upsert_contact
from nurture.models import Consent, Contact
from nurture.notices import queue_notice
from nurture.runtime import Runtime

bp = Blueprint("forms", __name__, url_prefix="/f")
#: A confirmation link older than this opens an "expired" page.
CONFIRM_WITHIN = timedelta(days=7)


def _runtime() -> Runtime:
    runtime: Runtime = current_app.extensions["nurture"]
    return runtime


def _page(status: int = 200, **values: object) -> tuple[str, int]:
    sender = _runtime().project.settings.sender
    return render_template("form.html", sender=sender, **values), status


@bp.post("/<name>")
def submit(name: str) -> BaseResponse | tuple[str, int]:
    runtime = _runtime()
    form = runtime.project.settings.forms.get(name)
    if form is None:
        abort(404)
    if request.form.get(form.honeypot, "").strip():
        return redirect(form.thank_you, code=303)
    problems = []
    try:
        address = normalize_email(request.form.get("email", ""))
    except ValueError:
        problems.append("email: please give a valid email address")
    fields = {f: request.form[f].strip() for f in form.fields if request.form.get(f, "").strip()}
    problems += [
        f"{f}: this field is required" for f in form.required if f != "email" and f not in fields
    ]
    if problems:
        return _page(422, title="Something is missing", problems=problems)
    now = runtime.clock.now()
    source = f"form {name}"
    with write_transaction(runtime.database) as session:
        is_new = session.scalar(select(Contact.id).where(Contact.email == address)) is None
        try:
            contact = upsert_contact(
                session,
                runtime.project,
                address,
                {**fields, **({"source": source} if is_new else {})},
                now,
            ).contact
        except ValueError as exc:
            return _page(422, title="Something is wrong", problems=[str(exc)])
        consent = Consent(
            contact_id=contact.id,
            source=source,
            text=form.consent_text,
            legal_basis=form.legal_basis,
            at=now,
            ip=request.remote_addr,
            user_agent=request.user_agent.string[:400] or None,
            confirmed_at=None if form.double_opt_in else now,
            properties={"page": request.referrer} if request.referrer else {},
        )
        session.add(consent)
        session.flush()
        if form.double_opt_in:
            queue_notice(
                session,
                "confirm",
                address,
                form.confirm_subject,
                _confirmation_text(runtime, form, runtime.links.confirm_url(consent.id)),
                now,
                contact.id,
            )
        else:
            _count(runtime, session, form, name, address, now)
    return redirect(form.thank_you, code=303)


@bp.get("/confirm/<token>")
def confirm_page(token: str) -> tuple[str, int]:
    consent, email, _ = _consent(token)
    if consent.confirmed_at is not None:
        return _page(title="Already confirmed", message=f"{email} is already confirmed. Thank you.")
    return _page(
        title="Confirm your subscription", confirm=True, email=email, consent_text=consent.text
    )


@bp.post("/confirm/<token>")
def confirm(token: str) -> BaseResponse | tuple[str, int]:
    runtime = _runtime()
    consent, email, form = _consent(token)
    now = runtime.clock.now()
    with write_transaction(runtime.database) as session:
        row = session.get_one(Consent, consent.id)
        if row.confirmed_at is None:
            row.confirmed_at = now
            name = row.source.removeprefix("form ")
            _count(runtime, session, form, name, email, now, double_opt_in=True)
    return redirect(form.thank_you, code=303)


def _consent(token: str) -> tuple[Consent, str, Form]:
    runtime = _runtime()
    consent_id = runtime.links.confirm_id(token)
    if consent_id is None:
        abort(404)
    with write_transaction(runtime.database) as session:
        row = session.execute(
            select(Consent, Contact.email)
            .join(Contact, Contact.id == Consent.contact_id)
            .where(Consent.id == consent_id)
        ).first()
    if row is None:
        abort(404)
    consent, email = row
    form = runtime.project.settings.forms.get(consent.source.removeprefix("form "))
    if form is None:
        abort(404)
    if consent.confirmed_at is None and runtime.clock.now() - consent.at > CONFIRM_WITHIN:
        abort(410, description="This confirmation link has expired; please fill in the form again.")
    return consent, email, form


def _count(
    runtime: Runtime,
    session: Session,
    form: Form,
    name: str,
    email: str,
    now: datetime,
    *,
    double_opt_in: bool = False,
) -> None:
    """The consent holds: note it on the contact and record the form's event."""
    contact = session.scalar(select(Contact).where(Contact.email == email))
    assert contact is not None
    contact.consent_source, contact.consent_at = f"form {name}", now
    properties = {"form": name, **({"double_opt_in": True} if double_opt_in else {})}
    record_event(session, runtime.project, email, form.event, now, properties=properties)


def _confirmation_text(runtime: Runtime, form: Form, url: str) -> str:
    sender = runtime.project.settings.sender
    return (
        f"Please confirm that you want to receive emails from {sender.from_name}:\n\n"
        f"{url}\n\n"
        f"You agreed to: {form.consent_text}\n\n"
        "If you did not ask for this, ignore this email: nothing will be sent to you.\n\n"
        f"{sender.postal_address}\n"
    )
