"""Contacts and events in, scores, stage moves and enrollments out: the shell around scoring.

Every function here works inside the caller's session and transaction, so an event, its
score changes, its stage move and the re-routed enrollments commit together or not at all.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from hashlib import blake2b
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from nurture import expressions
from nurture.config import DISQUALIFIED, FIRST_STAGE, SUPPRESSING_EVENTS, CapsOverride
from nurture.contacts import (
    clean_profile,
    condition_variables,
    current_engagement,
    default_account,
    normalize_email,
    zone_of,
)
from nurture.decisions import ACTIVE, COMPLETED, EXITED, PAUSED, WAITING
from nurture.engagement import WAITS_FOR
from nurture.models import (
    CANCELLED,
    QUEUED,
    Contact,
    Enrollment,
    Event,
    Handoff,
    Message,
    ProviderEvent,
    ScoreChange,
    StageMove,
    Suppression,
)
from nurture.notices import queue_notice
from nurture.project import Project
from nurture.providers import Feedback
from nurture.scoring import Change, as_of, engagement_changes, fit_score
from nurture.segments import audience, holds
from nurture.stages import Move, next_stage

log = logging.getLogger(__name__)
OPEN_STATUSES = (ACTIVE, WAITING, PAUSED)
#: Hand-off webhook states: pending (to post), delivered, failed (gave up), off (no webhook).
PENDING, DELIVERED, GAVE_UP, OFF = "pending", "delivered", "failed", "off"


class UnknownContact(LookupError):
    pass


@dataclass
class Outcome:
    """What recording something changed, for callers to report."""

    contact: Contact
    event: Event | None = None
    changes: list[Change] = field(default_factory=list)
    moves: list[Move] = field(default_factory=list)
    enrolled: list[str] = field(default_factory=list)
    ended: list[str] = field(default_factory=list)
    duplicate: bool = False
    created: bool = False


def insert_new(session: Session, model: Any, values: Mapping[str, Any], keys: list[str]) -> bool:
    """INSERT ... ON CONFLICT (`keys`) DO NOTHING: True when the row was written, False when
    one with the same keys exists. Concurrent requests cannot both write it, and none fails:
    on PostgreSQL the loser waits for the winner's commit, then writes nothing."""
    dialect = session.get_bind().dialect.name
    build = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = build(model).values(**values).on_conflict_do_nothing(index_elements=keys)
    return session.execute(statement.returning(model.id)).first() is not None


def lock_accounts(session: Session, accounts: Iterable[str | None]) -> None:
    """PostgreSQL: take each account's advisory lock, to the end of the transaction, always
    in one order. An event may hold the other people of its account (`_hold_account`), so
    two people of one account recorded at once would each wait for the other's row; with
    the account taken before the person, they go one after the other instead."""
    if session.get_bind().dialect.name != "postgresql":
        return
    keys = {
        int.from_bytes(blake2b(a.encode(), digest_size=8).digest(), "big", signed=True)
        for a in accounts
        if a
    }
    for key in sorted(keys):
        session.execute(select(func.pg_advisory_xact_lock(key)))


