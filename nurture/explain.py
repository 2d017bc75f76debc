"""`nurture explain`: what a person will receive next, when, and what holds it, in words."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Row, select

from nurture.contacts import normalize_email
from nurture.core.decisions import WAITING, Defer, End, Go, Idle, Later, next_action
from nurture.core.holdouts import HOLDOUT
from nurture.core.versions import HELD
from nurture.core.words import counted
from nurture.db import sessions
from nurture.durations import format_duration
from nurture.engine import History
from nurture.feedback import UnknownContact
from nurture.models import Contact, Enrollment, latest_stage_moves
from nurture.runtime import Runtime
from nurture.vocabulary import EnrollmentStatus

_LOOKAHEAD = 4


def explain(runtime: Runtime, email: str) -> list[str]:
    """One line about the person, then one per workflow they are or were in."""
    now = runtime.clock.now()
    settings = runtime.project.settings
    dispatcher = runtime.dispatcher
    with sessions(runtime.database)() as session:
        contact = session.execute(
            select(*Contact.__table__.columns).where(Contact.email == normalize_email(email))
        ).first()
        if contact is None:
            raise UnknownContact(f"no contact {email}")
        enrollments = session.execute(
            select(*Enrollment.__table__.columns)
            .where(Enrollment.contact_id == contact.id)
            .order_by(Enrollment.entered_at, Enrollment.id)
        ).all()
        history = dispatcher.history(session, now, {contact.id: contact}, lock=False)
        dispatcher.load_versions(session, enrollments)
        latest = session.execute(latest_stage_moves([contact.id])).first()
    zone = ZoneInfo(contact.timezone or settings.timezone)
    name = " ".join(p for p in (contact.first_name, contact.last_name, contact.company) if p)
    lines = [
        f"{contact.email}{f' ({name})' if name else ''}: stage {contact.stage} since "
        f"{_when(contact.stage_since, zone)}; fit {contact.fit:g}; "
        f"{counted(len(history.sent[contact.id]), 'email')} so far; time zone {zone.key}"
    ]
    if latest is not None and latest.by_hand:
        lines.append(
            f"Stage {contact.stage} set by hand ({latest.reason}): the score rules raise it "
            "only when an event makes their scores cross a threshold again."
        )
    suppression = history.suppressed.get(contact.email)
    if suppression:
        lines.append(
            f"Suppressed ({suppression}): no marketing email will ever go to this address."
        )
    if not enrollments:
        lines.append("In no workflow: nothing will be sent.")
    for enrollment in enrollments:
        said = _enrollment(runtime, enrollment, contact, history, now, zone)
        lines.append(f"{enrollment.workflow}: {said}")
    return lines


def _enrollment(
    runtime: Runtime,
    enrollment: Row[Any],
    contact: Row[Any],
    history: History,
    now: datetime,
    zone: ZoneInfo,
) -> str:
    if enrollment.status == HOLDOUT:
        return "held out (the workflow's holdout group): none of its emails, ever"
    if enrollment.status in (EnrollmentStatus.COMPLETED, EnrollmentStatus.EXITED):
        return f"ended ({enrollment.status}): {enrollment.end_reason}"
    if enrollment.status == WAITING and (enrollment.hold_reason or "").startswith(HELD):
        return f"nothing planned: {enrollment.hold_reason}"
    at = now
    said: list[str] = []
    for _ in range(_LOOKAHEAD):
        situation = runtime.dispatcher.situation(enrollment, contact, history, at)
        action = next_action(situation, at)
        if isinstance(action, Go):
            step = action.plan.step
            when = "now, at the next tick" if at <= now else _when(at, zone)
            at_hour = f" (send time: {action.send_time})" if action.send_time else ""
            said.append(f"next {step.content} ({action.plan.phase}) {when}{at_hour}")
            return "; ".join(said)
        if isinstance(action, Later) and action.reason is not None:
            said.append(f"{action.reason}: the event wakes them at once, else the timeout")
            return "; ".join(said)
        if isinstance(action, Later):
            said.append(
                f"{action.step.content or 'step ' + action.step.key} comes due "
                f"{_when(action.until, zone)} "
                f"(its wait of {format_duration(action.step.wait)} after the previous email)"
            )
            at = action.until
            continue
        if isinstance(action, Defer):
            decision = action.decision
            assert decision.send_at is not None
            said.append(
                f"next {action.step.content} held until {_when(decision.send_at, zone)} "
                f"by: {decision.reason}"
            )
            return "; ".join(said)
        if isinstance(action, Idle):
            until = f" until {_when(action.until, zone)}" if action.until else ""
            said.append(f"nothing planned{until}: {action.reason}")
            return "; ".join(said)
        assert isinstance(action, End)
        said.append(f"will end at its next turn ({action.status}): {action.reason}")
        return "; ".join(said)
    return "; ".join(said)


def _when(instant: datetime, zone: ZoneInfo) -> str:
    return instant.astimezone(zone).strftime("%a %d %b %Y %H:%M %Z")
