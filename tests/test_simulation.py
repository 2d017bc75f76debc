"""Sixty simulated days for a few hundred people, checked from the database and the export."""

from __future__ import annotations

import io
import json
from collections import Counter, defaultdict
from datetime import datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from nurture import eventstore
from nurture.cli import main
from nurture.db import make_engine, sessions
from nurture.models import Contact, Deferral, Event, Message, ReportCache, StageMove
from nurture.project import load_project
from nurture.simulate import START, ascii_letters, simulate


def check_export(lines: list[dict[str, object]], root: Path) -> None:
    """The caps, re-checked from the export alone, as an outsider with a JSONL file would."""
    settings = load_project(root).settings
    caps = settings.caps
    assert caps.quiet_hours is not None
    quiet_start, quiet_end = (time.fromisoformat(t) for t in caps.quiet_hours.split("-"))
    phase_of = {s.name: s.phase for s in settings.stages}
    by_person: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
    for line in lines:
        if line["type"] != "message":
            assert line["type"] == "stage" and str(line["reason"]).strip()
            continue
        sent_at = datetime.fromisoformat(str(line["sent_at"]).replace("Z", "+00:00"))
        assert phase_of[str(line["stage"])] == line["phase"]
        local = sent_at.astimezone(ZoneInfo(str(line["timezone"])))
        assert not (local.time() >= quiet_start or local.time() < quiet_end), line
        assert local.strftime("%a").lower() in caps.weekdays, line
        by_person[str(line["email"])].append((sent_at, str(line["content_id"])))
    for email, sends in by_person.items():
        sends.sort()
        contents = [c for _, c in sends]
        assert len(contents) == len(set(contents)), email
        zone = ZoneInfo(next(str(line["timezone"]) for line in lines if line.get("email") == email))
        days = Counter(t.astimezone(zone).date() for t, _ in sends)
        assert max(days.values()) <= caps.per_day
        for index, (t, _) in enumerate(sends):
            if index:
                assert t - sends[index - 1][0] >= caps.min_gap
            assert sum(1 for s, _ in sends if t - timedelta(days=7) < s <= t) <= caps.per_week


@pytest.mark.soak
def test_sixty_days_keep_every_invariant(project_dir: Path, tmp_path: Path) -> None:
    export = io.StringIO()
    database = tmp_path / "sim.db"
    result = simulate(
        project_dir, days=60, contacts=300, seed=7, database=str(database), export=export
    )
    assert result.violations == []
    assert sum(result.stages.values()) == 300
    assert result.stages["lead"] > 0 and result.stages["mql"] > 0, result.stages
    assert result.stages["sql"] + result.stages["opportunity"] + result.stages["customer"] >= 1, (
        result.stages
    )
    assert result.messages_by_phase["discovery"] > result.messages_by_phase["evaluation"] > 0
    assert result.messages_by_phase["decision"] > 0, "SQLs get decision content until sales accepts"
    assert result.deferrals, "with 300 people in 12 zones, caps must have held some emails"
    lines = [json.loads(line) for line in export.getvalue().splitlines()]
    assert {line["type"] for line in lines} == {"message", "stage"}
    check_export(lines, project_dir)
    engine = make_engine(f"sqlite:///{database}")
    with sessions(engine)() as session:
        duplicates = session.execute(
            select(Message.contact_id, Message.content_id, func.count())
            .group_by(Message.contact_id, Message.content_id)
            .having(func.count() > 1)
        ).all()
        assert duplicates == []
        assert session.scalar(select(func.count()).where(func.trim(StageMove.reason) == "")) == 0
        decision_to_leads = session.scalar(
            select(func.count())
            .select_from(Message)
            .where(Message.phase == "decision", Message.stage_at_send.in_(["lead", "contact"]))
        )
        assert decision_to_leads == 0
        unlinked = session.scalar(
            select(func.count())
            .select_from(Event)
            .where(Event.kind.in_(("email_opened", "email_clicked")), Event.message_id.is_(None))
        )
        assert unlinked == 0, "an open or a click is linked to its email, as tracking links it"
        assert session.scalar(select(func.count()).select_from(Message)) == sum(
            result.messages_by_phase.values()
        )
        people = session.execute(select(Contact.email, Contact.last_name)).all()
        assert eventstore.mismatches(session.connection()) == [], "the summary is the events'"
    accented = [(email, last) for email, last in people if last and not last.isascii()]
    assert accented, "the population has names with accents (García, Müller)"
    for email, last in accented:
        in_address = email.split("@")[0].split(".")[1]
        assert in_address == ascii_letters(last), email
        assert len(in_address) == len(last), "no letter dropped: " + email
    engine.dispose()


