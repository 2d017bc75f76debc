"""`validate` warns, without failing, when a goal or the hand-off closes a phase's track."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from nurture.cli import main
from nurture.project import load_project
from nurture.reachability import unreachable


def validate(root: Path) -> tuple[int, list[str]]:
    result = CliRunner().invoke(main, ["--project", str(root), "validate"])
    return result.exit_code, [line for line in result.stderr.splitlines() if "warning" in line]


def test_the_example_project_reaches_every_track(project_dir: Path) -> None:
    project = load_project(project_dir)
    assert unreachable(project.settings, project.workflows) == []
    assert validate(project_dir) == (0, [])


def test_a_goal_event_that_makes_the_stage_is_a_dead_way_in(project_dir: Path) -> None:
    path = project_dir / "workflows" / "guide-nurture.yaml"
    text = path.read_text(encoding="utf-8")
    start = text.index("  events: [replied, sales_accepted]")
    end = text.index("\n", start)
    path.write_text(
        text[:start] + "  events: [replied, meeting_booked, sales_accepted]" + text[end:],
        encoding="utf-8",
    )
    line = text[:start].count("\n") + 1
    code, warnings = validate(project_dir)
    assert code == 0
    assert warnings == [
        f"workflows/guide-nurture.yaml:{line}: warning: goals.events[1]: meeting_booked ends "
        "this workflow on the very move to sql (stage sql enter_on) that starts its decision "
        "track: people who reach sql by meeting_booked never get decision content"
    ]


def test_ending_nurture_at_the_handoff_closes_every_decision_track(project_dir: Path) -> None:
    settings = project_dir / "nurture.yaml"
    text = settings.read_text(encoding="utf-8")
    assert "  end_nurture: false " in text
    settings.write_text(text.replace("  end_nurture: false ", "  end_nurture: true "), "utf-8")
    line = text[: text.index("  end_nurture:")].count("\n") + 1
    code, warnings = validate(project_dir)
    assert code == 0
    assert (
        f"nurture.yaml:{line}: warning: handoff.end_nurture: reaching sql hands the person to "
        "sales and ends every workflow, so the decision track of guide-nurture never sends to "
        "people at sql" in warnings
    )
    unreachable_lines = [w for w in warnings if "the decision track is unreachable" in w]
    assert len(unreachable_lines) == 2, warnings
    assert all(": warning: tracks.decision: " in w for w in unreachable_lines)
    assert any(w.startswith("workflows/webinar-follow-up.yaml:") for w in unreachable_lines)


def test_a_goal_stage_closes_its_own_track(project_dir: Path) -> None:
    path = project_dir / "workflows" / "webinar-follow-up.yaml"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("stages: [opportunity, customer]", "stages: [mql]"), "utf-8")
    project = load_project(project_dir)
    findings = unreachable(project.settings, project.workflows)
    assert [(f.workflow, f.loc) for f in findings] == [
        ("webinar-follow-up", ("goals", "stages", 0)),
        ("webinar-follow-up", ("tracks", "evaluation")),
    ]
    assert validate(project_dir)[0] == 0
