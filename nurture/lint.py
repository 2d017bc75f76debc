"""`nurture lint`: what would hurt a piece of content in an inbox, found before anyone sees it.

Each finding names the file and line. Errors (exit 1): no unsubscribe link, a link that is
not https, an image without alt text, an empty subject or one over 78 characters, HTML over
Gmail's 102 KB clipping limit. Warnings: no preheader, an MJML tag MJML does not know, a
contact field that no contact in the database has.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, nodes
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nurture.config import PROFILE_FIELDS, Settings
from nurture.content import Piece, sample_variables, split_front_matter
from nurture.models import Contact
from nurture.project import Project

GMAIL_CLIP = 102 * 1024
SUBJECT_MAX = 78
_LINK = re.compile(r"""href\s*=\s*["'](?P<url>[^"']*)["']""", re.I)
_IMAGE = re.compile(r"<(?:mj-image|img)\b[^>]*>", re.I | re.S)
_ALT = re.compile(r"""\balt\s*=\s*["'][^"']+["']""", re.I)
_MJ_TAG = re.compile(r"<(mj-[a-z-]+)", re.I)
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