def test_same_seed_same_story(project_dir: Path, tmp_path: Path) -> None:
    first = simulate(project_dir, days=20, contacts=60, seed=3, database=str(tmp_path / "a.db"))
    second = simulate(project_dir, days=20, contacts=60, seed=3, database=str(tmp_path / "b.db"))
    assert first.as_dict() == second.as_dict()


def test_simulation_on_postgresql(project_dir: Path, postgres_url: str) -> None:
    result = simulate(project_dir, days=30, contacts=80, seed=11, database=postgres_url)
    assert result.violations == []
    assert sum(result.messages_by_phase.values()) > 80
    engine = make_engine(postgres_url)
    with engine.connect() as connection:
        assert eventstore.mismatches(connection) == [], "the summary is the events'"
    engine.dispose()


def test_simulate_command_json_and_export(project_dir: Path, tmp_path: Path) -> None:
    export = tmp_path / "out.jsonl"
    result = CliRunner().invoke(
        main,
        [
            "--project",
            str(project_dir),
            "simulate",
            "--db",
            str(tmp_path / "cli.db"),
            "--days",
            "14",
            "--contacts",
            "40",
            "--seed",
            "5",
            "--json",
            "--export",
            str(export),
        ],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cli.db").exists()
    data = json.loads(result.output)
    assert {"stages", "messages_by_phase", "violations"} <= set(data)
    assert data["violations"] == []
    lines = [json.loads(line) for line in export.read_text().splitlines()]
    message = next(line for line in lines if line["type"] == "message")
    assert set(message) == {"type", "email", "timezone", "content_id", "phase", "stage", "sent_at"}
    assert message["sent_at"].endswith("Z")
    stage = next(line for line in lines if line["type"] == "stage")
    assert set(stage) == {"type", "email", "from", "to", "reason", "at"}


@pytest.mark.parametrize("flag", ["--days", "--contacts"])
def test_simulate_refuses_nonsense(project_dir: Path, flag: str) -> None:
    result = CliRunner().invoke(main, ["--project", str(project_dir), "simulate", flag, "0"])
    assert result.exit_code == 2 and "Invalid value" in result.output


OTHER_SETTINGS = """\
sender:
  from_name: Oak
  from_address: hi@oak.example
  postal_address: "Oak Ltd, 1 High Street, Leeds, UK"
events: [trial_started, doc_read, call_requested, contract_signed, price_checked]
stages:
  - name: prospect
    phase: discovery
    enter_on: [trial_started]
  - name: engaged
    phase: evaluation
    enter_when: "engagement >= 15"
  - name: buyer
    phase: decision
    enter_on: [call_requested]
  - name: client
    enter_on: [contract_signed]
scoring:
  engagement:
    rules:
      - {event: email_clicked, points: 5, once_per: message_id}
      - {event: doc_read, points: 8, once_per: doc}
      - {event: price_checked, points: 12, when: "event.plan == 'team'"}
      - {event: call_requested, points: 30}
handoff:
  stage: buyer
"""
OTHER_WORKFLOW = """\
name: Trial onboarding
enter:
  stages: [prospect, engaged, buyer]
goals:
  stages: [client]
  events: [sales_accepted]
tracks:
  discovery:
    - {content: discovery/hidden-cost-of-churn}
    - {content: discovery/activation-metrics, wait: 2d}
    - {content: discovery/onboarding-checklist, wait: 3d}
  evaluation:
    - {content: evaluation/case-study-northwind, wait: 1d}
    - {content: evaluation/build-vs-buy, wait: 3d}
  decision:
    - {content: decision/demo-invitation, wait: 1d}
    - {content: decision/pricing-and-roi, wait: 3d}
"""


@pytest.fixture
def other_project(project_dir: Path) -> Path:
    """The example's content, with a nurture.yaml and a workflow whose events all differ."""
    (project_dir / "nurture.yaml").write_text(OTHER_SETTINGS, encoding="utf-8")
    for old in (project_dir / "workflows").iterdir():
        old.unlink()
    (project_dir / "workflows" / "onboarding.yaml").write_text(OTHER_WORKFLOW, encoding="utf-8")
    return project_dir


def test_simulate_any_project_with_its_own_event_kinds(other_project: Path, tmp_path: Path) -> None:
    database = tmp_path / "other.db"
    args = ["--project", str(other_project), "simulate", "--db", str(database)]
    result = CliRunner().invoke(main, [*args, "--days", "30", "--contacts", "60", "--seed", "4"])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and "violations: 0" in result.output
    engine = make_engine(f"sqlite:///{database}")
    with sessions(engine)() as session:
        kinds = dict(session.execute(select(Event.kind, func.count()).group_by(Event.kind)).all())
        stages = set(session.scalars(select(StageMove.to_stage)))
        sent = session.scalar(select(func.count()).select_from(Message))
    engine.dispose()
    assert kinds.get("trial_started") == 60, kinds  # how they came in: the first stage's event
    assert kinds.get("doc_read", 0) + kinds.get("price_checked", 0) > 0, kinds  # scoring rules
    assert {"prospect", "engaged"} <= stages, stages
    assert sent and sent > 60
    assert not set(kinds) - {
        "trial_started", "doc_read", "call_requested", "contract_signed", "price_checked",
        "email_opened", "email_clicked", "unsubscribed", "sales_accepted", "sales_rejected",
    }, kinds  # fmt: skip


def test_resume_goes_on_from_where_the_clock_stopped(project_dir: Path, tmp_path: Path) -> None:
    database = tmp_path / "living.db"
    first = simulate(project_dir, days=12, contacts=40, seed=9, database=str(database))
    engine = make_engine(f"sqlite:///{database}")
    with sessions(engine)() as session:
        state = session.get(ReportCache, "simulation")
        assert state is not None
        stopped = datetime.fromisoformat(state.data["clock"])
        pending = len(state.data["pending"])
        before = session.scalar(select(func.max(Message.id)))
        people = session.scalar(select(func.count()).select_from(Contact))
    assert stopped == START + timedelta(days=12) and people == 40
    args = ["--project", str(project_dir), "simulate", "--db", str(database)]
    result = CliRunner().invoke(main, [*args, "--resume", "--days", "6", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["violations"] == [] and data["seed"] == 9
    assert data["contacts"] == 20, "new people keep arriving at the earlier pace (40 in 12 days)"
    assert data["until"] == (stopped + timedelta(days=6)).isoformat()
    with sessions(engine)() as session:
        later = session.scalars(select(Message.sent_at).where(Message.id > before)).all()
        assert later and min(later) >= stopped and max(later) <= stopped + timedelta(days=6)
        assert session.scalar(select(func.count()).select_from(Contact)) == 60
        old_people = session.scalar(
            select(func.count(func.distinct(Message.contact_id))).where(
                Message.id > before, Message.contact_id <= 40
            )
        )
        assert old_people, "the people of the first run go on receiving their tracks"
        duplicates = session.execute(
            select(Message.contact_id, Message.content_id)
            .group_by(Message.contact_id, Message.content_id)
            .having(func.count() > 1)
        ).all()
        assert duplicates == []
        # Stages, emails and deferrals alike are totals in the database (the first run's too).
        totals: Counter[str] = Counter()
        for (rules,) in session.execute(select(Deferral.rules)):
            totals.update(rules.split(","))
        assert totals and data["deferrals"] == dict(totals)
        assert sum(data["messages_by_phase"].values()) == session.scalar(
            select(func.count()).select_from(Message)
        )
        # What people were about to do when the clock stopped (opens, clicks) still happens.
        carried = session.scalar(
            select(func.count())
            .select_from(Event)
            .join(Message, Message.id == Event.message_id)
            .where(Message.id <= before, Event.occurred_at >= stopped)
        )
    engine.dispose()
    assert pending and carried
    assert first.stages != data["stages"]


def test_resume_needs_a_simulation(project_dir: Path, tmp_path: Path) -> None:
    args = ["--project", str(project_dir), "simulate", "--resume", "--days", "3", "--db"]
    result = CliRunner().invoke(main, [*args, str(tmp_path / "none.db")])
    assert result.exit_code == 2 and "--db" in result.output and "Traceback" not in result.output


def test_simulate_shows_progress_on_stderr_and_none_under_json(
    project_dir: Path, tmp_path: Path
) -> None:
    args = ["--project", str(project_dir), "simulate", "--days", "10", "--contacts", "15"]
    shown = CliRunner().invoke(main, [*args, "--db", str(tmp_path / "p.db")])
    assert shown.exit_code == 0, shown.output
    assert "simulating: day 10 of 10" in shown.stderr and "simulating" not in shown.stdout
    assert shown.stderr.count("simulating: day") >= 5
    quiet = CliRunner().invoke(main, [*args, "--db", str(tmp_path / "q.db"), "--json"])
    assert quiet.exit_code == 0 and quiet.stderr == ""
    json.loads(quiet.stdout)
