"""send_time: best: the hour chosen from a known history, the project's hour, quiet hours, the
24 h bound, and the engine sending at the person's hour (the pacing oracle's property test on
send_time is in tests/test_pacing.py)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from nurture.clock import FixedClock
from nurture.db import sessions
from nurture.explain import explain
from nurture.models import Contact, Deferral, Event
from nurture.pacing import Policy, decide
from nurture.problems import ProjectError
from nurture.project import load_project
from nurture.reports import timeline
from nurture.runtime import Runtime, open_runtime
from nurture.sendtime import (
    DEFAULT_HOUR,
    HALF_LIFE,
    Choice,
    Hours,
    choose,
    open_hours,
    place,
    tally,
    weight,
)
from tests.helpers import PROFILE, add_contact, messages

PARIS = ZoneInfo("Europe/Paris")
NOW = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # Monday 09:00 in Paris
PROJECT_POLICY = Policy(quiet_start=time(19), quiet_end=time(8, 30))


def paris(day: int, hour: int, minute: int = 0) -> datetime:
    """An instant of February 2026 on Paris's clock (UTC+1 all month)."""
    return datetime(2026, 2, day, hour, minute, tzinfo=PARIS).astimezone(UTC)


def person(*instants: datetime) -> Hours:
    return tally(((at, PARIS, 1) for at in instants), NOW)


def test_the_hour_of_most_real_engagement() -> None:
    history = person(
        *(paris(day, 14, 10 + day) for day in (2, 5, 9, 12, 16, 20, 24)),
        paris(25, 9, 5),
        paris(26, 9, 40),
    )
    choice = choose(history, Hours(), PROJECT_POLICY, PARIS)
    assert choice == Choice(14, "best hour 14:00 Europe/Paris from 9 real opens/clicks")


def test_recent_engagement_weighs_more() -> None:
    assert weight(timedelta(0)) == 1
    assert weight(HALF_LIFE) == pytest.approx(0.5)
    assert weight(3 * HALF_LIFE) == pytest.approx(0.125)
    old = [NOW - timedelta(days=90) + timedelta(days=d, hours=1) for d in range(3)]  # 10:00
    recent = [paris(27, 16), paris(28, 16, 30)]
    history = person(*old, *recent)
    assert [at.astimezone(PARIS).hour for at in old] == [10, 10, 10]
    assert history.weights[10] < history.weights[16]
    assert choose(history, Hours(), PROJECT_POLICY, PARIS).hour == 16
    # the same three a quarter later (as recent as the others): they win
    again = [at + timedelta(days=88) for at in old]
    assert choose(person(*again, *recent), Hours(), PROJECT_POLICY, PARIS).hour == 10


def test_never_an_hour_inside_quiet_hours() -> None:
    assert open_hours(PROJECT_POLICY) == list(range(8, 19))  # 08:30-19:00
    evenings = person(paris(20, 22), paris(21, 22, 30), paris(22, 21))
    choice = choose(evenings, Hours(), PROJECT_POLICY, PARIS)
    assert choice.hour == 18
    assert choice.why == (
        "best hour 18:00 Europe/Paris (nearest outside quiet hours to 22:00) "
        "from 3 real opens/clicks"
    )
    mostly_evening = person(paris(20, 22), paris(21, 22), paris(22, 11))
    assert choose(mostly_evening, Hours(), PROJECT_POLICY, PARIS).hour == 11
    early = person(paris(20, 6), paris(21, 7))
    assert choose(early, Hours(), PROJECT_POLICY, PARIS).hour == 8


def test_no_history_takes_the_projects_hour_then_the_default() -> None:
    everyone = tally(
        [(paris(20, 11), PARIS, 40), (paris(20, 15), PARIS, 12), (paris(21, 23), PARIS, 90)], NOW
    )
    choice = choose(Hours(), everyone, PROJECT_POLICY, PARIS)
    assert choice == Choice(
        11,
        "project's best hour 11:00 Europe/Paris (no real opens/clicks of their own; "
        "142 real opens/clicks in the project)",
    )
    default = choose(Hours(), Hours(), PROJECT_POLICY, PARIS)
    assert default.hour == DEFAULT_HOUR == 10
    assert (
        default.why == "default hour 10:00 Europe/Paris (no real opens/clicks in the project yet)"
    )
    late = Policy(quiet_start=time(18), quiet_end=time(12))
    assert choose(Hours(), Hours(), late, PARIS).hour == 12


