"""Lead capture: ordinary HTML forms post to `/f/<form>`; optional double opt-in.

The form's fields, consent sentence and thank-you page are declared under `forms:` in
nurture.yaml. Bots that fill the hidden honeypot field are sent to the thank-you page and
nothing is kept. A POST without the consent checkbox ticked is refused and nothing is kept.
With double opt-in, the person gets a confirmation email and becomes a lead only on
confirming (a POST from the page the link opens, so a link scanner confirms nothing); what
the form said about them waits with the pending consent and is applied only then, so a
stranger's POST changes nobody. Confirmations to one address are rate-limited per form
(`notices.may_confirm_again`).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from flask import Blueprint, abort, current_app, redirect, render_template, request
from markupsafe import Markup, escape
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response as BaseResponse

from nurture.config import Form
from nurture.contacts import clean_profile, normalize_email
from nurture.db import write_transaction
from nurture.feedback import lock_contact, record_event, upsert_contact
from nurture.models import Consent, Contact
from nurture.notices import may_confirm_again, queue_notice
from nurture.runtime import Runtime
from nurture.web.words import pick

bp = Blueprint("forms", __name__, url_prefix="/f")
#: A confirmation link older than this opens an "expired" page.
CONFIRM_WITHIN = timedelta(days=7)
#: What the form's own pages say, per language (a form's `language`; English otherwise).
WORDS = {
    "en": {
        "missing": "Something is missing",
        "wrong": "Something is wrong",
        "intro": "Please go back and correct the form:",
        "email": "email: please give a valid email address",
        "required": "{field}: this field is required",
        "consent": "{field}: please tick the box to agree to “{text}”",
        "confirm_title": "Confirm your subscription",
        "confirm_intro": "Confirm that {email} may receive emails from {sender}:",
        "confirm_button": "Yes, confirm",
        "already_title": "Already confirmed",
        "already": "{email} is already confirmed. Thank you.",
    },
    "fr": {
        "missing": "Il manque quelque chose",
        "wrong": "Quelque chose ne va pas",
        "intro": "Revenez au formulaire pour le corriger :",
        "email": "email : indiquez une adresse email valide",
        "required": "{field} : ce champ est obligatoire",
        "consent": "{field} : cochez la case pour accepter « {text} »",
        "confirm_title": "Confirmez votre inscription",
        "confirm_intro": "Confirmez que {email} accepte de recevoir des emails de {sender} :",
        "confirm_button": "Oui, je confirme",
        "already_title": "Déjà confirmé",
        "already": "{email} est déjà confirmé. Merci.",
    },
}
#: Values of a checkbox (or field) that do not say yes.
NOT_TICKED = frozenset({"", "0", "false", "no", "off", "non"})


def _runtime() -> Runtime:
    runtime: Runtime = current_app.extensions["nurture"]
    return runtime


def _language(form: Form | None, *person: str | None) -> str:
    """The person's language when the pages speak it, else the form's, else English."""
    return pick(*person, form.language if form is not None else None, known=WORDS)


def _page(
    status: int = 200, form: Form | None = None, language: str | None = None, **values: object
) -> tuple[str, int]:
    sender = _runtime().project.settings.sender
    language = language or _language(form)
    return render_template(
        "form.html", sender=sender, lang=language, words=WORDS[language], **values
    ), status


@bp.post("/<name>")
def submit(name: str) -> BaseResponse | tuple[str, int]:
    runtime = _runtime()
    form = runtime.project.settings.forms.get(name)
    if form is None:
        abort(404)
    if request.form.get(form.honeypot, "").strip():
        return redirect(form.thank_you, code=303)
    words = WORDS[_language(form)]
    problems = []
    try:
        address = normalize_email(request.form.get("email", ""))
    except ValueError:
        problems.append(words["email"])
    fields = {f: request.form[f].strip() for f in form.fields if request.form.get(f, "").strip()}
    problems += [
        words["required"].format(field=f) for f in form.required if f != "email" and f not in fields
    ]
    if request.form.get(form.consent_field, "").strip().lower() in NOT_TICKED:
        problems.append(words["consent"].format(field=form.consent_field, text=form.consent_text))
    if problems:
        return _page(422, form, title=words["missing"], problems=problems)
    try:
        clean_profile(dict(fields), runtime.project.settings.custom_fields)
    except ValueError as exc:
        return _page(422, form, title=words["wrong"], problems=[str(exc)])
    now = runtime.clock.now()
    source = f"form {name}"
    with write_transaction(runtime.database) as session:
        if form.double_opt_in:
            _ask_to_confirm(runtime, session, form, address, fields, now, source)
        else:
            contact = upsert_contact(
                session, runtime.project, address, fields, now, on_create={"source": source}
            ).contact
            session.add(_consent(form, contact.id, source, now, confirmed=True))
            _count(runtime, session, form, name, address, now)
    return redirect(form.thank_you, code=303)


def _consent(
    form: Form,
    contact_id: int,
    source: str,
    now: datetime,
    *,
    confirmed: bool,
    pending: dict[str, Any] | None = None,
) -> Consent:
    """The consent row of this request: where, when, on which words; with double opt-in,
    the form's fields waiting for the confirmation (`pending`)."""
    properties: dict[str, Any] = {"page": request.referrer} if request.referrer else {}
    if pending:
        properties["pending"] = pending
    return Consent(
        contact_id=contact_id,
        source=source,
        text=form.consent_text,
        legal_basis=form.legal_basis,
        at=now,
        ip=request.remote_addr,
        user_agent=request.user_agent.string[:400] or None,
        confirmed_at=now if confirmed else None,
        properties=properties,
    )


