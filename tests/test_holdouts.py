"""Holdout groups and the lift: who is held out, that nobody held out is emailed by the
workflow, and the lift's counts (against plain SQL) and interval (against published values)."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from nurture.audit import holdout_sends, stranded
from nurture.cli import main
from nurture.clock import FixedClock
from nurture.core.holdouts import HOLDOUT, held_out, parse_share, stable_point
from nurture.db import sessions
from nurture.jobs import refresh_reports
from nurture.lift import (
    MAX_AGE,
    WINDOWS,
    Group,
    cached_lifts,
    holdouts,
    lift,
    newcombe,
    reached_stages,
    row,
)
from nurture.models import Contact, Enrollment, Message, StageMove
from nurture.problems import ProjectError
from nurture.project import load_project
from nurture.runtime import Runtime, open_runtime
from tests.conftest import REPO
from tests.helpers import PROFILE, add_contact, event

GUIDE = "guide-nurture"


def set_holdout(root: Path, share: str) -> Path:
    path = root / "workflows" / f"{GUIDE}.yaml"
    lines = [
        line
        for line in path.read_text(encoding="utf-8").splitlines()
        if not line.startswith("holdout:")
    ]
    lines.insert(lines.index("tracks:"), f"holdout: {share}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --- the share and who is held out ---------------------------------------------------------


def test_the_share_is_a_percentage_from_0_to_50() -> None:
    assert parse_share("10%") == pytest.approx(0.1)
    assert parse_share(" 12.5 % ") == pytest.approx(0.125)
    assert parse_share("0%") == 0
    assert parse_share("50%") == pytest.approx(0.5)
    for bad in ("60%", "50.5%", "10", "ten percent", 10, True, None):
        with pytest.raises(ValueError):
            parse_share(bad)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("60%", "a holdout is between 0% and 50%, got 60%"),
        ("10", "expected a percentage such as 10%, got 10"),
        ("-5%", "expected a percentage such as 10%, got '-5%'"),
    ],
)
def test_a_bad_holdout_names_file_line_and_field(example_dir: Path, value: str, says: str) -> None:
    path = set_holdout(example_dir, value)
    line = path.read_text().splitlines().index(f"holdout: {value}") + 1
    with pytest.raises(ProjectError) as caught:
        load_project(example_dir)
    assert [str(p) for p in caught.value.problems] == [
        f"workflows/{GUIDE}.yaml:{line}: holdout: {says}"
    ]


def test_the_example_workflow_holds_out_a_tenth(example_dir: Path) -> None:
    assert load_project(example_dir).workflows[GUIDE].holdout == pytest.approx(0.1)


def test_assignment_is_at_the_share_within_sampling_error() -> None:
    people = 20_000
    for share in (0.05, 0.1, 0.3):
        out = sum(held_out(GUIDE, str(who), share) for who in range(1, people + 1))
        spread = (people * share * (1 - share)) ** 0.5
        assert abs(out - people * share) < 4 * spread, (share, out)
    # independent of the workflow: another workflow holds out other people
    a = {who for who in range(2000) if held_out("a", str(who), 0.1)}
    b = {who for who in range(2000) if held_out("b", str(who), 0.1)}
    assert len(a & b) < len(a) / 3
    # a larger share keeps everyone a smaller share held out
    assert a <= {who for who in range(2000) if held_out("a", str(who), 0.2)}
    assert not any(held_out("a", str(who), 0.0) for who in range(2000))


def test_assignment_is_the_same_in_another_process() -> None:
    """sha256, not Python's salted hash(): another interpreter (another hash seed) agrees."""
    code = (
        "from nurture.core.holdouts import stable_point\n"
        "print(' '.join(repr(stable_point('guide-nurture', str(i))) for i in range(200)))"
    )
    here = " ".join(repr(stable_point(GUIDE, str(i))) for i in range(200))
    for seed in ("1", "2"):
        there = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"},
            cwd=REPO,
        ).stdout.strip()
        assert there == here


# --- held out people are recorded and never emailed by the workflow -----------------------


