"""What a tester found in the commands' words and numbers: counts read in words, each
number equal to a count in SQL, and the names that say what they count."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select, update

from nurture.cli import main
from nurture.clock import FixedClock, SystemClock
from nurture.core.words import counted
from nurture.db import sessions
from nurture.explain import explain
from nurture.feedback import move_stage
from nurture.models import (
    FAILED,
    MESSAGE_STATUSES,
    Contact,
    Enrollment,
    Event,
    Message,
    StageMove,
)
from nurture.runtime import Runtime, open_runtime
from tests.conftest import MONDAY_MORNING
from tests.helpers import PROFILE, add_contact, contact, event

#: No quiet hours and every day a sending day: what a test sends does not depend on the hour.
CAPS = (
    "caps: {per_day: 3, per_week: 8, min_gap: 1h, quiet_hours: null,"
    " weekdays: [mon, tue, wed, thu, fri, sat, sun]}\n"
)
A, B = "discovery/hidden-cost-of-churn", "discovery/activation-metrics"


def only_workflow(root: Path, first_wait: str) -> None:
    for path in (root / "workflows").glob("*.yaml"):
        path.unlink()
    (root / "workflows" / "one.yaml").write_text(
        "name: One\nenter:\n  stages: [lead, mql, sql]\n"
        + CAPS
        + f"tracks:\n  discovery:\n    - {{content: {A}, wait: {first_wait}}}\n"
        + f"    - {{content: {B}, wait: 1d}}\n",
        encoding="utf-8",
    )


@pytest.fixture
def fixed(project_dir: Path, database_url: str) -> Iterator[Runtime]:
    only_workflow(project_dir, "0d")
    runtime = open_runtime(project_dir, clock=FixedClock(MONDAY_MORNING), database=database_url)
    yield runtime
    runtime.database.dispose()


def cli(runtime: Runtime, *args: str) -> str:
    root, url = str(runtime.project.root), str(runtime.database.url)
    result = CliRunner().invoke(main, ["--project", root, "--db", url, *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_counts_read_in_words(fixed: Runtime) -> None:
    assert [counted(n, "email") for n in (0, 1, 2)] == ["0 emails", "1 email", "2 emails"]
    assert [counted(n, "person") for n in (1, 3)] == ["1 person", "3 people"]
    add_contact(fixed, "ana@acme.example", **PROFILE)
    assert fixed.dispatcher.tick().sent == 1
    (first, *_) = explain(fixed, "ana@acme.example")
    assert "; 1 email so far;" in first


def test_messages_without_an_option_counts_each_status(fixed: Runtime) -> None:
    for i in range(3):
        add_contact(fixed, f"p{i}@company{i}.example", **PROFILE)
    assert fixed.dispatcher.tick().sent == 3
    with sessions(fixed.database)() as session:
        one = session.scalars(select(Message.id).limit(1)).one()
        session.execute(update(Message).where(Message.id == one).values(status=FAILED))
        session.commit()
        counts = dict(
            session.execute(select(Message.status, func.count()).group_by(Message.status)).all()
        )
    shown = dict(line.split("\t") for line in cli(fixed, "messages").splitlines())
    assert shown == {status: str(counts.get(status, 0)) for status in MESSAGE_STATUSES}
    assert counts == {"sent": 2, "failed": 1}


def test_messages_status_takes_the_stored_word(fixed: Runtime) -> None:
    """`--status failed` names the status as stored (the statuses are a StrEnum, whose
    member names click would offer instead)."""
    add_contact(fixed, "ana@acme.example", **PROFILE)
    assert fixed.dispatcher.tick().sent == 1
    with sessions(fixed.database)() as session:
        session.execute(update(Message).values(status=FAILED))
        session.commit()
    listed = cli(fixed, "messages", "--status", "failed")
    assert "ana@acme.example" in listed


def test_tick_says_who_is_due_later(project_dir: Path, database_url: str) -> None:
    """An enrollment whose first step waits a day: the tick plans it for later ("due
    later", as many as SQL finds active and due in the future), and nothing is idle."""
    only_workflow(project_dir, "1d")
    clock = SystemClock()  # `nurture tick` runs on the wall clock; the wait makes it hour-proof
    runtime = open_runtime(project_dir, clock=clock, database=database_url)
    try:
        add_contact(runtime, "ana@acme.example", **PROFILE)
        output = cli(runtime, "tick")
        assert (
            output.splitlines()[0] == "0 sent, 0 deferred, 1 due later, 0 idle, 0 ended, 0 failed"
        )
        with sessions(runtime.database)() as session:
            later = session.scalar(
                select(func.count())
                .select_from(Enrollment)
                .where(Enrollment.status == "active", Enrollment.due_at > clock.now())
            )
        assert later == 1
    finally:
        runtime.database.dispose()


def test_a_sales_outcome_needs_a_hand_off(fixed: Runtime) -> None:
    """`contact sales ... accepted` for a lead never handed to sales is refused, and
    nothing is recorded (no event, no stage move)."""
    add_contact(fixed, "ana@acme.example", **PROFILE)
    root, url = str(fixed.project.root), str(fixed.database.url)
    result = CliRunner().invoke(
        main, ["--project", root, "--db", url, "contact", "sales", "ana@acme.example", "accepted"]
    )
    assert result.exit_code == 1
    assert "ana@acme.example was never handed to sales" in result.output
    with sessions(fixed.database)() as session:
        kinds = set(session.scalars(select(Event.kind)))
        stages = session.scalars(select(StageMove.to_stage)).all()
    assert "sales_accepted" not in kinds and stages == ["contact", "lead"]


def test_a_stage_lowered_by_hand_holds_until_the_scores_cross_again(
    project_dir: Path, database_url: str
) -> None:
    """MQL by the score rule, lowered to lead by hand: a later event that leaves the scores
    above the threshold keeps them lead; once decayed below it, an event that crosses it
    again makes them MQL. Every move in the ledger, the one by hand marked so."""
    clock = FixedClock(MONDAY_MORNING)
    rt = open_runtime(project_dir, clock=clock, database=database_url)
    try:
        ana = "ana@acme.example"
        add_contact(rt, ana, stage=None, **PROFILE)
        event(rt, ana, "form_submitted", form="guide")
        event(rt, ana, "content_downloaded", asset="guide")
        event(rt, ana, "page_visited", url="https://keel.example/pricing")
        assert contact(rt, ana).stage == "mql"
        with sessions(rt.database).begin() as session:
            move_stage(session, rt.project, ana, "lead", "not ready, says the call", clock.now())
        event(rt, ana, "webinar_registered")  # engagement 45 -> 55: no crossing
        assert contact(rt, ana).stage == "lead"
        assert (
            "Stage lead set by hand (not ready, says the call): the score rules raise it only "
            "when an event makes their scores cross a threshold again."
        ) in explain(rt, ana)
        clock.advance(timedelta(days=60))  # two half-lives: about 14
        event(rt, ana, "page_visited", url="https://keel.example/demo")  # +25: 35 crossed
        assert contact(rt, ana).stage == "mql"
        with sessions(rt.database)() as session:
            ledger = session.execute(
                select(StageMove.to_stage, StageMove.by_hand).order_by(StageMove.id)
            ).all()
        assert [tuple(row) for row in ledger] == [
            ("contact", False),
            ("lead", False),
            ("mql", False),
            ("lead", True),
            ("mql", False),
        ]
    finally:
        rt.database.dispose()


def _mql(rt: Runtime, address: str) -> None:
    """`address` made MQL by the score rule (fit and engagement above its threshold)."""
    add_contact(rt, address, stage=None, **PROFILE)
    event(rt, address, "form_submitted", form="guide")
    event(rt, address, "content_downloaded", asset="guide")
    event(rt, address, "page_visited", url="https://keel.example/pricing")
    assert contact(rt, address).stage == "mql"


def _by_hand_ledger(rt: Runtime, address: str) -> list[tuple[str, bool, str]]:
    with sessions(rt.database)() as session:
        rows = session.execute(
            select(StageMove.to_stage, StageMove.by_hand, StageMove.reason)
            .join(Contact, Contact.id == StageMove.contact_id)
            .where(Contact.email == address)
            .order_by(StageMove.id)
        ).all()
    return [tuple(row) for row in rows]


def test_a_stage_given_at_import_or_by_the_api_is_set_by_hand(
    project_dir: Path, database_url: str, tmp_path: Path
) -> None:
    """A stage given to a CSV import or to the API's contact create/update holds against the
    score rules as `nurture contact stage` does: recorded by_hand, not undone by the rules in
    the same call nor by a later event that crosses no threshold; explain says so."""
    from nurture.imports import import_csv

    clock = FixedClock(MONDAY_MORNING)
    rt = open_runtime(project_dir, clock=clock, database=database_url)
    try:
        ana, bo = "ana@acme.example", "bo@acme.example"
        _mql(rt, ana)
        _mql(rt, bo)
        sheet = tmp_path / "people.csv"
        sheet.write_text(f"email,first_name\n{ana},Ana\n", encoding="utf-8")
        import_csv(rt.project, rt.database, sheet, {}, clock.now(), stage="lead", source="fair")
        client = rt_client(rt)
        answer = client.post("/api/v1/contacts", json={"email": bo, "stage": "lead"})
        assert answer.status_code == 200, answer.get_json()
        assert answer.get_json()["stage"] == "lead"
        for address, reason in ((ana, "set at CSV import (fair)"), (bo, "set through the API")):
            assert contact(rt, address).stage == "lead"
            assert _by_hand_ledger(rt, address)[-1] == ("lead", True, reason)
            event(rt, address, "webinar_registered")  # engagement stays above: no crossing
            assert contact(rt, address).stage == "lead"
            assert (
                f"Stage lead set by hand ({reason}): the score rules raise it only "
                "when an event makes their scores cross a threshold again."
            ) in explain(rt, address)
    finally:
        rt.database.dispose()


def test_a_new_contact_given_the_first_stage_starts_there_and_moves_on(
    project_dir: Path, database_url: str
) -> None:
    """Giving a NEW contact the first stage of nurture (lead) says where they start, not a
    stage to hold: recorded not by hand, and the score rules move them on as for anyone."""
    rt = open_runtime(project_dir, clock=FixedClock(MONDAY_MORNING), database=database_url)
    try:
        cy = "cy@acme.example"
        add_contact(rt, cy, stage="lead", **PROFILE)
        assert _by_hand_ledger(rt, cy)[-1][:2] == ("lead", False)
        event(rt, cy, "form_submitted", form="guide")
        event(rt, cy, "content_downloaded", asset="guide")
        event(rt, cy, "page_visited", url="https://keel.example/pricing")
        assert contact(rt, cy).stage == "mql"
    finally:
        rt.database.dispose()


def rt_client(rt: Runtime) -> Any:
    """A Flask test client of `rt` holding a fresh API key."""
    from nurture.apikeys import create_key
    from nurture.web import create_app

    with sessions(rt.database).begin() as session:
        key = create_key(session, "test", rt.clock.now())[1]
    client = create_app(rt).test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    return client


def test_every_reader_of_set_by_hand_takes_the_latest_move_by_id(
    project_dir: Path, database_url: str
) -> None:
    """Two workers whose clocks differ: a move by hand stamped later than the rule's move
    recorded after it. The rules (intake) and explain both read the move recorded last
    (the largest id), which set the stage the contact has: not by hand."""
    clock = FixedClock(MONDAY_MORNING)
    rt = open_runtime(project_dir, clock=clock, database=database_url)
    try:
        ana = "ana@acme.example"
        _mql(rt, ana)
        with sessions(rt.database).begin() as session:
            move_stage(session, rt.project, ana, "lead", "not ready", clock.now())
        clock.advance(timedelta(days=60))  # scores decayed below the threshold
        event(rt, ana, "page_visited", url="https://keel.example/demo")  # crossed again: MQL
        assert contact(rt, ana).stage == "mql"
        with sessions(rt.database).begin() as session:
            session.execute(
                update(StageMove)
                .where(StageMove.to_stage == "lead", StageMove.by_hand.is_(True))
                .values(at=clock.now() + timedelta(hours=1))  # the skewed worker's stamp
            )
        assert not any("set by hand" in line for line in explain(rt, ana))
        event(rt, ana, "webinar_registered")
        assert contact(rt, ana).stage == "mql"
    finally:
        rt.database.dispose()
