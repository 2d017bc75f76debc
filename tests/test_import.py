"""CSV import: mapping, de-duplication, the bad rows reported with reasons, the good kept."""

from __future__ import annotations

import csv
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import select

from nurture.cli import main
from nurture.db import sessions
from nurture.models import Contact
from tests.helpers import write

ROWS = """E-mail;First Name;Société;Fuseau;Size;Notes
ana@acme.example;Ana;Acme;Europe/Paris;300;met at the stand
ANA@acme.example ;Ana-Maria;;;;
not-an-address;X;Y;Europe/Paris;10;
;Nobody;Z;Europe/Paris;;
bo@beta.example;Bo;Beta;Mars/Olympus;;
cy@gamma.example;Cy;Gamma;America/New_York;lots;
dee@delta.example;Dee;Delta;Asia/Kolkata;50;
"""


def run(project: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--project", str(project), *args], catch_exceptions=False)
    return result.exit_code, result.output


def contacts(project: Path) -> dict[str, Contact]:
    from nurture.db import make_engine

    engine = make_engine(f"sqlite:///{project / 'nurture.db'}")
    with sessions(engine)() as session:
        return {c.email: c for c in session.scalars(select(Contact))}


def test_an_import_keeps_the_good_rows_and_reports_the_bad(project_dir: Path) -> None:
    path = write(project_dir, "salon.csv", ROWS)
    code, output = run(
        project_dir,
        "import",
        str(path),
        "--map",
        "Société=company",
        "--map",
        "Fuseau=timezone",
        "--map",
        "Size=company_size",
        "--map",
        "Notes=",
        "--source",
        "salon-2026",
        "--consent",
        "salon 2026, badge scan",
    )
    assert code == 0, output
    assert "2 created, 0 updated, 1 duplicate rows merged, 4 rejected" in output
    found = contacts(project_dir)
    assert set(found) == {"ana@acme.example", "dee@delta.example"}
    ana = found["ana@acme.example"]
    assert (ana.first_name, ana.company, ana.timezone, ana.company_size) == (
        "Ana-Maria",
        "Acme",
        "Europe/Paris",
        300,
    )
    assert (ana.source, ana.consent_source, ana.stage) == (
        "salon-2026",
        "salon 2026, badge scan",
        "contact",
    )
    rejects = list(csv.DictReader((project_dir / "salon.rejected.csv").open(encoding="utf-8")))
    reasons = {r["line"]: r["reason"] for r in rejects}
    assert reasons["4"].startswith("invalid email")
    assert reasons["5"] == "missing field: email"
    assert reasons["6"].startswith("unknown time zone")
    assert reasons["7"].startswith("invalid company_size")
    assert rejects[0]["E-mail"] == "not-an-address"  # the row as it was, to fix and import again


def test_an_unmapped_column_is_said_and_a_file_without_email_is_refused(project_dir: Path) -> None:
    path = write(
        project_dir, "list.csv", "email,first_name,favourite_colour\nana@acme.example,Ana,blue\n"
    )
    code, output = run(project_dir, "import", str(path))
    assert code == 0
    assert "column 'favourite_colour' ignored" in output and "1 created" in output
    path = write(project_dir, "nomail.csv", "name,company\nAna,Acme\n")
    code, output = run(project_dir, "import", str(path))
    assert code == 1 and "no column holds the email address" in output
    code, output = run(project_dir, "import", str(path), "--map", "name=shoe_size")
    assert code == 1 and "unknown field" in output


def test_importing_again_updates_and_never_duplicates(project_dir: Path) -> None:
    path = write(project_dir, "a.csv", "email,company\nana@acme.example,Acme\n")
    run(project_dir, "import", str(path))
    path = write(
        project_dir, "b.csv", "email,company,role\n Ana@Acme.example,Acme Inc,VP Product\n"
    )
    code, output = run(project_dir, "import", str(path))
    assert code == 0 and "0 created, 1 updated" in output
    found = contacts(project_dir)
    assert list(found) == ["ana@acme.example"] and found["ana@acme.example"].company == "Acme Inc"
