"""`nurture lint`: what would hurt a piece of content in an inbox, found before anyone sees it.

Each finding names the file and line. Errors (exit 1): no unsubscribe link, a link that is
not https, an image without alt text, an empty subject or one over 78 characters, HTML over
Gmail's 102 KB clipping limit, and what the compiled HTML shows wrongly (the front matter's
preheader missing or changed, a section wider than the body). Warnings: no preheader, an MJML
tag MJML does not know, a contact field that no contact in the database has.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lxml.html
from jinja2 import Environment, nodes
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nurture.config import PROFILE_FIELDS, Settings
from nurture.content import Piece, body_width, sample_variables, split_front_matter
from nurture.models import Contact
from nurture.project import Project

GMAIL_CLIP = 102 * 1024
SUBJECT_MAX = 78
_LINK = re.compile(r"""href\s*=\s*["'](?P<url>[^"']*)["']""", re.I)
_IMAGE = re.compile(r"<(?:mj-image|img)\b[^>]*>", re.I | re.S)
_ALT = re.compile(r"""\balt\s*=\s*["'][^"']+["']""", re.I)
_MJ_TAG = re.compile(r"<(mj-[a-z-]+)", re.I)
_MAX_WIDTH = re.compile(r"max-width:\s*(\d+)px")
#: What MJML pads a preheader with so inboxes show no body text after it.
_INVISIBLE = "\u034f\u200c\u00a0\u200b\u2007\u00ad"
MJML_TAGS = frozenset(
    (
        "mj-accordion",
        "mj-accordion-element",
        "mj-accordion-text",
        "mj-accordion-title",
        "mj-all",
        "mj-attributes",
        "mj-body",
        "mj-breakpoint",
        "mj-button",
        "mj-carousel",
        "mj-carousel-image",
        "mj-class",
        "mj-column",
        "mj-divider",
        "mj-font",
        "mj-group",
        "mj-head",
        "mj-hero",
        "mj-html-attribute",
        "mj-html-attributes",
        "mj-image",
        "mj-include",
        "mj-navbar",
        "mj-navbar-link",
        "mj-preview",
        "mj-raw",
        "mj-section",
        "mj-selector",
        "mj-social",
        "mj-social-element",
        "mj-spacer",
        "mj-style",
        "mj-table",
        "mj-text",
        "mj-title",
        "mj-wrapper",
    )
)


@dataclass(frozen=True, order=True)
class Finding:
    path: str
    line: int
    severity: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.severity}: {self.message}"


def lint(project: Project, fields_in_use: Mapping[str, int] | None = None) -> list[Finding]:
    """Every finding in every piece; `fields_in_use` counts contacts having each field."""
    variables = sample_variables(
        project.settings.custom_fields, project.settings.sender.model_dump()
    )
    found: list[Finding] = []
    for piece in project.content.values():
        for variant in (piece, *piece.translations.values()):
            found.extend(lint_piece(project.root, variant, variables, fields_in_use))
    return sorted(found)


def lint_piece(
    root: Path,
    piece: Piece,
    variables: Mapping[str, Any],
    fields_in_use: Mapping[str, int] | None = None,
) -> Iterable[Finding]:
    display = (
        str(piece.path.relative_to(root)) if piece.path.is_relative_to(root) else str(piece.path)
    )
    raw = piece.path.read_text(encoding="utf-8")
    _, body, body_line = split_front_matter(raw)
    renders = [piece.render(variables, variant) for variant in range(piece.variants)]
    rendered = renders[0]
    lines = raw.splitlines()

    def line_of(needle: str, default: int = 1) -> int:
        return next((i for i, text in enumerate(lines, start=1) if needle in text), default)

    subject_line = line_of("subject", 2)
    for variant, each in enumerate(renders):
        subject = each.subject
        which = f"subject {variant + 1}" if piece.variants > 1 else "the subject"
        if not subject.strip():
            yield Finding(display, subject_line, "error", f"{which} is empty")
        elif len(subject) > SUBJECT_MAX:
            yield Finding(
                display,
                subject_line,
                "error",
                f"{which} is {len(subject)} characters; keep it to {SUBJECT_MAX}",
            )
    if not piece.front.preheader and "<mj-preview" not in body:
        yield Finding(
            display, 1, "warning", "no preheader: inboxes will show the first words of the body"
        )
    expected = piece.preheader(variables)
    if expected is None and "<mj-preview" in body:
        expected = ""  # written in the body: it must show, whatever it says
    for message in compiled_problems(rendered.html, expected, body_width(body)):
        yield Finding(
            display, line_of("preheader") if "preheader" in message else body_line, "error", message
        )
    if variables["unsubscribe_url"] not in rendered.html:
        yield Finding(display, body_line, "error", "no unsubscribe link ({{ unsubscribe_url }})")
    size = len(rendered.html.encode())
    if size > GMAIL_CLIP:
        yield Finding(
            display,
            body_line,
            "error",
            f"the HTML is {size // 1024} KB; Gmail clips messages over 102 KB",
        )
    offset = body_line - 1
    for number, text in enumerate(body.splitlines(), start=body_line):
        for match in _LINK.finditer(text):
            url = match.group("url").strip()
            if "{{" in url or url.startswith(("mailto:", "tel:", "#")):
                continue
            if not url.startswith("https://"):
                yield Finding(display, number, "error", f"link {url!r} is not https")
        for tag in _MJ_TAG.findall(text):
            if tag.lower() not in MJML_TAGS:
                yield Finding(
                    display, number, "warning", f"MJML does not know <{tag}>; it renders nothing"
                )
    for match in _IMAGE.finditer(body):
        if not _ALT.search(match.group(0)):
            number = offset + body[: match.start()].count("\n") + 1
            yield Finding(display, number, "error", "an image without alt text")
    if fields_in_use is not None:
        for field, number in _contact_fields(raw):
            if fields_in_use.get(field, 0) == 0:
                yield Finding(
                    display,
                    number,
                    "warning",
                    f"no contact has {field!r}: everyone gets the fallback",
                )


def compiled_problems(html: str, preheader: str | None, width: int) -> list[str]:
    """What the compiled HTML shows wrongly, checked in the HTML itself (not in the MJML).

    `preheader`: the text the inbox must show after the subject ("" for any non-empty text,
    None for no check). Every block of the body (a section, a wrapper, the inner box of a
    full-width section) must be held to `width` pixels, or on a desktop it stretches wider
    than the email.
    """
    problems: list[str] = []
    document = lxml.html.document_fromstring(html)
    body = document.find("body")
    if body is None:
        return ["the compiled HTML has no <body>"]
    hidden = body.xpath("./div[contains(translate(@style, ' ', ''), 'display:none')]")
    shown = " ".join(hidden[0].text_content().strip(_INVISIBLE + " \n").split()) if hidden else ""
    if preheader is not None and not shown:
        problems.append("the preheader is missing from the compiled HTML")
    elif preheader and shown != preheader:
        problems.append(f"the preheader in the HTML is {shown!r}, not {preheader!r}")
    roots = body.xpath(".//div[@aria-roledescription='email']")
    blocks = [child for child in roots[0] if isinstance(child.tag, str)] if roots else []
    for number, block in enumerate(blocks, start=1):
        box = (
            block
            if block.tag == "div"
            else next(
                iter(block.xpath(".//div[contains(translate(@style, ' ', ''), 'margin:0pxauto')]")),
                block,
            )
        )
        found = _MAX_WIDTH.search((box.get("style") or "").replace(" ", ""))
        if found is None or int(found.group(1)) > width:
            shown_width = f"{found.group(1)} px wide" if found else "not held to a width"
            problems.append(
                f"section {number} of the body is {shown_width} in the compiled HTML, "
                f"in a {width} px body: on a desktop it stretches past the email"
            )
    return problems


def fields_in_use(session: Session, settings: Settings) -> dict[str, int]:
    """How many contacts have each profile and custom field."""
    counts = {}
    for name in PROFILE_FIELDS:
        column = getattr(Contact, name, None)
        if column is not None:
            counts[name] = session.scalar(select(func.count()).where(column.is_not(None))) or 0
    counts["email_domain"] = counts.get("email", 0)
    customs = list(session.scalars(select(Contact.custom)))
    for name in settings.custom_fields:
        counts[name] = sum(1 for custom in customs if (custom or {}).get(name) is not None)
    return counts


def _contact_fields(source: str) -> list[tuple[str, int]]:
    """(field, line) for each `contact.FIELD` a template reads."""
    tree = Environment().parse(source)
    return sorted(
        {
            (node.attr, node.lineno)
            for node in tree.find_all(nodes.Getattr)
            if isinstance(node.node, nodes.Name) and node.node.name == "contact"
        }
    )
