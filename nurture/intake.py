"""Events in bulk, as the events API receives them: many events in one transaction.

Most events only add points: they are scored by the same pure rules as `record_event`, and
written with a few statements for the whole batch. An event that does more (moves a stage,
meets a goal, enters a workflow, suppresses, holds an account) goes through `record_event`
itself, in order, so the outcome is the same as recording the events one by one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Connection, Row, Table, bindparam, insert, select, text, tuple_, update
from sqlalchemy.orm import Session

from nurture import expressions
from nurture.config import SUPPRESSING_EVENTS
from nurture.contacts import condition_variables, current_engagement, profile, zone_of
from nurture.decisions import ACTIVE, WAITING
from nurture.feedback import lock_accounts, record_event, upsert_contact
from nurture.models import Contact, Enrollment, Event, ScoreChange, Suppression
from nurture.project import Project
from nurture.scoring import as_of, engagement_changes
from nurture.stages import next_stage

_CONTACTS = cast(Table, Contact.__table__)
_EVENTS = cast(Table, Event.__table__)
_SCORE_CHANGES = cast(Table, ScoreChange.__table__)


@dataclass(frozen=True)
class Incoming:
    email: str  # normalized
    kind: str
    occurred_at: datetime | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    client_event_id: str | None = None


@dataclass
class Recorded:
    event_id: int | None
    duplicate: bool
    stage: str


@dataclass
class _Person:
    """What scoring one more event of a contact needs, kept current across the batch."""

    id: int
    email: str
    timezone: str | None
    custom: dict[str, Any]
    stage: str
    stage_since: datetime
    fit: float
    engagement: float
    engagement_at: datetime
    fields: dict[str, Any]
    client_ids: dict[str, int] = field(default_factory=dict)
    scored: set[tuple[str, str]] = field(default_factory=set)
    awards: list[tuple[str, datetime]] = field(default_factory=list)
    enrolled: set[str] = field(default_factory=set)
    suppressed: bool = False


@dataclass
class _Pending:
    events: list[dict[str, Any]] = field(default_factory=list)
    changes: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # (event index, row)
    contacts: dict[int, dict[str, Any]] = field(default_factory=dict)
    wake: set[int] = field(default_factory=set)
    results: list[tuple[int, int]] = field(default_factory=list)  # (result index, event index)
    client_ids: list[tuple[_Person, str, int]] = field(default_factory=list)


def record_events(
    session: Session,
    project: Project,
    items: Sequence[Incoming],
    now: datetime,
    *,
    source: str = "api",
) -> list[Recorded]:
    """Record `items` in order, in the caller's transaction; contacts not known yet are
    created (with `source`). Returns one `Recorded` per item, in order.

    The contacts' rows stay locked to the end of the transaction (known ones in the order
    of their ids, new ones in the order of their addresses), so concurrent batches for one
    person go one after the other: a client event id is found by the second, an award
    counted once, an enrollment made once."""
    people = _load(session, project, items, now)
    new = [i for i in items if i.email not in people]
    for address in sorted({i.email for i in new}):
        upsert_contact(session, project, address, {}, now, on_create={"source": source})
    if new:
        session.flush()
        people.update(_load(session, project, new, now))
    special = _special_kinds(project)
    pending = _Pending()
    results: list[Recorded] = []
    for item in items:
        person = people.get(item.email)
        if person is None:  # recorded through record_event earlier in this batch
            _flush(session, pending, results)
            mine = [i for i in items if i.email == item.email]  # all kinds it may meet
            person = _load(session, project, mine, now)[item.email]
            people[item.email] = person
        if item.client_event_id is not None and item.client_event_id in person.client_ids:
            known_id = person.client_ids[item.client_event_id]
            if known_id < 0:  # recorded earlier in this batch, not written yet
                pending.results.append((len(results), -1 - known_id))
            results.append(Recorded(known_id, True, person.stage))
            continue
        plain = item.kind not in special and _score_plain(project, person, item, now, pending)
        if plain:
            pending.results.append((len(results), len(pending.events) - 1))
            results.append(Recorded(None, False, person.stage))
            continue
        _flush(session, pending, results)
        outcome = record_event(
            session,
            project,
            item.email,
            item.kind,
            now,
            occurred_at=item.occurred_at,
            properties=item.properties,
            client_event_id=item.client_event_id,
        )
        assert outcome.event is not None
        results.append(Recorded(outcome.event.id, outcome.duplicate, outcome.contact.stage))
        session.flush()
        del people[item.email]
    _flush(session, pending, results)
    return results


def _score_plain(
    project: Project, person: _Person, item: Incoming, now: datetime, pending: _Pending
) -> bool:
    """Score `item` for `person` into `pending` and say True, unless it does more than add
    points (then nothing is changed, and False)."""
    settings = project.settings
    props = item.properties
    event_row = {
        "contact_id": person.id,
        "kind": item.kind,
        "occurred_at": item.occurred_at or now,
        "recorded_at": now,
        "properties": props,
        "client_event_id": item.client_event_id,
        "message_id": None,
        "machine": str(props["machine"])[:40] if props.get("machine") else None,
    }
    if props.get("machine"):
        pending.events.append(event_row)
        return True
    event_vars = {"kind": item.kind, **props}
    variables = condition_variables(person, settings, now, event_vars, fields=person.fields)
    midnight = now.astimezone(zone_of(person, settings)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    today: dict[str, int] = defaultdict(int)
    for rule, at in person.awards:
        if at >= midnight:
            today[rule] += 1
    changes = engagement_changes(
        settings.scoring.engagement.rules,
        item.kind,
        props,
        variables,
        scored_objects=person.scored,
        scored_today=today,
    )
    changes = as_of(changes, item.occurred_at or now, now, settings.scoring.engagement)
    before = current_engagement(person, settings, now)
    engagement = before + sum(c.points for c in changes)
    after = {**variables, "engagement": engagement} if changes else variables
    if next_stage(settings.stages, settings.disqualify, person.stage, after, item.kind):
        return False
    if _would_enroll(project, person, after):
        return False
    pending.events.append(event_row)
    index = len(pending.events) - 1
    running = before
    for change in changes:
        running += change.points
        pending.changes.append(
            (
                index,
                {
                    "contact_id": person.id,
                    "at": now,
                    "axis": "engagement",
                    "points": change.points,
                    "value_after": running,
                    "rule": change.rule,
                    "object_key": change.object_key,
                },
            )
        )
        if change.object_key is not None:
            person.scored.add((change.rule, change.object_key))
        person.awards.append((change.rule, now))
    if changes:
        person.engagement, person.engagement_at = engagement, now
        row = pending.contacts.setdefault(person.id, {"b_id": person.id, "last_engaged_at": None})
        row.update(engagement=engagement, engagement_at=now)
        if sum(c.points for c in changes) > 0:
            row["last_engaged_at"] = now
            pending.wake.add(person.id)
    if item.client_event_id is not None:
        person.client_ids[item.client_event_id] = -1 - index  # its id, once written
        pending.client_ids.append((person, item.client_event_id, index))
    return True


def _would_enroll(project: Project, person: _Person, variables: dict[str, Any]) -> bool:
    if project.settings.phase_of(person.stage) is None or person.suppressed:
        return False
    for workflow in project.workflows.values():
        if workflow.id in person.enrolled or person.stage in workflow.goals.stages:
            continue
        entry = workflow.enter
        if entry.segment is not None:
            return True  # whether they are in it now is read in SQL, on the slow path
        if person.stage in entry.stages or (
            entry.when is not None and expressions.evaluate(entry.when, variables)
        ):
            return True
    return False


def _special_kinds(project: Project) -> frozenset[str]:
    """Kinds that may do more than add points, whatever the scores."""
    settings = project.settings
    kinds = set(SUPPRESSING_EVENTS) | set(settings.account_pause.events)
    for workflow in project.workflows.values():
        kinds |= set(workflow.goals.events) | set(workflow.enter.events) | workflow.waits_on
    return frozenset(kinds)


def _flush(session: Session, pending: _Pending, results: list[Recorded]) -> None:
    """Write what the plain events decided: events, ledger lines, contacts, wake-ups."""
    if not pending.events:
        return
    connection = session.connection()
    ids = _new_ids(connection, "events", len(pending.events))
    connection.execute(
        insert(_EVENTS), [{**row, "id": id_} for row, id_ in zip(pending.events, ids, strict=True)]
    )
    if pending.changes:
        connection.execute(
            insert(_SCORE_CHANGES),
            [{**row, "event_id": ids[index]} for index, row in pending.changes],
        )
    if pending.contacts:
        table = _CONTACTS
        rows = list(pending.contacts.values())
        with_last = [r for r in rows if r["last_engaged_at"] is not None]
        without = [
            {k: v for k, v in r.items() if k != "last_engaged_at"}
            for r in rows
            if r["last_engaged_at"] is None
        ]
        target = table.c.id == bindparam("b_id")
        if with_last:
            connection.execute(
                update(table)
                .where(target)
                .values(
                    engagement=bindparam("engagement"),
                    engagement_at=bindparam("engagement_at"),
                    last_engaged_at=bindparam("last_engaged_at"),
                ),
                with_last,
            )
        if without:
            connection.execute(
                update(table)
                .where(target)
                .values(
                    engagement=bindparam("engagement"), engagement_at=bindparam("engagement_at")
                ),
                without,
            )
    if pending.wake:
        now = pending.events[-1]["recorded_at"]
        connection.execute(
            update(Enrollment)
            .where(Enrollment.contact_id.in_(pending.wake), Enrollment.status == WAITING)
            .values(status=ACTIVE, due_at=now, hold_reason=None)
        )
    for result, index in pending.results:
        results[result].event_id = ids[index]
    for person, client_id, index in pending.client_ids:
        person.client_ids[client_id] = ids[index]
    session.expire_all()  # ORM objects loaded before these writes are stale now
    pending.events, pending.changes, pending.results, pending.client_ids = [], [], [], []
    pending.contacts, pending.wake = {}, set()


def _new_ids(connection: Connection, table: str, count: int) -> list[int]:
    """`count` fresh ids for `table`, so rows and the rows that point to them go in two
    statements. SQLite: after the largest id (the caller holds the write lock, BEGIN
    IMMEDIATE); PostgreSQL: from the table's sequence."""
    if connection.dialect.name == "sqlite":
        top = connection.scalar(text(f"SELECT COALESCE(MAX(id), 0) FROM {table}")) or 0
        return list(range(top + 1, top + 1 + count))
    query = text("SELECT nextval(pg_get_serial_sequence(:table, 'id')) FROM generate_series(1, :n)")
    return list(connection.scalars(query, {"table": table, "n": count}))


