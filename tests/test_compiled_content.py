"""What the compiled emails hold, read in the HTML itself: every example piece, in every
language, shows its preheader and keeps every section within the body's width; the text part
reads as paragraphs. When Node's `mjml` (MJML's reference compiler) is installed, each piece
is also compared with what the reference makes of the same source."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import lxml.html
import pytest
from jinja2 import Environment

from nurture.content import Piece, sample_variables, split_front_matter
from nurture.phases import PHASES
from nurture.project import load_project

INVISIBLE = "\u034f\u200c\u00a0\u200b\u2007\u00ad \n"
WIDTH = re.compile(r"max-width:(\d+)px")
REPO = Path(__file__).resolve().parents[1]


def every_variant(root: Path) -> list[Piece]:
    project = load_project(root)
    return [
        variant
        for piece in project.content.values()
        for variant in (piece, *piece.translations.values())
    ]


def layout(html: str) -> tuple[str, list[int | None], str]:
    """(the hidden preheader, the max-width of each block of the body, the visible text)."""
    body = lxml.html.document_fromstring(html).find("body")
    assert body is not None
    hidden = body.xpath("./div[contains(@style, 'display:none')]")
    preheader = " ".join(hidden[0].text_content().strip(INVISIBLE).split()) if hidden else ""
    (root,) = body.xpath(".//div[@aria-roledescription='email']")
    widths: list[int | None] = []
    for block in root:
        if not isinstance(block.tag, str):
            continue  # Outlook's conditional comments
        box = block if block.tag == "div" else block.xpath(".//div")[0]
        found = WIDTH.search((box.get("style") or "").replace(" ", ""))
        widths.append(int(found.group(1)) if found else None)
    return preheader, widths, " ".join(root.text_content().split())


def test_every_piece_shows_its_preheader_and_keeps_the_body_width(project_dir: Path) -> None:
    settings = load_project(project_dir).settings
    variables = sample_variables(settings.custom_fields, settings.sender.model_dump())
    variants = every_variant(project_dir)
    on_disk = [p for phase in PHASES for p in (project_dir / "content" / phase).glob("*.mjml")]
    assert len(variants) == len(on_disk) >= 20
    for piece in variants:
        html = piece.render(variables).html
        preheader, widths, text = layout(html)
        expected = Environment().from_string(piece.front.preheader or "").render(variables)
        assert expected and preheader == " ".join(expected.split()), piece.path
        style = re.search(r'<body[^>]*><div style="([^"]*)"', html)
        assert style and "display:none" in style.group(1) and "opacity:0" in style.group(1)
        # Hidden, but not as white 1 px text, which SpamAssassin scores.
        assert "color:#ffffff" not in style.group(1) and "font-size:1px" not in style.group(1)
        assert len(widths) >= 2, piece.path  # the piece's sections and the footer
        assert all(width == 600 for width in widths), (piece.path, widths)
        assert variables["sender"]["postal_address"] in text, piece.path  # the footer is there


def test_the_text_part_reads_as_paragraphs_with_readable_links(project_dir: Path) -> None:
    project = load_project(project_dir)
    settings = project.settings
    variables = sample_variables(settings.custom_fields, settings.sender.model_dump())
    text = project.content["discovery/hidden-cost-of-churn"].render(variables).text
    paragraphs = text.split("\n\n")
    assert paragraphs[:2] == [
        "The churn your dashboard does not show",
        f"Hello {variables['contact']['first_name']},",
    ]
    assert paragraphs[2].startswith("When a customer cancels")
    assert (
        "Read the 6-minute guide (https://keel-retention.example/guides/quiet-churn-signals)"
        in paragraphs
    )
    assert f"Unsubscribe or receive fewer emails ({variables['unsubscribe_url']})" in text
    assert "](" not in text and "\n\n\n" not in text


def reference_mjml() -> str | None:
    """Node's `mjml` command: $NURTURE_MJML, or `mjml` on the PATH."""
    return os.environ.get("NURTURE_MJML") or shutil.which("mjml")


@pytest.mark.skipif(
    reference_mjml() is None or shutil.which("node") is None,
    reason="MJML's reference compiler is not installed (npm install mjml; set NURTURE_MJML "
    "to its node_modules/.bin/mjml); .ci/run installs it",
)
def test_each_piece_is_what_the_reference_mjml_makes_of_it(project_dir: Path) -> None:
    """Our compile (includes resolved, one head) against the reference's own include handling."""
    command = reference_mjml()
    assert command is not None
    settings = load_project(project_dir).settings
    variables = sample_variables(settings.custom_fields, settings.sender.model_dump())
    content = project_dir / "content"
    head = (content / "partials" / "head.mjml").read_text(encoding="utf-8")
    variants = every_variant(project_dir)
    inputs = []
    for number, piece in enumerate(variants):
        # MJML keeps one head: the front matter's preheader goes into a copy of the head
        # partial as MJML says it (mj-preview); the piece's body is compiled as written.
        assert piece.front.preheader and "<mj-head>" in head
        preview = f"<mj-head><mj-preview>{piece.front.preheader}</mj-preview>"
        partial = f"partials/head-{number}.mjml"
        (content / partial).write_text(head.replace("<mj-head>", preview, 1), encoding="utf-8")
        _, body, _ = split_front_matter(piece.path.read_text(encoding="utf-8"))
        assert 'path="partials/head.mjml"' in body
        written = piece.path.with_name(f"reference-{number}.mjml")
        written.write_text(body.replace("partials/head.mjml", partial), encoding="utf-8")
        inputs.append(str(written.relative_to(content)))
    out = project_dir / "reference"
    out.mkdir()
    result = subprocess.run(
        [
            command,
            *inputs,
            "--config.allowIncludes",
            "true",
            "--config.filePath",
            ".",
            "--config.includePath",
            str(content),
            "--config.validationLevel",
            "strict",
            "-o",
            f"{out}/",
        ],
        cwd=content,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    fonts = re.compile(r"font-family:([^;\"]+)")
    for number, piece in enumerate(variants):
        compiled = (out / f"reference-{number}.html").read_text(encoding="utf-8")
        reference = Environment().from_string(compiled).render(variables)
        ours = piece.render(variables).html
        (ours_preheader, ours_widths, ours_text) = layout(ours)
        (ref_preheader, ref_widths, ref_text) = layout(reference)
        assert (ours_preheader, ours_widths) == (ref_preheader, ref_widths), piece.path
        # The reference indents its output: the same words, spaces aside.
        assert "".join(ours_text.split()) == "".join(ref_text.split()), piece.path
        assert set(fonts.findall(ours)) == set(fonts.findall(reference)), piece.path
