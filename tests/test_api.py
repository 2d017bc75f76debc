"""The JSON API through the WSGI app: keys, events one by one and in batches, every error."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import waitress
from flask.testing import FlaskClient
from sqlalchemy import func, select

from nurture.apikeys import create_key
from nurture.clock import FixedClock
from nurture.db import sessions
from nurture.models import ApiKey, Contact, Event, ScoreChange
from nurture.runtime import Runtime
from nurture.web import create_app
from tests.helpers import PROFILE, add_contact
from tests.smtp_server import free_port


@pytest.fixture
def key(runtime: Runtime) -> str:
    with sessions(runtime.database).begin() as session:
        return create_key(session, "website", runtime.clock.now())[1]


@pytest.fixture
def client(runtime: Runtime) -> FlaskClient:
    return create_app(runtime).test_client()


def post(client: FlaskClient, key: str, path: str, body: Any) -> Any:
    return client.post(path, json=body, headers={"Authorization": f"Bearer {key}"})


def count(runtime: Runtime, model: Any) -> int:
    with sessions(runtime.database)() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_no_key_a_wrong_key_and_a_revoked_key_get_401(
    runtime: Runtime, client: FlaskClient, key: str
) -> None:
    body = {"email": "ana@acme.example", "kind": "page_visited"}
    no_key = client.post("/api/v1/events", json=body)
    assert no_key.status_code == 401
    assert no_key.json["error"] == "unauthorized"
    assert no_key.headers["WWW-Authenticate"].startswith("Bearer")
    assert post(client, "nk_not-a-key", "/api/v1/events", body).status_code == 401
    assert (
        client.post(
            "/api/v1/events", json=body, headers={"Authorization": f"Basic {key}"}
        ).status_code
        == 401
    )
    with sessions(runtime.database).begin() as session:
        session.execute(ApiKey.__table__.update().values(revoked_at=runtime.clock.now()))
    assert post(client, key, "/api/v1/events", body).status_code == 401
    assert count(runtime, Event) == 0


def test_keys_are_stored_hashed(runtime: Runtime, key: str) -> None:
    with sessions(runtime.database)() as session:
        row = session.scalars(select(ApiKey)).one()
    assert key not in (row.key_hash, row.prefix) and len(row.key_hash) == 64
    assert key.startswith(row.prefix)


def test_one_event_is_recorded_scored_and_committed(
    runtime: Runtime, client: FlaskClient, key: str
) -> None:
    add_contact(runtime, "ana@acme.example", **PROFILE)
    reply = post(
        client,
        key,
        "/api/v1/events",
        {
            "email": " Ana@Acme.example ",
            "kind": "page_visited",
            "time": "2026-03-02T08:59:00+01:00",
            "properties": {"url": "https://keel.example/pricing"},
        },
    )
    assert reply.status_code == 200, reply.json
    assert reply.json["accepted"] == 1 and reply.json["duplicates"] == 0
    with sessions(runtime.database)() as session:
        stored = session.scalars(select(Event).where(Event.kind == "page_visited")).one()
        assert stored.occurred_at.isoformat() == "2026-03-02T07:59:00+00:00"
        rules = list(
            session.scalars(select(ScoreChange.rule).where(ScoreChange.event_id == stored.id))
        )
    assert rules == ["Pricing page"]


def test_an_event_for_an_unknown_address_creates_the_contact(
    runtime: Runtime, client: FlaskClient, key: str
) -> None:
    reply = post(
        client,
        key,
        "/api/v1/events",
        {
            "email": "new@beta.example",
            "kind": "content_downloaded",
            "properties": {"asset": "guide"},
        },
    )
    assert reply.status_code == 200
    assert reply.json["events"][0]["stage"] == "lead"
    with sessions(runtime.database)() as session:
        made = session.scalars(select(Contact).where(Contact.email == "new@beta.example")).one()
    assert made.source == "api" and made.account == "beta.example"


def test_a_replay_with_the_same_client_id_counts_once(
    runtime: Runtime, client: FlaskClient, key: str
) -> None:
    add_contact(runtime, "ana@acme.example", **PROFILE)
    body = {"email": "ana@acme.example", "kind": "webinar_attended", "id": "zoom-8812"}
    first = post(client, key, "/api/v1/events", body)
    runtime.clock.advance(timedelta(minutes=5)) if isinstance(runtime.clock, FixedClock) else None
    second = post(client, key, "/api/v1/events", body)
    in_batch = post(client, key, "/api/v1/events", {"events": [body, body]})
    assert (first.json["accepted"], second.json["accepted"], in_batch.json["accepted"]) == (1, 0, 0)
    assert second.json["duplicates"] == 1 and in_batch.json["duplicates"] == 2
    assert second.json["events"][0]["id"] == first.json["events"][0]["id"]
    with sessions(runtime.database)() as session:
        assert (
            session.scalar(
                select(func.count()).select_from(Event).where(Event.kind == "webinar_attended")
            )
            == 1
        )
        assert (
            session.scalar(
                select(func.count())
                .select_from(ScoreChange)
                .where(ScoreChange.rule == "webinar_attended")
            )
            == 1
        )


def test_a_batch_is_recorded_whole(runtime: Runtime, client: FlaskClient, key: str) -> None:
    events = [
        {
            "email": f"p{i}@acme.example",
            "kind": "page_visited",
            "properties": {"url": f"/blog/{i}"},
            "id": f"v{i}",
        }
        for i in range(1000)
    ]
    reply = post(client, key, "/api/v1/events", {"events": events})
    assert reply.status_code == 200
    assert reply.json["accepted"] == 1000
    assert count(runtime, Event) == 1000 and count(runtime, Contact) == 1000


def test_a_batch_with_one_bad_event_names_it_and_records_nothing(
    runtime: Runtime, client: FlaskClient, key: str
) -> None:
    events = [{"email": f"p{i}@acme.example", "kind": "page_visited"} for i in range(5)]
    events[3] = {"email": "not-an-address", "kind": "page_visited"}
    events[4] = {"email": "p4@acme.example", "kind": "teleported"}
    reply = post(client, key, "/api/v1/events", {"events": events})
    assert reply.status_code == 422
    found = {(e["index"], e["field"]) for e in reply.json["errors"]}
    assert found == {(3, "events[3].email"), (4, "events[4].kind")}
    assert "teleported" in json.dumps(reply.json)
    assert count(runtime, Event) == 0 and count(runtime, Contact) == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "page_visited"}, "email"),
        ({"email": "ana@acme.example"}, "kind"),
        ({"email": "ana@acme.example", "kind": "teleported"}, "kind"),
        (
            {"email": "ana@acme.example", "kind": "page_visited", "time": "2026-03-02T08:00:00"},
            "time",
        ),
        (
            {"email": "ana@acme.example", "kind": "page_visited", "time": "2027-01-01T00:00:00Z"},
            "time",
        ),
        ({"email": "ana@acme.example", "kind": "page_visited", "time": "yesterday"}, "time"),
        ({"email": "ana@acme.example", "kind": "page_visited", "properties": [1, 2]}, "properties"),
        ({"email": "ana@acme.example", "kind": "page_visited", "colour": "red"}, "colour"),
        ({"email": "ana@acme.example", "kind": "page_visited", "id": ""}, "id"),
        ({"email": "ana@acme.example", "kind": "sales_accepted"}, "kind"),
        ({"events": []}, "events"),
        ({"events": [{"email": "a@b.example", "kind": "page_visited"}] * 1001}, "events"),
        (
            {
                "email": "ana@acme.example",
                "kind": "page_visited",
                "time": "0001-01-01T00:00:00+14:00",
            },
            "time",
        ),
        (
            {"email": "ana@acme.example", "kind": "page_visited", "time": "1969-12-31T23:59:59Z"},
            "time",
        ),
        ({"email": "ana@acme.example", "kind": "page_visited", "id": "a\x00b"}, "id"),
        (
            {"email": "ana@acme.example", "kind": "page_visited", "properties": {"url": "a\x00b"}},
            "properties.url",
        ),
        (
            {"email": "ana@acme.example", "kind": "page_visited", "properties": {"u": [[[[1]]]]}},
            "properties.u",
        ),
        (
            {"email": "ana@acme.example", "kind": "page_visited", "properties": {"u": "x" * 2001}},
            "properties.u",
        ),
        (
            {
                "email": "ana@acme.example",
                "kind": "page_visited",
                "properties": {f"k{i}": i for i in range(101)},
            },
            "properties",
        ),
        ({"email": "ana@acme.example x", "kind": "page_visited"}, "email"),
        ({"events": [{"email": "a@b.example", "kind": "page_visited", "id": 7}]}, "events[0].id"),
    ],
)
def test_each_bad_field_is_a_422_naming_it(
    runtime: Runtime, client: FlaskClient, key: str, body: dict[str, Any], field: str
) -> None:
    reply = post(client, key, "/api/v1/events", body)
    assert reply.status_code == 422, reply.json
    assert reply.json["error"] == "invalid"
    assert any(e["field"] == field for e in reply.json["errors"]), reply.json
    assert count(runtime, Event) == 0


def test_not_json_is_a_400_and_unknown_routes_are_json(client: FlaskClient, key: str) -> None:
    reply = client.post(
        "/api/v1/events", data="email=ana", headers={"Authorization": f"Bearer {key}"}
    )
    assert reply.status_code == 400 and reply.json["error"] == "bad_request"
    missing = client.get("/api/v1/nothing", headers={"Authorization": f"Bearer {key}"})
    assert missing.status_code == 404 and missing.is_json
    wrong = client.get("/api/v1/events", headers={"Authorization": f"Bearer {key}"})
    assert wrong.status_code == 405 and wrong.is_json


def test_contacts_are_created_updated_and_read(
    runtime: Runtime, client: FlaskClient, key: str
) -> None:
    body = {
        "email": "Ana@Acme.example",
        "fields": {**PROFILE, "owner": "marc@keel-retention.example"},
        "consent": "webinar signup",
    }
    created = post(client, key, "/api/v1/contacts", body)
    assert created.status_code == 201, created.json
    assert created.json["fit"] == 55 and created.json["stage"] == "contact"
    updated = post(
        client,
        key,
        "/api/v1/contacts",
        {"email": "ana@acme.example", "fields": {"role": "Head of Customer Success"}},
    )
    assert updated.status_code == 200 and updated.json["fit"] == 65
    post(
        client,
        key,
        "/api/v1/events",
        {
            "email": "ana@acme.example",
            "kind": "content_downloaded",
            "properties": {"asset": "guide"},
        },
    )
    read = client.get(
        "/api/v1/contacts/ana@acme.example", headers={"Authorization": f"Bearer {key}"}
    )
    assert read.status_code == 200
    data = read.json
    assert data["stage"] == "lead" and data["engagement"] == 10
    assert (
        data["owner"] == "marc@keel-retention.example"
        and data["consent"]["source"] == "webinar signup"
    )
    assert [e["kind"] for e in data["events"]] == ["content_downloaded"]
    assert [m["to"] for m in data["stage_moves"]] == ["lead", "contact"]
    assert {s["rule"] for s in data["score_changes"]} >= {"content_downloaded"}
    assert [e["workflow"] for e in data["enrollments"]] == ["guide-nurture"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "nope", "fields": {}}, "email"),
        ({"email": "ana@acme.example", "fields": {"timezone": "Mars/Olympus"}}, "fields.timezone"),
        ({"email": "ana@acme.example", "fields": {"company_size": "big"}}, "fields.company_size"),
        ({"email": "ana@acme.example", "fields": {"shoe_size": 42}}, "fields.shoe_size"),
        ({"email": "ana@acme.example", "fields": {"owner": "marc"}}, "fields.owner"),
        ({"email": "ana@acme.example", "stage": "prospect"}, "stage"),
        ({"email": "ana@acme.example", "fields": {"company_size": "300"}}, "fields.company_size"),
        ({"email": "ana@acme.example", "fields": {"company_size": True}}, "fields.company_size"),
        ({"email": "ana@acme.example", "fields": {"company_size": 300.7}}, "fields.company_size"),
        ({"email": "ana@acme.example", "fields": {"company_size": 2**40}}, "fields.company_size"),
        ({"email": "ana@acme.example", "fields": {"company_size": 0}}, "fields.company_size"),
        ({"email": "ana@acme.example", "fields": {"first_name": 42}}, "fields.first_name"),
        (
            {"email": "ana@acme.example", "fields": {"first_name": "x" * 100_000}},
            "fields.first_name",
        ),
        ({"email": "ana@acme.example", "fields": {"company": "a\x00b"}}, "fields.company"),
        ({"email": "ana@acme.example", "fields": {"country": "1a"}}, "fields.country"),
        ({"email": "ana@acme.example", "fields": {"timezone": ""}}, "fields.timezone"),
        ({"email": "ana@acme.example", "consent": "x" * 201}, "consent"),
        ({"email": "user@bücher..example"}, "email"),
    ],
)
def test_bad_contacts_are_422_naming_the_field(
    runtime: Runtime, client: FlaskClient, key: str, body: dict[str, Any], field: str
) -> None:
    reply = post(client, key, "/api/v1/contacts", body)
    assert reply.status_code == 422, reply.json
    assert [e["field"] for e in reply.json["errors"]] == [field]
    assert count(runtime, Contact) == 0


def test_unknown_contact_and_account_are_404(client: FlaskClient, key: str) -> None:
    auth = {"Authorization": f"Bearer {key}"}
    assert client.get("/api/v1/contacts/nobody@acme.example", headers=auth).status_code == 404
    assert client.get("/api/v1/contacts/not-an-address", headers=auth).status_code == 404
    assert client.get("/api/v1/accounts/acme.example", headers=auth).status_code == 404
    reply = post(client, key, "/api/v1/contacts/nobody@acme.example/sales", {"outcome": "accepted"})
    assert reply.status_code == 404 and reply.json["error"] == "not_found"


def test_a_sales_outcome_without_a_hand_off_is_422(
    runtime: Runtime, client: FlaskClient, key: str
) -> None:
    add_contact(runtime, "ana@acme.example", **PROFILE)  # a lead: never handed to sales
    reply = post(client, key, "/api/v1/contacts/ana@acme.example/sales", {"outcome": "accepted"})
    assert reply.status_code == 422
    assert [e["field"] for e in reply.json["errors"]] == ["outcome"]
    assert count(runtime, Event) == 0


def test_accounts_roll_up_fit_and_engagement(
    runtime: Runtime, client: FlaskClient, key: str
) -> None:
    add_contact(runtime, "ana@acme.example", **PROFILE)
    add_contact(runtime, "bo@acme.example", sector="saas")
    post(
        client,
        key,
        "/api/v1/events",
        {
            "events": [
                {
                    "email": "ana@acme.example",
                    "kind": "content_downloaded",
                    "properties": {"asset": "a"},
                },
                {"email": "bo@acme.example", "kind": "webinar_attended"},
            ]
        },
    )
    reply = client.get("/api/v1/accounts/acme.example", headers={"Authorization": f"Bearer {key}"})
    assert reply.status_code == 200
    assert reply.json["people"] == 2 and reply.json["fit"] == 55 and reply.json["engagement"] == 30
    assert reply.json["stages"] == {"lead": 2}


def test_openapi_description_is_served_without_a_key(client: FlaskClient) -> None:
    reply = client.get("/api/v1/openapi.json")
    assert reply.status_code == 200
    spec = reply.json
    assert spec["openapi"].startswith("3.")
    assert set(spec["paths"]) >= {"/api/v1/events", "/api/v1/contacts", "/api/v1/contacts/{email}"}
    assert spec["components"]["schemas"]["EventBatch"]["properties"]["events"]["maxItems"] == 1000


@pytest.fixture
def served(runtime: Runtime) -> Iterator[str]:
    port = free_port()
    server = waitress.create_server(create_app(runtime), host="127.0.0.1", port=port, threads=4)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    server.close()


def http(url: str, body: bytes, key: str | None) -> tuple[int, dict[str, Any]]:
    headers = {
        "Content-Type": "application/json",
        **({"Authorization": f"Bearer {key}"} if key else {}),
    }
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_over_a_real_http_server_a_body_over_the_limit_is_413(
    runtime: Runtime, served: str, key: str
) -> None:
    huge = json.dumps(
        {
            "email": "ana@acme.example",
            "kind": "page_visited",
            "properties": {"x": "y" * (9 * 1024 * 1024)},
        }
    ).encode()
    status, body = http(f"{served}/api/v1/events", huge, key)
    assert status == 413 and body["error"] == "too_large"
    status, body = http(
        f"{served}/api/v1/events", b'{"email": "ana@acme.example", "kind": "page_visited"}', None
    )
    assert status == 401
    status, body = http(
        f"{served}/api/v1/events", b'{"email": "ana@acme.example", "kind": "page_visited"}', key
    )
    assert status == 200 and body["accepted"] == 1
    assert count(runtime, Event) == 1


def test_a_size_of_300_point_0_is_the_whole_number_300(
    runtime: Runtime, client: FlaskClient, key: str
) -> None:
    body = {"email": "ana@acme.example", "fields": {"company_size": 300.0}}
    reply = post(client, key, "/api/v1/contacts", body)
    assert reply.status_code == 201 and reply.json["company_size"] == 300


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("o'hara@example.com", "o'hara@example.com"),
        ("josé@exemple.fr", "josé@exemple.fr"),
        ("user@bücher.example", "user@bücher.example"),
        ("USER@XN--BCHER-KVA.EXAMPLE", "user@bücher.example"),
    ],
)
def test_apostrophes_and_internationalized_addresses_are_accepted(
    runtime: Runtime, client: FlaskClient, key: str, given: str, stored: str
) -> None:
    reply = post(client, key, "/api/v1/events", {"email": given, "kind": "page_visited"})
    assert reply.status_code == 200, reply.json
    reply = post(client, key, "/api/v1/contacts", {"email": given, "fields": {"owner": given}})
    assert reply.status_code == 200, reply.json
    assert (reply.json["email"], reply.json["owner"]) == (stored, stored)
    assert count(runtime, Contact) == 1


def _walk(schema: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(schema, dict):
        yield path, schema
        for key, value in schema.items():
            if key in ("properties", "$defs"):
                for name, sub in value.items():
                    yield from _walk(sub, f"{path}.{name}")
            elif key in ("items", "additionalProperties", "propertyNames"):
                yield from _walk(value, f"{path}[{key}]")
            elif key in ("anyOf", "oneOf"):
                for sub in value:
                    yield from _walk(sub, path)


def test_every_field_of_the_description_has_a_type_and_a_limit(client: FlaskClient) -> None:
    spec = client.get("/api/v1/openapi.json").json
    schemas = spec["components"]["schemas"]
    standard = {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "title",
        "description",
        "default",
        "enum",
        "format",
        "pattern",
        "minLength",
        "maxLength",
        "minimum",
        "maximum",
        "items",
        "minItems",
        "maxItems",
        "maxProperties",
        "propertyNames",
        "anyOf",
        "oneOf",
        "$ref",
    }
    for name in ("EventIn", "EventBatch", "ContactIn", "Fields", "SalesIn", "StageIn"):
        for path, schema in _walk(schemas[name], name):
            assert set(schema) <= standard, (path, set(schema) - standard)
            kind = schema.get("type")
            assert kind or "enum" in schema or "anyOf" in schema or "$ref" in schema, path
            if kind == "string" and "enum" not in schema and "format" not in schema:
                assert "maxLength" in schema and "pattern" in schema, path  # no NUL
            if kind == "string" and schema.get("format") == "idn-email":
                assert schema["maxLength"] == 254, path
            if kind == "array":
                assert "maxItems" in schema, path
            if kind == "object":
                assert "maxProperties" in schema or schema.get("additionalProperties") is False, (
                    path
                )
    size = schemas["Fields"]["properties"]["company_size"]["anyOf"][0]
    assert (size["type"], size["minimum"], size["maximum"]) == ("integer", 1, 10_000_000)
    zone = schemas["Fields"]["properties"]["timezone"]["anyOf"][0]
    assert "Europe/Paris" in zone["enum"] and "Mars/Olympus" not in zone["enum"]
    assert schemas["ContactIn"]["properties"]["email"]["format"] == "idn-email"