def _load(
    session: Session, project: Project, items: Iterable[Incoming], now: datetime
) -> dict[str, _Person]:
    """The people behind `items`, with what scoring these events needs, in a few queries:
    only the client ids, scored objects and awards that these kinds of events can meet."""
    settings = project.settings
    items = list(items)
    addresses = {i.email for i in items}
    lock_accounts(
        session, session.scalars(select(Contact.account).where(Contact.email.in_(addresses)))
    )
    connection = session.connection()
    rows: list[Row[Any]] = list(
        connection.execute(
            select(*_CONTACTS.columns)
            .where(_CONTACTS.c.email.in_(addresses))
            .order_by(_CONTACTS.c.id)
            .with_for_update()
        )
    )
    people = {
        row.email: _Person(
            id=row.id,
            email=row.email,
            timezone=row.timezone,
            custom=row.custom or {},
            stage=row.stage,
            stage_since=row.stage_since,
            fit=row.fit,
            engagement=row.engagement,
            engagement_at=row.engagement_at,
            fields=profile(row, settings),
        )
        for row in rows
    }
    by_id = {p.id: p for p in people.values()}
    ids = list(by_id)
    client_ids = {
        (people[i.email].id, i.client_event_id)
        for i in items
        if i.client_event_id is not None and i.email in people
    }
    if client_ids:
        for contact_id, client_id, event_id in connection.execute(
            select(_EVENTS.c.contact_id, _EVENTS.c.client_event_id, _EVENTS.c.id).where(
                tuple_(_EVENTS.c.contact_id, _EVENTS.c.client_event_id).in_(client_ids)
            )
        ):
            by_id[contact_id].client_ids[client_id] = event_id
    kinds = {i.kind for i in items}
    rules = [rule for rule in settings.scoring.engagement.rules if rule.event in kinds]
    once = {rule.name for rule in rules if rule.once_per}
    if once:
        for contact_id, rule_name, key in connection.execute(
            select(
                _SCORE_CHANGES.c.contact_id, _SCORE_CHANGES.c.rule, _SCORE_CHANGES.c.object_key
            ).where(
                _SCORE_CHANGES.c.contact_id.in_(ids),
                _SCORE_CHANGES.c.rule.in_(once),
                _SCORE_CHANGES.c.object_key.is_not(None),
            )
        ):
            by_id[contact_id].scored.add((rule_name, key))
    capped = {rule.name for rule in rules if rule.max_per_day}
    if capped:
        for contact_id, rule_name, at in connection.execute(
            select(_SCORE_CHANGES.c.contact_id, _SCORE_CHANGES.c.rule, _SCORE_CHANGES.c.at).where(
                _SCORE_CHANGES.c.contact_id.in_(ids),
                _SCORE_CHANGES.c.rule.in_(capped),
                _SCORE_CHANGES.c.at >= now - timedelta(days=2),
            )
        ):
            by_id[contact_id].awards.append((rule_name, at))
    for contact_id, workflow in connection.execute(
        select(Enrollment.contact_id, Enrollment.workflow).where(Enrollment.contact_id.in_(ids))
    ):
        by_id[contact_id].enrolled.add(workflow)
    for email in connection.scalars(
        select(Suppression.email).where(Suppression.email.in_(list(people)))
    ):
        people[email].suppressed = True
    return people
