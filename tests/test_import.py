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


def test_an_unmapped_column_stops_the_import_and_a_file_without_email_is_refused(
    project_dir: Path,
) -> None:
    path = write(
        project_dir, "list.csv", "email,first_name,favourite_colour\nana@acme.example,Ana,blue\n"
    )
    code, output = run(project_dir, "import", str(path))
    assert code == 1 and "'favourite_colour'" in output and not contacts(project_dir)
    code, output = run(project_dir, "import", str(path), "--map", "favourite_colour=")
    assert code == 0
    assert "column 'favourite_colour' left out (--map favourite_colour=)" in output
    assert "1 created" in output
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


def test_apostrophes_and_internationalized_addresses_are_imported(project_dir: Path) -> None:
    path = write(
        project_dir,
        "intl.csv",
        "email,first_name,company_size\n"
        "o'hara@example.com,Maureen,12\n"
        "José@Exemple.fr,José,\n"
        "user@xn--bcher-kva.example,Ute,\n"
        '"""john doe""@example.com",John,\n'
        "big@example.com,Big,300.7\n"
        "name@example.com,x\x00y,\n",
    )
    code, output = run(project_dir, "import", str(path))
    assert code == 0, output
    assert "3 created, 0 updated, 0 duplicate rows merged, 3 rejected" in output
    assert set(contacts(project_dir)) == {
        "o'hara@example.com",
        "josé@exemple.fr",
        "user@bücher.example",
    }
    rejects = list(csv.DictReader((project_dir / "intl.rejected.csv").open(encoding="utf-8")))
    reasons = {r["line"]: r["reason"] for r in rejects}
    assert reasons["5"].startswith("invalid email")
    assert reasons["6"].startswith("invalid company_size")
    assert reasons["7"] == "invalid first_name: contains a NUL character"


FRENCH = """Prénom;Nom;E-mail;Société;Poste;Téléphone;Convention collective
Ana;Lopez;ana@acme.example;Acme;VP Customer Success;+33 6 12 34 56 78;Syntec
"""


def test_french_headers_are_read_and_an_unknown_column_stops_the_import(
    project_dir: Path,
) -> None:
    path = write(project_dir, "salon.csv", FRENCH)
    code, output = run(project_dir, "import", str(path))
    assert code == 1 and not contacts(project_dir)  # nothing imported, nothing dropped
    # Each unknown column listed, with what to write for it; the known ones are not.
    assert "2 column(s) match no field; nothing was imported" in output
    assert "'Téléphone': no close field; declare one under custom_fields:" in output
    assert "'Convention collective'" in output and "--map 'Convention collective='" in output
    assert "'Prénom'" not in output and "'Société'" not in output
    assert "--map COLUMN=FIELD" in output and "--map COLUMN= leaves it out" in output
    code, output = run(
        project_dir, "import", str(path), "--map", "Téléphone=", "--map", "Convention collective="
    )
    assert code == 0, output
    assert "column 'Téléphone' left out" in output and "1 created" in output
    ana = contacts(project_dir)["ana@acme.example"]
    assert (ana.first_name, ana.last_name, ana.company, ana.role) == (
        "Ana",
        "Lopez",
        "Acme",
        "VP Customer Success",
    )


def test_english_synonyms_declared_custom_fields_and_a_suggestion(project_dir: Path) -> None:
    settings = project_dir / "nurture.yaml"
    settings.write_text(
        settings.read_text() + "\ncustom_fields:\n  phone: string\n  headcount: integer\n"
    )
    path = write(
        project_dir,
        "list.csv",
        "Email Address,Given Name,Surname,Organization,Job Title,Phone Number,Headcount,Contry\n"
        "bo@beta.example,Bo,Berg,Beta,CTO,+1 555 0100,120,SE\n",
    )
    code, output = run(project_dir, "import", str(path))
    assert code == 1
    assert "1 column(s) match no field" in output
    assert "'Contry': --map Contry=country (closest field)" in output
    code, output = run(project_dir, "import", str(path), "--map", "Contry=country")
    assert code == 0, output
    bo = contacts(project_dir)["bo@beta.example"]
    assert (bo.first_name, bo.last_name, bo.company, bo.role, bo.country) == (
        "Bo",
        "Berg",
        "Beta",
        "CTO",
        "SE",
    )
    assert bo.custom == {"phone": "+1 555 0100", "headcount": 120}


def test_a_custom_field_of_the_wrong_type_rejects_its_row(project_dir: Path) -> None:
    settings = project_dir / "nurture.yaml"
    settings.write_text(
        settings.read_text()
        + "\ncustom_fields:\n  headcount: integer\n  plan: {type: choice, values: [free, pro]}\n"
        + "  renewal: date\n  churn_risk: number\n  trial: boolean\n"
    )
    path = write(
        project_dir,
        "list.csv",
        "email,headcount,plan,renewal,churn_risk,trial\n"
        'ana@acme.example,250,PRO,2026-09-30,"0,35",oui\n'
        "bo@beta.example,lots,free,,,\n"
        "cy@gamma.example,12,gold,,,\n"
        "dee@delta.example,12,free,2026-02-30,,\n",
    )
    code, output = run(project_dir, "import", str(path))
    assert code == 0, output
    assert "1 created, 0 updated, 0 duplicate rows merged, 3 rejected" in output
    assert contacts(project_dir)["ana@acme.example"].custom == {
        "headcount": 250,
        "plan": "pro",
        "renewal": "2026-09-30",
        "churn_risk": 0.35,
        "trial": True,
    }
    assert "line 3: invalid headcount: 'lots' is not a whole number" in output
    assert "line 4: invalid plan: 'gold' is not one of free, pro" in output
    assert "line 5: invalid renewal: '2026-02-30' is not a date that exists" in output
