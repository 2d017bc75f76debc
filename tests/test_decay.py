"""Decay with the injected clock: what stage rules and readers see, and the decay job."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

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
