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

from nurture.cli import main
from nurture.db import make_engine, sessions
from nurture.models import Message, StageMove
from nurture.project import load_project
from nurture.simulate import simulate


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
        assert session.scalar(select(func.count()).select_from(Message)) == sum(
            result.messages_by_phase.values()
        )
    engine.dispose()


def test_same_seed_same_story(project_dir: Path, tmp_path: Path) -> None:
    first = simulate(project_dir, days=20, contacts=60, seed=3, database=str(tmp_path / "a.db"))
    second = simulate(project_dir, days=20, contacts=60, seed=3, database=str(tmp_path / "b.db"))
    assert first.as_dict() == second.as_dict()


def test_simulation_on_postgresql(project_dir: Path, postgres_url: str) -> None:
    result = simulate(project_dir, days=30, contacts=80, seed=11, database=postgres_url)
    assert result.violations == []
    assert sum(result.messages_by_phase.values()) > 80


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