@pytest.fixture
def held(example_dir: Path, database_url: str) -> Iterator[Runtime]:
    set_holdout(example_dir, "30%")
    rt = open_runtime(
        example_dir, clock=FixedClock(datetime(2026, 3, 2, 8, 0, tzinfo=UTC)), database=database_url
    )
    yield rt
    rt.database.dispose()


def test_held_out_people_are_recorded_and_never_emailed_by_the_workflow(held: Runtime) -> None:
    people = [f"p{i}@firm{i}.example" for i in range(40)]
    for address in people:
        add_contact(held, address, **PROFILE)
    assert isinstance(held.clock, FixedClock)
    with sessions(held.database)() as session:
        rows = session.execute(
            select(Enrollment.contact_id, Enrollment.status, Enrollment.due_at).where(
                Enrollment.workflow == GUIDE
            )
        ).all()
    assert len(rows) == len(people)
    expected = {cid for cid, _, _ in rows if held_out(GUIDE, str(cid), 0.3)}
    assert 4 <= len(expected) <= 24  # 30% of 40, within sampling error
    assert {cid for cid, status, _ in rows if status == HOLDOUT} == expected
    assert all(due is None for cid, _, due in rows if cid in expected)
    for _ in range(21):  # three weeks of ticks, every emailed person clicks (moves stages)
        held.dispatcher.tick()
        with sessions(held.database)() as session:
            fresh = session.execute(
                select(Message.id, Message.contact_id).where(
                    Message.workflow == GUIDE, Message.status == "sent"
                )
            ).all()
        held.clock.advance(timedelta(days=1))
    with sessions(held.database)() as session:
        emailed = set(session.scalars(select(Message.contact_id).where(Message.workflow == GUIDE)))
        assert holdout_sends(session) == []
        assert stranded(session) == []
    assert fresh and emailed == {cid for cid, _, _ in rows} - expected
    # an entry event again changes nothing: held out for good
    address = people[sorted(expected)[0] - 1]
    assert event(held, address, "webinar_registered").enrolled == ["webinar-follow-up"]
    with sessions(held.database)() as session:
        assert (
            session.scalar(
                select(Enrollment.status).where(
                    Enrollment.workflow == GUIDE, Enrollment.contact_id == sorted(expected)[0]
                )
            )
            == HOLDOUT
        )


def test_the_audit_finds_a_message_to_a_held_out_person(held: Runtime) -> None:
    """The check can fail: a message the workflow made for a held-out person is named."""
    for i in range(30):
        add_contact(held, f"p{i}@firm{i}.example", **PROFILE)
    held.dispatcher.tick()
    with sessions(held.database).begin() as session:
        out = session.scalars(
            select(Enrollment).where(Enrollment.workflow == GUIDE, Enrollment.status == HOLDOUT)
        ).first()
        assert out is not None
        sent = session.scalars(select(Message)).first()
        assert sent is not None
        session.add(
            Message(
                enrollment_id=out.id,
                contact_id=out.contact_id,
                workflow=GUIDE,
                step_key="planted",
                content_id="discovery/planted",
                phase="discovery",
                stage_at_send="lead",
                subject="planted",
                rfc_message_id="<planted@example>",
                status="queued",
                created_at=sent.created_at,
                sent_at=sent.sent_at,
            )
        )
    with sessions(held.database)() as session:
        (found,) = holdout_sends(session)
    assert "discovery/planted (queued) from guide-nurture, which holds them out" in found


def test_explain_and_the_cli_say_who_is_held_out(held: Runtime) -> None:
    for i in range(12):
        add_contact(held, f"p{i}@firm{i}.example", **PROFILE)
    with sessions(held.database)() as session:
        cid = session.scalar(select(Enrollment.contact_id).where(Enrollment.status == HOLDOUT))
    assert cid is not None
    from nurture.explain import explain

    lines = explain(held, f"p{cid - 1}@firm{cid - 1}.example")
    assert f"{GUIDE}: held out (the workflow's holdout group): none of its emails, ever" in lines


# --- the lift: counts against plain SQL, interval against published values -----------------


