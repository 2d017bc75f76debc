"""The event pipeline, in batches, gives exactly what the event path it replaced gives,
one event at a time through the ORM (tests/reference_events.py)."""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select

from nurture.clock import FixedClock
from nurture.db import sessions, write_transaction
from nurture.feedback import upsert_contact
from nurture.intake import Incoming, record_events
from nurture.models import Contact, Enrollment, Event, ScoreChange, StageMove, Suppression
from nurture.runtime import Runtime, open_runtime
from tests.conftest import MONDAY_MORNING
from tests.helpers import PROFILE
from tests.reference_events import reference_record_event

PEOPLE = ["ana@acme.example", "bo@beta.example", "cy@gmail.com", "dee@acme.example"]
URLS = ["/blog/a", "/pricing", "/demo", "/careers", "/blog/b"]


def events(seed: int, count: int) -> list[Incoming]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        kind = rng.choice(
            ["page_visited"] * 6
            + ["content_downloaded", "webinar_registered", "webinar_attended", "email_clicked"]
            + ["replied", "meeting_booked", "unsubscribed", "newsletter_signup"]
        )
        properties: dict[str, Any] = {}
        if kind == "page_visited":
            properties["url"] = "https://keel.example" + rng.choice(URLS)
        elif kind == "content_downloaded":
            properties["asset"] = rng.choice(["guide", "checklist"])
        elif kind == "email_clicked":
            properties["message_id"] = rng.randint(1, 3)
            if rng.random() < 0.2:
                properties["machine"] = "scanner"
        client_id = f"c{rng.randint(0, count)}" if rng.random() < 0.5 else None
        out.append(
            Incoming(rng.choice([*PEOPLE, "new@delta.example"]), kind, None, properties, client_id)
        )
    return out


def state(rt: Runtime) -> dict[str, Any]:
    with sessions(rt.database)() as session:
        contacts = {
            c.email: (c.stage, round(c.fit, 6), round(c.engagement, 6), c.last_engaged_at)
            for c in session.scalars(select(Contact))
        }
        ledger = sorted(
            (
                c.contact_id,
                c.axis,
                c.rule,
                round(c.points, 6),
                round(c.value_after, 6),
                c.object_key,
            )
            for c in session.scalars(select(ScoreChange))
        )
        moves: dict[int, list[tuple[Any, ...]]] = {}  # in order for each person
        for m in session.scalars(select(StageMove).order_by(StageMove.id)):
            moves.setdefault(m.contact_id, []).append((m.from_stage, m.to_stage, m.reason))
        enrollments = sorted(
            (e.contact_id, e.workflow, e.status, e.end_reason or "")
            for e in session.scalars(select(Enrollment))
        )
        stored = sorted(
            (e.contact_id, e.kind, e.client_event_id or "", str(e.properties))
            for e in session.scalars(select(Event))
        )
        suppressed = sorted(session.scalars(select(Suppression.email)))
    return {
        "contacts": contacts,
        "ledger": ledger,
        "moves": moves,
        "enrollments": enrollments,
        "events": stored,
        "suppressed": suppressed,
    }


def fresh(project_dir: Path, tmp_path: Path, name: str) -> Runtime:
    rt = open_runtime(
        project_dir, clock=FixedClock(MONDAY_MORNING), database=f"sqlite:///{tmp_path / name}"
    )
    with sessions(rt.database).begin() as session:
        for address in PEOPLE:
            upsert_contact(
                session,
                rt.project,
                address,
                PROFILE if "gmail" not in address else {},
                rt.clock.now(),
                stage="lead",
            )
    return rt


@pytest.mark.parametrize("seed", range(40))
def test_bulk_equals_one_by_one(project_dir: Path, tmp_path: Path, seed: int) -> None:
    bulk, single = (
        fresh(project_dir, tmp_path, "bulk.db"),
        fresh(project_dir, tmp_path, "single.db"),
    )
    items = events(seed, 60)
    for start in range(0, len(items), 20):  # three requests, an hour apart
        chunk = items[start : start + 20]
        now = bulk.clock.now()
        with write_transaction(bulk.database) as session:
            record_events(session, bulk.project, chunk, now)
        for item in chunk:
            with write_transaction(single.database) as session:
                if session.scalar(select(Contact.id).where(Contact.email == item.email)) is None:
                    upsert_contact(session, single.project, item.email, {"source": "api"}, now)
                reference_record_event(
                    session,
                    single.project,
                    item.email,
                    item.kind,
                    now,
                    properties=item.properties,
                    client_event_id=item.client_event_id,
                )
        for rt in (bulk, single):
            assert isinstance(rt.clock, FixedClock)
            rt.clock.advance(timedelta(hours=1))
    assert state(bulk) == state(single)


