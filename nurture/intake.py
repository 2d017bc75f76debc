"""The event pipeline: load the people of a batch, decide (nurture/core/eventrules.py), write.

One path for one event and for a batch of thousands: the CLI, forms, imports, provider
feedback, the simulator and the events API all come here (`feedback.record_event` is a
batch of one). Reads are a few set-based statements for the whole batch; the decision is
pure; the writes are a few executemany statements.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    Connection,
    Engine,
    Row,
    Table,
    bindparam,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from nurture import eventstore
from nurture.config import PROFILE_FIELDS
from nurture.contacts import profile
from nurture.core.eventrules import (
    Decided,
    Decision,
    Enrolled,
    Incoming,
    Person,
    Rules,
    decide,
    may_enter,
)
from nurture.db import write_retrying
from nurture.feedback import UnknownContact, hand_off, lock_accounts, upsert_contact
from nurture.models import (
    CANCELLED,
    QUEUED,
    Contact,
    Enrollment,
    Message,
    ScoreChange,
    StageMove,
    Suppression,
    latest_stage_moves,
)
from nurture.project import Project
from nurture.segments import audience

__all__ = [
    "Incoming",
    "Recorded",
    "change_people",
    "record_batch",
    "record_events",
    "record_together",
]
log = logging.getLogger(__name__)

_CONTACTS = cast(Table, Contact.__table__)
_SCORE_CHANGES = cast(Table, ScoreChange.__table__)
_ENROLLMENTS = cast(Table, Enrollment.__table__)
#: What the rules read of a contact: the profile, the scores, the stage (not the other
#: dates, whose conversion is a good part of reading a row).
_PERSON_COLUMNS = [
    _CONTACTS.c[name]
    for name in (
        *(f for f in PROFILE_FIELDS if f != "email_domain"),
        "id",
        "custom",
        "stage",
        "stage_since",
        "fit",
        "engagement",
        "engagement_at",
    )
]

#: Whether the contact's address is suppressed, read with the row.
_SUPPRESSED = (
    select(Suppression.id)
    .where(Suppression.email == _CONTACTS.c.email)
    .exists()
    .label("suppressed")
)


@dataclass
class Recorded:
    event_id: int | None
    duplicate: bool
    stage: str


def record_events(
    session: Session,
    project: Project,
    items: Sequence[Incoming],
    now: datetime,
    *,
    source: str = "api",
) -> list[Recorded]:
    """Record `items` in order, in the caller's transaction; contacts not known yet are
    created (with `source`). Returns one `Recorded` per item, in order."""
    decisions, ids = record_batch(session, project, items, now, source=source)
    return [
        Recorded(_event_id(d, ids), d.duplicate, d.stage)
        for d in decisions  # one per item
    ]


#: The most events one shared transaction of `record_together` records (a request larger
#: than this goes alone).
GROUP_LIMIT = 1000


@dataclass(eq=False)
class _Request:
    project: Project
    items: Sequence[Incoming]
    now: datetime
    woken: threading.Event = field(default_factory=threading.Event)
    leads: bool = False
    result: list[Recorded] | None = None
    error: Exception | None = None


@dataclass(eq=False)
class _Queue:
    lock: threading.Lock = field(default_factory=threading.Lock)
    waiting: list[_Request] = field(default_factory=list)
    led: bool = False  # a request is recording a group now


_QUEUES: weakref.WeakKeyDictionary[Engine, _Queue] = weakref.WeakKeyDictionary()
_QUEUES_LOCK = threading.Lock()


def record_together(
    engine: Engine, project: Project, items: Sequence[Incoming], now: datetime
) -> list[Recorded]:
    """`record_events` for one request of a server whose threads record events at once:
    requests that arrive while a transaction is being written wait and are recorded
    together, in order of arrival, in the next one (one commit for all; at most
    GROUP_LIMIT events). Returns after that transaction committed, as `record_events` in a
    transaction of its own would: what the caller answers is stored. When a shared
    transaction fails, each of its requests is recorded again on its own, so one request's
    fault fails that request only."""
    with _QUEUES_LOCK:
        queue = _QUEUES.setdefault(engine, _Queue())
    request = _Request(project, items, now)
    with queue.lock:
        queue.waiting.append(request)
        if not queue.led:
            queue.led = request.leads = True
    if not request.leads:
        request.woken.wait()  # recorded by a leader, or made the leader
    if request.leads:
        _lead(engine, queue)
    if request.error is not None:
        raise request.error
    assert request.result is not None
    return request.result


def _lead(engine: Engine, queue: _Queue) -> None:
    """Record the waiting requests (the leader's first) that fit in one group, wake them,
    and hand the lead to the next waiting request, if any."""
    with queue.lock:
        group, size = [queue.waiting[0]], len(queue.waiting[0].items)
        for request in queue.waiting[1:]:
            if request.project is not group[0].project or size + len(request.items) > GROUP_LIMIT:
                break
            group.append(request)
            size += len(request.items)
        del queue.waiting[: len(group)]
    try:
        _record_group(engine, group)
    finally:
        with queue.lock:
            if queue.waiting:
                queue.waiting[0].leads = True
                queue.waiting[0].woken.set()
            else:
                queue.led = False
        for request in group[1:]:
            if request.result is None and request.error is None:  # the leader was stopped
                request.error = RuntimeError("the events were not recorded")
            request.woken.set()


def _record_group(engine: Engine, group: list[_Request]) -> None:
    project = group[0].project
    items = [item for request in group for item in request.items]
    now = max(request.now for request in group)  # the clock goes forward: the latest
    try:
        results = write_retrying(engine, lambda s: record_events(s, project, items, now))
    except Exception as exc:
        if len(group) == 1:
            group[0].error = exc
            return
        for request in group:
            _record_group(engine, [request])
        return
    start = 0
    for request in group:
        request.result = results[start : start + len(request.items)]
        start += len(request.items)


def record_batch(
    session: Session,
    project: Project,
    items: Sequence[Incoming],
    now: datetime,
    *,
    source: str | None = "api",
) -> tuple[list[Decision], list[int]]:
    """Record `items`; the decisions, one per item, and the new events' ids. With `source`
    None an unknown address raises UnknownContact instead of creating the contact.

    The contacts' rows stay locked to the end of the transaction (their accounts first,
    then the rows in the order of their ids), so concurrent batches for one person go one
    after the other: a client event id is found by the second, an award counted once, an
    enrollment made once.

    With workflows entering by segment, a person's segment entry is decided after each of
    their events, as for events posted one by one: the batch is recorded in runs in which
    nobody has two events (in order), each run's segment entries before the next run."""
    if not any(w.enter.segment for w in project.workflows.values()):
        return _record_run(session, project, items, now, source)
    decisions: list[Decision] = []
    ids: list[int] = []
    for run in _runs(items):
        done, new_ids = _record_run(session, project, run, now, source)
        for decision in done:
            if decision.event is not None:
                decision.event += len(ids)
        decisions += done
        ids += new_ids
    return decisions, ids