def test_newcombe_matches_the_published_values() -> None:
    """Newcombe (1998), Statistics in Medicine 17:873-890, table II, method 10."""
    published = [
        ((56, 70, 48, 80), (0.0524, 0.3339)),
        ((9, 10, 3, 10), (0.1705, 0.8090)),
        ((6, 7, 2, 7), (0.0582, 0.8062)),
        ((5, 56, 0, 29), (-0.0381, 0.1926)),
        ((0, 10, 0, 20), (-0.1611, 0.2775)),
        ((0, 10, 0, 10), (-0.2775, 0.2775)),
        ((10, 10, 0, 20), (0.6791, 1.0000)),
        ((10, 10, 0, 10), (0.6075, 1.0000)),
    ]
    for (x1, n1, x2, n2), (low, high) in published:
        d, got_low, got_high = newcombe(Group(n1, x1), Group(n2, x2))
        assert d == pytest.approx(x1 / n1 - x2 / n2)
        assert (round(got_low, 4), round(got_high, 4)) == (low, high)


def test_newcombe_matches_statsmodels() -> None:
    proportion = pytest.importorskip("statsmodels.stats.proportion")
    draw = random.Random(4)
    for _ in range(200):
        n1, n2 = draw.randint(1, 3000), draw.randint(1, 400)
        x1, x2 = draw.randint(0, n1), draw.randint(0, n2)
        low, high = proportion.confint_proportions_2indep(
            x1, n1, x2, n2, method="newcomb", compare="diff", alpha=0.05
        )
        _, got_low, got_high = newcombe(Group(n1, x1), Group(n2, x2))
        assert got_low == pytest.approx(low, abs=1e-9)
        assert got_high == pytest.approx(high, abs=1e-9)


def test_the_sentence_and_the_minimum() -> None:
    made = row("mql", 30, Group(2310, 462), Group(254, 40))
    assert made.sentence == (
        "+4.3 points of MQL rate (20.0% vs 15.7%), 95% CI -1.0 to +8.6, 2,310 vs 254 people"
    )
    few = row("customer", None, Group(400, 12), Group(29, 0))
    assert few.difference is None
    assert few.sentence == "not enough people yet: 400 vs 29 people, 30 per group needed"


def _plain_sql(
    session: Session, stages: list[str], window: int | None, now: datetime
) -> dict[bool, tuple[int, int]]:
    """The lift's counts for one row, written out by hand in each dialect's SQL."""
    dialect = session.get_bind().dialect.name
    names = ", ".join(f"'{s}'" for s in stages)
    if dialect == "sqlite":
        stamp = now.astimezone(UTC).replace(tzinfo=None).isoformat(" ")
        within = f"AND julianday(m.at) <= julianday(e.entered_at) + {window}" if window else ""
        old = f"AND julianday(e.entered_at) <= julianday('{stamp}') - {window}" if window else ""
        until = f"julianday(m.at) <= julianday('{stamp}')"
    else:
        stamp = now.isoformat()
        within = f"AND m.at <= e.entered_at + interval '{window} days'" if window else ""
        old = (
            f"AND e.entered_at <= timestamptz '{stamp}' - interval '{window} days'"
            if window
            else ""
        )
        until = f"m.at <= timestamptz '{stamp}'"
    query = f"""
        SELECT e.status = 'holdout' AS held, COUNT(*) AS people,
               SUM(CASE WHEN EXISTS (
                   SELECT 1 FROM stage_moves m
                   WHERE m.contact_id = e.contact_id AND m.to_stage IN ({names})
                     AND m.at > e.entered_at AND {until} {within}
               ) THEN 1 ELSE 0 END) AS reached
        FROM enrollments e
        WHERE e.workflow = 'guide-nurture'
          AND e.entered_at >= (SELECT MIN(entered_at) FROM enrollments
                               WHERE workflow = 'guide-nurture' AND status = 'holdout')
          {old}
          AND NOT EXISTS (
              SELECT 1 FROM stage_moves b
              WHERE b.contact_id = e.contact_id AND b.to_stage IN ({names})
                AND b.at <= e.entered_at)
        GROUP BY e.status = 'holdout'
    """
    return {bool(h): (int(p), int(r)) for h, p, r in session.execute(text(query)).all()}


