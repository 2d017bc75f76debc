"""The events' one write path and the engagement summary it keeps (nurture/eventstore.py), on
SQLite and PostgreSQL: what the pipeline stores folds into one row per person, kind and piece,
machines left out; migration 0019 fills it from the events already stored."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import insert, inspect, select
from sqlalchemy.orm import Session

from nurture import eventstore
from nurture.db import alembic_config, make_engine, sessions, upgrade
from nurture.intake import Incoming, record_events
from nurture.models import NO_CONTENT, Contact, Engaged, Enrollment, Event, Message
from nurture.runtime import Runtime
from tests.helpers import add_contact

GUIDE, CASE = "discovery/hidden-cost-of-churn", "evaluation/case-study-northwind"
_T = datetime.fromisoformat("2026-03-01T08:00:00+00:00")


def _message(session: Session, contact_id: int, content: str) -> int:
    """An email the person received (the engine's outbox row, made here by hand)."""
    enrollment = session.scalar(select(Enrollment.id).where(Enrollment.contact_id == contact_id))
    if enrollment is None:
        row = Enrollment(
            workflow="guide-nurture", contact_id=contact_id, status="active", entered_at=_T
        )
        session.add(row)
        session.flush()
        enrollment = row.id
    message = Message(
        enrollment_id=enrollment,
        contact_id=contact_id,
        workflow="guide-nurture",
        step_key=content,
        content_id=content,
        phase="discovery",
        stage_at_send="lead",
        subject="s",
        rfc_message_id=f"<{contact_id}.{content}@t>",
        status="sent",
        created_at=_T,
        sent_at=_T,
    )
    session.add(message)
    session.flush()
    return message.id


def _summary(session: Session) -> set[tuple[Any, ...]]:
    rows = session.execute(
        select(
            Contact.email,
            Engaged.kind,
            Engaged.content_id,
            Engaged.first_at,
            Engaged.last_at,
            Engaged.events,
        ).join(Contact, Contact.id == Engaged.contact_id)
    )
    return {tuple(row) for row in rows}


def test_the_pipeline_folds_real_events_into_one_row_per_person_kind_and_piece(
    runtime: Runtime,
) -> None:
    now = runtime.clock.now()
    hours = [now - timedelta(hours=h) for h in range(12)]
    ana, bob = "ana@acme.example", "bob@acme.example"
    add_contact(runtime, ana)
    add_contact(runtime, bob)
    with sessions(runtime.database).begin() as session:
        ana_id = session.scalar(select(Contact.id).where(Contact.email == ana))
        assert ana_id is not None
        guide, case = _message(session, ana_id, GUIDE), _message(session, ana_id, CASE)
    scanner = {"machine": "link scanner"}
    first = [
        Incoming(ana, "email_clicked", hours[3], message_id=guide),
        Incoming(ana, "email_clicked", hours[1], message_id=guide),
        Incoming(ana, "email_clicked", hours[0], dict(scanner), message_id=guide),  # a machine
        Incoming(ana, "email_clicked", hours[0], dict(scanner), message_id=case),  # a machine
        Incoming(ana, "email_opened", hours[2], message_id=case),
        Incoming(ana, "page_visited", hours[5], {"url": "https://k.example/a"}, "visit-1"),
        Incoming(ana, "page_visited", hours[5], {"url": "https://k.example/a"}, "visit-1"),
        Incoming(bob, "page_visited", hours[4], {"url": "https://k.example/b"}),
    ]
    with sessions(runtime.database).begin() as session:
        recorded = record_events(session, runtime.project, first, now)
    assert [r.duplicate for r in recorded] == [False] * 6 + [True, False]
    with sessions(runtime.database)() as session:
        assert _summary(session) == {
            (ana, "email_clicked", GUIDE, hours[3], hours[1], 2),
            (ana, "email_opened", CASE, hours[2], hours[2], 1),
            (ana, "page_visited", NO_CONTENT, hours[5], hours[5], 1),
            (bob, "page_visited", NO_CONTENT, hours[4], hours[4], 1),
        }
    # later batches fold in: the first moves back, the last forward, the counts add up
    second = [
        Incoming(ana, "email_clicked", hours[10], message_id=guide),
        Incoming(ana, "page_visited", hours[0], {"url": "https://k.example/c"}),
        Incoming(ana, "email_clicked", hours[0], message_id=case),
        Incoming(bob, "webinar_attended", hours[6], {"webinar": "w1"}),
    ]
    with sessions(runtime.database).begin() as session:
        record_events(session, runtime.project, second, now)
    with sessions(runtime.database)() as session:
        assert _summary(session) == {
            (ana, "email_clicked", GUIDE, hours[10], hours[1], 3),
            (ana, "email_clicked", CASE, hours[0], hours[0], 1),
            (ana, "email_opened", CASE, hours[2], hours[2], 1),
            (ana, "page_visited", NO_CONTENT, hours[5], hours[0], 2),
            (bob, "page_visited", NO_CONTENT, hours[4], hours[4], 1),
            (bob, "webinar_attended", NO_CONTENT, hours[6], hours[6], 1),
        }
        assert eventstore.mismatches(session.connection()) == []


def test_summarize_folds_exactly_the_events_it_is_given(runtime: Runtime) -> None:
    """Ids with a gap (PostgreSQL's sequence shared with another writer) are read as a
    list, not as the range around them. The events are inserted bare here, on purpose, to
    fold only some of them."""
    add_contact(runtime, "ana@acme.example")
    with sessions(runtime.database).begin() as session:
        ana = session.scalar(select(Contact.id).where(Contact.email == "ana@acme.example"))
        connection = session.connection()
        ids = eventstore.new_ids(connection, "events", 3)
        connection.execute(
            insert(Event),
            [
                {
                    "id": id_,
                    "contact_id": ana,
                    "kind": kind,
                    "occurred_at": _T,
                    "recorded_at": _T,
                    "properties": {},
                }
                for id_, kind in zip(
                    ids, ["page_visited", "form_submitted", "demo_requested"], strict=True
                )
            ],
        )
        eventstore.summarize(connection, [ids[0], ids[2]])
        kinds = set(session.scalars(select(Engaged.kind)))
        assert kinds == {"page_visited", "demo_requested"}
        eventstore.summarize(connection, [ids[1]])
        assert eventstore.mismatches(connection) == []


def test_migration_0019_fills_the_summary_from_the_stored_events(
    empty_database_url: str,
) -> None:
    engine = make_engine(empty_database_url)
    before = ScriptDirectory.from_config(alembic_config()).get_revision("0019").down_revision
    assert isinstance(before, str)
    upgrade(engine, before)
    contact = {
        "stage": "lead",
        "stage_since": _T,
        "fit": 0.0,
        "engagement": 0.0,
        "engagement_at": _T,
        "custom": {},
        "paused": False,
        "created_at": _T,
    }
    with sessions(engine).begin() as session:
        connection = session.connection()
        connection.execute(
            insert(Contact), [{"id": n, "email": f"p{n}@acme.example", **contact} for n in (1, 2)]
        )
        guide = _message(session, 1, GUIDE)
        rows = [
            (1, "email_clicked", 3, None, guide),
            (1, "email_clicked", 1, None, guide),
            (1, "email_clicked", 0, "link scanner", guide),
            (1, "email_opened", 2, "privacy proxy", guide),
            (1, "page_visited", 5, None, None),
            (2, "page_visited", 4, None, None),
            (2, "page_visited", 9, None, None),
        ]
        connection.execute(
            insert(Event),
            [
                {
                    "contact_id": contact_id,
                    "kind": kind,
                    "occurred_at": _T - timedelta(hours=ago),
                    "recorded_at": _T,
                    "properties": {},
                    "machine": machine,
                    "message_id": message,
                }
                for contact_id, kind, ago, machine, message in rows
            ],
        )
    upgrade(engine, "0019")
    with sessions(engine)() as session:
        assert _summary(session) == {
            (
                "p1@acme.example",
                "email_clicked",
                GUIDE,
                _T - timedelta(hours=3),
                _T - timedelta(hours=1),
                2,
            ),
            (
                "p1@acme.example",
                "page_visited",
                NO_CONTENT,
                _T - timedelta(hours=5),
                _T - timedelta(hours=5),
                1,
            ),
            (
                "p2@acme.example",
                "page_visited",
                NO_CONTENT,
                _T - timedelta(hours=9),
                _T - timedelta(hours=4),
                2,
            ),
        }
        assert eventstore.mismatches(session.connection()) == []
    command.downgrade(alembic_config(engine), before)
    assert "engagement_summary" not in inspect(engine).get_table_names()
    engine.dispose()