def _runs(items: Sequence[Incoming]) -> Iterator[Sequence[Incoming]]:
    """`items` cut, in order, into runs in which no address comes twice."""
    start, seen = 0, set[str]()
    for index, item in enumerate(items):
        if item.email in seen:
            yield items[start:index]
            start, seen = index, set()
        seen.add(item.email)
    if start < len(items):
        yield items[start:]


def _record_run(
    session: Session,
    project: Project,
    items: Sequence[Incoming],
    now: datetime,
    source: str | None,
) -> tuple[list[Decision], list[int]]:
    session.flush()  # what the caller changed through the ORM, before reading around it
    people = _load(session, project, items, now)
    new = sorted({i.email for i in items} - set(people))
    if new and source is None:
        raise UnknownContact(f"no contact {new[0]}")
    for address in new:
        upsert_contact(session, project, address, {}, now, on_create={"source": source})
    if new:
        session.flush()
        people.update(_load(session, project, [i for i in items if i.email in new], now))
    decided = decide(project.settings, project.workflows, people, items, now)
    ids = _write(session, project, decided, people.values(), now)
    # Segment entries follow what an event of a person did: not a repeat, not a machine's.
    acting = {
        d.person.email
        for d, item in zip(decided.decisions, items, strict=True)
        if not d.duplicate and not item.properties.get("machine")
    }
    entered = enter_segments(session, project, {a: people[a] for a in acting}, now)
    for decision in reversed(decided.decisions):  # told with each person's last event
        decision.enrolled += entered.pop(decision.person.id, [])
    return decided.decisions, ids