def test_the_lift_counts_equal_plain_sql(held: Runtime) -> None:
    """Entrants over four months, stage moves before and after entry at random: every row
    of the lift equals a plain SQL count, on SQLite and PostgreSQL."""
    assert isinstance(held.clock, FixedClock)
    draw = random.Random(7)
    start = held.clock.now()
    for i in range(160):
        held.clock.set(start + timedelta(hours=draw.uniform(0, 24 * 120)))
        add_contact(held, f"p{i}@firm{i}.example", **PROFILE)
    now = start + timedelta(days=150)
    settings = held.project.settings
    stages = reached_stages(settings)
    assert stages == ["mql", "sql", "opportunity", "customer"]
    with sessions(held.database).begin() as session:
        entries = session.execute(select(Enrollment.contact_id, Enrollment.entered_at)).all()
        for cid, entered in entries:
            for stage in stages:
                if draw.random() < 0.35:
                    offset = timedelta(days=draw.uniform(-10, 100))
                    session.add(
                        StageMove(
                            contact_id=cid,
                            at=entered + offset,
                            from_stage="lead",
                            to_stage=stage,
                            reason="test",
                        )
                    )
    with sessions(held.database)() as session:
        found = lift(session, settings, GUIDE, 0.3, now)
        since = min(at for cid, at in entries if held_out(GUIDE, str(cid), 0.3))
        assert found.since == since
        assert found.treated + found.held_out == sum(at >= since for _, at in entries)
        assert found.held_out == session.scalar(
            text("SELECT COUNT(*) FROM enrollments WHERE status = 'holdout'")
        )
        assert len(found.rows) == len(stages) * len(WINDOWS)
        for item in found.rows:
            above = stages[stages.index(item.stage) :]
            plain = _plain_sql(session, above, item.window, now)
            assert (item.treated.people, item.treated.reached) == plain.get(False, (0, 0))
            assert (item.holdout.people, item.holdout.reached) == plain.get(True, (0, 0))
        assert any(r.treated.reached and r.holdout.reached for r in found.rows)
        assert len({(r.treated.people, r.holdout.people) for r in found.rows}) > 4


def test_the_lift_command(held: Runtime, example_dir: Path, database_url: str) -> None:
    for i in range(12):
        add_contact(held, f"p{i}@firm{i}.example", **PROFILE)
    runner = CliRunner()
    result = runner.invoke(
        main, ["--project", str(example_dir), "--db", database_url, "lift", GUIDE]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"{GUIDE}: holdout 30%; entrants since ")
    assert "interval: Newcombe's hybrid score interval" in lines[1]
    assert "reached MQL:" in lines
    assert any("to date:" in line and "not enough people yet" in line for line in lines)
    as_json = runner.invoke(
        main, ["--project", str(example_dir), "--db", database_url, "lift", GUIDE, "--json"]
    )
    data = json.loads(as_json.output)
    assert (data["holdout"], data["min_people"]) == ("30%", 30)
    assert data["treated"] + data["held_out"] <= 12 and data["held_out"] >= 1
    assert {r["window_days"] for r in data["rows"]} == set(WINDOWS), "JSON keeps every window"
    # A window nobody in either group has had yet is said once, not as rows of 0 vs 0 people.
    pending = {
        w
        for w in WINDOWS
        if w is not None
        and not any(
            r["treated"]["people"] + r["holdout"]["people"]
            for r in data["rows"]
            if r["window_days"] == w
        )
    }
    assert [r["sentence"] for r in data["rows"] if r["window_days"] not in pending] == [
        line.split(":", 1)[1].strip() for line in lines if line.startswith("  ")
    ]
    assert (lines[-1].endswith("nobody has been in it that long yet.")) == bool(pending)
    result = runner.invoke(
        main, ["--project", str(example_dir), "--db", database_url, "lift", "nope"]
    )
    assert result.exit_code == 1 and "no workflow 'nope'" in result.output


