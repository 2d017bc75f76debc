"""Custom fields declared with a type: checked at the API, the import and the command line,
stored typed, typed in conditions; a condition reading a field nobody has is refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient
from sqlalchemy import select

from nurture.apikeys import create_key
from nurture.cli import main
from nurture.clock import FixedClock
from nurture.db import sessions
from nurture.models import Contact
from nurture.runtime import Runtime, open_runtime
from nurture.web import create_app
from tests.test_schema import EXAMPLE_SETTINGS, changed, schema, settings_ok

TYPED = """
custom_fields:
  headcount: integer
  arr: number
  plan: {type: choice, values: [free, pro, enterprise]}
  renewal: date
  trial: boolean
  convention_collective: string
"""
HEADCOUNT_RULE = """    - label: Team of 20 to 500
      when: "contact.headcount and 20 <= contact.headcount <= 500"
      points: 7
"""


def run(project: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--project", str(project), *args])
    return result.exit_code, result.output


def declare(project: Path, extra: str = TYPED, rule: str = HEADCOUNT_RULE) -> None:
    path = project / "nurture.yaml"
    text = path.read_text()
    anchor = "    - label: Target sector\n"
    assert anchor in text
    path.write_text(text.replace(anchor, rule + anchor, 1) + extra)


def line_of(path: Path, needle: str) -> int:
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(needle)


def stored(project: Path, address: str) -> Contact:
    from nurture.db import make_engine

    engine = make_engine(f"sqlite:///{project / 'nurture.db'}")
    with sessions(engine)() as session:
        found = session.scalar(select(Contact).where(Contact.email == address))
    engine.dispose()
    assert found is not None
    return found


# --- conditions naming a field nobody has --------------------------------------------------


def test_validate_names_the_line_and_the_field_a_condition_misspells(project_dir: Path) -> None:
    declare(
        project_dir,
        rule="    - label: Syntec\n      when: \"contact.convention_colective == 'syntec'\"\n"
        "      points: 5\n",
    )
    code, output = run(project_dir, "validate")
    assert code == 1
    line = line_of(project_dir / "nurture.yaml", "contact.convention_colective")
    assert f"nurture.yaml:{line}:" in output
    assert "reads contact.convention_colective, which no contact has" in output
    assert "did you mean contact.convention_collective?" in output


def test_a_profile_field_misspelt_gets_a_suggestion_too(project_dir: Path) -> None:
    path = project_dir / "nurture.yaml"
    path.write_text(
        path.read_text().replace("contact.seniority in decision", "contact.senority in decision")
    )
    code, output = run(project_dir, "validate")
    assert code == 1
    line = line_of(path, "contact.senority")
    assert f"nurture.yaml:{line}:" in output and "did you mean contact.seniority?" in output


def test_a_field_with_no_close_name_lists_where_fields_come_from(project_dir: Path) -> None:
    declare(
        project_dir, extra="", rule='    - label: X\n      when: "contact.zzz"\n      points: 1\n'
    )
    code, output = run(project_dir, "validate")
    assert code == 1
    assert "contact.zzz, which no contact has (profile fields: email, email_domain" in output
    assert "declare others under custom_fields:" in output and "did you mean" not in output


# --- typed custom fields: declaration and schema ---------------------------------------------


@pytest.mark.parametrize(
    ("declaration", "message"),
    [
        ("{size: integr}", "custom_fields.size"),
        ("{plan: {type: choice}}", "a choice field lists its values"),
        ("{plan: {type: integer, values: [a]}}", "only a choice field has values"),
        ("{company: string}", "custom field company is a built-in field"),
    ],
)
def test_a_bad_declaration_is_refused_with_its_place(
    project_dir: Path, declaration: str, message: str
) -> None:
    declare(project_dir, extra=f"\ncustom_fields: {declaration}\n", rule="")
    code, output = run(project_dir, "validate")
    assert code == 1 and message in output and "nurture.yaml" in output


def test_the_json_schema_takes_both_forms_and_refuses_unknown_types() -> None:
    typed = {"headcount": "integer", "plan": {"type": "choice", "values": ["free", "pro"]}}
    for value in (typed, ["plan_name"]):
        data = changed(EXAMPLE_SETTINGS, "custom_fields", value)
        assert settings_ok(data)
        assert list(schema("nurture.schema.json").iter_errors(data)) == []
    data = changed(EXAMPLE_SETTINGS, "custom_fields", {"headcount": "integr"})
    assert not settings_ok(data)
    assert list(schema("nurture.schema.json").iter_errors(data)) != []


# --- typed values: command line, conditions ----------------------------------------------


def test_contact_add_stores_typed_values_that_conditions_compare(project_dir: Path) -> None:
    declare(project_dir)
    code, output = run(
        project_dir,
        "contact",
        "add",
        "ana@acme.example",
        "headcount=120",
        "arr=48000.5",
        "plan=Pro",
        "renewal=2026-09-30",
        "trial=yes",
    )
    assert code == 0, output
    ana = stored(project_dir, "ana@acme.example")
    assert ana.custom == {
        "headcount": 120,
        "arr": 48000.5,
        "plan": "pro",
        "renewal": "2026-09-30",
        "trial": True,
    }
    assert ana.fit == 7  # 20 <= 120 <= 500: the rule held (text "120" never compared)
    code, output = run(project_dir, "contact", "add", "bo@beta.example", "headcount=lots")
    assert code == 1 and "headcount: 'lots' is not a whole number" in output
    code, output = run(project_dir, "contact", "add", "bo@beta.example", "plan=gold")
    assert code == 1 and "plan: 'gold' is not one of free, pro, enterprise" in output
    code, output = run(project_dir, "contact", "add", "bo@beta.example", "renewal=30/09/2026")
    assert code == 1 and "renewal: '30/09/2026' is not a date written YYYY-MM-DD" in output


# --- the API ---------------------------------------------------------------------------------


@pytest.fixture
def typed(project_dir: Path, clock: FixedClock, database_url: str) -> Iterator[Runtime]:
    declare(project_dir)
    rt = open_runtime(project_dir, clock=clock, database=database_url)
    yield rt
    rt.database.dispose()


def post(rt: Runtime, client: FlaskClient, fields: dict[str, Any]) -> Any:
    with sessions(rt.database).begin() as session:
        key = create_key(session, "crm", rt.clock.now())[1]
    return client.post(
        "/api/v1/contacts",
        json={"email": "ana@acme.example", "fields": fields},
        headers={"Authorization": f"Bearer {key}"},
    )


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"headcount": "120"}, "fields.headcount"),
        ({"headcount": 12.5}, "fields.headcount"),
        ({"arr": "lots"}, "fields.arr"),
        ({"plan": "gold"}, "fields.plan"),
        ({"renewal": "2026-02-30"}, "fields.renewal"),
        ({"renewal": "30/09/2026"}, "fields.renewal"),
        ({"trial": "yes"}, "fields.trial"),
        ({"convention_collective": 3}, "fields.convention_collective"),
    ],
)
def test_the_api_refuses_a_value_of_the_wrong_type_naming_the_field(
    typed: Runtime, fields: dict[str, Any], field: str
) -> None:
    answer = post(typed, create_app(typed).test_client(), fields)
    assert answer.status_code == 422, answer.json
    assert [e["field"] for e in answer.json["errors"]] == [field]
    with sessions(typed.database)() as session:
        assert session.scalar(select(Contact)) is None


def test_the_api_stores_typed_values_and_the_fit_sees_numbers(typed: Runtime) -> None:
    fields = {"headcount": 120.0, "arr": 48000, "plan": "pro", "renewal": "2026-09-30"}
    answer = post(typed, create_app(typed).test_client(), {**fields, "trial": False})
    assert answer.status_code in (200, 201), answer.json
    with sessions(typed.database)() as session:
        ana = session.scalar(select(Contact))
        assert ana is not None
        assert ana.custom == {**fields, "headcount": 120, "trial": False}
        assert ana.fit == 7


def test_the_openapi_description_gives_each_custom_field_its_type(typed: Runtime) -> None:
    client = create_app(typed).test_client()
    fields = client.get("/api/v1/openapi.json").json["components"]["schemas"]["Fields"]
    types = {
        name: fields["properties"][name]["anyOf"][0]
        for name in ("headcount", "arr", "plan", "renewal", "trial")
    }
    assert types["headcount"]["type"] == "integer"
    assert types["plan"]["enum"] == ["free", "pro", "enterprise"]
    assert types["renewal"]["format"] == "date"
    assert types["trial"]["type"] == "boolean"


def test_a_workflow_entry_condition_on_a_missing_field_is_refused(project_dir: Path) -> None:
    path = project_dir / "workflows" / "webinar-follow-up.yaml"
    text = path.read_text()
    anchor = "  events: [webinar_registered]\n"
    assert anchor in text
    path.write_text(text.replace(anchor, anchor + "  when: \"contact.sectr == 'saas'\"\n", 1))
    code, output = run(project_dir, "validate")
    assert code == 1
    line = line_of(path, "contact.sectr")
    assert f"workflows/webinar-follow-up.yaml:{line}: enter.when:" in output
    assert "did you mean contact.sector?" in output


@pytest.mark.parametrize(
    ("anchor", "condition", "field"),
    [
        # a branch's `if:` and an email step's `when:` in a workflow
        (
            "      if: \"clicked('evaluation/case-study-northwind')\"\n",
            "      if: \"clicked('evaluation/case-study-northwind') and contact.compnay_size > 3\"\n",
            "if",
        ),
        (
            "    - content: evaluation/case-study-northwind\n      wait: 2d\n",
            "    - content: evaluation/case-study-northwind\n      wait: 2d\n"
            '      when: "engagement >= 30 and contact.compnay_size > 3"\n',
            "when",
        ),
    ],
)
def test_a_journey_condition_on_a_missing_field_is_refused(
    project_dir: Path, anchor: str, condition: str, field: str
) -> None:
    path = project_dir / "workflows" / "guide-nurture.yaml"
    text = path.read_text()
    assert anchor in text
    path.write_text(text.replace(anchor, condition, 1))
    code, output = run(project_dir, "validate")
    assert code == 1, output
    line = line_of(path, "contact.compnay_size")
    assert f"workflows/guide-nurture.yaml:{line}:" in output and f".{field}:" in output
    assert "reads contact.compnay_size, which no contact has" in output
    assert "did you mean contact.company_size?" in output
