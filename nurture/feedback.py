"""Contacts, events, moves by hand, sales outcomes and provider feedback, in the caller's
session and transaction: an event, its score changes, its stage move and the re-routed
enrollments commit together or not at all. Events go through the event pipeline
(nurture/intake.py, a batch of one); the rest apply the same rules (nurture/core/eventrules.py)
through its writer (`intake.change_people`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from hashlib import blake2b
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from nurture.config import FIRST_STAGE, CapsOverride
from nurture.contacts import (
    clean_profile,
    condition_variables,
    current_engagement,
    default_account,
    normalize_email,
)
from nurture.core.decisions import ACTIVE, PAUSED
from nurture.core.eventrules import Decided, Decision, Person, Rules
from nurture.core.scoring import Change, fit_score
from nurture.core.stages import Move
from nurture.core.words import counted
from nurture.errors import InvalidValue
from nurture.models import (
    Contact,
    Enrollment,
    Event,
    Handoff,
    ProviderEvent,
    StageMove,
    Suppression,
)
from nurture.notices import queue_notice
from nurture.project import Project
from nurture.providers import Feedback

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
    held_out: list[str] = field(default_factory=list)
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
    in one order. An event may hold the other people of its account (eventrules `_hold`), so
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
    stage_reason: str = "set by hand or import",
    consent_source: str | None = None,
    on_create: Mapping[str, Any] | None = None,
) -> Outcome:
    """Create or update a contact, rescore its fit, and apply the stage rules.

    A `stage` given is a stage set by hand (an import, the API, `nurture contact add`),
    except the first stage of nurture given to a new contact (where they start), recorded
    `by_hand` with `stage_reason` as `move_stage` records it: it holds against the
    score rules until an event makes the scores cross a threshold again (nurture/core/stages.py).

    `on_create` holds fields set only if this call creates the contact (its `source`, say).
    Safe under concurrency: of simultaneous calls for a new address one creates the contact
    (`Outcome.created`), the others update it after, one at a time (see `lock_contact`).
    """
    settings = project.settings
    address = normalize_email(email)
    profile, custom = clean_profile(dict(fields), settings.custom_fields)
    first_profile, first_custom = clean_profile(dict(on_create or {}), settings.custom_fields)
    if stage is not None and stage not in settings.stage_names:
        raise InvalidValue(
            "stage", f"unknown stage {stage!r}; stages are {', '.join(settings.stage_names)}"
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

    def work(person: Person, rules: Rules) -> None:
        rules.rescore_fit(person, None)
        if stage is not None and stage != person.stage:
            # Giving a new contact the first stage of nurture says where they start, not a
            # stage to hold against the scores: the rules may move them on at once.
            starting = person.stage == FIRST_STAGE and stage == project.settings.stages[0].name
            rules.move(person, Move(stage, stage_reason), by_hand=not starting)
        rules.stage_rules(person)
        rules.enter(person)

    return _change(session, project, contact, now, work, outcome)


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
    """Record one event of a known contact: the event pipeline (nurture/intake.py) with a
    batch of one. Raises ValueError for an unknown kind, UnknownContact for an unknown
    address."""
    from nurture.intake import Incoming, record_batch  # the pipeline is built on this module

    settings = project.settings
    if kind not in settings.event_kinds:
        raise InvalidValue(
            "kind", f"unknown event {kind!r}; known: {', '.join(sorted(settings.event_kinds))}"
        )
    item = Incoming(
        normalize_email(email),
        kind,
        occurred_at,
        dict(properties or {}),
        client_event_id,
        message_id,
    )
    [decision], ids = record_batch(session, project, [item], now, source=None)
    contact = session.get(Contact, decision.person.id, populate_existing=True)
    assert contact is not None
    event_id = decision.stored_id if decision.event is None else ids[decision.event]
    return Outcome(
        contact,
        session.get(Event, event_id),
        changes=decision.changes,
        moves=decision.moves,
        enrolled=decision.enrolled,
        held_out=decision.held_out,
        ended=decision.ended,
        duplicate=decision.duplicate,
    )


def move_stage(
    session: Session,
    project: Project,
    email: str,
    stage: str,
    reason: str,
    now: datetime,
    *,
    by_hand: bool = True,
) -> Outcome:
    """A move made by a person (sales recycles a lead, say): any direction, with its reason,
    recorded `by_hand` (the stage then holds against the score rules until the scores cross
    a threshold again: nurture/core/stages.py). A workflow's move_stage action is not by hand."""
    if stage not in project.settings.stage_names:
        raise InvalidValue("stage", f"unknown stage {stage!r}")
    if not reason.strip():
        raise InvalidValue("reason", "say why the stage changes")
    contact = session.scalar(select(Contact).where(Contact.email == normalize_email(email)))
    if contact is None:
        raise UnknownContact(f"no contact {email}")

    def work(person: Person, rules: Rules) -> None:
        if stage != person.stage:
            rules.move(person, Move(stage, reason), by_hand=by_hand)
            rules.enter(person)

    return _change(session, project, contact, now, work)


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
        raise InvalidValue(field, f"{first['msg'].removeprefix('Value error, ')}") from None
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
    variables = condition_variables(contact, project.settings, now)
    if fit_score(project.settings.scoring.fit, variables)[0] == contact.fit:
        return Outcome(contact)  # the common case: nothing to load, nothing to write

    def work(person: Person, rules: Rules) -> None:
        if rules.rescore_fit(person, cause):
            rules.stage_rules(person, cause)
            rules.enter(person)

    return _change(session, project, contact, now, work)


