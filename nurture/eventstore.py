"""The events' one write path, and the summary of what people did that it keeps.

`store` inserts events and, in the same transaction, folds the real ones (not a machine's)
into `engagement_summary` (models.Engaged): per person, event kind and piece of content
(the content of the message the event is about; NO_CONTENT for none), the first and last
time and how many. Segments read it (nurture/segmentsql.py) instead of every event of
every person. Whatever stores events (the event pipeline, nurture/intake.py, for the API,
tracking links, forms, provider feedback, the CLI and the simulator) stores them here.

The summary is folded in with one INSERT ... SELECT over the new events, grouped, with
ON CONFLICT DO UPDATE (first the least, last the greatest, counts added): on PostgreSQL the
upsert is atomic against another transaction folding in the same key, and the event
pipeline holds the people's rows locked while it writes their events, so two writers never
wait on each other's summary rows in opposite orders. Events are never updated nor deleted
by the engine; a person deleted takes their rows with them (ON DELETE CASCADE). (A message
deleted by hand would leave its piece in the summary, where its events lose it: the engine
deletes none.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from sqlalchemy import ColumnElement, Connection, Select, Table, func, insert, select, text
from sqlalchemy.dialects import postgresql, sqlite

from nurture.db import among
from nurture.models import NO_CONTENT, Engaged, Event, Message

EVENTS = cast(Table, Event.__table__)
SUMMARY = cast(Table, Engaged.__table__)
_MESSAGES = cast(Table, Message.__table__)
_COLUMNS = ["contact_id", "kind", "content_id", "first_at", "last_at", "events"]


def store(connection: Connection, rows: Sequence[Mapping[str, Any]]) -> list[int]:
    """Insert the events `rows` (columns of `events`, without ids) and fold them into the
    summary, in the caller's transaction; their new ids, in order."""
    if not rows:
        return []
    ids = new_ids(connection, "events", len(rows))
    connection.execute(
        insert(EVENTS), [{**row, "id": id_} for row, id_ in zip(rows, ids, strict=True)]
    )
    summarize(connection, ids)
    return ids


def summary_of_events() -> Select[Any]:
    """The summary's rows counted from `events` and `messages`: what `engagement_summary`
    equals, and how it is filled."""
    e, m = EVENTS.c, _MESSAGES.c
    content = func.coalesce(m.content_id, NO_CONTENT)
    query = (
        select(
            e.contact_id,
            e.kind,
            content.label("content_id"),
            func.min(e.occurred_at).label("first_at"),
            func.max(e.occurred_at).label("last_at"),
            func.count().label("events"),
        )
        .select_from(EVENTS.outerjoin(_MESSAGES, m.id == e.message_id))
        .where(e.machine.is_(None))
        .group_by(e.contact_id, e.kind, content)
    )
    return query


def summarize(connection: Connection, event_ids: Sequence[int]) -> None:
    """Fold the stored events `event_ids` into the summary (a machine's are left out), in
    one statement. Ids that run without a gap (always on SQLite; on PostgreSQL unless another
    writer drew from the sequence meanwhile) are read as a range: every id in it is one of
    them."""
    if not event_ids:
        return
    low, high = min(event_ids), max(event_ids)
    chosen: ColumnElement[bool]
    if high - low + 1 == len(set(event_ids)) == len(event_ids):
        chosen = EVENTS.c.id.between(low, high)
    else:
        chosen = among(connection.engine, EVENTS.c.id, event_ids)
    query = summary_of_events().where(chosen)
    postgres = connection.dialect.name == "postgresql"
    build = postgresql.insert if postgres else sqlite.insert
    statement = build(SUMMARY).from_select(_COLUMNS, query)
    fresh = statement.excluded
    least, greatest = (func.least, func.greatest) if postgres else (func.min, func.max)
    connection.execute(
        statement.on_conflict_do_update(
            index_elements=["contact_id", "kind", "content_id"],
            set_={
                "first_at": least(SUMMARY.c.first_at, fresh.first_at),
                "last_at": greatest(SUMMARY.c.last_at, fresh.last_at),
                "events": SUMMARY.c.events + fresh.events,
            },
        )
    )


def rebuild(connection: Connection) -> int:
    """Count the whole summary again from the events (what migration 0019 does once); the
    number of rows."""
    connection.execute(SUMMARY.delete())
    connection.execute(insert(SUMMARY).from_select(_COLUMNS, summary_of_events()))
    return connection.scalar(select(func.count()).select_from(SUMMARY)) or 0


def new_ids(connection: Connection, table: str, count: int) -> list[int]:
    """`count` fresh ids for `table`, so rows and the rows that point to them go in two
    statements. SQLite: after the largest id (the caller holds the write lock, BEGIN
    IMMEDIATE); PostgreSQL: from the table's sequence."""
    if connection.dialect.name == "sqlite":
        top = connection.scalar(text(f"SELECT COALESCE(MAX(id), 0) FROM {table}")) or 0
        return list(range(top + 1, top + 1 + count))
    query = text("SELECT nextval(pg_get_serial_sequence(:table, 'id')) FROM generate_series(1, :n)")
    return list(connection.scalars(query, {"table": table, "n": count}))


def mismatches(connection: Connection) -> list[tuple[str, tuple[Any, ...]]]:
    """The rows where the summary and the events disagree: ("kept", row) for a row of the
    summary that the events do not give, ("counted", row) for one the summary lacks. Empty
    when the summary is right."""
    kept = {tuple(row) for row in connection.execute(select(*(SUMMARY.c[c] for c in _COLUMNS)))}
    counted = {tuple(row) for row in connection.execute(summary_of_events())}
    return sorted(
        [("kept", row) for row in kept - counted] + [("counted", row) for row in counted - kept]
    )
