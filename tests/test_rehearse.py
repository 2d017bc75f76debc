"""Rehearsal: one imagined person through the real workflows and caps."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from nurture.cli import main
from nurture.rehearse import load_persona, rehearse
from tests.helpers import write

REPO = Path(__file__).resolve().parents[1]


def test_the_champion_moves_lead_mql_sql_and_gets_decision_content_until_sales_accepts(
    project_dir: Path,
) -> None:
    lines = rehearse(project_dir, load_persona(REPO / "personas" / "champion.yaml"))
    text = "\n".join(lines)
    assert lines[0] == "Claire, VP Customer Success at a 300-person SaaS company (America/New_York)"
    assert "stage contact -> lead: event content_downloaded" in text
    assert "stage lead -> mql: rule fit >= 30 and engagement >= 35" in text
    assert "stage mql -> sql: event meeting_booked" in text
    assert "goal: meeting_booked" not in text, "the meeting that makes an SQL ends nothing"
    assert lines[-1] == "after 30 days: stage sql, fit 65"
    mql = next(i for i, line in enumerate(lines) if "-> mql" in line)
    sql = next(i for i, line in enumerate(lines) if "-> sql" in line)
    left = lines.index("  09:00  left workflow guide-nurture: goal: sales_accepted")
    assert all("(discovery," in line for line in lines[:mql] if "  email " in line)
    assert any("(evaluation, stage mql)" in line for line in lines[mql:sql])
    decision = [line for line in lines[sql:left] if "  email " in line]
    assert decision and all("(decision, stage sql)" in line for line in decision), lines
    assert not any("  email " in line for line in lines[left:]), "sales accepted: no more"


def test_quiet_hours_show_in_the_persons_own_time(project_dir: Path) -> None:
    lines = rehearse(project_dir, load_persona(REPO / "personas" / "ghost.yaml"))
    assert (
        "  23:10  held discovery/hidden-cost-of-churn until Tue 08:30: quiet hours 19:00-08:30 in Asia/Kolkata"
        in lines
    )
    assert "  08:30  email discovery/hidden-cost-of-churn (discovery, stage lead)" in lines
    assert sum("  email " in line for line in lines) == 3, (
        "three discovery pieces, then the track is used up"
    )


def test_persona_errors_name_the_file_and_field(project_dir: Path) -> None:
    bad = write(
        project_dir, "personas/bad.yaml", "name: x\ntimezone: Mars/Base\nopens: sometimes\n"
    )
    result = CliRunner().invoke(
        main, ["--project", str(project_dir), "simulate", "--persona", str(bad)]
    )
    assert result.exit_code == 1
    assert f"{bad}:2: timezone:" in result.output and f"{bad}:3: opens:" in result.output


def test_simulate_persona_command(project_dir: Path) -> None:
    result = CliRunner().invoke(
        main,
        [
            "--project",
            str(project_dir),
            "simulate",
            "--persona",
            str(REPO / "personas" / "reader.yaml"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "day  1 Fri 06 Mar" in result.output and "opened the last email" in result.output
