"""The full pacing policy through the engine: overrides, account caps, sunset, rates, explain."""

from __future__ import annotations

import multiprocessing
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from nurture.cli import main
from nurture.clock import FixedClock
from nurture.db import sessions
from nurture.explain import explain
from nurture.feedback import set_caps
from nurture.models import Contact, Enrollment
from nurture.problems import ProjectError
from nurture.project import load_project
from nurture.runtime import Runtime, open_runtime
from tests.conftest import MONDAY_MORNING
from tests.helpers import PROFILE, add_contact, event, messages, sends_per


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def open_with(project_dir: Path, clock: FixedClock, database_url: str) -> Runtime:
    return open_runtime(project_dir, clock=clock, database=database_url)


def run_days(rt: Runtime, days: int, step: timedelta = timedelta(hours=3)) -> None:
    for _ in range(int(timedelta(days=days) / step)):
        rt.dispatcher.tick()
        rt.clock.advance(step)  # type: ignore[attr-defined]


def test_a_workflow_may_set_its_own_caps(
    project_dir: Path, clock: FixedClock, database_url: str
) -> None:
    workflow = project_dir / "workflows" / "guide-nurture.yaml"
    edit(workflow, "tracks:", "caps:\n  per_week: 1\n  min_gap: 2d\ntracks:")
    rt = open_with(project_dir, clock, database_url)
    add_contact(rt, "ana@acme.example", **PROFILE)
    run_days(rt, 14)
    times = [m.sent_at for m in messages(rt)]
    assert len(times) == 2
    assert times[1] - times[0] >= timedelta(days=7)
    rt.database.dispose()


def test_a_person_keeps_their_own_caps(runtime: Runtime) -> None:
    add_contact(runtime, "ana@acme.example", **PROFILE)
    with sessions(runtime.database).begin() as session:
        set_caps(
            session,
            runtime.project,
            "ana@acme.example",
            {"per_week": 1, "weekdays": ["tue"]},
            runtime.clock.now(),
        )
    run_days(runtime, 15)
    sent = [m.sent_at.astimezone(ZoneInfo("Europe/Paris")) for m in messages(runtime)]
    assert len(sent) == 2 and all(s.weekday() == 1 for s in sent)
    with pytest.raises(ValueError, match="per_day"), sessions(runtime.database).begin() as session:
        set_caps(session, runtime.project, "ana@acme.example", {"per_day": 5}, runtime.clock.now())
    with (
        pytest.raises(ValueError, match="quiet_hours"),
        sessions(runtime.database).begin() as session,
    ):
        set_caps(
            session,
            runtime.project,
            "ana@acme.example",
            {"quiet_hours": "late"},
            runtime.clock.now(),
        )


def test_workflow_caps_that_do_not_fit_the_project_are_refused(project_dir: Path) -> None:
    workflow = project_dir / "workflows" / "guide-nurture.yaml"
    edit(workflow, "tracks:", "caps:\n  per_day: 4\ntracks:")
    with pytest.raises(ProjectError) as caught:
        load_project(project_dir)
    (problem,) = caught.value.problems
    assert str(problem).startswith("workflows/guide-nurture.yaml:")
    assert "caps: per_day (4) is above per_week (3)" in str(problem)


def test_the_wait_counts_from_when_the_email_really_went(runtime: Runtime) -> None:
    runtime.clock.set(MONDAY_MORNING + timedelta(hours=12))  # type: ignore[attr-defined]  # 21:00 Paris
    add_contact(runtime, "ana@acme.example", **PROFILE)
    run_days(runtime, 6, step=timedelta(minutes=30))
    first, second = messages(runtime)[:2]
    paris = ZoneInfo("Europe/Paris")
    assert first.sent_at.astimezone(paris).strftime("%a %H:%M") == "Tue 08:30"
    assert second.sent_at - first.sent_at == timedelta(days=3)


