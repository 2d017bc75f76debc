"""Content per language: the contact's language picks the variant, with a fallback."""

from __future__ import annotations

from pathlib import Path

import pytest

from nurture.problems import ProjectError
from nurture.project import load_project
from nurture.runtime import Runtime
from tests.helpers import PROFILE, add_contact, outbox, parse_eml, write


def subject_for(runtime: Runtime, address: str, language: str | None) -> str:
    fields = {**PROFILE, **({"language": language} if language else {})}
    add_contact(runtime, address, **fields)
    runtime.dispatcher.tick()
    mail = next(parse_eml(p) for p in outbox(runtime) if address in parse_eml(p)["To"])
    return str(mail["Subject"])


@pytest.mark.parametrize(
    ("language", "subject"),
    [
        ("fr", "Ana, le churn que votre tableau de bord ne montre pas"),
        ("fr-CA", "Ana, le churn que votre tableau de bord ne montre pas"),
        ("de", "Ana, the churn your dashboard does not show"),
        (None, "Ana, the churn your dashboard does not show"),
    ],
)
def test_the_contacts_language_picks_the_variant(
    runtime: Runtime, language: str | None, subject: str
) -> None:
    assert subject_for(runtime, "ana@acme.example", language) == subject


def test_french_body_and_footer(runtime: Runtime) -> None:
    add_contact(runtime, "lea@acme.example", **{**PROFILE, "first_name": "Léa", "language": "fr"})
    runtime.dispatcher.tick()
    mail = parse_eml(outbox(runtime)[0])
    text = next(p for p in mail.iter_parts() if p.get_content_type() == "text/plain").get_content()
    assert "Bonjour Léa," in text and "Se désabonner ou recevoir moins d'e-mails" in text


def test_every_piece_ships_in_english_and_french(project_dir: Path) -> None:
    project = load_project(project_dir)
    assert len(project.content) == 9
    assert all(set(piece.translations) == {"fr"} for piece in project.content.values())


def test_a_translation_needs_its_original(project_dir: Path) -> None:
    source = (project_dir / "content" / "discovery" / "activation-metrics.fr.mjml").read_text()
    write(project_dir, "content/discovery/orphan.fr.mjml", source)
    with pytest.raises(ProjectError) as caught:
        load_project(project_dir)
    assert (
        "content/discovery/orphan.fr.mjml: a fr translation of discovery/orphan, which does not exist"
        in str(caught.value)
    )