def _ask_to_confirm(
    runtime: Runtime,
    session: Session,
    form: Form,
    address: str,
    fields: dict[str, Any],
    now: datetime,
    source: str,
) -> None:
    """Keep the consent as pending with the form's fields, and queue the confirmation email,
    unless one went to this address for this form too recently. A known contact is only
    locked, not changed; an unknown address becomes a bare contact (no name, no company)."""
    contact = lock_contact(session, address)
    if contact is None:
        outcome = upsert_contact(
            session, runtime.project, address, {}, now, on_create={"source": source}
        )
        contact = outcome.contact
    earlier = session.scalars(
        select(Consent.at).where(
            Consent.contact_id == contact.id,
            Consent.source == source,
            Consent.at > now - timedelta(days=1),
        )
    )
    if not may_confirm_again(list(earlier), now):
        return
    consent = _consent(form, contact.id, source, now, confirmed=False, pending=fields)
    session.add(consent)
    session.flush()
    queue_notice(
        session,
        "confirm",
        address,
        form.confirm_subject,
        _confirmation_text(runtime, form, runtime.links.confirm_url(consent.id)),
        now,
        contact.id,
    )


@bp.get("/confirm/<token>")
def confirm_page(token: str) -> tuple[str, int]:
    consent, email, form, person = _pending(token)
    pending = consent.properties.get("pending") or {}
    language = _language(form, person, pending.get("language"))
    words = WORDS[language]
    if consent.confirmed_at is not None:
        return _page(
            form=form,
            language=language,
            title=words["already_title"],
            message=words["already"].format(email=email),
        )
    return _page(
        form=form,
        language=language,
        title=words["confirm_title"],
        confirm=True,
        intro=Markup(escape(words["confirm_intro"])).format(
            email=Markup("<strong>{}</strong>").format(email),
            sender=_runtime().project.settings.sender.from_name,
        ),
        consent_text=consent.text,
    )


@bp.post("/confirm/<token>")
def confirm(token: str) -> BaseResponse | tuple[str, int]:
    runtime = _runtime()
    consent, email, form, _ = _pending(token)
    now = runtime.clock.now()
    with write_transaction(runtime.database) as session:
        row = session.scalar(
            select(Consent)
            .where(Consent.id == consent.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        if row is not None and row.confirmed_at is None:
            row.confirmed_at = now
            pending = {
                k: v for k, v in (row.properties.get("pending") or {}).items() if k in form.fields
            }
            try:
                clean_profile(dict(pending), runtime.project.settings.custom_fields)
            except ValueError:  # the project's fields changed since: the consent holds
                pending = {}
            if pending:
                upsert_contact(session, runtime.project, email, pending, now)
            name = row.source.removeprefix("form ")
            _count(runtime, session, form, name, email, now, double_opt_in=True)
    return redirect(form.thank_you, code=303)


def _pending(token: str) -> tuple[Consent, str, Form, str | None]:
    """The pending consent a valid token names, its address, form and the contact's language."""
    runtime = _runtime()
    consent_id = runtime.links.confirm_id(token)
    if consent_id is None:
        abort(404)
    with write_transaction(runtime.database) as session:
        row = session.execute(
            select(Consent, Contact.email, Contact.language)
            .join(Contact, Contact.id == Consent.contact_id)
            .where(Consent.id == consent_id)
        ).first()
    if row is None:
        abort(404)
    consent, email, person = row
    form = runtime.project.settings.forms.get(consent.source.removeprefix("form "))
    if form is None:
        abort(404)
    if consent.confirmed_at is None and runtime.clock.now() - consent.at > CONFIRM_WITHIN:
        abort(410, description="This confirmation link has expired; please fill in the form again.")
    return consent, email, form, person


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
    contact = lock_contact(session, email)
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
