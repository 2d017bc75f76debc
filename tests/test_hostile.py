"""Hostile input, everywhere input comes in: the API (events, contacts), the CSV import and
the public forms, on SQLite and PostgreSQL. Never a server error, never half a write: after
a refused request every table holds what it held before."""

from __future__ import annotations

import csv
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import waitress
from click.testing import CliRunner
from flask.testing import FlaskClient
from sqlalchemy import func, select

from nurture.apikeys import create_key
from nurture.cli import main
from nurture.db import sessions
from nurture.models import Base, Contact, Event
from nurture.runtime import Runtime
from nurture.web import create_app
from tests.helpers import PROFILE, add_contact
from tests.smtp_server import free_port

#: Hostile values as raw JSON text (some are not JSON at all, or not what Python would write).
HOSTILE: dict[str, str] = {
    "huge text": json.dumps("x" * 100_000),
    "NUL": json.dumps("a\x00b"),
    "markup": json.dumps("<script>alert(1)</script>"),
    "SQL": json.dumps("x'); DROP TABLE contacts; --"),
    "template": json.dumps("{{ config }}{% for x in y %}"),
    "lone surrogate": '"\\ud800"',
    "right-to-left override": json.dumps("\u202eevil"),
    "emoji": json.dumps("\U0001f600" * 60),
    "int32 overflow": str(2**31),
    "int64 overflow": str(2**64),
    "huge integer": "1" + "0" * 400,
    "huge float": "1e400",
    "NaN": "NaN",
    "negative": "-1",
    "fraction": "300.7",
    "bool": "true",
    "null": "null",
    "empty": '""',
    "deep list": "[" * 1000 + "]" * 1000,
    "deep object": '{"a":' * 1000 + "1" + "}" * 1000,
    "year 1 at +14:00": '"0001-01-01T00:00:00+14:00"',
    "year 9999 at -14:00": '"9999-12-31T23:59:59-14:00"',
    "naive time": '"2026-03-01T08:00:00"',
    "wide list": "[" + ",".join(["1"] * 5000) + "]",
    "wide object": json.dumps({f"k{i}": i for i in range(5000)}),
}
#: Addresses nurture accepts, and the one form it stores them in.
VALID_ADDRESSES = {
    "o'hara@example.com": "o'hara@example.com",
    "José@Exemple.fr": "josé@exemple.fr",
    "user@bücher.example": "user@bücher.example",
    "user@xn--bcher-kva.example": "user@bücher.example",
    "用户@例子.example": "用户@例子.example",
    " Ana+Tag@Acme.EXAMPLE ": "ana+tag@acme.example",
}
#: Addresses nurture refuses: quoted local parts, spaces, comments, markup, no domain, ...
INVALID_ADDRESSES = [
    '"john doe"@example.com',
    '"john"@example.com',
    "a b@example.com",
    "(comment)a@example.com",
    "<script>@example.com",
    "<script>alert(1)</script>@example.com",
    "Ana <ana@acme.example>",
    "ana@",
    "@acme.example",
    "ana",
    "ana@localhost",
    "ana@[127.0.0.1]",
    "ana@acme..example",
    "ana@-acme.example",
    "ana@acme.local",
    "a" * 65 + "@example.com",
    "a@" + "b" * 250 + ".example",
    "ana@acme.example\x00",
    "ana@acme.example'; DROP TABLE contacts; --",
]
RAW = "__RAW__"


def raw_body(body: dict[str, Any], fragment: str) -> bytes:
    """`body` as JSON with the string RAW replaced by `fragment`, raw JSON text."""
    return json.dumps(body).replace(json.dumps(RAW), fragment, 1).encode()


def snapshot(runtime: Runtime) -> dict[str, int]:
    """How many rows each table holds."""
    with sessions(runtime.database)() as session:
        return {
            table.name: int(session.scalar(select(func.count()).select_from(table)) or 0)
            for table in Base.metadata.sorted_tables
        }