def sales_outcome(
    session: Session,
    project: Project,
    email: str,
    accepted: bool,
    reason: str,
    now: datetime,
) -> Outcome:
    """Sales accepts a handed-off lead (it is being worked) or rejects it (recycled).
    Refused, with nothing written, for someone never handed to sales."""
    settings = project.settings
    if settings.handoff is None:
        raise InvalidValue("handoff", "no hand-off is configured in nurture.yaml")
    if not accepted and not reason.strip():
        raise InvalidValue("reason", "say why sales rejects the lead")
    address = normalize_email(email)
    known = session.scalar(select(Contact.id).where(Contact.email == address))
    if known is not None and not session.scalar(
        select(func.count()).select_from(Handoff).where(Handoff.contact_id == known)
    ):
        raise InvalidValue(
            "outcome",
            f"{address} was never handed to sales (no hand-off recorded; it happens "
            f"at stage {settings.handoff.stage}); nothing recorded",
        )
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
        event_id = outcome.event.id if outcome.event else None

        def work(person: Person, rules: Rules) -> None:
            rules.move(person, Move(recycle, f"rejected by sales: {reason}"), event_id)
            rules.enter(person)

        return _change(session, project, contact, now, work, outcome)
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
    days = handoff.stale_after.days
    why = f"stale {handoff.stage}: not worked by sales within {counted(days, 'day')}"
    for row, contact in stale:
        row.outcome, row.outcome_at = "stale", now
        if contact.stage != handoff.stage:
            row.outcome_reason = f"contact moved on to {contact.stage}"
            continue
        row.outcome_reason = f"not worked by sales within {counted(days, 'day')}"

        def work(person: Person, rules: Rules) -> None:
            rules.move(person, Move(recycle, why))
            rules.enter(person)

        _change(session, project, contact, now, work)
    return len(stale)


def hand_off(
    session: Session,
    project: Project,
    contact: Contact,
    move: Move,
    now: datetime,
    engagement: float | None = None,
) -> None:
    """Queue the webhook and the note to the owner; both leave after this transaction.
    `engagement`: the contact's at the move (by default, as stored now)."""
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
        if engagement is None:
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


def _change(
    session: Session,
    project: Project,
    contact: Contact,
    now: datetime,
    work: Callable[[Person, Rules], None],
    outcome: Outcome | None = None,
) -> Outcome:
    """Run `work` on `contact` through the event pipeline's rules and writer
    (nurture/intake.py `change_people`); the outcome, with what it moved, entered and ended."""
    from nurture.intake import change_people  # the pipeline is built on this module

    address = contact.email
    done: list[Decision] = []

    def run(people: dict[str, Person], decided: Decided) -> None:
        rules = Rules(project.settings, project.workflows, now, decided)
        person = people[address]
        work(person, rules)
        done.append(rules.decision(person))

    people, entered = change_people(session, project, [address], now, run)
    outcome = outcome or Outcome(contact)
    outcome.moves += done[0].moves
    outcome.enrolled += done[0].enrolled + entered.get(people[address].id, [])
    outcome.held_out += done[0].held_out
    outcome.ended += done[0].ended
    return outcome