def change_people(
    session: Session,
    project: Project,
    addresses: Iterable[str],
    now: datetime,
    work: Callable[[dict[str, Person], Decided], None],
    *,
    segments: bool = True,
) -> tuple[dict[str, Person], dict[int, list[str]]]:
    """What is not an event (a move by hand, a new fit, a profile edit): load the people of
    `addresses` (locked), let `work` decide with the rules of nurture/core/eventrules.py into a
    `Decided`, write it, then let them enter the workflows that enter by a segment they are
    now in (`segments`). The people, as they are now, and who entered which workflows by
    segment (by contact id)."""
    session.flush()
    people = _load(session, project, [], now, set(addresses))
    decided = Decided()
    work(people, decided)
    _write(session, project, decided, people.values(), now)
    entered = enter_segments(session, project, people, now) if segments else {}
    return people, entered


def enter_segments(
    session: Session, project: Project, people: Mapping[str, Person], now: datetime
) -> dict[int, list[str]]:
    """Workflows that enter by segment (`enter: {segment: NAME}`): whoever of `people` is in
    the segment now, read in SQL after what was just written (the segment's clause, as its
    counts read it), enters through the rules like any entry (eventrules.enter, admitted).
    Who entered what, by contact id."""
    entered: dict[int, list[str]] = {}
    by_segment = [w for w in project.workflows.values() if w.enter.segment is not None]
    if not by_segment or not people:
        return entered
    session.flush()
    for workflow in by_segment:
        segment = project.segments.get(workflow.enter.segment or "")
        if segment is None:
            continue
        candidates = [
            p.email for p in people.values() if may_enter(project.settings, workflow, p, now)
        ]
        if not candidates:
            continue
        found = audience(session, project.settings, segment, project.content_ids(), now)
        members = sorted(
            session.scalars(
                select(_CONTACTS.c.email).where(found.clause, _CONTACTS.c.email.in_(candidates))
            )
        )
        if members:
            for person_id, decision in enroll_people(
                session, project, members, workflow.id, now
            ).items():
                entered.setdefault(person_id, []).extend(decision.enrolled)
    return entered


def enroll_people(
    session: Session, project: Project, addresses: Sequence[str], workflow: str, now: datetime
) -> dict[int, Decision]:
    """Enter `addresses`, found in the audience `workflow` enters by, into it through the
    rules (every check but the entry rule applies); what it did to each person (`enrolled`,
    or `held_out` by the workflow's holdout), by id."""
    entered: dict[int, Decision] = {}

    def work(found: dict[str, Person], decided: Decided) -> None:
        rules = Rules(project.settings, project.workflows, now, decided)
        for address in addresses:
            person = found.get(address)
            if person is not None:
                rules.enter(person, only=workflow, admitted=True)
                entered[person.id] = rules.decision(person)

    change_people(session, project, addresses, now, work, segments=False)
    return entered


def _event_id(decision: Decision, ids: list[int]) -> int | None:
    return decision.stored_id if decision.event is None else ids[decision.event]


