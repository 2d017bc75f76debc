"""The event path as it was before the pipeline (nurture/intake.py): one event at a time,
through the ORM, statement by statement. The differential tests compare the pipeline to it.
Its stage moves, holds, hand-offs and enrollments are the ORM code they replaced, too.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from nurture import eventstore, expressions
from nurture.config import DISQUALIFIED, SUPPRESSING_EVENTS
from nurture.contacts import condition_variables, current_engagement, normalize_email, zone_of
from nurture.core.decisions import ACTIVE, COMPLETED, EXITED, PAUSED, WAITING
from nurture.core.engagement import WAITS_FOR
from nurture.core.scoring import as_of, engagement_changes
from nurture.core.stages import Move, next_stage
from nurture.feedback import Outcome, UnknownContact, hand_off, lock_contact, suppress
from nurture.models import (
    CANCELLED,
    QUEUED,
    Contact,
    Enrollment,
    Event,
    Message,
    ScoreChange,
    StageMove,
    Suppression,
)
from nurture.project import Project

log = logging.getLogger(__name__)
OPEN_STATUSES = (ACTIVE, WAITING, PAUSED)


def reference_record_event(
    session: Session,
    project: Project,
    email: str,
    kind: str,
    now: datetime,
    *,
    occurred_at: datetime | None = None,
    properties: Mapping[str, Any] | None = None,
    client_event_id: str | None = None,
    message_id: int | None = None,
) -> Outcome:
    """Store an event, then score it, move the stage, end goals and enroll, in that order."""
    settings = project.settings
    if kind not in settings.event_kinds:
        raise ValueError(
            f"kind: unknown event {kind!r}; known: {', '.join(sorted(settings.event_kinds))}"
        )
    address = normalize_email(email)
    contact = lock_contact(session, address)
    if contact is None:
        raise UnknownContact(f"no contact {address}")
    props = dict(properties or {})
    if client_event_id is not None:
        existing = session.scalar(
            select(Event).where(
                Event.contact_id == contact.id, Event.client_event_id == client_event_id
            )
        )
        if existing is not None:
            return Outcome(contact, existing, duplicate=True)
    session.flush()
    # stored through the events' one write path (nurture/eventstore.py: the row and the
    # engagement summary segments read), then read back as the ORM object the steps use
    (event_id,) = eventstore.store(
        session.connection(),
        [
            {
                "contact_id": contact.id,
                "kind": kind,
                "occurred_at": occurred_at or now,
                "recorded_at": now,
                "properties": props,
                "client_event_id": client_event_id,
                "message_id": message_id,
                "machine": str(props["machine"])[:40] if props.get("machine") else None,
            }
        ],
    )
    event = session.get(Event, event_id)
    assert event is not None
    outcome = Outcome(contact, event)
    if kind in SUPPRESSING_EVENTS:
        suppress(session, contact.email, kind, f"event {event.id}", now)
    if props.get("machine"):
        return outcome  # stored for the record, never scored: a machine is not a person
    event_vars = {"kind": kind, **props}
    variables = condition_variables(contact, settings, now, event_vars)
    changes = engagement_changes(
        settings.scoring.engagement.rules,
        kind,
        props,
        variables,
        scored_objects=_scored_objects(session, contact.id),
        scored_today=_scored_today(session, project, contact, now),
    )
    changes = as_of(changes, event.occurred_at, now, settings.scoring.engagement)
    engagement = current_engagement(contact, settings, now)
    for change in changes:
        engagement += change.points
        session.add(
            ScoreChange(
                contact_id=contact.id,
                at=now,
                axis="engagement",
                points=change.points,
                value_after=engagement,
                rule=change.rule,
                event_id=event.id,
                object_key=change.object_key,
            )
        )
    if changes:
        contact.engagement, contact.engagement_at = engagement, now
        if sum(c.points for c in changes) > 0:
            contact.last_engaged_at = now
            _wake(session, contact.id, now)
    outcome.changes = changes
    if any(kind in w.waits_on for w in project.workflows.values()):
        wake_waits(session, contact.id, kind, now)
    _apply_stage_rules(session, project, contact, now, event_vars, event, outcome)
    _end_goals(session, project, contact, now, kind, outcome)
    if kind in settings.account_pause.events:
        _hold_account(session, project, contact, f"{contact.email} had {kind}", now)
    _enroll(session, project, contact, now, kind, outcome)
    if any(w.enter.segment for w in project.workflows.values()):
        # Segment entries (`enter: {segment: NAME}`) after each event of a person, through
        # the engine's one path for them (read in SQL after what was just written).
        from nurture.intake import change_people

        session.flush()
        _, entered = change_people(session, project, [address], now, lambda people, out: None)
        outcome.enrolled += entered.get(contact.id, [])
    return outcome


def _wake(session: Session, contact_id: int, now: datetime) -> None:
    """Real engagement brings back a person the sunset rule or a used-up track set aside."""
    session.execute(
        update(Enrollment)
        .where(Enrollment.contact_id == contact_id, Enrollment.status == WAITING)
        .values(status=ACTIVE, due_at=now, hold_reason=None)
    )


def wake_waits(session: Session, contact_id: int, kind: str, now: datetime) -> None:
    """The event a wait_until waits for came: plan the person's waiting enrollments now
    (their hold reason names the kind: nurture/core/engagement.py `waiting_reason`)."""
    session.execute(
        update(Enrollment)
        .where(
            Enrollment.contact_id == contact_id,
            Enrollment.status == ACTIVE,
            Enrollment.hold_reason.startswith(f"{WAITS_FOR} {kind} until ", autoescape=True),
        )
        .values(due_at=now)
    )


def _end_goals(
    session: Session, project: Project, contact: Contact, now: datetime, kind: str, outcome: Outcome
) -> None:
    for enrollment in _open_enrollments(session, contact.id):
        workflow = project.workflows.get(enrollment.workflow)
        if workflow is not None and kind in workflow.goals.events:
            _end(enrollment, COMPLETED, f"goal: {kind}", now, outcome)


def _scored_objects(session: Session, contact_id: int) -> set[tuple[str, str]]:
    rows = session.execute(
        select(ScoreChange.rule, ScoreChange.object_key).where(
            ScoreChange.contact_id == contact_id, ScoreChange.object_key.is_not(None)
        )
    )
    return {(rule, key) for rule, key in rows if key is not None}


def _scored_today(
    session: Session, project: Project, contact: Contact, now: datetime
) -> dict[str, int]:
    """Awards per rule since the start of the contact's local day."""
    local = now.astimezone(zone_of(contact, project.settings))
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    rows = session.execute(
        select(ScoreChange.rule, func.count())
        .where(
            ScoreChange.contact_id == contact.id,
            ScoreChange.axis == "engagement",
            ScoreChange.at >= midnight,
        )
        .group_by(ScoreChange.rule)
    )
    return {rule: count for rule, count in rows}