def test_sunset_stops_and_engagement_brings_back(
    project_dir: Path, clock: FixedClock, database_url: str
) -> None:
    edit(project_dir / "nurture.yaml", "sunset_after: 6", "sunset_after: 2")
    rt = open_with(project_dir, clock, database_url)
    add_contact(rt, "ana@acme.example", **PROFILE)
    run_days(rt, 12)
    assert len(messages(rt)) == 2
    with sessions(rt.database)() as session:
        enrollment = session.scalars(select(Enrollment)).one()
    assert enrollment.status == "waiting"
    assert enrollment.hold_reason == "sunset: 2 emails in a row with no engagement"
    assert "sunset: 2 emails in a row" in explain(rt, "ana@acme.example")[1]
    event(rt, "ana@acme.example", "email_clicked", message_id=messages(rt)[-1].id)
    run_days(rt, 4)  # Saturday to Wednesday: the weekend still holds it
    assert len(messages(rt)) == 3
    rt.database.dispose()


def test_one_account_is_not_written_to_all_at_once(runtime: Runtime) -> None:
    for name in ("ana", "bob", "cleo", "dan"):
        add_contact(runtime, f"{name}@acme.example", **PROFILE)
    add_contact(runtime, "eve@gmail.com", **PROFILE)
    add_contact(runtime, "fay@gmail.com", **PROFILE)
    report = runtime.dispatcher.tick()
    assert report.sent == 4  # two at acme (its cap), and both free-mail people: not one account
    assert report.deferral_reasons["account_per_day"] == 2
    with sessions(runtime.database)() as session:
        accounts = dict(session.execute(select(Contact.email, Contact.account)).all())
    assert accounts["eve@gmail.com"] is None and accounts["ana@acme.example"] == "acme.example"


def test_a_meeting_puts_the_rest_of_the_account_on_hold(runtime: Runtime) -> None:
    add_contact(runtime, "ana@acme.example", **PROFILE)
    add_contact(runtime, "bob@acme.example", **PROFILE)
    event(runtime, "bob@acme.example", "meeting_booked")
    runtime.dispatcher.tick()
    assert [m for m in messages(runtime) if m.stage_at_send] == []
    with sessions(runtime.database)() as session:
        due = session.scalar(
            select(Enrollment.due_at)
            .join(Contact, Contact.id == Enrollment.contact_id)
            .where(Contact.email == "ana@acme.example")
        )
    assert due == MONDAY_MORNING + timedelta(days=30)
    assert "account on hold until" in explain(runtime, "ana@acme.example")[1]


def test_the_sender_rate_is_kept(project_dir: Path, clock: FixedClock, database_url: str) -> None:
    edit(
        project_dir / "nurture.yaml",
        "  account_per_day: 2",
        "  rate_per_minute: 5\n  rate_per_hour: 12",
    )
    rt = open_with(project_dir, clock, database_url)
    for i in range(20):
        add_contact(rt, f"p{i}@c{i}.example", **PROFILE)
    first = rt.dispatcher.tick()
    assert first.sent == 5 and first.deferral_reasons["rate_per_minute"] == 15
    for _ in range(10):
        rt.clock.advance(timedelta(minutes=1))  # type: ignore[attr-defined]
        rt.dispatcher.tick()
    assert len(messages(rt)) == 12  # the hourly rate now holds the rest
    rt.clock.advance(timedelta(hours=1))  # type: ignore[attr-defined]
    for _ in range(3):
        rt.dispatcher.tick()
        rt.clock.advance(timedelta(minutes=1))  # type: ignore[attr-defined]
    assert len(messages(rt)) == 20
    rt.database.dispose()


