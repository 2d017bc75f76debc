"""The loop end to end on a real database: contacts in, paced emails out, feedback changes them."""

from __future__ import annotations

import itertools
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from nurture.clock import FixedClock
from nurture.db import sessions
from nurture.engine import Dispatcher
from nurture.models import Deferral, Enrollment, Message, StageMove, Suppression
from nurture.runtime import Runtime, open_runtime
from nurture.transport import Outgoing
from tests.helpers import PROFILE as BASE_PROFILE
from tests.helpers import (
    add_contact,
    contact,
    event,
    messages,
    outbox,
    parse_eml,
    race,
    sends_per,
    with_transport,
)

PROFILE = {**BASE_PROFILE, "company": "Acme & Co"}


def advance(rt: Runtime, **delta: float) -> None:
    assert isinstance(rt.clock, FixedClock)
    rt.clock.advance(timedelta(**delta))


def test_a_new_lead_gets_the_first_discovery_email_as_a_real_eml(runtime: Runtime) -> None:
    outcome = add_contact(runtime, "Ana@Acme.example", **PROFILE)
    assert outcome.enrolled == ["guide-nurture"]
    report = runtime.dispatcher.tick()
    assert report.sent == 1
    (path,) = outbox(runtime)
    mime = parse_eml(path)
    assert mime.get_content_type() == "multipart/alternative"
    parts = {part.get_content_type(): part.get_content() for part in mime.iter_parts()}
    assert set(parts) == {"text/plain", "text/html"}
    assert "Hello Ana," in parts["text/plain"] and "Hello Ana," in parts["text/html"]
    assert "Acme &amp; Co" not in parts["text/plain"]
    assert mime["To"] == "Ana <ana@acme.example>"
    assert mime["From"] == "Keel <hello@keel-retention.example>"
    assert mime["Subject"] == "Ana, the churn your dashboard does not show"
    assert mime["Message-ID"].endswith("@keel-retention.example>")
    assert mime["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    https, mailto = (part.strip(" <>") for part in mime["List-Unsubscribe"].split(","))
    assert https.startswith("http://localhost:5000/u/") and mailto.startswith("mailto:unsubscribe@")
    assert https in parts["text/plain"]
    (message,) = messages(runtime, "ana@acme.example")
    assert (message.status, message.phase, message.stage_at_send) == ("sent", "discovery", "lead")
    assert message.content_id == "discovery/hidden-cost-of-churn"


def test_unsubscribe_tokens_are_signed_and_bound_to_the_message(runtime: Runtime) -> None:
    add_contact(runtime, "ana@acme.example", **PROFILE)
    runtime.dispatcher.tick()
    mime = parse_eml(outbox(runtime)[0])
    token = mime["List-Unsubscribe"].split("/u/")[1].split(">")[0]
    key = mime["Message-ID"].strip("<>").split("@")[0]
    assert runtime.links.unsubscribe_key(token) == key
    assert (
        runtime.links.unsubscribe_key(token[:-2] + ("AA" if token[-2:] != "AA" else "BB")) is None
    )


def test_the_next_email_waits_for_the_step_and_the_caps(runtime: Runtime) -> None:
    add_contact(runtime, "ana@acme.example", **PROFILE)
    runtime.dispatcher.tick()
    advance(runtime, days=1)
    assert runtime.dispatcher.tick().sent == 0
    advance(runtime, days=2)  # Thursday 09:00 Paris: step 2 waits 3 days
    assert runtime.dispatcher.tick().sent == 1
    sent = messages(runtime, "ana@acme.example")
    assert [m.content_id for m in sent] == [
        "discovery/hidden-cost-of-churn",
        "discovery/activation-metrics",
    ]
    assert sent[1].sent_at - sent[0].sent_at == timedelta(days=3)


def test_engagement_moves_the_stage_and_the_next_email_follows_it(runtime: Runtime) -> None:
    add_contact(runtime, "ana@acme.example", **PROFILE)
    runtime.dispatcher.tick()
    first = messages(runtime)[0]
    advance(runtime, hours=2)
    event(runtime, "ana@acme.example", "email_clicked", message_id=first.id)
    event(runtime, "ana@acme.example", "content_downloaded", asset="quiet-churn-guide")
    outcome = event(
        runtime, "ana@acme.example", "page_visited", url="https://keel-retention.example/pricing"
    )
    assert outcome.moves == [] and contact(runtime, "ana@acme.example").stage == "lead"
    outcome = event(runtime, "ana@acme.example", "webinar_attended", webinar="retention-playbook")
    assert [m.to_stage for m in outcome.moves] == ["mql"]
    assert "fit >= 30 and engagement >= 35" in outcome.moves[0].reason
    advance(runtime, days=2)
    runtime.dispatcher.tick()
    latest = messages(runtime)[-1]
    assert (latest.phase, latest.stage_at_send) == ("evaluation", "mql")
    assert latest.content_id == "evaluation/case-study-northwind"
    with sessions(runtime.database)() as session:
        reasons = session.scalars(select(StageMove.reason).order_by(StageMove.id)).all()
    assert all(reason.strip() for reason in reasons)


def test_quiet_hours_are_the_contacts_own(runtime: Runtime) -> None:
    # Monday 09:00 in Paris is 00:00 in Los Angeles: the email waits for 08:30 there.
    add_contact(runtime, "sam@globex.example", **{**PROFILE, "timezone": "America/Los_Angeles"})
    report = runtime.dispatcher.tick()
    assert (report.sent, report.deferred) == (0, 1)
    assert report.deferral_reasons == {"quiet_hours": 1}
    with sessions(runtime.database)() as session:
        deferral = session.scalars(select(Deferral)).one()
        enrollment = session.scalars(select(Enrollment)).one()
    assert (
        deferral.until is not None
        and "quiet hours 19:00-08:30 in America/Los_Angeles" in deferral.reason
    )
    assert enrollment.due_at == deferral.until
    local = deferral.until.astimezone(ZoneInfo("America/Los_Angeles"))
    assert (local.hour, local.minute, local.weekday()) == (8, 30, 0)
    runtime.clock.set(deferral.until)  # type: ignore[attr-defined]
    assert runtime.dispatcher.tick().sent == 1
    assert messages(runtime)[0].sent_at == deferral.until


def test_two_workflows_share_one_set_of_caps(
    project_dir: Path, clock: FixedClock, database_url: str
) -> None:
    webinar = project_dir / "workflows" / "webinar-follow-up.yaml"
    webinar.write_text(webinar.read_text().replace("wait: 1d", "wait: 0d", 1))
    runtime = open_runtime(project_dir, clock=clock, database=database_url)
    add_contact(runtime, "ana@acme.example", stage=None, **PROFILE)
    outcome = event(runtime, "ana@acme.example", "webinar_registered")
    assert sorted(outcome.enrolled) == ["guide-nurture", "webinar-follow-up"]
    report = runtime.dispatcher.tick()
    assert (report.sent, report.deferred) == (1, 1)
    assert set(report.deferral_reasons) == {"min_gap", "per_day", "quiet_hours"}
    with sessions(runtime.database)() as session:
        deferral = session.scalars(select(Deferral)).one()
    assert "cap of 1 email a day reached" in deferral.reason and "minimum gap" in deferral.reason
    for _ in range(40):
        advance(runtime, hours=6)
        runtime.dispatcher.tick()
    sent = messages(runtime, "ana@acme.example")
    discovery = {c for c in runtime.project.content if c.startswith("discovery/")}
    assert sorted(m.content_id for m in sent) == sorted(discovery), "each piece once, all of them"
    for earlier, later in itertools.pairwise(sent):
        assert later.sent_at - earlier.sent_at >= timedelta(hours=20)
    runtime.database.dispose()


def test_suppression_is_checked_at_send_time(runtime: Runtime) -> None:
    add_contact(runtime, "ana@acme.example", **PROFILE)
    runtime.dispatcher.tick()
    event(runtime, "ana@acme.example", "unsubscribed")
    with sessions(runtime.database).begin() as session:  # a workflow still thinks it is due
        session.execute(
            Enrollment.__table__.update().values(status="active", due_at=runtime.clock.now())
        )
    advance(runtime, days=10)
    report = runtime.dispatcher.tick()
    assert report.sent == 0 and report.ended == 1
    assert len(messages(runtime)) == 1
    with sessions(runtime.database)() as session:
        assert session.scalar(select(Suppression.reason)) == "unsubscribed"
        assert session.scalar(select(Enrollment.end_reason)) == "suppressed: unsubscribed"


def test_a_goal_ends_the_workflow(runtime: Runtime) -> None:
    add_contact(runtime, "ana@acme.example", **PROFILE)
    runtime.dispatcher.tick()
    outcome = event(runtime, "ana@acme.example", "replied")
    assert outcome.ended == ["guide-nurture: goal: replied"]
    advance(runtime, days=7)
    assert runtime.dispatcher.tick().sent == 0


def test_never_decision_content_to_a_lead(runtime: Runtime) -> None:
    add_contact(runtime, "lea@initech.example", **{**PROFILE, "seniority": "student"})
    for _ in range(40):
        runtime.dispatcher.tick()
        advance(runtime, hours=12)
    assert contact(runtime, "lea@initech.example").stage == "lead"
    phases = {m.phase for m in messages(runtime)}
    assert phases == {"discovery"}
    with sessions(runtime.database)() as session:
        waiting = session.scalars(select(Enrollment)).one()
    assert waiting.status == "waiting" and "all discovery content" in (waiting.hold_reason or "")


def test_the_database_refuses_a_second_send_of_one_piece(runtime: Runtime) -> None:
    add_contact(runtime, "ana@acme.example", **PROFILE)
    runtime.dispatcher.tick()
    (sent,) = messages(runtime)
    row = {c.name: getattr(sent, c.name) for c in Message.__table__.columns if c.name != "id"}
    row.update(rfc_message_id="<other@keel-retention.example>", step_key="another-step")
    with pytest.raises(IntegrityError), sessions(runtime.database).begin() as session:
        session.execute(insert(Message), [row])


class Crash(BaseException):
    """A process dying mid-delivery (a BaseException: nothing catches it)."""


class CrashingTransport:
    def send(self, outgoing: Outgoing) -> None:
        raise Crash


def test_a_crash_after_reservation_never_resends(runtime: Runtime) -> None:
    add_contact(runtime, "ana@acme.example", **PROFILE)
    crashing = with_transport(runtime, CrashingTransport())
    with pytest.raises(Crash):
        crashing.tick()
    (reserved,) = messages(runtime)
    assert reserved.status == "sending"
    advance(runtime, days=30)
    for _ in range(5):
        runtime.dispatcher.tick()
        advance(runtime, days=1)
    sent = messages(runtime)
    assert sent[0].status == "sending" and sent[0].content_id == "discovery/hidden-cost-of-churn"
    assert [m.content_id for m in sent].count("discovery/hidden-cost-of-churn") == 1


class FailingTransport:
    def send(self, outgoing: Outgoing) -> None:
        raise ConnectionRefusedError("relay refused")


def test_a_transport_error_fails_the_message_and_is_recorded(runtime: Runtime) -> None:
    add_contact(runtime, "ana@acme.example", **PROFILE)
    failing = with_transport(runtime, FailingTransport())
    report = failing.tick()
    assert (report.sent, report.failed) == (0, 1)
    (message,) = messages(runtime)
    assert message.status == "failed" and "relay refused" in (message.error or "")


def test_concurrent_dispatchers_never_duplicate_nor_break_caps(runtime: Runtime) -> None:
    for i in range(120):
        add_contact(runtime, f"p{i}@acme{i % 7}.example", **PROFILE)
    race(runtime)
    per_contact, per_account, repeats = sends_per(runtime)
    assert repeats == 0 and set(per_contact.values()) == {1}, "nobody gets two emails in one day"
    # 120 people in 7 accounts, at most 2 emails a day per account: every last slot was
    # contended by four dispatchers, and none was taken twice.
    assert per_account == {f"acme{i}.example": 2 for i in range(7)}
    assert len(outbox(runtime)) == 14


def test_concurrent_dispatchers_without_account_caps_send_to_everyone_once(
    project_dir: Path, clock: FixedClock, database_url: str
) -> None:
    settings = project_dir / "nurture.yaml"
    settings.write_text(settings.read_text().replace("  account_per_day: 2", ""))
    runtime = open_runtime(project_dir, clock=clock, database=database_url)
    for i in range(120):
        add_contact(runtime, f"p{i}@acme{i % 7}.example", **PROFILE)
    race(runtime)
    per_contact, _, repeats = sends_per(runtime)
    assert repeats == 0 and len(per_contact) == 120 and set(per_contact.values()) == {1}
    runtime.database.dispose()


def test_a_restart_resumes_where_it_was(runtime: Runtime, project_dir: Path) -> None:
    add_contact(runtime, "ana@acme.example", **PROFILE)
    runtime.dispatcher.tick()
    url = runtime.database.url.render_as_string(hide_password=False)
    runtime.database.dispose()
    advance(runtime, days=3)
    restarted = open_runtime(project_dir, clock=runtime.clock, database=url)
    assert restarted.dispatcher.tick().sent == 1
    assert [m.content_id for m in messages(restarted)] == [
        "discovery/hidden-cost-of-churn",
        "discovery/activation-metrics",
    ]
    restarted.database.dispose()


class DiesAfterReserving(Dispatcher):
    """A dispatcher whose process dies right after the reservation commits."""

    def _deliver(self, batch: Any) -> None:
        raise Crash


def test_reconcile_marks_unconfirmed_unknown_and_never_resends(runtime: Runtime) -> None:
    add_contact(runtime, "ana@acme.example", **PROFILE)
    crashing = with_transport(runtime, CrashingTransport())
    with pytest.raises(Crash):
        crashing.tick()
    assert runtime.dispatcher.reconcile() == (0, 0)  # within the lease: left alone
    advance(runtime, minutes=11)
    assert runtime.dispatcher.reconcile() == (1, 0)
    (message,) = messages(runtime)
    assert message.status == "unknown" and outbox(runtime) == []
    assert runtime.dispatcher.reconcile() == (0, 0)


def test_reconcile_delivers_what_never_reached_the_transport(runtime: Runtime) -> None:
    add_contact(runtime, "ana@acme.example", **PROFILE)
    add_contact(runtime, "bob@initech.example", **PROFILE)
    dying = DiesAfterReserving(
        runtime.project,
        runtime.database,
        runtime.dispatcher.transport,
        runtime.clock,
        runtime.links,
    )
    with pytest.raises(Crash):
        dying.tick()
    assert {m.status for m in messages(runtime)} == {"queued"}
    event(runtime, "bob@initech.example", "unsubscribed")
    advance(runtime, minutes=11)
    assert runtime.dispatcher.reconcile() == (0, 1)
    statuses = {m.contact_id: (m.status, m.error) for m in messages(runtime)}
    assert sorted(s for s, _ in statuses.values()) == ["failed", "sent"]
    assert ("failed", "suppressed before delivery") in statuses.values()
    (path,) = outbox(runtime)
    assert parse_eml(path)["To"] == "Ana <ana@acme.example>"
    assert runtime.dispatcher.reconcile() == (0, 0)


def test_a_person_settles_unknown_messages(runtime: Runtime, project_dir: Path) -> None:
    from click.testing import CliRunner

    from nurture.cli import main

    for address in ("ana@acme.example", "bob@initech.example"):
        add_contact(runtime, address, **PROFILE)
    crashing = with_transport(runtime, CrashingTransport())
    with pytest.raises(Crash):
        crashing.tick()
    advance(runtime, minutes=11)
    runtime.dispatcher.reconcile()
    unknown = [m for m in messages(runtime) if m.status == "unknown"]
    assert unknown, "the crash left a message unknown"
    url = runtime.database.url.render_as_string(hide_password=False)
    base = ["--project", str(project_dir), "--db", url]
    listed = CliRunner().invoke(main, [*base, "messages"])
    assert listed.exit_code == 0 and str(unknown[0].id) in listed.output
    assert runtime.dispatcher.settle(unknown[0].id, sent=False)
    assert [m.status for m in messages(runtime) if m.id == unknown[0].id] == ["sent"]
    assert len(outbox(runtime)) == 1
    assert not runtime.dispatcher.settle(unknown[0].id, sent=True), "only unknown messages settle"
    refused = CliRunner().invoke(main, [*base, "messages", "settle", str(unknown[0].id), "--sent"])
    assert refused.exit_code == 1 and "is not unknown" in refused.output
