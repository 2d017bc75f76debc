"""The content environment's look-ups: `contact.x` reads the field, a missing one fails."""

from __future__ import annotations

from pathlib import Path

import pytest
from jinja2 import UndefinedError

from nurture.content import SAMPLE_CONTACT, Piece, load_piece, render_email

PIECE = """---
subject: "Hello {{ contact.first_name }}"
---
<mjml><mj-body><mj-section><mj-column>
<mj-text>{{ contact.first_name }} of {{ contact.company }}: {{ contact.items }}
{% if contact.missing is defined %}defined{% else %}not defined{% endif %}</mj-text>
</mj-column></mj-section></mj-body></mjml>
"""


def _piece(tmp_path: Path, body: str = PIECE) -> Piece:
    folder = tmp_path / "content" / "discovery"
    folder.mkdir(parents=True)
    (folder / "hello.mjml").write_text(body, encoding="utf-8")
    sample = {**SAMPLE_CONTACT, "items": "three seats"}
    return load_piece(
        folder / "hello.mjml", tmp_path / "content", "hello.mjml", {"contact": sample}
    )


def test_a_field_is_read_even_when_named_like_a_dict_method(tmp_path: Path) -> None:
    piece = _piece(tmp_path)
    contact = {**SAMPLE_CONTACT, "first_name": "Ana", "company": "Acme", "items": "three seats"}
    rendered = render_email(piece, contact, {}, "https://example.com/u/x")
    assert rendered.subject == "Hello Ana"
    assert "Ana of Acme: three seats" in rendered.html
    assert "not defined" in rendered.html


def test_a_field_the_person_lacks_still_fails_the_render(tmp_path: Path) -> None:
    piece = _piece(tmp_path)
    contact = {k: v for k, v in SAMPLE_CONTACT.items() if k != "company"}
    contact["items"] = "x"
    with pytest.raises(UndefinedError):
        render_email(piece, contact, {}, "https://example.com/u/x")