def _segment_workflow(root: Path) -> None:
    """Workflow `clicked` enters by segment `clickers` (a real click in 7 days), ended by
    the goal events meeting_booked and replied."""
    (root / "segments").mkdir(exist_ok=True)
    (root / "segments" / "clickers.yaml").write_text(
        "name: Clickers\nwhen: \"did('email_clicked', within='7d')\"\n", encoding="utf-8"
    )
    (root / "workflows" / "clicked.yaml").write_text(
        "name: Clicked\nenter:\n  segment: clickers\n"
        "goals:\n  events: [meeting_booked, replied]\n"
        "tracks:\n  discovery:\n    - {content: discovery/onboarding-checklist}\n",
        encoding="utf-8",
    )


@pytest.mark.parametrize("seed", range(20))
def test_bulk_equals_one_by_one_with_segment_entries(
    project_dir: Path, tmp_path: Path, seed: int
) -> None:
    """A workflow entering by segment (people who clicked), ended by a goal event: mixed
    batches (a click, then a goal, of one person in one request) enter and end people as
    the events one by one do."""
    _segment_workflow(project_dir)
    bulk, single = (
        fresh(project_dir, tmp_path, "bulk.db"),
        fresh(project_dir, tmp_path, "single.db"),
    )
    rng = random.Random(seed)
    items = []
    for item in events(seed, 60):  # clicks followed at once by a goal of the same person
        items.append(item)
        if item.kind == "email_clicked" and rng.random() < 0.6:
            items.append(Incoming(item.email, rng.choice(["meeting_booked", "replied"]), None, {}))
    for start in range(0, len(items), 20):
        chunk = items[start : start + 20]
        now = bulk.clock.now()
        with write_transaction(bulk.database) as session:
            record_events(session, bulk.project, chunk, now)
        for item in chunk:
            with write_transaction(single.database) as session:
                if session.scalar(select(Contact.id).where(Contact.email == item.email)) is None:
                    upsert_contact(session, single.project, item.email, {"source": "api"}, now)
                reference_record_event(
                    session,
                    single.project,
                    item.email,
                    item.kind,
                    now,
                    properties=item.properties,
                    client_event_id=item.client_event_id,
                )
        for rt in (bulk, single):
            assert isinstance(rt.clock, FixedClock)
            rt.clock.advance(timedelta(hours=1))
    assert state(bulk) == state(single)


def test_a_click_then_a_goal_in_one_batch_enters_then_ends(
    project_dir: Path, tmp_path: Path
) -> None:
    """One request: ana clicks (now in the segment `clickers`), then books a meeting (the
    goal): she enters the segment's workflow after the click and the goal ends it, as when
    the two events come one by one."""
    _segment_workflow(project_dir)
    rt = fresh(project_dir, tmp_path, "one.db")
    ana = PEOPLE[0]
    items = [
        Incoming(ana, "email_clicked", None, {"message_id": 1}),
        Incoming(ana, "meeting_booked", None, {}),
    ]
    with write_transaction(rt.database) as session:
        record_events(session, rt.project, items, rt.clock.now())
    with sessions(rt.database)() as session:
        rows = session.execute(
            select(Enrollment.status, Enrollment.end_reason)
            .join(Contact, Contact.id == Enrollment.contact_id)
            .where(Contact.email == ana, Enrollment.workflow == "clicked")
        ).all()
    assert [tuple(r) for r in rows] == [("completed", "goal: meeting_booked")], rows


def test_the_duplicate_check_searches_the_unique_key(project_dir: Path, tmp_path: Path) -> None:
    """The look-up of a batch's client ids is an index search on SQLite, not a scan of the
    whole index (its cost must not grow with the events table)."""
    rt = fresh(project_dir, tmp_path, "plan.db")
    seen: list[tuple[str, Any]] = []

    def spy(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "client_event_id" in statement and statement.lstrip().startswith("SELECT"):
            seen.append((statement, parameters))

    engine = rt.database
    event.listen(engine, "before_cursor_execute", spy)
    items = [Incoming(PEOPLE[n % 4], "page_visited", None, {}, f"p{n}") for n in range(8)]
    with write_transaction(engine) as session:
        record_events(session, rt.project, items, rt.clock.now())
    event.remove(engine, "before_cursor_execute", spy)
    assert seen, "no duplicate check ran"
    with engine.connect() as connection:
        for statement, parameters in seen:
            plan = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
            details = " ".join(str(row[-1]) for row in plan)
            assert "SEARCH events USING" in details and "SCAN events" not in details, details
