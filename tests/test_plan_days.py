"""`nurture plan --days N`: the next days rehearsed on copies of the database, the recorded
workflow versions against the files as they are; the live database is left as it was."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from nurture.cli import main
from nurture.clock import FixedClock
from nurture.planrun import NotSupported, sqlite_path
from nurture.runtime import open_runtime
from tests.conftest import MONDAY_MORNING
from tests.helpers import PROFILE, add_contact

A, B, C = (
    "discovery/hidden-cost-of-churn",
    "discovery/activation-metrics",
    "discovery/onboarding-checklist",
)
JOURNEY = (
    "name: Journey\n"
    "enter: {stages: [lead]}\n"
    "caps: {per_day: 5, per_week: 8, min_gap: 1m, quiet_hours: null,"
    " weekdays: [mon, tue, wed, thu, fri, sat, sun]}\n"
    "tracks:\n"
    "  discovery:\n"
    f"    - content: {A}\n"
    "    - id: clicked-first\n"
    "      wait: 2d\n"
    f"      if: \"clicked('{A}')\"\n"
    f"      then: [{{content: {B}}}]\n"
    f"      else: [{{content: {C}}}]\n"
)


def _live(database: Path) -> tuple[int, int, str]:
    import sqlite3

    with sqlite3.connect(database) as connection:
        messages = connection.execute("SELECT count(*) FROM messages").fetchone()[0]
        versions = connection.execute("SELECT count(*) FROM workflow_versions").fetchone()[0]
        places = connection.execute("SELECT group_concat(places) FROM enrollments").fetchone()[0]
    connection.close()
    return messages, versions, places


def test_plan_days_rehearses_old_against_new_on_a_copy(project_dir: Path, tmp_path: Path) -> None:
    for name in ("webinar-follow-up", "guide-nurture"):
        (project_dir / "workflows" / f"{name}.yaml").unlink()
    path = project_dir / "workflows" / "journey.yaml"
    path.write_text(JOURNEY, encoding="utf-8")
    database = tmp_path / "live.db"
    clock = FixedClock(MONDAY_MORNING)
    rt = open_runtime(project_dir, clock=clock, database=f"sqlite:///{database}")
    for n in range(3):
        add_contact(rt, f"p{n}@company{n}.example", **PROFILE)
    rt.dispatcher.tick()
    clock.advance(timedelta(hours=1))
    rt.dispatcher.tick()
    with rt.database.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM messages")).scalar_one() == 3
    rt.database.dispose()
    # the edit: nobody clicked, so the else way now sends B instead of C
    path.write_text(
        JOURNEY.replace(f"else: [{{content: {C}}}]", f"else: [{{id: b-else, content: {B}}}]")
    )
    before = _live(database)

    args = ["--project", str(project_dir), "--db", str(database), "plan", "--days", "10"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any("next 10 days" in line and "copy of the database" in line for line in lines)
    row = {line.split()[0]: line.split()[1:3] for line in lines if line.startswith("  discovery/")}
    assert row == {B: ["0", "3"], C: ["3", "0"]}, result.output
    assert _live(database) == before  # the live database was not touched

    as_json = CliRunner().invoke(main, [*args, "--json"])
    assert as_json.exit_code == 0, as_json.output
    body = json.loads(as_json.output)
    assert body["rehearsal"] == {"days": 10, "before": {C: 3}, "after": {B: 3}}
    assert body["workflows"][0]["workflow"] == "journey"
    assert _live(database) == before


def test_plan_days_says_postgresql_is_not_supported_yet() -> None:
    with pytest.raises(NotSupported, match="postgresql is not supported yet"):
        sqlite_path("postgresql://127.0.0.1:5432/test")
    assert sqlite_path("sqlite:////tmp/x.db") == Path("/tmp/x.db")
