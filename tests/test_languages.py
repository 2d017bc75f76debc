"""Content per language: the contact's language picks the variant, with a fallback."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from nurture.cli import main
from nurture.content import preview_unsubscribe_url
from nurture.db import sessions
from nurture.problems import ProjectError
from nurture.project import load_project
from nurture.runtime import Runtime
from nurture.users import create_user
from nurture.web import create_app
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
    originals = [
        p
        for phase in ("discovery", "evaluation", "decision")
        for p in (project_dir / "content" / phase).glob("*.mjml")
        if not p.name.endswith(".fr.mjml")
    ]
    assert len(project.content) == len(originals) >= 10
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


def _text_part(mail: Any) -> str:
    part = next(p for p in mail.iter_parts() if p.get_content_type() == "text/plain")
    return str(part.get_content())


def test_the_preview_is_what_the_contact_gets(runtime: Runtime, database_url: str) -> None:
    """`nurture preview --contact` and the engine render through one function: same language,
    same subject, same text (the unsubscribe link aside)."""
    add_contact(runtime, "lea@acme.example", **{**PROFILE, "first_name": "Léa", "language": "fr"})
    runtime.dispatcher.tick()
    (path,) = outbox(runtime)
    mail = parse_eml(path)
    base = ["--project", str(runtime.project.root), "--db", database_url]
    result = CliRunner().invoke(
        main,
        [
            *base,
            "preview",
            "discovery/hidden-cost-of-churn",
            "--contact",
            "lea@acme.example",
            "--text",
        ],
    )
    assert result.exit_code == 0, result.output
    subject, _, text = result.output.partition("\n\n")
    assert subject == f"Subject: {mail['Subject']}"
    assert subject == "Subject: Léa, le churn que votre tableau de bord ne montre pas"
    sent = _text_part(mail)
    unsubscribe = re.search(r"\(([^)]*)\)\s*$", sent.strip())
    assert unsubscribe is not None
    # the preview's unsubscribe link is on the project's base_url (a token no message has)
    base_url = runtime.project.settings.base_url
    shown = preview_unsubscribe_url(base_url)
    assert shown.startswith(base_url) and "example.com" not in shown
    assert text.strip() == sent.strip().replace(unsubscribe.group(1), shown)


def test_the_sample_preview_is_a_person(project_dir: Path) -> None:
    base = ["--project", str(project_dir)]
    english = CliRunner().invoke(
        main, [*base, "preview", "discovery/hidden-cost-of-churn", "--text"]
    )
    assert english.exit_code == 0, english.output
    assert "Subject: Maya, the churn your dashboard does not show" in english.output
    assert "Hello Maya," in english.output and "sample " not in english.output
    french = CliRunner().invoke(
        main, [*base, "preview", "discovery/hidden-cost-of-churn", "--language", "fr", "--text"]
    )
    assert french.exit_code == 0, french.output
    assert "Bonjour Maya," in french.output


def test_the_dashboard_preview_speaks_the_contacts_language(runtime: Runtime) -> None:
    with sessions(runtime.database).begin() as session:
        create_user(
            session, "ops@keel.example", "correct horse battery staple", runtime.clock.now()
        )
    add_contact(runtime, "lea@acme.example", **{**PROFILE, "first_name": "Léa", "language": "fr"})
    client = create_app(runtime).test_client()
    login = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', login)
    assert token is not None
    client.post(
        "/login",
        data={
            "email": "ops@keel.example",
            "password": "correct horse battery staple",
            "csrf_token": token.group(1),
        },
    )
    page = client.get(
        "/content",
        query_string={"piece": "discovery/hidden-cost-of-churn", "contact": "lea@acme.example"},
    ).get_data(as_text=True)
    assert "Léa, le churn que votre tableau de bord ne montre pas" in page
    assert "Bonjour Léa," in page
    sample = client.get("/content", query_string={"piece": "discovery/hidden-cost-of-churn"})
    assert "Hello Maya," in sample.get_data(as_text=True)