def test_explain_in_plain_words(runtime: Runtime) -> None:
    runtime.clock.set(MONDAY_MORNING + timedelta(hours=12))  # type: ignore[attr-defined]  # 21:00 Paris
    add_contact(
        runtime, "ana@acme.example", first_name="Ana", company="Acme", timezone="Europe/Paris"
    )
    runtime.dispatcher.tick()
    lines = explain(runtime, "ana@acme.example")
    assert lines[0].startswith(
        "ana@acme.example (Ana Acme): stage lead since Mon 02 Mar 2026 21:00 CET"
    )
    assert lines[1] == (
        "guide-nurture: next discovery/hidden-cost-of-churn held until "
        "Tue 03 Mar 2026 08:30 CET by: quiet hours 19:00-08:30 in Europe/Paris"
    )
    runtime.clock.advance(timedelta(hours=12))  # type: ignore[attr-defined]
    runtime.dispatcher.tick()
    lines = explain(runtime, "ana@acme.example")
    assert lines[1].startswith(
        "guide-nurture: discovery/activation-metrics comes due Fri 06 Mar 2026 09:00 CET "
        "(its wait of 3d after the previous email); next discovery/activation-metrics"
    )
    event(runtime, "ana@acme.example", "unsubscribed")
    lines = explain(runtime, "ana@acme.example")
    assert "Suppressed (unsubscribed)" in lines[1]
    result = CliRunner().invoke(
        main,
        [
            "--project",
            str(runtime.project.root),
            "--db",
            runtime.database.url.render_as_string(hide_password=False),
            "explain",
            "nobody@acme.example",
        ],
    )
    assert result.exit_code == 1 and "no contact nobody@acme.example" in result.output


def _race(project_dir: str, url: str, start: str, barrier: Any) -> None:
    from datetime import datetime

    rt = open_runtime(
        Path(project_dir), clock=FixedClock(datetime.fromisoformat(start)), database=url
    )
    from nurture.engine import Dispatcher

    dispatcher = Dispatcher(
        rt.project, rt.database, rt.dispatcher.transport, rt.clock, rt.links, batch_size=10
    )
    barrier.wait(60)  # all four start claiming at once
    for _ in range(3):
        dispatcher.tick()
    rt.database.dispose()


def test_processes_racing_on_postgresql_keep_every_cap(
    project_dir: Path, postgres_url: str
) -> None:
    clock = FixedClock(MONDAY_MORNING)
    rt = open_runtime(project_dir, clock=clock, database=postgres_url)
    for i in range(90):
        add_contact(rt, f"p{i}@acme{i % 9}.example", **PROFILE)
    for i in range(0, 90, 3):  # a third of them also enter the webinar workflow
        event(rt, f"p{i}@acme{i % 9}.example", "webinar_registered")
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(4)
    processes = [
        context.Process(
            target=_race, args=(str(project_dir), postgres_url, MONDAY_MORNING.isoformat(), barrier)
        )
        for _ in range(4)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
        assert process.exitcode == 0
    per_contact, per_account, repeats = sends_per(rt)
    assert repeats == 0
    assert set(per_contact.values()) == {1}
    assert per_account == {f"acme{i}.example": 2 for i in range(9)}
    rt.database.dispose()


def test_new_content_reaches_people_whose_track_was_used_up(
    project_dir: Path, clock: FixedClock, database_url: str
) -> None:
    rt = open_with(project_dir, clock, database_url)
    add_contact(rt, "ana@acme.example", **PROFILE)
    run_days(rt, 21)
    assert len(messages(rt)) == 3
    rt.database.dispose()
    piece = project_dir / "content" / "discovery" / "activation-metrics.mjml"
    (project_dir / "content" / "discovery" / "renewal-signals.mjml").write_text(
        piece.read_text().replace("Three activation metrics", "Renewal signals")
    )
    edit(
        project_dir / "workflows" / "guide-nurture.yaml",
        "  evaluation:",
        "    - content: discovery/renewal-signals\n      wait: 2d\n  evaluation:",
    )
    restarted = open_with(project_dir, clock, database_url)
    assert restarted.dispatcher.wake_waiting() == 1
    run_days(restarted, 7)
    assert [m.content_id for m in messages(restarted)][-1] == "discovery/renewal-signals"
    restarted.database.dispose()