@pytest.fixture
def key(runtime: Runtime) -> str:
    with sessions(runtime.database).begin() as session:
        return create_key(session, "hostile", runtime.clock.now())[1]


@pytest.fixture
def client(runtime: Runtime) -> FlaskClient:
    return create_app(runtime).test_client()


def send(client: FlaskClient, key: str, path: str, data: bytes) -> Any:
    return client.post(
        path,
        data=data,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )


def assert_refused_cleanly(reply: Any, before: dict[str, int], runtime: Runtime) -> None:
    """A 4xx JSON answer (a 422 names each field), and not a row written."""
    assert 400 <= reply.status_code < 500, (reply.status_code, reply.get_data()[:300])
    assert reply.is_json and reply.json["error"], reply.get_data()[:300]
    if reply.status_code == 422:
        assert reply.json["errors"] and all(e["field"] for e in reply.json["errors"])
    assert snapshot(runtime) == before


EVENT = {"email": "ana@acme.example", "kind": "page_visited"}
EVENT_PLACES: dict[str, Any] = {
    "email": {**EVENT, "email": RAW},
    "kind": {**EVENT, "kind": RAW},
    "time": {**EVENT, "time": RAW},
    "id": {**EVENT, "id": RAW},
    "properties": {**EVENT, "properties": RAW},
    "a property": {**EVENT, "properties": {"url": RAW}},
    "a nested property": {**EVENT, "properties": {"utm": {"source": [RAW]}}},
    "in a batch": {"events": [EVENT, {**EVENT, "email": RAW}]},
    "the whole body": RAW,
}
NOT_JSON = object()


def value_of(fragment: str) -> Any:
    """The hostile value as a JSON reader that refuses NaN sees it (NOT_JSON if none)."""

    def refuse(constant: str) -> Any:
        raise ValueError(constant)

    try:
        return json.loads(fragment, parse_constant=refuse)
    except (ValueError, RecursionError):
        return NOT_JSON


def is_text(value: Any, limit: int, min_length: int = 0) -> bool:
    """Text nurture keeps: a string within the limit, no NUL, valid Unicode."""
    if not isinstance(value, str) or not min_length <= len(value) <= limit or "\x00" in value:
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def is_scalar(value: Any) -> bool:
    if isinstance(value, float):
        return value == value and value not in (float("inf"), float("-inf"))
    return value is None or isinstance(value, (bool, int)) or is_text(value, 2000)


def event_accepts(place: str, value: Any) -> bool:
    """Which hostile values an event may carry where, by the rules the README gives."""
    if place == "time":
        return value is None
    if place == "id":
        return value is None or is_text(value, 200, min_length=1)
    if place == "a property":
        items = value.values() if isinstance(value, dict) else value
        if isinstance(value, (list, dict)):
            return len(value) <= 100 and all(is_scalar(item) for item in items)
        return is_scalar(value)
    if place == "a nested property":
        return is_scalar(value)
    return False


@pytest.mark.parametrize("place", list(EVENT_PLACES))
def test_hostile_events_are_refused_or_kept_whole(
    runtime: Runtime, client: FlaskClient, key: str, place: str
) -> None:
    add_contact(runtime, "ana@acme.example", **PROFILE)
    for name, fragment in HOSTILE.items():
        before = snapshot(runtime)
        template = EVENT_PLACES[place]
        body = fragment.encode() if template == RAW else raw_body(template, fragment)
        reply = send(client, key, "/api/v1/events", body)
        assert reply.status_code < 500, (name, reply.get_data()[:300])
        if event_accepts(place, value_of(fragment)):
            assert reply.status_code == 200, (name, reply.get_data()[:300])
        else:
            assert_refused_cleanly(reply, before, runtime)
    with sessions(runtime.database)() as session:
        assert session.scalar(select(func.count()).select_from(Contact)) == 1