def _apply_stage_rules(
    session: Session,
    project: Project,
    contact: Contact,
    now: datetime,
    event_vars: dict[str, Any] | None,
    event: Event | None,
    outcome: Outcome,
    cause: str | None = None,
) -> None:
    settings = project.settings
    for _ in range(len(settings.stage_names)):
        variables = condition_variables(contact, settings, now, event_vars)
        kind = event_vars["kind"] if event_vars else None
        move = next_stage(settings.stages, settings.disqualify, contact.stage, variables, kind)
        if move is None:
            return
        if cause:
            move = Move(move.to_stage, f"{move.reason} ({cause})")
        _move(session, project, contact, move, now, event, outcome)


def _move(
    session: Session,
    project: Project,
    contact: Contact,
    move: Move,
    now: datetime,
    event: Event | None,
    outcome: Outcome,
) -> None:
    """Record the move and re-route the contact's enrollments in the same transaction."""
    session.add(
        StageMove(
            contact_id=contact.id,
            at=now,
            from_stage=contact.stage,
            to_stage=move.to_stage,
            reason=move.reason,
            event_id=event.id if event else None,
        )
    )
    settings = project.settings
    names = settings.stage_names
    upward = names.index(move.to_stage) > names.index(contact.stage)
    log.info(
        "contact %s: %s -> %s",
        contact.id,
        contact.stage,
        move.to_stage,
        extra={"contact_id": contact.id},
    )
    contact.stage, contact.stage_since = move.to_stage, now
    outcome.moves.append(move)
    phase = settings.phase_of(move.to_stage)
    session.execute(
        update(Message)
        .where(
            Message.contact_id == contact.id,
            Message.status == QUEUED,
            Message.phase != (phase or ""),
        )
        .values(status=CANCELLED, error=f"stage moved to {move.to_stage} before it went")
    )
    if move.to_stage in settings.account_pause.stages:
        _hold_account(session, project, contact, f"{contact.email} reached {move.to_stage}", now)
    handoff = settings.handoff
    handed_off = handoff is not None and upward and move.to_stage == handoff.stage
    if handed_off:
        hand_off(session, project, contact, move, now)
    if not upward and move.to_stage == settings.recycle_stage:
        _reopen(session, contact.id, now)
    for enrollment in _open_enrollments(session, contact.id):
        workflow = project.workflows.get(enrollment.workflow)
        if handed_off and handoff is not None and handoff.end_nurture:
            _end(enrollment, COMPLETED, "goal: handed off to sales", now, outcome)
        elif move.to_stage == DISQUALIFIED:
            _end(enrollment, EXITED, f"disqualified: {move.reason}", now, outcome)
        elif workflow is not None and move.to_stage in workflow.goals.stages:
            _end(enrollment, COMPLETED, f"goal: reached stage {move.to_stage}", now, outcome)
        elif enrollment.status != PAUSED:
            enrollment.status, enrollment.due_at, enrollment.hold_reason = ACTIVE, now, None