def test_the_dashboard_reads_the_lifts_the_reports_job_keeps(held: Runtime) -> None:
    """The workflows page reads every lift from report_cache: counted and kept on a first
    view, as SQL counts them; renewed by the reports job; counted again when older than
    MAX_AGE or kept for other holdout shares."""
    assert isinstance(held.clock, FixedClock)
    for i in range(40):
        add_contact(held, f"p{i}@firm{i}.example", **PROFILE)
    settings, shares = held.project.settings, holdouts(held.project.workflows)
    assert shares[GUIDE] == 0.3
    now = held.clock.now()

    def counted(at: datetime, kept: dict[str, float] = shares) -> dict[str, object]:
        with sessions(held.database)() as session:
            return {w: lift(session, settings, w, share, at) for w, share in kept.items()}

    first = cached_lifts(held.database, settings, shares, now)
    assert first == counted(now)
    with sessions(held.database).begin() as session:
        cid = session.scalar(
            select(Enrollment.contact_id).where(Enrollment.status != HOLDOUT).limit(1)
        )
        assert cid is not None
        session.add(
            StageMove(contact_id=cid, at=now, from_stage="lead", to_stage="mql", reason="t")
        )
    later = now + timedelta(minutes=5)
    assert counted(later) != first  # the move counts now, but the kept figures stand
    assert cached_lifts(held.database, settings, shares, later) == first
    held.clock.set(later)
    refresh_reports(held, held.clock.now())
    assert cached_lifts(held.database, settings, shares, later) == counted(later)
    stale = later + MAX_AGE
    assert cached_lifts(held.database, settings, shares, stale) == counted(stale)
    other = {GUIDE: 0.5}
    assert cached_lifts(held.database, settings, other, stale) == counted(stale, other)


def test_the_workflow_page_shows_the_lift_as_sql_counts_it(
    example_dir: Path, tmp_path: Path
) -> None:
    from nurture.users import create_user
    from nurture.web import create_app
    from tests.test_dashboard import PASSWORD, log_in

    set_holdout(example_dir, "50%")
    start = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
    rt = open_runtime(
        example_dir, clock=FixedClock(start), database=f"sqlite:///{tmp_path / 'lift.db'}"
    )
    assert isinstance(rt.clock, FixedClock)
    draw = random.Random(3)
    for i in range(90):
        rt.clock.set(start + timedelta(hours=draw.uniform(0, 24 * 30)))
        add_contact(rt, f"p{i}@firm{i}.example", **PROFILE)
    with sessions(rt.database).begin() as session:
        for cid, entered in session.execute(select(Enrollment.contact_id, Enrollment.entered_at)):
            if draw.random() < 0.4:
                at = entered + timedelta(days=draw.uniform(1, 40))
                session.add(
                    StageMove(contact_id=cid, at=at, from_stage="lead", to_stage="mql", reason="t")
                )
        create_user(session, "ops@keel.example", PASSWORD, start)
    client = create_app(rt).test_client()
    rt.clock.set(start + timedelta(days=45))  # everyone entered in the first 30 days
    log_in(client)
    early = client.get("/workflows").get_data(as_text=True)
    assert 'data-lift-row="mql/30"' in early and 'data-lift-row="mql/all"' in early
    assert 'data-lift-row="mql/60"' not in early and 'data-lift-row="mql/90"' not in early
    assert "Within 60 and 90 days: nobody has been in it that long yet." in early
    rt.clock.set(start + timedelta(days=100))
    log_in(client)  # a session lasts 12 hours
    page = client.get("/workflows").get_data(as_text=True)
    assert "nobody has been in it that long yet" not in page
    with sessions(rt.database)() as session:
        for window in (30, None):
            plain = _plain_sql(
                session, ["mql", "sql", "opportunity", "customer"], window, rt.clock.now()
            )
            (treated_people, treated_hit), (held_people, held_hit) = plain[False], plain[True]
            assert min(treated_people, held_people) >= 30
            cells = re.search(rf'<tr data-lift-row="mql/{window or "all"}">(.*?)</tr>', page, re.S)
            assert cells is not None
            shown = re.sub(r"<[^>]+>|\s+", " ", cells.group(1))
            assert f"{treated_hit} / {treated_people} " in shown
            assert f"{held_hit} / {held_people} " in shown
            made = row(
                "mql", window, Group(treated_people, treated_hit), Group(held_people, held_hit)
            )
            assert made.sentence in shown
    assert (
        "Newcombe&#39;s hybrid score interval" in page or "Newcombe's hybrid score interval" in page
    )
    rt.database.dispose()