def lock_contact(session: Session, address: str) -> Contact | None:
    """The contact of a normalized address, its row locked (FOR UPDATE on PostgreSQL, after
    its account: `lock_accounts`; the write transaction holds the database on SQLite) and
    read afresh: whatever is read and written about this person from here on cannot
    interleave with another request's."""
    lock_accounts(
        session, [session.scalar(select(Contact.account).where(Contact.email == address))]
    )
    return session.scalar(
        select(Contact)
        .where(Contact.email == address)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


def upsert_contact(
    session: Session,
    project: Project,
    email: str,
    fields: Mapping[str, Any],
    now: datetime,
    *,
    stage: str | None = None,
    consent_source: str | None = None,
    on_create: Mapping[str, Any] | None = None,
) -> Outcome:
    """Create or update a contact, rescore its fit, and apply the stage rules.

    `on_create` holds fields set only if this call creates the contact (its `source`, say).
    Safe under concurrency: of simultaneous calls for a new address one creates the contact
    (`Outcome.created`), the others update it after, one at a time (see `lock_contact`).
    """
    settings = project.settings
    address = normalize_email(email)
    profile, custom = clean_profile(dict(fields), settings.custom_fields)
    first_profile, first_custom = clean_profile(dict(on_create or {}), settings.custom_fields)
    if stage is not None and stage not in settings.stage_names:
        raise ValueError(
            f"stage: unknown stage {stage!r}; stages are {', '.join(settings.stage_names)}"
        )
    created = insert_new(
        session,
        Contact,
        {
            "account": default_account(address),
            **first_profile,
            **profile,
            "email": address,
            "custom": {**first_custom, **custom},
            "stage": FIRST_STAGE,
            "stage_since": now,
            "fit": 0.0,
            "engagement": 0.0,
            "engagement_at": now,
            "created_at": now,
            "paused": False,
        },
        ["email"],
    )
    contact = lock_contact(session, address)
    assert contact is not None
    if created:
        session.add(
            StageMove(
                contact_id=contact.id,
                at=now,
                from_stage=None,
                to_stage=FIRST_STAGE,
                reason="created",
            )
        )
    else:
        for name, value in profile.items():
            setattr(contact, name, value)
        if custom:
            contact.custom = {**(contact.custom or {}), **custom}
    if consent_source:
        contact.consent_source, contact.consent_at = consent_source, now
    outcome = Outcome(contact, created=created)
    _rescore_fit(session, project, contact, now)
    if stage is not None and stage != contact.stage:
        _move(session, project, contact, Move(stage, "set by hand or import"), now, None, outcome)
    _apply_stage_rules(session, project, contact, now, None, None, outcome)
    _enroll(session, project, contact, now, None, outcome)
    return outcome


def record_event(
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
    event = Event(
        contact_id=contact.id,
        kind=kind,
        occurred_at=occurred_at or now,
        recorded_at=now,
        properties=props,
        client_event_id=client_event_id,
        message_id=message_id,
        machine=str(props["machine"])[:40] if props.get("machine") else None,
    )
    session.add(event)
    session.flush()
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
    return outcome


def move_stage(
    session: Session, project: Project, email: str, stage: str, reason: str, now: datetime
) -> Outcome:
    """A move made by a person (sales recycles a lead, say): any direction, with its reason."""
    if stage not in project.settings.stage_names:
        raise ValueError(f"stage: unknown stage {stage!r}")
    if not reason.strip():
        raise ValueError("reason: say why the stage changes")
    contact = session.scalar(select(Contact).where(Contact.email == normalize_email(email)))
    if contact is None:
        raise UnknownContact(f"no contact {email}")
    outcome = Outcome(contact)
    if stage != contact.stage:
        _move(session, project, contact, Move(stage, reason), now, None, outcome)
        _enroll(session, project, contact, now, None, outcome)
    return outcome


def set_paused(
    session: Session, project: Project, email: str, paused: bool, who: str, now: datetime
) -> Outcome:
    """Pause (or resume) all nurture of one person, recorded as a `paused`/`resumed` event."""
    outcome = record_event(
        session, project, email, "paused" if paused else "resumed", now, properties={"by": who}
    )
    contact = outcome.contact
    contact.paused = paused
    if not paused:
        session.execute(
            update(Enrollment)
            .where(Enrollment.contact_id == contact.id, Enrollment.status == PAUSED)
            .values(status=ACTIVE, due_at=now, hold_reason=None)
        )
    return outcome


def set_caps(
    session: Session, project: Project, email: str, values: Mapping[str, Any], now: datetime
) -> Contact:
    """A person's own caps ("at most one a week"), laid over the project's and workflows'.

    Raises ValueError naming the field when a value, or the caps it makes, is not valid.
    """
    contact = session.scalar(select(Contact).where(Contact.email == normalize_email(email)))
    if contact is None:
        raise UnknownContact(f"no contact {email}")
    merged = {**(contact.caps or {}), **values}
    try:
        override = CapsOverride.model_validate(merged)
        for workflow in [None, *project.workflows.values()]:
            project.settings.caps.merged(workflow.caps if workflow else None, override)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(part) for part in first["loc"]) or "caps"
        raise ValueError(f"{field}: {first['msg'].removeprefix('Value error, ')}") from None
    contact.caps = override.model_dump(mode="json", exclude_unset=True) or None
    return contact


def apply_provider_feedback(
    session: Session, project: Project, provider: str, item: Feedback, now: datetime
) -> bool:
    """Apply one provider event once; False when it was applied before (a replay).

    Hard bounces, complaints and provider unsubscribes suppress at once; soft bounces are
    counted and suppress at `delivery.soft_bounce_limit`. An address nurture does not know is
    suppressed all the same, so a later import cannot write to it.
    """
    address = normalize_email(item.email)
    first = insert_new(
        session,
        ProviderEvent,
        {
            "provider": provider,
            "event_id": item.event_id,
            "kind": item.kind,
            "email": address,
            "at": now,
        },
        ["provider", "event_id"],
    )
    if not first:
        return False
    source = f"{provider}: {item.detail}"[:200]
    known = session.scalar(select(Contact.id).where(Contact.email == address)) is not None
    if known:
        record_event(
            session,
            project,
            address,
            item.kind,
            now,
            properties={"provider": provider, "detail": item.detail},
        )
    if item.kind == "soft_bounced":
        count = (
            session.scalar(
                select(func.count())
                .select_from(ProviderEvent)
                .where(ProviderEvent.email == address, ProviderEvent.kind == "soft_bounced")
            )
            or 0
        )
        if count >= project.settings.delivery.soft_bounce_limit:
            suppress(session, address, "soft_bounced", f"{count} soft bounces; last {source}", now)
    elif not known:
        suppress(session, address, item.kind, source, now)
    return True


def suppress(session: Session, email: str, reason: str, source: str | None, now: datetime) -> None:
    address = normalize_email(email)
    values = {"email": address, "reason": reason, "source": source, "at": now}
    insert_new(session, Suppression, values, ["email"])


def rescore_fit(
    session: Session, project: Project, contact: Contact, now: datetime, cause: str
) -> Outcome:
    """`contact`'s fit under the current rules after `cause` (the fit rules changed): the
    ledger line and any stage move that follows name the cause; enrollments follow."""
    outcome = Outcome(contact)
    before = contact.fit
    _rescore_fit(session, project, contact, now, cause)
    if contact.fit != before:
        _apply_stage_rules(session, project, contact, now, None, None, outcome, cause)
        _enroll(session, project, contact, now, None, outcome)
    return outcome


def _rescore_fit(
    session: Session, project: Project, contact: Contact, now: datetime, cause: str | None = None
) -> None:
    variables = condition_variables(contact, project.settings, now)
    fit, reasons = fit_score(project.settings.scoring.fit, variables)
    if fit != contact.fit:
        rule = "; ".join(reasons) or "no fit rule matches"
        session.add(
            ScoreChange(
                contact_id=contact.id,
                at=now,
                axis="fit",
                points=fit - contact.fit,
                value_after=fit,
                rule=f"{cause}: {rule}"[:300] if cause else rule,
            )
        )
        contact.fit = fit


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
        _hand_off(session, project, contact, move, now)
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


def sales_outcome(
    session: Session,
    project: Project,
    email: str,
    accepted: bool,
    reason: str,
    now: datetime,
) -> Outcome:
    """Sales accepts a handed-off lead (it is being worked) or rejects it (recycled)."""
    settings = project.settings
    if settings.handoff is None:
        raise ValueError("handoff: no hand-off is configured in nurture.yaml")
    if not accepted and not reason.strip():
        raise ValueError("reason: say why sales rejects the lead")
    kind = "sales_accepted" if accepted else "sales_rejected"
    outcome = record_event(session, project, email, kind, now, properties={"reason": reason})
    contact = outcome.contact
    open_handoff = session.scalar(
        select(Handoff)
        .where(Handoff.contact_id == contact.id, Handoff.outcome.is_(None))
        .order_by(Handoff.id.desc())
    )
    if open_handoff is not None:
        open_handoff.outcome = "accepted" if accepted else "rejected"
        open_handoff.outcome_at, open_handoff.outcome_reason = now, reason or None
    recycle = settings.recycle_stage
    if not accepted and recycle is not None and contact.stage == settings.handoff.stage:
        move = Move(recycle, f"rejected by sales: {reason}")
        _move(session, project, contact, move, now, outcome.event, outcome)
        _enroll(session, project, contact, now, None, outcome)
    return outcome


def recycle_stale(session: Session, project: Project, now: datetime, limit: int = 500) -> int:
    """Recycle hand-offs sales neither accepted nor rejected within `stale_after`."""
    handoff = project.settings.handoff
    recycle = project.settings.recycle_stage
    if handoff is None or handoff.stale_after is None or recycle is None:
        return 0
    stale = session.execute(
        select(Handoff, Contact)
        .join(Contact, Contact.id == Handoff.contact_id)
        .where(Handoff.outcome.is_(None), Handoff.created_at <= now - handoff.stale_after)
        .order_by(Handoff.created_at)
        .limit(limit)
    ).all()
    for row, contact in stale:
        days = handoff.stale_after.days
        row.outcome, row.outcome_at = "stale", now
        if contact.stage != handoff.stage:
            row.outcome_reason = f"contact moved on to {contact.stage}"
            continue
        row.outcome_reason = f"not worked by sales within {days} days"
        outcome = Outcome(contact)
        move = Move(recycle, f"stale {handoff.stage}: not worked by sales within {days} days")
        _move(session, project, contact, move, now, None, outcome)
        _enroll(session, project, contact, now, None, outcome)
    return len(stale)


def _hand_off(
    session: Session, project: Project, contact: Contact, move: Move, now: datetime
) -> None:
    """Queue the webhook and the note to the owner; both leave after this transaction."""
    handoff = project.settings.handoff
    assert handoff is not None
    session.flush()
    session.add(
        Handoff(
            contact_id=contact.id,
            stage=move.to_stage,
            reason=move.reason,
            created_at=now,
            status=PENDING if handoff.webhook_url else OFF,
            attempts=0,
            next_attempt_at=now if handoff.webhook_url else None,
        )
    )
    owner = contact.owner or handoff.notify
    if handoff.notify_owner and owner:
        name = " ".join(p for p in (contact.first_name, contact.last_name) if p) or contact.email
        company = f" ({contact.company})" if contact.company else ""
        after = (
            "Marketing's nurture for this person has ended."
            if handoff.end_nurture
            else "Marketing keeps sending decision content until you accept the lead."
        )
        engagement = current_engagement(contact, project.settings, now)
        queue_notice(
            session,
            "handoff",
            owner,
            f"New {move.to_stage.upper()}: {name}{company}",
            f"{name}{company} <{contact.email}> reached {move.to_stage}.\n\n"
            f"Why: {move.reason}\n"
            f"Fit {contact.fit:g}, engagement {engagement:.0f}.\n\n{after}\n",
            now,
            contact.id,
        )


def _reopen(session: Session, contact_id: int, now: datetime) -> None:
    """A recycled person goes back into the nurture that their earlier progress ended."""
    session.execute(
        update(Enrollment)
        .where(Enrollment.contact_id == contact_id, Enrollment.status == COMPLETED)
        .values(status=ACTIVE, due_at=now, ended_at=None, end_reason=None, hold_reason=None)
    )


def _wake(session: Session, contact_id: int, now: datetime) -> None:
    """Real engagement brings back a person the sunset rule or a used-up track set aside."""
    session.execute(
        update(Enrollment)
        .where(Enrollment.contact_id == contact_id, Enrollment.status == WAITING)
        .values(status=ACTIVE, due_at=now, hold_reason=None)
    )


def wake_waits(session: Session, contact_id: int, kind: str, now: datetime) -> None:
    """The event a wait_until waits for came: plan the person's waiting enrollments now
    (their hold reason names the kind: nurture/engagement.py `waiting_reason`)."""
    session.execute(
        update(Enrollment)
        .where(
            Enrollment.contact_id == contact_id,
            Enrollment.status == ACTIVE,
            Enrollment.hold_reason.startswith(f"{WAITS_FOR} {kind} until ", autoescape=True),
        )
        .values(due_at=now)
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


def _end_goals(
    session: Session, project: Project, contact: Contact, now: datetime, kind: str, outcome: Outcome
) -> None:
    for enrollment in _open_enrollments(session, contact.id):
        workflow = project.workflows.get(enrollment.workflow)
        if workflow is not None and kind in workflow.goals.events:
            _end(enrollment, COMPLETED, f"goal: {kind}", now, outcome)


def _enroll(
    session: Session,
    project: Project,
    contact: Contact,
    now: datetime,
    kind: str | None,
    outcome: Outcome,
    *,
    only: str | None = None,
    admitted: bool = False,
) -> None:
    """Enter every workflow whose entry rule the contact now meets, once per workflow.

    `only`: just that workflow. `admitted`: the caller found the contact in the audience it
    enrolls (`nurture enroll WORKFLOW --segment NAME`): `only` is entered without reading
    its entry rule; every other check (a stage with nurture, suppression, not already in
    it, its reenter rule, its goal stages) still applies."""
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
        if contact.stage in workflow.goals.stages or only not in (None, workflow.id):
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
            admitted
            or staged
            or (kind is not None and kind in entry.events)
            or (entry.when is not None and expressions.evaluate(entry.when, variables))
            or (
                entry.segment is not None
                and _in_segment(session, project, entry.segment, contact, now)
            )
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


def _in_segment(
    session: Session, project: Project, name: str, contact: Contact, now: datetime
) -> bool:
    """Whether the contact is in the segment now (its SQL clause, as counts read it)."""
    segment = project.segments.get(name)
    if segment is None:
        return False
    session.flush()  # the clause reads the rows: what this call changed must be in them
    found = audience(session, project.settings, segment, project.content_ids(), now)
    return holds(session, found, contact.id)


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