def _load(
    session: Session,
    project: Project,
    items: Iterable[Incoming],
    now: datetime,
    addresses: set[str] | None = None,
) -> dict[str, Person]:
    """The people behind `items` (or of `addresses`), locked, with what these events' rules
    need, in a few queries: only the client ids, scored objects and awards these kinds of
    events can meet."""
    settings = project.settings
    items = list(items)
    if addresses is None:
        addresses = {i.email for i in items}
    connection = session.connection()
    if connection.dialect.name == "postgresql":  # the only one with locks to take
        lock_accounts(
            session,
            connection.scalars(select(_CONTACTS.c.account).where(_CONTACTS.c.email.in_(addresses))),
        )
    rows: list[Row[Any]] = list(
        connection.execute(
            select(*_PERSON_COLUMNS, _SUPPRESSED)
            .where(_CONTACTS.c.email.in_(addresses))
            .order_by(_CONTACTS.c.id)
            .with_for_update()
        )
    )
    people = {
        row.email: Person(
            id=row.id,
            email=row.email,
            account=row.account,
            timezone=row.timezone,
            custom=row.custom or {},
            stage=row.stage,
            stage_since=row.stage_since,
            fit=row.fit,
            engagement=row.engagement,
            engagement_at=row.engagement_at,
            fields=profile(row, settings),
            suppressed=bool(row.suppressed),
        )
        for row in rows
    }
    by_id = {p.id: p for p in people.values()}
    ids = list(by_id)
    if not ids:
        return people
    for contact_id, by_hand, _ in connection.execute(latest_stage_moves(ids)):
        by_id[contact_id].stage_by_hand = by_hand  # whose current stage a person set
    pairs = sorted(
        {
            (people[i.email].id, i.client_event_id)
            for i in items
            if i.client_event_id is not None and i.email in people
        }
    )
    for contact_id, client_id, event_id in _stored_events(connection, pairs):
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
    if capped:  # a local day starts at most 14 hours before the UTC one
        for contact_id, rule_name, at in connection.execute(
            select(_SCORE_CHANGES.c.contact_id, _SCORE_CHANGES.c.rule, _SCORE_CHANGES.c.at).where(
                _SCORE_CHANGES.c.contact_id.in_(ids),
                _SCORE_CHANGES.c.axis == "engagement",
                _SCORE_CHANGES.c.rule.in_(capped),
                _SCORE_CHANGES.c.at >= now - timedelta(days=2),
            )
        ):
            by_id[contact_id].awards.append((rule_name, at))
    e = _ENROLLMENTS.c
    for row in connection.execute(
        select(e.id, e.contact_id, e.workflow, e.status, e.ended_at, e.hold_reason)
        .where(e.contact_id.in_(ids))
        .order_by(e.id)
    ):
        by_id[row.contact_id].enrollments[row.workflow] = Enrolled(
            row.id, row.workflow, row.status, row.ended_at, row.hold_reason
        )
    return people


#: Pairs looked up per statement by `_stored_events` (two parameters each).
_PAIRS_PER_STATEMENT = 400


def _stored_events(
    connection: Connection, pairs: Sequence[tuple[int, str]]
) -> Iterable[tuple[int, str, int]]:
    """The stored events (contact id, client id, id) with these (contact id, client event
    id) pairs: one look-up of the unique key per pair, whatever the size of the table. (Two
    IN lists probe every pair of their product, 250,000 for a batch of 500; IN over row
    values is a scan of the whole index on SQLite.) The pairs are a VALUES list joined to
    the events; CROSS JOIN makes SQLite loop over the pairs (PostgreSQL plans it as any
    join)."""
    mark = "?" if connection.dialect.paramstyle == "qmark" else "%s"
    for start in range(0, len(pairs), _PAIRS_PER_STATEMENT):
        chunk = pairs[start : start + _PAIRS_PER_STATEMENT]
        values = ", ".join([f"({mark}, {mark})"] * len(chunk))
        query = (  # the columns of a VALUES list are column1, column2 in both
            "SELECT events.contact_id, events.client_event_id, events.id "
            f"FROM (VALUES {values}) AS wanted CROSS JOIN events "
            "WHERE events.contact_id = wanted.column1 "
            "AND events.client_event_id = wanted.column2"
        )
        flat = tuple(value for pair in chunk for value in pair)
        found = connection.exec_driver_sql(query, flat)
        yield from cast(Iterable[tuple[int, str, int]], found)