def _reopen(session: Session, contact_id: int, now: datetime) -> None:
    """A recycled person goes back into the nurture that their earlier progress ended."""
    session.execute(
        update(Enrollment)
        .where(Enrollment.contact_id == contact_id, Enrollment.status == COMPLETED)
        .values(status=ACTIVE, due_at=now, ended_at=None, end_reason=None, hold_reason=None)
    )


def _hold_account(
    session: Session, project: Project, contact: Contact, why: str, now: datetime
) -> None:
    """Hold the nurture of the other people of this contact's account for a while."""
    if not contact.account:
        return
    until = now + project.settings.account_pause.duration
    session.execute(
        update(Contact)
        .where(Contact.account == contact.account, Contact.id != contact.id)
        .values(held_until=until, hold_reason=f"account on hold until {until:%Y-%m-%d}: {why}")
    )


def _enroll(
    session: Session,
    project: Project,
    contact: Contact,
    now: datetime,
    kind: str | None,
    outcome: Outcome,
) -> None:
    """Enter every workflow whose entry rule the contact now meets, once per workflow."""
    settings = project.settings
    if settings.phase_of(contact.stage) is None:
        return
    if session.scalar(select(Suppression.id).where(Suppression.email == contact.email)) is not None:
        return
    already = {
        e.workflow: e
        for e in session.scalars(select(Enrollment).where(Enrollment.contact_id == contact.id))
    }
    variables = condition_variables(contact, settings, now)
    for workflow in project.workflows.values():
        if contact.stage in workflow.goals.stages:
            continue
        earlier = already.get(workflow.id)
        if earlier is not None and (
            earlier.status in OPEN_STATUSES
            or earlier.ended_at == now  # what ended it is not a new entry
            or not workflow.may_reenter(earlier.ended_at, now)
        ):
            continue
        entry = workflow.enter
        # Entering again takes a new reason to: an entry event, or a move into an entry stage.
        staged = contact.stage in entry.stages and (
            earlier is None or any(m.to_stage in entry.stages for m in outcome.moves)
        )
        if (
            staged
            or (kind is not None and kind in entry.events)
            or (entry.when is not None and expressions.evaluate(entry.when, variables))
        ):
            if earlier is not None:  # `reenter:` lets them in again: from the start
                earlier.status, earlier.places, earlier.positions = ACTIVE, {}, {}
                earlier.version, earlier.entered_at, earlier.due_at = None, now, now
                earlier.last_sent_at, earlier.hold_reason = None, None
                earlier.ended_at, earlier.end_reason = None, None
                outcome.enrolled.append(workflow.id)
                continue
            session.add(
                Enrollment(
                    workflow=workflow.id,
                    contact_id=contact.id,
                    status=ACTIVE,
                    positions={},
                    entered_at=now,
                    due_at=now,
                )
            )
            outcome.enrolled.append(workflow.id)
    session.flush()


def _end(enrollment: Enrollment, status: str, reason: str, now: datetime, outcome: Outcome) -> None:
    enrollment.status, enrollment.end_reason, enrollment.ended_at = status, reason, now
    enrollment.due_at = None
    outcome.ended.append(f"{enrollment.workflow}: {reason}")


def _open_enrollments(session: Session, contact_id: int) -> list[Enrollment]:
    return list(
        session.scalars(
            select(Enrollment).where(
                Enrollment.contact_id == contact_id, Enrollment.status.in_(OPEN_STATUSES)
            )
        )
    )