CONTACT = {"email": "bo@beta.example", "fields": {"first_name": "Bo"}}
TEXT_FIELDS = {
    "first_name": 200,
    "last_name": 200,
    "company": 200,
    "account": 255,
    "sector": 100,
    "role": 200,
    "seniority": 50,
    "language": 16,
    "source": 100,
}
CONTACT_PLACES: dict[str, dict[str, Any]] = {
    "email": {**CONTACT, "email": RAW},
    "fields": {**CONTACT, "fields": RAW},
    "stage": {**CONTACT, "stage": RAW},
    "consent": {**CONTACT, "consent": RAW},
    **{
        f"fields.{name}": {**CONTACT, "fields": {name: RAW}}
        for name in [*TEXT_FIELDS, "company_size", "country", "timezone", "owner"]
    },
    "an unknown field": {**CONTACT, "fields": {"shoe_size": RAW}},
}


def contact_accepts(place: str, value: Any) -> bool:
    """Which hostile values a contact may be given where (none is a valid size, country,
    zone, address or stage): text within its field's width, and null (leave it as it is)."""
    name = place.removeprefix("fields.")
    if name in TEXT_FIELDS:
        return value is None or is_text(value, TEXT_FIELDS[name])
    if place == "consent":
        return value is None or is_text(value, 200)
    return value is None and place in (
        "stage",
        *(f"fields.{n}" for n in ("company_size", "country", "timezone", "owner")),
    )


@pytest.mark.parametrize("place", list(CONTACT_PLACES))
def test_hostile_contacts_are_refused_and_nothing_is_half_written(
    runtime: Runtime, client: FlaskClient, key: str, place: str
) -> None:
    for name, fragment in HOSTILE.items():
        before = snapshot(runtime)
        reply = send(client, key, "/api/v1/contacts", raw_body(CONTACT_PLACES[place], fragment))
        assert reply.status_code < 500, (name, reply.get_data()[:300])
        if contact_accepts(place, value_of(fragment)):
            assert reply.status_code in (200, 201), (name, reply.get_data()[:300])
            continue
        assert_refused_cleanly(reply, before, runtime)
        if place.startswith("fields.") and reply.status_code == 422:
            assert [e["field"] for e in reply.json["errors"]] == [place], reply.json


@pytest.mark.parametrize(("given", "stored"), list(VALID_ADDRESSES.items()))
def test_valid_addresses_are_kept_in_one_form(
    runtime: Runtime, client: FlaskClient, key: str, given: str, stored: str
) -> None:
    reply = send(client, key, "/api/v1/contacts", json.dumps({"email": given}).encode())
    assert reply.status_code == 201, reply.json
    assert reply.json["email"] == stored
    again = send(client, key, "/api/v1/events", json.dumps({**EVENT, "email": given}).encode())
    assert again.status_code == 200, again.json
    auth = {"Authorization": f"Bearer {key}"}
    read = client.get(f"/api/v1/contacts/{urllib.request.quote(given.strip())}", headers=auth)
    assert read.status_code == 200 and read.json["email"] == stored
    with sessions(runtime.database)() as session:
        assert list(session.scalars(select(Contact.email))) == [stored]


@pytest.mark.parametrize("address", INVALID_ADDRESSES)
def test_invalid_addresses_are_a_422_naming_the_field(
    runtime: Runtime, client: FlaskClient, key: str, address: str
) -> None:
    before = snapshot(runtime)
    for path, body, field in [
        ("/api/v1/contacts", {"email": address}, "email"),
        ("/api/v1/events", {**EVENT, "email": address}, "email"),
        ("/api/v1/events", {"events": [EVENT, {**EVENT, "email": address}]}, "events[1].email"),
        ("/api/v1/contacts", {"email": "bo@beta.example", "fields": {"owner": address}}, None),
    ]:
        reply = send(client, key, path, json.dumps(body).encode())
        assert reply.status_code == 422, (path, reply.json)
        fields = [e["field"] for e in reply.json["errors"]]
        assert fields == [field or "fields.owner"], reply.json
    assert snapshot(runtime) == before


# --- the real WSGI server --------------------------------------------------------------