def _write(
    session: Session,
    project: Project,
    decided: Decided,
    people: Iterable[Person],
    now: datetime,
) -> list[int]:
    """Write what `decide` decided, in a few statements; the new events' ids."""
    connection = session.connection()
    ids = eventstore.store(connection, decided.events)  # and the engagement summary
    if decided.suppressions:
        rows = [{**row, "source": f"event {ids[i]}"} for i, row in decided.suppressions]
        build = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
        connection.execute(
            build(Suppression).on_conflict_do_nothing(index_elements=["email"]), rows
        )
    if decided.score_changes:
        connection.execute(
            insert(_SCORE_CHANGES),
            [{**row, "event_id": _id(ids, i)} for i, row in decided.score_changes],
        )
    if decided.stage_moves:
        connection.execute(
            insert(StageMove),
            [{"event_id": _id(ids, i), **row} for i, row in decided.stage_moves],
        )
        for _, row in decided.stage_moves:
            log.info(
                "contact %s: %s -> %s",
                row["contact_id"],
                row["from_stage"],
                row["to_stage"],
                extra={"contact_id": row["contact_id"]},
            )
    if decided.cancels:
        connection.execute(
            update(Message)
            .where(
                Message.contact_id == bindparam("b_contact"),
                Message.status == QUEUED,
                Message.phase != bindparam("b_phase"),
            )
            .values(status=CANCELLED, error=bindparam("b_error")),
            decided.cancels,
        )
    if decided.holds:
        connection.execute(
            update(Contact)
            .where(Contact.account == bindparam("b_account"), Contact.id != bindparam("b_contact"))
            .values(held_until=bindparam("held_until"), hold_reason=bindparam("hold_reason")),
            decided.holds,
        )
    people = list(people)
    _update_by_id(connection, _CONTACTS, [(p.id, p.changed) for p in people if p.changed])
    new: list[dict[str, Any]] = []
    changed: list[tuple[int, dict[str, Any]]] = []
    for person in people:
        for enrollment in person.enrollments.values():
            if enrollment.id is None:
                new.append({**enrollment.changed, "workflow": enrollment.workflow})
                new[-1]["contact_id"] = person.id
            elif enrollment.changed:
                changed.append((enrollment.id, enrollment.changed))
    _update_by_id(connection, _ENROLLMENTS, changed)
    if new:
        connection.execute(insert(_ENROLLMENTS), new)
    for handoff in decided.handoffs:
        contact = session.get(Contact, handoff.person.id, populate_existing=True)
        assert contact is not None
        hand_off(session, project, contact, handoff.move, now, handoff.engagement)
    session.expire_all()  # ORM objects loaded before these writes are stale now
    return ids


def _id(ids: list[int], index: int | None) -> int | None:
    return None if index is None else ids[index]


def _update_by_id(
    connection: Connection, table: Table, rows: list[tuple[int, dict[str, Any]]]
) -> None:
    """UPDATE each row's changed columns: one executemany per set of columns."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for id_, values in rows:
        groups[tuple(sorted(values))].append({"b_id": id_, **values})
    for names, batch in groups.items():
        statement = (
            update(table)
            .where(table.c.id == bindparam("b_id"))
            .values({name: bindparam(name) for name in names})
        )
        connection.execute(statement, batch)
