"""Bad input: every mistake gives one clear line naming the file, the line and the field."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from nurture.cli import main
from nurture.problems import ProjectError
from nurture.project import load_project
from tests.helpers import write


def line_of(path: Path, needle: str) -> int:
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in {path}")


def problems(root: Path) -> list[str]:
    with pytest.raises(ProjectError) as caught:
        load_project(root)
    return [str(p) for p in caught.value.problems]


def replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def test_the_example_project_loads(project_dir: Path) -> None:
    project = load_project(project_dir)
    assert set(project.workflows) == {"guide-nurture", "webinar-follow-up"}
    for phase in ("discovery", "evaluation", "decision"):
        assert len([c for c in project.content if c.startswith(phase + "/")]) >= 3


def test_broken_yaml_names_file_and_line(project_dir: Path) -> None:
    settings = project_dir / "nurture.yaml"
    replace(settings, "  per_week: 3\n", "  per_week: [3\n")
    (found,) = problems(project_dir)
    assert found.startswith("nurture.yaml:")
    assert "YAML syntax" in found
    line = int(found.split(":")[1])
    assert abs(line - line_of(settings, "per_week: [3")) <= 1


def test_unknown_field_names_line_and_field(project_dir: Path) -> None:
    settings = project_dir / "nurture.yaml"
    replace(settings, "  min_gap: 20h\n", "  min_gap: 20h\n  max_per_hour: 2\n")
    (found,) = problems(project_dir)
    assert found == f"nurture.yaml:{line_of(settings, 'max_per_hour')}: caps.max_per_hour: " + (
        "Extra inputs are not permitted"
    )


def test_condition_that_does_not_parse(project_dir: Path) -> None:
    settings = project_dir / "nurture.yaml"
    replace(settings, '"fit >= 30 and engagement >= 35"', '"fit >= 30 and and engagement"')
    (found,) = problems(project_dir)
    line = line_of(settings, "fit >= 30 and and")
    assert found.startswith(f"nurture.yaml:{line}: stages[1].enter_when: condition ")
    assert "does not parse" in found


def test_condition_with_unknown_name(project_dir: Path) -> None:
    settings = project_dir / "nurture.yaml"
    replace(settings, '"fit >= 30 and engagement >= 35"', '"fit >= 30 and engagment >= 35"')
    (found,) = problems(project_dir)
    assert f"nurture.yaml:{line_of(settings, 'engagment')}: stages[1].enter_when:" in found
    assert "unknown name engagment" in found


@pytest.mark.parametrize(
    ("old", "new", "field", "words"),
    [
        ("timezone: Europe/Paris", "timezone: Europe/Pariss", "timezone", "not an IANA time zone"),
        (
            'quiet_hours: "19:00-08:30"',
            'quiet_hours: "7pm to 8am"',
            "caps.quiet_hours",
            "20:00-08:00",
        ),
        (
            'quiet_hours: "19:00-08:30"',
            'quiet_hours: "25:00-08:30"',
            "caps.quiet_hours",
            "not exist",
        ),
        ("  per_day: 1\n", "  per_day: 0\n", "caps.per_day", "greater than or equal to 1"),
        ("  per_week: 3\n", "  per_week: -2\n", "caps.per_week", "greater than or equal to 1"),
        ("  per_day: 1\n", "  per_day: 5\n", "caps", "per_day (5) is above per_week (3)"),
        ("  min_gap: 20h\n", "  min_gap: 20 hours\n", "caps.min_gap", "not a duration"),
        (
            "weekdays: [mon, tue",
            "weekdays: [monday, tue",
            "caps.weekdays",
            "unknown weekday monday",
        ),
    ],
)
def test_settings_errors_name_the_field(
    project_dir: Path, old: str, new: str, field: str, words: str
) -> None:
    replace(project_dir / "nurture.yaml", old, new)
    (found,) = problems(project_dir)
    assert f": {field}: " in found, found
    assert words in found
    assert found.startswith("nurture.yaml:")
    assert found.split(":")[1].isdigit()


def test_unknown_content_id_in_workflow(project_dir: Path) -> None:
    workflow = project_dir / "workflows" / "guide-nurture.yaml"
    replace(workflow, "discovery/activation-metrics", "discovery/activation-metric")
    (found,) = problems(project_dir)
    line = line_of(workflow, "discovery/activation-metric")
    assert found.startswith(
        f"workflows/guide-nurture.yaml:{line}: tracks.discovery[1].split[0].steps[0].content:"
    )
    assert "unknown content 'discovery/activation-metric'" in found


def test_decision_content_in_a_discovery_track_is_refused(project_dir: Path) -> None:
    workflow = project_dir / "workflows" / "guide-nurture.yaml"
    replace(
        workflow, "content: discovery/onboarding-checklist", "content: decision/pricing-and-roi"
    )
    found = problems(project_dir)
    line = line_of(workflow, "content: decision/pricing-and-roi")
    assert any(
        p.startswith(
            f"workflows/guide-nurture.yaml:{line}: tracks.discovery[1].split[0].steps[1].content:"
        )
        and "the discovery track may only send discovery content" in p
        for p in found
    ), found


def test_unknown_stage_and_event_in_workflow(project_dir: Path) -> None:
    workflow = project_dir / "workflows" / "webinar-follow-up.yaml"
    replace(workflow, "events: [webinar_registered]", "events: [webinar_regstered]")
    (found,) = problems(project_dir)
    line = line_of(workflow, "webinar_regstered")
    assert found.startswith(f"workflows/webinar-follow-up.yaml:{line}: enter.events[0]: ")
    assert "unknown event 'webinar_regstered'" in found


def test_unknown_stage_in_goals(project_dir: Path) -> None:
    workflow = project_dir / "workflows" / "guide-nurture.yaml"
    replace(workflow, "stages: [opportunity, customer]", "stages: [oportunity, customer]")
    (found,) = problems(project_dir)
    line = line_of(workflow, "oportunity")
    assert found.startswith(f"workflows/guide-nurture.yaml:{line}: goals.stages[0]: unknown stage")


def test_unknown_event_in_settings(project_dir: Path) -> None:
    settings = project_dir / "nurture.yaml"
    replace(settings, "  - event: webinar_attended", "  - event: webinar_atended")
    (found,) = problems(project_dir)
    line = line_of(settings, "webinar_atended")
    assert found.startswith(f"nurture.yaml:{line}: scoring.engagement.rules[")
    assert "unknown event 'webinar_atended'" in found


def test_undefined_template_variable_names_its_line(project_dir: Path) -> None:
    piece = project_dir / "content" / "discovery" / "activation-metrics.mjml"
    replace(piece, "Hello {{ contact.first_name", "Hello {{ contact.frist_name")
    (found,) = problems(project_dir)
    line = line_of(piece, "frist_name")
    assert found.startswith(f"content/discovery/activation-metrics.mjml:{line}: template variable:")
    assert "frist_name" in found


def test_undefined_variable_in_subject(project_dir: Path) -> None:
    piece = project_dir / "content" / "decision" / "pilot-offer.mjml"
    replace(piece, "subject: A 30-day pilot", "subject: A 30-day pilot for {{ contact.compnay }}")
    (found,) = problems(project_dir)
    assert found.startswith("content/decision/pilot-offer.mjml:2: template variable:")


def test_template_syntax_error_names_its_line(project_dir: Path) -> None:
    piece = project_dir / "content" / "evaluation" / "build-vs-buy.mjml"
    replace(piece, "{% if contact.company %} like", "{% if contact.company %} like {% endfor %}")
    (found,) = problems(project_dir)
    assert found.startswith(
        f"content/evaluation/build-vs-buy.mjml:{line_of(piece, '{% endfor %}')}:"
    )
    assert "template" in found


def test_mjml_error_is_reported(project_dir: Path) -> None:
    piece = project_dir / "content" / "decision" / "pricing-and-roi.mjml"
    replace(piece, "</mjml>", "")
    (found,) = problems(project_dir)
    assert found.startswith("content/decision/pricing-and-roi.mjml:")
    assert "MJML" in found


def test_missing_front_matter(project_dir: Path) -> None:
    write(project_dir, "content/discovery/naked.mjml", "<mjml><mj-body></mj-body></mjml>\n")
    (found,) = problems(project_dir)
    assert (
        found
        == "content/discovery/naked.mjml:1: front matter missing: start with ---, a subject:, ---"
    )


def test_every_problem_is_listed_at_once(project_dir: Path) -> None:
    replace(project_dir / "workflows" / "guide-nurture.yaml", "wait: 3d", "wait: soon")
    replace(
        project_dir / "content" / "decision" / "pilot-offer.mjml",
        "{{ contact.first_name",
        "{{ nobody",
    )
    assert len(problems(project_dir)) == 2


def test_validate_command_prints_lines_and_exits_1(project_dir: Path) -> None:
    workflow = project_dir / "workflows" / "guide-nurture.yaml"
    replace(workflow, "wait: 3d", "wait: soon")
    result = CliRunner().invoke(main, ["--project", str(project_dir), "validate"])
    assert result.exit_code == 1
    line = line_of(workflow, "wait: soon")
    assert (
        f"workflows/guide-nurture.yaml:{line}: tracks.discovery[1].split[0].steps[0].wait: "
        "'soon' is not a duration" in result.output
    )
    assert "nothing started" in result.output


def test_run_does_not_start_on_a_broken_project(project_dir: Path) -> None:
    replace(project_dir / "nurture.yaml", "timezone: Europe/Paris", "timezone: Mars/Olympus")
    result = CliRunner().invoke(main, ["--project", str(project_dir), "run"])
    assert result.exit_code == 1
    assert "nurture.yaml:" in result.output and "timezone" in result.output
    assert not (project_dir / "nurture.db").exists()


def test_validate_ok_on_example(project_dir: Path) -> None:
    result = CliRunner().invoke(main, ["--project", str(project_dir), "validate"])
    assert result.exit_code == 0, result.output
    assert "2 workflows, 10 pieces of content" in result.output


def start_and_validate(project_dir: Path, env: dict[str, str | None]) -> tuple[Result, Result]:
    runner = CliRunner()
    validate = runner.invoke(main, ["--project", str(project_dir), "validate"], env=env)
    started = runner.invoke(main, ["--project", str(project_dir), "run"], env=env)
    return validate, started


def test_validate_refuses_what_run_refuses_a_missing_handoff_secret(project_dir: Path) -> None:
    from tests.helpers import configure_handoff

    configure_handoff(project_dir, "https://crm.example/hooks/nurture")
    validate, started = start_and_validate(project_dir, {"NURTURE_HANDOFF_SECRET": None})
    expected = "nurture.yaml: handoff.webhook_secret: required with webhook_url; set NURTURE_HANDOFF_SECRET"
    assert validate.exit_code == 1 and expected in validate.output
    assert "ok:" not in validate.output
    assert started.exit_code == 1 and expected in started.output  # the same words: one check
    secret = {"NURTURE_HANDOFF_SECRET": "s3cret-for-the-crm"}
    validate = CliRunner().invoke(main, ["--project", str(project_dir), "validate"], env=secret)
    assert validate.exit_code == 0 and validate.output.startswith("ok:"), validate.output
    assert "s3cret" not in validate.output


@pytest.mark.parametrize(
    ("change", "env", "expected"),
    [
        (None, {"NURTURE_SMTP_URL": "http://mail.example.com"}, "NURTURE_SMTP_URL:"),
        (
            "delivery:\n  dkim: {domain: keel.example, selector: s1, private_key_file: k.pem}\n",
            {},
            "delivery.dkim.private_key_file: [Errno 2] No such file or directory",
        ),
    ],
)
def test_validate_checks_the_environment_as_run_does(
    project_dir: Path, change: str | None, env: dict[str, str | None], expected: str
) -> None:
    if change:
        settings = project_dir / "nurture.yaml"
        settings.write_text(settings.read_text() + change)
    validate, started = start_and_validate(project_dir, {"NURTURE_SMTP_URL": None, **env})
    assert validate.exit_code == 1 and expected in validate.output, validate.output
    assert started.exit_code == 1 and expected in started.output, started.output