def test_held_until_the_hour_and_never_more_than_a_day_late() -> None:
    policy = Policy(quiet_start=time(19), quiet_end=time(8, 30), min_gap=timedelta(0))

    def caps_at(t: datetime) -> object:
        return decide(now=t, sent=[], policy=policy, zone=PARIS)

    monday = decide(now=NOW, sent=[], policy=policy, zone=PARIS)
    held = place(monday, choice=Choice(14, "best hour"), due=NOW, zone=PARIS, caps_at=caps_at)  # type: ignore[arg-type]
    assert held.send_at == NOW + timedelta(hours=5) and not held.send_now
    assert [h.rule for h in held.holds] == ["send_time"]
    # Friday 17:00: Monday 14:00 is more than 24 h away (weekend): it goes when due
    friday = datetime(2026, 3, 6, 16, 0, tzinfo=UTC)
    now_friday = decide(now=friday, sent=[], policy=policy, zone=PARIS)
    kept = place(now_friday, choice=Choice(14, "x"), due=friday, zone=PARIS, caps_at=caps_at)  # type: ignore[arg-type]
    assert kept.send_now and kept.send_at == friday
    # due on Sunday: held to Monday 14:00 only while that is within 24 h of it
    sunday_15h, sunday_13h = NOW - timedelta(hours=18), NOW - timedelta(hours=20)
    within = place(monday, choice=Choice(14, "x"), due=sunday_15h, zone=PARIS, caps_at=caps_at)  # type: ignore[arg-type]
    assert within.send_at == NOW + timedelta(hours=5)
    beyond = place(monday, choice=Choice(14, "x"), due=sunday_13h, zone=PARIS, caps_at=caps_at)  # type: ignore[arg-type]
    assert beyond.send_now


def test_a_bad_send_time_names_file_line_and_field(project_dir: Path) -> None:
    workflow = project_dir / "workflows" / "guide-nurture.yaml"
    text = workflow.read_text()
    workflow.write_text(
        text.replace("      wait: 1d\n", "      wait: 1d\n      send_time: soon\n", 1)
    )
    with pytest.raises(ProjectError) as raised:
        load_project(project_dir)
    line = text.splitlines().index("      wait: 1d") + 2
    message = str(raised.value)
    assert f"guide-nurture.yaml:{line}" in message and "send_time" in message
    assert "'best' or 'due'" in message
    workflow.write_text(text.replace("tracks:", "send_time: sometimes\ntracks:", 1))
    with pytest.raises(ProjectError, match="send_time"):
        load_project(project_dir)


def _opens(rt: Runtime, address: str, instants: list[datetime], machine: str | None = None) -> None:
    with sessions(rt.database).begin() as session:
        contact_id = session.scalar(select(Contact.id).where(Contact.email == address))
        assert contact_id is not None
        session.add_all(
            Event(
                contact_id=contact_id,
                kind="email_opened" if n % 2 else "email_clicked",
                occurred_at=at,
                recorded_at=at,
                properties={},
                machine=machine,
            )
            for n, at in enumerate(instants)
        )


def test_the_engine_sends_at_each_persons_hour(
    project_dir: Path, clock: FixedClock, database_url: str
) -> None:
    workflow = project_dir / "workflows" / "guide-nurture.yaml"
    workflow.write_text(workflow.read_text().replace("tracks:", "send_time: best\ntracks:", 1))
    runtime = open_runtime(project_dir, clock=clock, database=database_url)
    # everyone engages at 11:00 (a contact in no workflow); Ana at 15:00, and privacy proxies
    # open her emails at 09:00 (left out); Bruno has no engagement of his own
    add_contact(runtime, "old@acme.example", stage=None)
    _opens(runtime, "old@acme.example", [paris(d, 11, 20) for d in range(1, 28)])
    add_contact(runtime, "ana@acme.example", **PROFILE)
    _opens(runtime, "ana@acme.example", [paris(d, 15, 5) for d in (3, 10, 17, 24, 26)])
    _opens(
        runtime,
        "ana@acme.example",
        [paris(d, 9, 1) for d in range(1, 28)],
        machine="Apple Mail Privacy Protection",
    )
    add_contact(runtime, "bruno@acme.example", **PROFILE)
    lines = explain(runtime, "ana@acme.example")
    assert (
        "guide-nurture: next discovery/hidden-cost-of-churn held until Mon 02 Mar 2026 15:00 "
        "CET by: best hour 15:00 Europe/Paris from 5 real opens/clicks"
    ) in lines
    for _ in range(30):  # a tick every hour from Monday 09:00
        runtime.dispatcher.tick()
        runtime.clock.advance(timedelta(hours=1))  # type: ignore[attr-defined]
    ana, bruno = messages(runtime, "ana@acme.example"), messages(runtime, "bruno@acme.example")
    assert len(ana) == 1 and len(bruno) == 1
    assert ana[0].sent_at == NOW + timedelta(hours=6)  # Monday 15:00 in Paris
    assert ana[0].send_time == "best hour 15:00 Europe/Paris from 5 real opens/clicks"
    assert bruno[0].sent_at.astimezone(PARIS).hour == 11
    assert bruno[0].sent_at - NOW == timedelta(hours=2)
    assert bruno[0].send_time is not None
    assert bruno[0].send_time.startswith("project's best hour 11:00 Europe/Paris")
    with sessions(runtime.database)() as session:
        held = session.scalars(select(Deferral).order_by(Deferral.id)).all()
        assert {(d.rules, d.until) for d in held} == {
            ("send_time", ana[0].sent_at),
            ("send_time", bruno[0].sent_at),
        }
        entries = timeline(session, ana[0].contact_id)
    said = [e.why for e in entries if e.kind in ("email", "deferral")]
    assert f"sent: {ana[0].subject} · send time: {ana[0].send_time}" in said
    assert "best hour 15:00 Europe/Paris from 5 real opens/clicks" in said
    runtime.database.dispose()
