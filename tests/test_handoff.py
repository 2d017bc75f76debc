"""Sales hand-off: the signed webhook (retried, each attempt recorded), the owner's note,
the end of nurture, acceptance, rejection and stale recycling; queued emails of a phase
left behind are cancelled."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from nurture.clock import FixedClock
from nurture.db import sessions
from nurture.feedback import recycle_stale, sales_outcome
from nurture.handoffs import SECRET_ENV, verify
from nurture.jobs import run_periodic
from nurture.models import (
    CANCELLED,
    Enrollment,
    Handoff,
    HandoffAttempt,
    Message,
    Notice,
    StageMove,
)
from nurture.problems import ProjectError
from nurture.runtime import Runtime, open_runtime
from tests.conftest import HANDOFF_SECRET
from tests.helpers import (
    PROFILE,
    add_contact,
    configure_handoff,
    contact,
    event,
    outbox,
    parse_eml,
)
from tests.receiver import Receiver


@pytest.fixture
def rt(crm_runtime: Runtime) -> Runtime:
    return crm_runtime


def later(rt: Runtime, **delta: float) -> None:
    assert isinstance(rt.clock, FixedClock)
    rt.clock.advance(timedelta(**delta))


def rows(rt: Runtime, model: type) -> list:  # type: ignore[type-arg]
    with sessions(rt.database)() as session:
        return list(session.scalars(select(model).order_by(model.id)))  # type: ignore[attr-defined]


def test_a_webhook_url_without_a_secret_does_not_start(
    project_dir: Path, clock: FixedClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    configure_handoff(project_dir, "https://crm.example/hook")
    with pytest.raises(ProjectError, match=r"handoff\.webhook_secret"):
        open_runtime(project_dir, clock=clock, database=f"sqlite:///{tmp_path / 'x.db'}")


def test_reaching_sql_posts_one_signed_webhook_and_notes_the_owner(
    rt: Runtime, crm: Receiver
) -> None:
    add_contact(
        rt, "ana@acme.example", **PROFILE, owner="marc@keel-retention.example", company="Acme"
    )
    event(rt, "ana@acme.example", "meeting_booked")
    assert contact(rt, "ana@acme.example").stage == "sql"
    [handoff] = rows(rt, Handoff)
    assert handoff.status == "pending" and handoff.reason == "event meeting_booked"
    posted = rt.clock.now()
    run_periodic(rt, posted)
    later(rt, minutes=10)
    run_periodic(rt, rt.clock.now())
    [hit] = crm.received
    signature = hit.headers["X-Nurture-Signature"]
    assert verify(HANDOFF_SECRET, signature, hit.body, posted)
    assert not verify("another-secret", signature, hit.body, posted)
    assert not verify(HANDOFF_SECRET, signature, hit.body + b" ", posted)
    assert not verify(
        HANDOFF_SECRET, signature, hit.body, rt.clock.now()
    )  # a replay, 10 minutes on
    assert hit.headers["X-Nurture-Delivery"] == str(handoff.id)
    payload = json.loads(hit.body)
    assert payload["type"] == "contact.handed_off" and payload["stage"] == "sql"
    assert payload["contact"]["email"] == "ana@acme.example" and payload["contact"]["fit"] == 55
    assert [e["kind"] for e in payload["recent_events"]] == ["meeting_booked"]
    [handoff] = rows(rt, Handoff)
    assert handoff.status == "delivered" and handoff.attempts == 1
    [note] = rows(rt, Notice)
    assert note.to == "marc@keel-retention.example" and note.status == "sent"
    mail = [parse_eml(p) for p in outbox(rt) if "notice" in p.name]
    assert [m["Subject"] for m in mail] == ["New SQL: Ana (Acme)"]


def test_a_failing_receiver_is_retried_with_backoff_and_every_attempt_recorded(
    rt: Runtime, crm: Receiver
) -> None:
    crm.failures = 2
    add_contact(rt, "ana@acme.example", **PROFILE)
    event(rt, "ana@acme.example", "meeting_booked")
    start = rt.clock.now()
    run_periodic(rt, rt.clock.now())  # 503
    later(rt, seconds=30)
    run_periodic(rt, rt.clock.now())  # not due yet: the first wait is 1 minute
    assert len(crm.received) == 1
    later(rt, seconds=31)
    run_periodic(rt, rt.clock.now())  # 503; next wait 2 minutes
    later(rt, minutes=2)
    run_periodic(rt, rt.clock.now())  # 200
    later(rt, hours=1)
    run_periodic(rt, rt.clock.now())
    assert len(crm.received) == 3
    assert len({r.headers["X-Nurture-Delivery"] for r in crm.received}) == 1
    attempts = rows(rt, HandoffAttempt)
    assert [a.status_code for a in attempts] == [503, 503, 200]
    assert [a.at - start for a in attempts] == [
        timedelta(0),
        timedelta(seconds=61),
        timedelta(seconds=181),
    ]
    assert rows(rt, Handoff)[0].status == "delivered"


def test_a_receiver_that_never_answers_is_given_up_after_the_retries(
    rt: Runtime, crm: Receiver
) -> None:
    crm.failures = 100
    add_contact(rt, "ana@acme.example", **PROFILE)
    event(rt, "ana@acme.example", "meeting_booked")
    for _ in range(12):
        run_periodic(rt, rt.clock.now())
        later(rt, hours=6)
    [handoff] = rows(rt, Handoff)
    assert handoff.status == "failed" and handoff.attempts == 9  # the first try and 8 retries
    assert len(crm.received) == 9


def test_end_nurture_ends_every_workflow_at_the_handoff(
    project_dir: Path, clock: FixedClock, tmp_path: Path
) -> None:
    configure_handoff(project_dir, None, end_nurture=True)
    rt = open_runtime(project_dir, clock=clock, database=f"sqlite:///{tmp_path / 'n.db'}")
    add_contact(rt, "ana@acme.example", **PROFILE)
    event(rt, "ana@acme.example", "webinar_registered")
    event(rt, "ana@acme.example", "meeting_booked")
    enrollments = rows(rt, Enrollment)
    assert {e.status for e in enrollments} == {"completed"}
    assert {e.end_reason for e in enrollments} == {"goal: handed off to sales"}
    # Reaching SQL by the score rule ends it the same way.
    add_contact(rt, "bo@beta.example", **PROFILE)
    for asset in ("a", "b", "c", "d", "e"):
        event(rt, "bo@beta.example", "content_downloaded", asset=asset)
    event(rt, "bo@beta.example", "webinar_attended")
    event(rt, "bo@beta.example", "page_visited", url="https://keel.example/pricing")
    assert contact(rt, "bo@beta.example").stage == "mql"
    event(rt, "bo@beta.example", "page_visited", url="https://keel.example/demo")
    bo = contact(rt, "bo@beta.example")
    assert bo.stage == "sql"
    ended = {(e.status, e.end_reason) for e in rows(rt, Enrollment) if e.contact_id == bo.id}
    assert ended == {("completed", "goal: handed off to sales")}
    handoffs = rows(rt, Handoff)
    assert [h.status for h in handoffs] == ["off", "off"]
    assert handoffs[1].reason.startswith("rule fit >= 40 and engagement >= 90")


def test_sales_rejects_and_the_lead_goes_back_to_nurture(rt: Runtime) -> None:
    add_contact(rt, "ana@acme.example", **PROFILE)
    event(rt, "ana@acme.example", "content_downloaded", asset="guide")
    rt.dispatcher.tick()
    event(rt, "ana@acme.example", "meeting_booked")
    later(rt, days=2)
    rt.dispatcher.tick()
    # An SQL gets decision content until sales answers (end_nurture: false, no goal met).
    assert [m.phase for m in rows(rt, Message)][-1] == "decision"
    with sessions(rt.database)() as session:
        assert set(session.scalars(select(Enrollment.status))) == {"active"}
    with sessions(rt.database).begin() as session, pytest.raises(ValueError, match="reason"):
        sales_outcome(session, rt.project, "ana@acme.example", False, " ", rt.clock.now())
    with sessions(rt.database).begin() as session:
        sales_outcome(
            session, rt.project, "ana@acme.example", False, "no budget before 2027", rt.clock.now()
        )
    ana = contact(rt, "ana@acme.example")
    assert ana.stage == "mql"
    moves = rows(rt, StageMove)
    assert moves[-1].reason == "rejected by sales: no budget before 2027"
    with sessions(rt.database)() as session:
        assert set(session.scalars(select(Enrollment.status))) == {"active"}
    [handoff] = rows(rt, Handoff)
    assert (handoff.outcome, handoff.outcome_reason) == ("rejected", "no budget before 2027")
    # The evaluation step's wait (2 days) counts from the decision email sent at the meeting.
    later(rt, days=2)
    rt.dispatcher.tick()
    phases = [m.phase for m in rows(rt, Message)]
    assert phases[-1] == "evaluation"


def test_an_sql_nobody_works_is_recycled_after_stale_after(rt: Runtime) -> None:
    add_contact(rt, "ana@acme.example", **PROFILE)
    add_contact(rt, "bo@beta.example", **PROFILE)
    add_contact(rt, "cy@gamma.example", **PROFILE)
    for address in ("ana@acme.example", "bo@beta.example", "cy@gamma.example"):
        event(rt, address, "meeting_booked")
    with sessions(rt.database).begin() as session:
        sales_outcome(session, rt.project, "bo@beta.example", True, "", rt.clock.now())
    event(rt, "cy@gamma.example", "opportunity_created")
    later(rt, days=13, hours=23)
    with sessions(rt.database).begin() as session:
        assert recycle_stale(session, rt.project, rt.clock.now()) == 0
    later(rt, hours=1)
    run_periodic(rt, rt.clock.now())
    assert contact(rt, "ana@acme.example").stage == "mql"
    assert contact(rt, "bo@beta.example").stage == "sql"
    assert contact(rt, "cy@gamma.example").stage == "opportunity"
    assert rows(rt, StageMove)[-1].reason == "stale sql: not worked by sales within 14 days"
    outcomes = {h.contact_id: (h.outcome, h.outcome_reason) for h in rows(rt, Handoff)}
    assert sorted(outcomes.values()) == [
        ("accepted", None),
        ("stale", "contact moved on to opportunity"),
        ("stale", "not worked by sales within 14 days"),
    ]
    later(rt, days=30)
    run_periodic(rt, rt.clock.now())
    assert contact(rt, "ana@acme.example").stage == "mql"


def test_a_queued_email_of_the_old_phase_is_cancelled_by_a_stage_move(rt: Runtime) -> None:
    add_contact(rt, "ana@acme.example", **PROFILE)
    event(rt, "ana@acme.example", "content_downloaded", asset="guide")
    report = rt.dispatcher.dispatch_batch(rt.clock.now())  # reserves, then delivers
    assert report.sent == 1
    # Reserve without delivering: the claim transaction alone.
    later(rt, days=3, hours=1)
    batch = rt.dispatcher.reserve(rt.clock.now())
    assert len(batch.outgoing) == 1
    [queued] = [m for m in rows(rt, Message) if m.status == "queued"]
    assert queued.phase == "discovery"
    event(rt, "ana@acme.example", "meeting_booked")
    [cancelled] = [m for m in rows(rt, Message) if m.id == queued.id]
    assert cancelled.status == CANCELLED and "stage moved to sql" in (cancelled.error or "")
    assert rt.dispatcher.deliver(batch.outgoing) == (0, 0)
    assert [m.status for m in rows(rt, Message) if m.id == queued.id] == [CANCELLED]
    assert len([p for p in outbox(rt) if "notice" not in p.name]) == 1
