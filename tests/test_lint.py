"""Each lint finding fires on a bad piece, and none on the example content."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from nurture.cli import main
from nurture.lint import lint
from nurture.project import load_project
from tests.helpers import write

GOOD = (
    Path(__file__).resolve().parents[1] / "content" / "discovery" / "activation-metrics.mjml"
).read_text()


def findings(root: Path, counts: dict[str, int] | None = None) -> list[str]:
    return [str(f) for f in lint(load_project(root), counts)]


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), start=1) if needle in line)


def test_the_example_content_is_clean(project_dir: Path) -> None:
    everyone = {"first_name": 10, "company": 10, "email": 10}
    assert findings(project_dir, everyone) == []
    result = CliRunner().invoke(main, ["--project", str(project_dir), "lint"])
    assert result.exit_code == 0


@pytest.mark.parametrize(
    ("old", "new", "severity", "words", "needle"),
    [
        ('<mj-include path="partials/footer.mjml" />', "", "error", "no unsubscribe link", None),
        (
            "https://keel-retention.example/blog/activation-metrics",
            "http://keel-retention.example/blog",
            "error",
            "is not https",
            "http://keel-retention.example/blog",
        ),
        (
            "subject: Three activation metrics that predict renewals",
            "subject: " + "Renewals " * 10,
            "error",
            "keep it to 78",
            "subject:",
        ),
        (
            "subject: Three activation metrics that predict renewals",
            "subject: \"{{ '' }}\"",
            "error",
            "the subject is empty",
            "subject:",
        ),
        (
            "preheader: Logins are not activation. These three numbers are.\n",
            "",
            "warning",
            "no preheader",
            None,
        ),
        (
            "<mj-text>Hello",
            "<mj-sektion></mj-sektion><mj-text>Hello",
            "warning",
            "MJML does not know <mj-sektion>",
            "mj-sektion",
        ),
        (
            '<mj-button href="https://keel-retention.example/blog/activation-metrics">',
            '<mj-image src="https://keel-retention.example/chart.png" /><mj-button href="https://keel-retention.example/blog/activation-metrics">',
            "error",
            "an image without alt text",
            "chart.png",
        ),
        (
            "<mj-text>Hello",
            "<mj-text>" + "A long paragraph of words. " * 4200 + "</mj-text><mj-text>Hello",
            "error",
            "Gmail clips",
            None,
        ),
    ],
)
def test_each_finding(
    project_dir: Path, old: str, new: str, severity: str, words: str, needle: str | None
) -> None:
    assert old in GOOD
    text = GOOD.replace(old, new, 1)
    write(project_dir, "content/discovery/activation-metrics.mjml", text)
    found = [f for f in findings(project_dir) if "activation-metrics" in f]
    line = line_of(text, needle) if needle else None
    assert any(
        f": {severity}: " in f and words in f and (line is None or f":{line}: " in f) for f in found
    ), found


def test_a_field_no_contact_has(project_dir: Path) -> None:
    found = findings(project_dir, {"first_name": 0, "company": 12})
    assert any("no contact has 'first_name'" in f for f in found)
    assert not any("'company'" in f for f in found)
    first = next(f for f in found if "activation-metrics" in f and "first_name" in f)
    text = GOOD
    assert f":{line_of(text, 'contact.first_name')}: warning:" in first


def test_lint_exits_1_on_errors(project_dir: Path) -> None:
    write(
        project_dir,
        "content/discovery/activation-metrics.mjml",
        GOOD.replace('<mj-include path="partials/footer.mjml" />', ""),
    )
    result = CliRunner().invoke(main, ["--project", str(project_dir), "lint"])
    assert result.exit_code == 1
    assert "content/discovery/activation-metrics.mjml:" in result.output
    assert "1 errors" in result.output


def test_the_compiled_html_is_checked_the_preheader_and_the_body_width(
    project_dir: Path,
) -> None:
    """The HTML MRML made before includes were resolved: no preheader, a footer at full width."""
    import mjml

    from nurture.lint import compiled_problems

    content = project_dir / "content"
    body = GOOD.split("---\n", 2)[2]
    assert '<mjml lang="en">' in body
    with_second_head = body.replace(
        '<mjml lang="en">',
        '<mjml lang="en"><mj-head><mj-preview>Logins are not activation.</mj-preview></mj-head>',
    )
    html = mjml.mjml2html(
        with_second_head,
        include_loader=lambda path: (content / path).read_text(),
        disable_comments=True,
    )
    assert compiled_problems(html, "Logins are not activation.", 600) == [
        "the preheader is missing from the compiled HTML",
        "section 2 of the body is not held to a width in the compiled HTML, in a 600 px body: "
        "on a desktop it stretches past the email",
    ]


def test_lint_finds_a_block_wider_than_the_body(project_dir: Path) -> None:
    text = GOOD.replace(
        '<mj-include path="partials/footer.mjml" />',
        '<mj-raw><div style="background:#eee">Banner</div></mj-raw>'
        '<mj-include path="partials/footer.mjml" />',
    )
    write(project_dir, "content/discovery/activation-metrics.mjml", text)
    found = [f for f in findings(project_dir) if "activation-metrics.mjml:" in f]
    assert any(": error: section 2 of the body is not held to a width" in f for f in found), found
