"""Links inside emails: open pixel, click redirect, unsubscribe page and RFC 8058 one-click.

None of these needs a login or a cookie: each token is signed and bound to one message, and
a forged or altered token changes nothing.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import Blueprint, Response, abort, current_app, redirect, render_template, request
from markupsafe import Markup, escape
from sqlalchemy import select, update

from nurture.core.machines import machine_click, machine_open
from nurture.db import write_transaction
from nurture.feedback import record_event, set_caps
from nurture.models import Contact, Event, Message
from nurture.runtime import Runtime
from nurture.web.words import UNSUBSCRIBE, pick

bp = Blueprint("public", __name__)
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
PAUSE = timedelta(days=30)
NO_CACHE = {"Cache-Control": "no-store, no-cache, must-revalidate, private", "Pragma": "no-cache"}


@dataclass(frozen=True)
class Sent:
    id: int
    email: str
    sent_at: datetime
    language: str | None = None


def _runtime() -> Runtime:
    runtime: Runtime = current_app.extensions["nurture"]
    return runtime


def _message(key: str | None) -> Sent:
    """The message a valid token names; 404 for anything else."""
    if key is None:
        abort(404)
    runtime = _runtime()
    domain = runtime.project.settings.sender.from_address.rsplit("@", 1)[1]
    with write_transaction(runtime.database) as session:
        row = session.execute(
            select(Message.id, Contact.email, Message.sent_at, Contact.language)
            .join(Contact, Contact.id == Message.contact_id)
            .where(Message.rfc_message_id == f"<{key}@{domain}>")
        ).first()
    if row is None:
        abort(404)
    return Sent(row.id, row.email, row.sent_at, row.language)


@bp.get("/o/<token>")
def open_pixel(token: str) -> Response:
    runtime = _runtime()
    sent = _message(runtime.links.open_key(token))
    now = runtime.clock.now()
    machine = machine_open(user_agent=request.user_agent.string, sent_at=sent.sent_at, now=now)
    with write_transaction(runtime.database) as session:
        record_event(
            session,
            runtime.project,
            sent.email,
            "email_opened",
            now,
            properties=_properties(sent, machine),
            message_id=sent.id,
        )
    return Response(PIXEL, mimetype="image/gif", headers=NO_CACHE)


@bp.route("/c/<token>", methods=["GET", "HEAD"])
def click(token: str) -> Response:
    runtime = _runtime()
    found = runtime.links.click_target(token)
    if found is None:
        abort(404)
    key, target = found
    sent = _message(key)
    now = runtime.clock.now()
    with write_transaction(runtime.database) as session:
        others = [
            event.occurred_at
            for event in session.scalars(
                select(Event).where(Event.message_id == sent.id, Event.kind == "email_clicked")
            )
            if event.properties.get("url") != target
        ]
        machine = machine_click(
            method=request.method,
            user_agent=request.user_agent.string,
            sent_at=sent.sent_at,
            now=now,
            other_clicks=others,
        )
        record_event(
            session,
            runtime.project,
            sent.email,
            "email_clicked",
            now,
            properties={**_properties(sent, machine), "url": target},
            message_id=sent.id,
        )
    return redirect(target, code=302)  # type: ignore[return-value]


@bp.get("/u/<token>")
def unsubscribe_page(token: str) -> str:
    sent = _message(_runtime().links.unsubscribe_key(token))
    return _preferences_page(sent, None)


@bp.post("/u/<token>")
def unsubscribe(token: str) -> Response | str:
    """RFC 8058 one-click (List-Unsubscribe=One-Click), or a choice made on the page."""
    runtime = _runtime()
    sent = _message(runtime.links.unsubscribe_key(token))
    now = runtime.clock.now()
    one_click = request.form.get("List-Unsubscribe") == "One-Click"
    choice = "unsubscribe" if one_click else request.form.get("choice", "")
    if choice not in ("unsubscribe", "fewer", "pause"):
        abort(400, description="choice must be unsubscribe, fewer or pause")
    with write_transaction(runtime.database) as session:
        if choice == "unsubscribe":
            record_event(
                session,
                runtime.project,
                sent.email,
                "unsubscribed",
                now,
                properties={"via": "one-click" if one_click else "page"},
                message_id=sent.id,
            )
        elif choice == "fewer":
            set_caps(session, runtime.project, sent.email, {"per_week": 1}, now)
        else:
            session.execute(
                update(Contact)
                .where(Contact.email == sent.email)
                .values(held_until=now + PAUSE, hold_reason="paused by the person for 30 days")
            )
    if one_click:
        return Response("unsubscribed\n", mimetype="text/plain")
    return _preferences_page(sent, choice)


def _preferences_page(sent: Sent, done: str | None) -> str:
    """The unsubscribe page, or what a choice did, in the contact's language."""
    sender = _runtime().project.settings.sender
    language = pick(sent.language)
    words = UNSUBSCRIBE[language]

    def say(key: str) -> Markup:
        return Markup(escape(words[key])).format(
            email=Markup("<strong>{}</strong>").format(sent.email), sender=sender.from_name
        )

    return render_template(
        "unsubscribe.html", lang=language, say=say, done=done, sender=sender, title=words["title"]
    )


def _properties(sent: Sent, machine: str | None) -> dict[str, object]:
    properties: dict[str, object] = {"message_id": sent.id}
    if machine:
        properties["machine"] = machine
    return properties
