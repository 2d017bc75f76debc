"""Decay with the injected clock: what stage rules and readers see, and the decay job."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from nurture.cli import main
from nurture.clock import FixedClock
from nurture.contacts import current_engagement
from nurture.db import sessions
from nurture.jobs import decay_scores, run_periodic
from nurture.models import ScoreChange
from nurture.runtime import Runtime, open_runtime
from tests.helpers import PROFILE, add_contact, contact, event


def later(rt: Runtime, **delta: float) -> None:
    assert isinstance(rt.clock, FixedClock)
    rt.clock.advance(timedelta(**delta))


def test_stage_rules_see_the_decayed_value(runtime: Runtime) -> None:
    add_contact(runtime, "ana@acme.example", **PROFILE)
    event(runtime, "ana@acme.example", "webinar_registered")
    event(runtime, "ana@acme.example", "webinar_attended")
    assert contact(runtime, "ana@acme.example").engagement == 30
    later(runtime, days=30)  # the example's half-life: 30 becomes exactly 15
    ana = contact(runtime, "ana@acme.example")
    assert current_engagement(ana, runtime.project.settings, runtime.clock.now()) == pytest.approx(
        15
    )
    outcome = event(runtime, "ana@acme.example", "page_visited", url="https://keel.example/pricing")
    # 15 + 15 = 30: below the MQL line of 35 (without decay it would be 45, an MQL).
    assert outcome.contact.stage == "lead"
    assert outcome.contact.engagement == pytest.approx(30)
    later(runtime, days=15)
    event(runtime, "ana@acme.example", "webinar_registered")
    # 30 halved over 15 days is 30/sqrt(2) = 21.21; plus 10.
    assert contact(runtime, "ana@acme.example").engagement == pytest.approx(30 / 2**0.5 + 10)


def test_the_decay_job_writes_the_current_value_with_a_ledger_line(runtime: Runtime) -> None:
    add_contact(runtime, "ana@acme.example", **PROFILE)
    add_contact(runtime, "bo@beta.example", **PROFILE)
    event(runtime, "ana@acme.example", "webinar_attended")
    later(runtime, hours=12)
    assert decay_scores(runtime, runtime.clock.now()) == 0  # 20 -> 19.77: under the 0.5 step
    later(runtime, days=30, hours=-12)
    assert decay_scores(runtime, runtime.clock.now()) == 1  # bo has no engagement at all
    ana = contact(runtime, "ana@acme.example")
    assert ana.engagement == pytest.approx(10) and ana.engagement_at == runtime.clock.now()
    with sessions(runtime.database)() as session:
        line = session.scalars(select(ScoreChange).where(ScoreChange.rule.like("decay%"))).one()
    assert (line.rule, line.points, line.value_after) == (
        "decay: half-life 30d",
        pytest.approx(-10),
        pytest.approx(10),
    )
    # Reading after the job gives what reading without it would have: nothing is lost.
    later(runtime, days=30)
    assert current_engagement(
        contact(runtime, "ana@acme.example"), runtime.project.settings, runtime.clock.now()
    ) == pytest.approx(5)
    later(runtime, days=300)
    run_periodic(runtime, runtime.clock.now())
    assert contact(runtime, "ana@acme.example").engagement == 0


def test_step_decay_with_the_clock(project_dir: Path, clock: FixedClock, tmp_path: Path) -> None:
    settings = project_dir / "nurture.yaml"
    settings.write_text(
        settings.read_text().replace(
            "    half_life: 30d\n", "    decay: {percent: 50, every: 7d}\n"
        )
    )
    rt = open_runtime(project_dir, clock=clock, database=f"sqlite:///{tmp_path / 's.db'}")
    assert clock.now().weekday() == 0  # Monday 08:00 UTC; the boundary was at 00:00
    add_contact(rt, "ana@acme.example", **PROFILE)
    event(rt, "ana@acme.example", "webinar_attended")  # 20
    clock.advance(timedelta(days=6, hours=15, minutes=59))  # Sunday 23:59
    assert (
        current_engagement(contact(rt, "ana@acme.example"), rt.project.settings, clock.now()) == 20
    )
    clock.advance(timedelta(minutes=1))  # Monday 00:00: half off
    assert (
        current_engagement(contact(rt, "ana@acme.example"), rt.project.settings, clock.now()) == 10
    )
    assert decay_scores(rt, clock.now()) == 1
    clock.advance(timedelta(days=13))
    assert decay_scores(rt, clock.now()) == 1  # one more boundary passed, not two
    assert contact(rt, "ana@acme.example").engagement == 5
    with sessions(rt.database)() as session:
        rules = list(
            session.scalars(select(ScoreChange.rule).where(ScoreChange.rule.like("decay%")))
        )
    assert rules == ["decay: -50% every 7d"] * 2


def test_an_event_recorded_late_decays_from_its_own_time(runtime: Runtime) -> None:
    """The API's `time`: a webinar attended 30 days ago holds what it would hold had it
    been recorded then (20 halved by the 30-day half-life), not a fresh 20."""
    from nurture.apikeys import create_key
    from nurture.web import create_app

    add_contact(runtime, "ana@acme.example", **PROFILE)
    with sessions(runtime.database).begin() as session:
        key = create_key(session, "website", runtime.clock.now())[1]
    client = create_app(runtime).test_client()
    month_ago = (runtime.clock.now() - timedelta(days=30)).isoformat()
    answer = client.post(
        "/api/v1/events",
        json={"email": "ana@acme.example", "kind": "webinar_attended", "time": month_ago},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert answer.status_code in (200, 201, 202), answer.json
    assert contact(runtime, "ana@acme.example").engagement == pytest.approx(10)
    with sessions(runtime.database)() as session:
        (change,) = session.scalars(select(ScoreChange).where(ScoreChange.axis == "engagement"))
    assert change.points == pytest.approx(10) and change.value_after == pytest.approx(10)
    # The same event told on time, then 30 days passing, gives the same engagement.
    add_contact(runtime, "bo@beta.example", **PROFILE)
    event(runtime, "bo@beta.example", "webinar_attended")
    later(runtime, days=30)
    bo = contact(runtime, "bo@beta.example")
    settings = runtime.project.settings
    assert current_engagement(bo, settings, runtime.clock.now()) == pytest.approx(20 / 2)


def test_nurture_event_at_a_past_time_decays(project_dir: Path) -> None:
    from click.testing import CliRunner

    from nurture.cli import main

    def run(*args: str) -> str:
        result = CliRunner().invoke(main, ["--project", str(project_dir), *args])
        assert result.exit_code == 0, result.output
        return result.output

    run("contact", "add", "ana@acme.example", "first_name=Ana", "--stage", "lead")
    output = run("event", "ana@acme.example", "webinar_attended", "--at", "2001-01-01")
    # Decades ago: nothing left of its 20 points (the ledger says 0, not +20).
    assert "engagement 0.0" in output and "+20" not in output


@pytest.mark.parametrize("seed", range(6))
def test_late_events_in_bulk_equal_one_by_one(project_dir: Path, tmp_path: Path, seed: int) -> None:
    """The event pipeline and the event path it replaced agree on late events too."""
    import random

    from nurture.db import write_transaction
    from nurture.feedback import upsert_contact
    from nurture.intake import Incoming, record_events
    from nurture.models import Contact
    from tests.reference_events import reference_record_event
    from tests.test_intake import events, fresh, state

    rng = random.Random(seed)
    bulk, single = fresh(project_dir, tmp_path, "bulk.db"), fresh(project_dir, tmp_path, "one.db")
    now = bulk.clock.now()
    items = [
        Incoming(
            i.email,
            i.kind,
            now - timedelta(hours=rng.choice([0, 5, 30, 200, 900])),
            i.properties,
            i.client_event_id,
        )
        for i in events(seed, 40)
    ]
    with write_transaction(bulk.database) as session:
        record_events(session, bulk.project, items, now)
    for item in items:
        with write_transaction(single.database) as session:
            if session.scalar(select(Contact.id).where(Contact.email == item.email)) is None:
                upsert_contact(session, single.project, item.email, {"source": "api"}, now)
            reference_record_event(
                session,
                single.project,
                item.email,
                item.kind,
                now,
                occurred_at=item.occurred_at,
                properties=item.properties,
                client_event_id=item.client_event_id,
            )
    assert state(bulk) == state(single)
    ledger = state(bulk)["ledger"]
    assert any(0 < abs(points) < 5 for _, _, _, points, *_ in ledger)  # decayed awards


@pytest.mark.parametrize(
    ("at", "message"),
    [("2030-01-01T00:00:00", "is in the future"), ("1960-01-01", "is before 1970")],
)
def test_the_command_line_refuses_event_times_the_api_refuses(
    project_dir: Path, at: str, message: str
) -> None:
    """One rule for an event's time (nurture/core/eventtime.py): the API's, at the command line too."""
    database = f"sqlite:///{project_dir / 'cli.db'}"
    runner = CliRunner()
    args = ["--project", str(project_dir), "--db", database]
    added = runner.invoke(main, [*args, "contact", "add", "ana@acme.example", "--stage", "lead"])
    assert added.exit_code == 0, added.output
    result = runner.invoke(
        main, [*args, "event", "ana@acme.example", "webinar_attended", "--at", at]
    )
    assert result.exit_code == 2 and message in result.output and "--at" in result.output
    assert "engagement" not in result.output