def test_a_simulated_project_holds_out_and_never_emails_them(
    example_dir: Path, tmp_path: Path
) -> None:
    from nurture.simulate import simulate

    database = tmp_path / "sim.db"
    result = simulate(example_dir, days=20, contacts=120, seed=2, database=str(database))
    assert result.violations == []
    rt = open_runtime(example_dir, database=f"sqlite:///{database}")
    with sessions(rt.database)() as session:
        statuses = [
            (cid, status)
            for cid, status in session.execute(
                select(Enrollment.contact_id, Enrollment.status).where(Enrollment.workflow == GUIDE)
            )
        ]
        assert holdout_sends(session) == []
        emailed = set(session.scalars(select(Message.contact_id).where(Message.workflow == GUIDE)))
    rt.database.dispose()
    out = {cid for cid, status in statuses if status == HOLDOUT}
    assert out == {cid for cid, _ in statuses if held_out(GUIDE, str(cid), 0.1)}
    assert out and emailed and not out & emailed


def test_a_renamed_workflow_keeps_its_holdout_and_its_lift(held: Runtime) -> None:
    """guide-nurture renamed to guide (`renamed_from:`): its held-out people stay held out
    under the new id (an entry event does not let them in, nothing is sent to them), and
    its lift counts them, as many as before, on SQLite and PostgreSQL."""
    assert isinstance(held.clock, FixedClock)
    people = [f"p{i}@firm{i}.example" for i in range(30)]
    for address in people:
        add_contact(held, address, **PROFILE)
    held.dispatcher.tick()
    now = held.clock.now()
    with sessions(held.database)() as session:
        before = lift(session, held.project.settings, GUIDE, 0.3, now)
        out = set(
            session.scalars(
                select(Enrollment.contact_id).where(
                    Enrollment.workflow == GUIDE, Enrollment.status == HOLDOUT
                )
            )
        )
    assert out and before.held_out == len(out)
    root = held.project.root
    old = root / "workflows" / f"{GUIDE}.yaml"
    text_ = old.read_text(encoding="utf-8")
    old.unlink()
    (root / "workflows" / "guide.yaml").write_text(f"renamed_from: {GUIDE}\n{text_}")
    held.clock.advance(timedelta(hours=1))
    held.dispatcher.tick()
    held.project = held.dispatcher.project
    with sessions(held.database)() as session:
        rows = session.execute(
            select(Enrollment.workflow, Enrollment.contact_id, Enrollment.status)
        ).all()
        after = lift(session, held.project.settings, "guide", 0.3, held.clock.now())
    assert {w for w, _, _ in rows} <= {"guide", "webinar-follow-up"}
    assert {c for w, c, s in rows if w == "guide" and s == HOLDOUT} == out
    assert (after.since, after.held_out, after.treated) == (
        before.since,
        before.held_out,
        before.treated,
    )
    with sessions(held.database)() as session:
        one = session.scalar(select(Contact.email).where(Contact.id == min(out)))
    assert one is not None
    assert "guide" not in event(held, one, "form_submitted", form="guide").enrolled
    for _ in range(7):
        held.clock.advance(timedelta(days=1))
        held.dispatcher.tick()
    with sessions(held.database)() as session:
        emailed = set(
            session.scalars(select(Message.contact_id).where(Message.workflow == "guide"))
        )
        assert holdout_sends(session) == []
    assert emailed and not emailed & out