@pytest.fixture
def served(runtime: Runtime) -> Iterator[str]:
    port = free_port()
    server = waitress.create_server(create_app(runtime), host="127.0.0.1", port=port, threads=2)
    threading.Thread(target=server.run, daemon=True).start()
    yield f"http://127.0.0.1:{port}"
    server.close()


def http_post(url: str, body: bytes, key: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url,
        data=body,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.parametrize(
    ("name", "path", "body", "status", "field"),
    [
        (
            "deep list",
            "/api/v1/events",
            raw_body(EVENT_PLACES["a property"], HOSTILE["deep list"]),
            400,
            None,
        ),
        (
            "deep object",
            "/api/v1/contacts",
            raw_body(CONTACT_PLACES["fields"], HOSTILE["deep object"]),
            400,
            None,
        ),
        (
            "too deep for properties",
            "/api/v1/events",
            raw_body(EVENT_PLACES["a property"], "[[[[[1]]]]]"),
            422,
            "properties.url",
        ),
        (
            "NUL in a property",
            "/api/v1/events",
            raw_body(EVENT_PLACES["a property"], HOSTILE["NUL"]),
            422,
            "properties.url",
        ),
        (
            "NUL in a key",
            "/api/v1/events",
            raw_body({**EVENT, "properties": {"a\x00b": 1}}, "1"),
            422,
            "properties.a\x00b",
        ),
        ("NUL in an id", "/api/v1/events", raw_body(EVENT_PLACES["id"], HOSTILE["NUL"]), 422, "id"),
        (
            "NUL in a name",
            "/api/v1/contacts",
            raw_body(CONTACT_PLACES["fields.first_name"], HOSTILE["NUL"]),
            422,
            "fields.first_name",
        ),
        (
            "NUL in the consent",
            "/api/v1/contacts",
            raw_body(CONTACT_PLACES["consent"], HOSTILE["NUL"]),
            422,
            "consent",
        ),
        (
            "year 1 at +14:00",
            "/api/v1/events",
            raw_body(EVENT_PLACES["time"], HOSTILE["year 1 at +14:00"]),
            422,
            "time",
        ),
        (
            "a size over the column",
            "/api/v1/contacts",
            raw_body(CONTACT_PLACES["fields.company_size"], HOSTILE["int64 overflow"]),
            422,
            "fields.company_size",
        ),
    ],
)
def test_over_a_real_http_server_hostile_bodies_are_4xx_and_keep_nothing(
    runtime: Runtime,
    served: str,
    key: str,
    name: str,
    path: str,
    body: bytes,
    status: int,
    field: str | None,
) -> None:
    before = snapshot(runtime)
    code, answer = http_post(served + path, body, key)
    assert code == status, (name, answer)
    if field is not None:
        assert [e["field"] for e in answer["errors"]] == [field], answer
    assert snapshot(runtime) == before
    code, answer = http_post(served + "/api/v1/events", json.dumps(EVENT).encode(), key)
    assert code == 200  # the server is still there, and well


# --- the CSV import ----------------------------------------------------------------------


def test_a_hostile_csv_keeps_the_good_rows_and_reports_each_bad_one(
    runtime: Runtime, project_dir: Path, database_url: str
) -> None:
    good = [
        ["ana@acme.example", "Ana", "Acme", "Europe/Paris", "300"],
        ["o'hara@example.com", "Maureen", "<b>Bold</b> & Co", "Europe/Dublin", "12"],
        ["José@Exemple.fr", "José", "x'); DROP TABLE contacts; --", "Europe/Paris", ""],
        ["user@bücher.example", "{{ config }}", "Bücher", "", ""],
    ]
    bad = [
        (["not-an-address", "X", "Y", "", ""], "invalid email"),
        (['"john doe"@example.com', "X", "Y", "", ""], "invalid email"),
        (["<script>@example.com", "X", "Y", "", ""], "invalid email"),
        (["ana@localhost", "X", "Y", "", ""], "invalid email"),
        (["nul@example.com", "A\x00B", "Y", "", ""], "invalid first_name"),
        (["long@example.com", "x" * 100_000, "Y", "", ""], "invalid first_name"),
        (["big@example.com", "X", "Y", "", str(2**64)], "invalid company_size"),
        (["frac@example.com", "X", "Y", "", "300.7"], "invalid company_size"),
        (["zone@example.com", "X", "Y", "Europe/../Paris", ""], "unknown time zone"),
        (["huge@example.com", "X", "y" * 200_000, "", ""], "unreadable row"),
    ]
    path = project_dir / "hostile.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "first_name", "company", "timezone", "company_size"])
        rows = [good[0], *[row for row, _ in bad[:5]], *good[1:], *[row for row, _ in bad[5:]]]
        writer.writerows(rows)
    lines = {row[0]: number for number, row in enumerate(rows, start=2)}
    result = CliRunner().invoke(
        main,
        ["--project", str(project_dir), "--db", database_url, "import", str(path)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert f"4 created, 0 updated, 0 duplicate rows merged, {len(bad)} rejected" in result.output
    with sessions(runtime.database)() as session:
        stored = {c.email: c for c in session.scalars(select(Contact))}
    assert set(stored) == {
        "ana@acme.example",
        "o'hara@example.com",
        "josé@exemple.fr",
        "user@bücher.example",
    }
    assert stored["josé@exemple.fr"].company == "x'); DROP TABLE contacts; --"
    rejects = list(csv.DictReader((project_dir / "hostile.rejected.csv").open(encoding="utf-8")))
    reasons = {int(r["line"]): r["reason"] for r in rejects}
    assert len(reasons) == len(bad)
    for row, reason in bad:
        assert reasons[lines[row[0]]].startswith(reason), (row[0][:30], reasons[lines[row[0]]])
    assert all(len(r["reason"]) < 300 for r in rejects)  # a reason quotes, it does not copy


def test_a_file_that_is_not_utf8_is_refused_whole_with_its_name(
    runtime: Runtime, project_dir: Path, database_url: str
) -> None:
    path = project_dir / "latin1.csv"
    good = b"".join(b"p%d@acme.example,Ana\n" % i for i in range(600))  # past a batch
    path.write_bytes(b"email,first_name\n" + good + b"bo@beta.example,Bj\xf6rn\n")
    result = CliRunner().invoke(
        main, ["--project", str(project_dir), "--db", database_url, "import", str(path)]
    )
    assert result.exit_code == 1 and "latin1.csv" in result.output and "UTF-8" in result.output
    assert snapshot(runtime)["contacts"] == 0


# --- the public forms ----------------------------------------------------------------------

FORM_VALUES = [
    "x" * 100_000,
    "a\x00b",
    "<script>alert(1)</script>",
    "x'); DROP TABLE contacts; --",
    "{{ config }}",
    "\u202eevil",
    str(2**64),
    "300.7",
    "-1",
    "",
]


@pytest.mark.parametrize("form", ["guide", "newsletter"])
def test_hostile_form_posts_are_never_a_server_error_nor_half_written(
    runtime: Runtime, form: str
) -> None:
    client = create_app(runtime).test_client()
    fields = runtime.project.settings.forms[form].fields
    base = {"email": "ana@acme.example", "first_name": "Ana", "company": "Acme", "consent": "on"}
    for name in ["email", *fields]:
        for value in [*FORM_VALUES, *INVALID_ADDRESSES[:6], *VALID_ADDRESSES]:
            before = snapshot(runtime)
            reply = client.post(f"/f/{form}", data={**base, name: value})
            assert reply.status_code < 500, (name, value[:40], reply.status_code)
            if reply.status_code != 303:
                assert snapshot(runtime) == before, (name, value[:40])
    with sessions(runtime.database)() as session:
        emails = set(session.scalars(select(Contact.email)))
        assert all("\x00" not in e and len(e) <= 254 for e in emails)
        assert session.scalar(select(func.count()).select_from(Event)) is not None
