"""send_time: best: the hour chosen from a known history, the project's hour, quiet hours, the
24 h bound, and the engine sending at the person's hour (the pacing oracle's property test on
send_time is in tests/test_pacing.py)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Row, select

from nurture import eventstore, sendhours
from nurture.clock import FixedClock
from nurture.core.pacing import Decision, Policy, decide
from nurture.core.sendtime import (
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
from nurture.db import make_engine, sessions
from nurture.explain import explain
from nurture.jobs import refresh_reports
from nurture.models import Contact, Deferral, Message
from nurture.problems import ProjectError
from nurture.project import load_project
from nurture.reports import timeline
from nurture.runtime import Runtime, open_runtime
from nurture.simulate import reading_hour, simulate
from nurture.users import create_user
from nurture.web import create_app
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
    assert open_hours(PROJECT_POLICY) == tuple(range(8, 19))  # 08:30-19:00
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

    def caps_at(t: datetime) -> Decision:
        return decide(now=t, sent=[], policy=policy, zone=PARIS)

    def at_hour(now: datetime, hour: int) -> Decision:
        return place(caps_at(now), choice=Choice(hour, "best hour"), zone=PARIS, caps_at=caps_at)

    held = at_hour(NOW, 14)  # Monday 09:00
    assert held.send_at == NOW + timedelta(hours=5) and not held.send_now
    assert [(h.rule, h.detail) for h in held.holds] == [("send_time", "send time: best hour")]
    assert at_hour(NOW, 9).send_now
    # 08:00-09:00 has gone by today; tomorrow's opens at 08:30 (quiet hours end), 23.5 h on
    assert at_hour(NOW, 8).send_at == NOW + timedelta(hours=23, minutes=30)
    # Friday 17:00: Monday 14:00 is more than 24 h away (the weekend): it goes now
    friday = datetime(2026, 3, 6, 16, 0, tzinfo=UTC)
    assert at_hour(friday, 14).send_now
    # due on Saturday: the caps hold it to Monday 08:30, and its hour counts from there
    saturday = datetime(2026, 3, 7, 9, 0, tzinfo=UTC)
    weekend = at_hour(saturday, 14)
    assert weekend.send_at == datetime(2026, 3, 9, 13, 0, tzinfo=UTC)
    assert [h.rule for h in weekend.holds] == ["weekday", "quiet_hours", "send_time"]
    assert all(h.until == weekend.send_at for h in weekend.holds)
    assert at_hour(saturday, 19).send_at == caps_at(saturday).send_at  # a quiet hour


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
        eventstore.store(
            session.connection(),
            [
                {
                    "contact_id": contact_id,
                    "kind": "email_opened" if n % 2 else "email_clicked",
                    "occurred_at": at,
                    "recorded_at": at,
                    "properties": {},
                    "machine": machine,
                }
                for n, at in enumerate(instants)
            ],
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
        "CET by: send time: best hour 15:00 Europe/Paris from 5 real opens/clicks"
    ) in lines
    runtime.dispatcher.tick()
    # Ana now reads at 16:00: the hold for 15:00 stands (an email is held for its hour once)
    _opens(runtime, "ana@acme.example", [paris(d, 16, 10) for d in range(18, 28)])
    for _ in range(30):  # a tick every hour from Monday 10:00
        runtime.clock.advance(timedelta(hours=1))  # type: ignore[attr-defined]
        runtime.dispatcher.tick()
    ana, bruno = messages(runtime, "ana@acme.example"), messages(runtime, "bruno@acme.example")
    assert len(ana) == 1 and len(bruno) == 1
    assert ana[0].sent_at == NOW + timedelta(hours=6)  # Monday 15:00 in Paris
    assert ana[0].send_time == (
        "best hour 16:00 Europe/Paris from 15 real opens/clicks; held for it once already: "
        "sent as the caps allow"
    )
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
    assert "send time: best hour 15:00 Europe/Paris from 5 real opens/clicks" in said
    # the contact's timeline on the dashboard says it too
    with sessions(runtime.database).begin() as session:
        create_user(session, "ops@keel.example", "correct horse battery staple", NOW)
    client = create_app(runtime).test_client()
    login = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', login)
    assert token is not None
    form = {"email": "ops@keel.example", "password": "correct horse battery staple"}
    assert client.post("/login", data={**form, "csrf_token": token[1]}).status_code == 302
    page = client.get(f"/contacts/{ana[0].contact_id}").get_data(as_text=True)
    assert "send time: best hour 15:00 Europe/Paris from 5 real opens/clicks" in page
    assert f"send time: {ana[0].send_time}" in page
    runtime.database.dispose()


def test_simulated_people_get_their_email_at_the_hour_they_read(
    project_dir: Path, tmp_path: Path
) -> None:
    """The simulator's people read their mail at an hour of their own: with send_time: best
    on the whole guide workflow, its emails go at that hour once the person has engaged."""
    workflow = project_dir / "workflows" / "guide-nurture.yaml"
    workflow.write_text(workflow.read_text().replace("tracks:", "send_time: best\ntracks:", 1))
    database = tmp_path / "sim.db"
    result = simulate(project_dir, days=21, contacts=60, seed=3, database=str(database))
    assert result.violations == []
    engine = make_engine(f"sqlite:///{database}")
    with sessions(engine)() as session:
        rows = session.execute(
            select(Contact.email, Contact.timezone, Message.sent_at, Message.send_time).join(
                Contact, Contact.id == Message.contact_id
            )
        ).all()
    engine.dispose()
    timed = [r for r in rows if r.send_time is not None]
    assert len(timed) == result.send_time["emails"]

    def at_their_hour(row: Row[Any]) -> bool:
        zone = ZoneInfo(row.timezone or "Europe/Paris")
        return bool(row.sent_at.astimezone(zone).hour == reading_hour(3, row.email))

    assert result.send_time["at_their_hour"] == sum(1 for r in timed if at_their_hour(r))
    own = [r for r in timed if r.send_time.startswith("best hour")]
    hit = [r for r in own if at_their_hour(r)]
    assert len(own) >= 20 and len(hit) >= 0.6 * len(own), (len(own), len(hit))


def test_the_projects_hours_are_kept_by_the_reports_job(
    project_dir: Path, clock: FixedClock, database_url: str
) -> None:
    """The dispatcher reads the project's hours from report_cache (renewed hourly by the
    reports job), not tallying events in its claim; with none fresh, it tallies them."""
    runtime = open_runtime(project_dir, clock=clock, database=database_url)
    zone = runtime.project.settings.timezone
    add_contact(runtime, "old@acme.example", stage=None)
    _opens(runtime, "old@acme.example", [paris(d, 11, 20) for d in range(1, 28)])
    with sessions(runtime.database)() as session:
        tallied = sendhours.tally(session, zone, NOW)
        assert sendhours.cached(session, NOW) is None
        assert sendhours.project_hours(session, zone, NOW) == tallied  # none kept: tallied
    assert tallied.events == 27
    refresh_reports(runtime, runtime.clock.now())
    # later opens at 17:00 are not seen until the job renews the figures
    _opens(runtime, "old@acme.example", [paris(d, 17, 5) for d in range(1, 28)])
    with sessions(runtime.database)() as session:
        assert sendhours.project_hours(session, zone, NOW) == tallied
        later = NOW + sendhours.REFRESH - timedelta(minutes=1)
        assert sendhours.cached(session, later) is not None
    assert not sendhours.refresh_if_stale(runtime.database, zone, later)
    renewed = NOW + sendhours.REFRESH
    assert sendhours.refresh_if_stale(runtime.database, zone, renewed)
    with sessions(runtime.database)() as session:
        kept = sendhours.project_hours(session, zone, renewed)
        assert kept == sendhours.tally(session, zone, renewed)
        assert kept.events == 54
        # the job stopped: figures older than MAX_AGE are not used
        stale = renewed + sendhours.MAX_AGE
        assert sendhours.cached(session, stale) is None
    runtime.database.dispose()
