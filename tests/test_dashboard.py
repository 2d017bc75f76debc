"""The dashboard through the Flask test client: login, CSRF, every page, numbers that match
the database, hostile input, and the actions on a contact."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from flask import Flask
from flask.sessions import SecureCookieSessionInterface
from flask.testing import FlaskClient
from sqlalchemy import func, select

from nurture.clock import FixedClock
from nurture.db import sessions
from nurture.models import Contact, Suppression
from nurture.runtime import Runtime
from nurture.users import create_user
from nurture.web import create_app
from tests.helpers import PROFILE, add_contact, contact, event

PASSWORD = "correct horse battery staple"
PAGES = ["/", "/contacts", "/contacts/1", "/workflows", "/content", "/queue", "/settings"]


@pytest.fixture
def client(runtime: Runtime) -> FlaskClient:
    with sessions(runtime.database).begin() as session:
        create_user(session, "ops@keel.example", PASSWORD, runtime.clock.now())
    add_contact(runtime, "ana@acme.example", **PROFILE, company="Acme")
    add_contact(runtime, "bo@beta.example", stage=None, first_name="Bo")
    event(runtime, "ana@acme.example", "meeting_booked")
    return create_app(runtime).test_client()


def csrf(client: FlaskClient, path: str) -> str:
    page = client.get(path).get_data(as_text=True)
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, page[:500]
    return match.group(1)


def log_in(client: FlaskClient) -> None:
    reply = client.post(
        "/login",
        data={
            "email": "ops@keel.example",
            "password": PASSWORD,
            "csrf_token": csrf(client, "/login"),
        },
    )
    assert reply.status_code == 302


def test_every_page_needs_a_login(client: FlaskClient) -> None:
    for path in PAGES:
        reply = client.get(path)
        assert reply.status_code == 302 and reply.headers["Location"].startswith("/login?next=")
    assert client.post("/contacts/1/action", data={"action": "pause"}).status_code in (302, 400)


def test_a_wrong_password_is_refused_and_next_never_leaves_the_site(client: FlaskClient) -> None:
    token = csrf(client, "/login")
    wrong = client.post(
        "/login", data={"email": "ops@keel.example", "password": "nope", "csrf_token": token}
    )
    assert wrong.status_code == 401 and "Wrong email or password" in wrong.get_data(as_text=True)
    unknown = client.post(
        "/login", data={"email": "who@x.example", "password": PASSWORD, "csrf_token": token}
    )
    assert unknown.status_code == 401
    away = client.post(
        "/login?next=https://evil.example/",
        data={"email": "ops@keel.example", "password": PASSWORD, "csrf_token": token},
    )
    assert away.headers["Location"] == "/"


def test_forms_without_a_csrf_token_are_refused(client: FlaskClient) -> None:
    no_token = client.post("/login", data={"email": "ops@keel.example", "password": PASSWORD})
    assert no_token.status_code == 400
    log_in(client)
    action = client.post("/contacts/1/action", data={"action": "pause"})
    assert action.status_code == 400
    assert contact_paused(client) is False


def contact_paused(client: FlaskClient) -> bool:
    runtime: Runtime = client.application.extensions["nurture"]
    return contact(runtime, "ana@acme.example").paused


def test_a_forged_session_cookie_is_refused(client: FlaskClient) -> None:
    client.set_cookie("nurture_session", "eyJ1c2VyIjoib3BzQGtlZWwuZXhhbXBsZSJ9.forged.signature")
    assert client.get("/").status_code == 302
    elsewhere = Flask("elsewhere")
    elsewhere.secret_key = "another key entirely, forty characters long"
    serializer = SecureCookieSessionInterface().get_signing_serializer(elsewhere)
    assert serializer is not None
    client.set_cookie("nurture_session", serializer.dumps({"user": "ops@keel.example"}))
    assert client.get("/").status_code == 302  # well-formed, signed with another key
    log_in(client)
    assert client.get("/").status_code == 200
    client.post("/logout", data={"csrf_token": csrf(client, "/")})
    assert client.get("/").status_code == 302


def test_the_overview_numbers_match_the_database(client: FlaskClient, runtime: Runtime) -> None:
    log_in(client)
    page = client.get("/").get_data(as_text=True)
    with sessions(runtime.database)() as session:
        per_stage = dict(
            session.execute(select(Contact.stage, func.count()).group_by(Contact.stage)).all()
        )
    for stage in ("lead", "mql", "sql"):
        row = re.search(rf'<tr data-stage="{stage}">.*?<td class="people">(\d+)</td>', page, re.S)
        assert row and int(row.group(1)) == per_stage.get(stage, 0), stage
    assert per_stage["sql"] == 1
    assert 'data-test="sent-today">0<' in page
    assert "<svg" in page and "cdn" not in page.lower() and "<script" not in page
    assert 'aria-label="Stage moves per day"' in page and 'aria-label="Funnel"' in page


def test_contacts_search_filters_and_survives_hostile_input(client: FlaskClient) -> None:
    log_in(client)
    found = client.get("/contacts?q=acme").get_data(as_text=True)
    assert "ana@acme.example" in found and "bo@beta.example" not in found
    fits = client.get("/contacts?fit=50&fit_max=60").get_data(as_text=True)
    assert "ana@acme.example" in fits and "bo@beta.example" not in fits  # fit 55 and 0
    low = client.get("/contacts?fit_max=10").get_data(as_text=True)
    assert "bo@beta.example" in low and "ana@acme.example" not in low
    by_stage = client.get("/contacts?stage=sql").get_data(as_text=True)
    assert "ana@acme.example" in by_stage and "bo@beta.example" not in by_stage
    for hostile in [
        "' OR 1=1 --",
        "<script>alert(1)</script>",
        "%",
        "_",
        "\\",
        "ana'; DROP TABLE contacts; --",
    ]:
        reply = client.get(
            "/contacts", query_string={"q": hostile, "fit": "nan' OR 1", "page": "-3"}
        )
        assert reply.status_code == 200
        text = reply.get_data(as_text=True)
        assert "<script>alert(1)</script>" not in text
        assert "0 contacts" in text
    assert "2 contacts" in client.get("/contacts").get_data(as_text=True)


def test_unknown_contact_ids_are_404(client: FlaskClient) -> None:
    log_in(client)
    assert client.get("/contacts/999").status_code == 404
    token = csrf(client, "/contacts/1")
    assert (
        client.post(
            "/contacts/999/action", data={"action": "pause", "csrf_token": token}
        ).status_code
        == 404
    )


def test_pause_resume_do_not_contact_and_stage_moves_show_in_the_timeline(
    client: FlaskClient, runtime: Runtime
) -> None:
    log_in(client)
    ana = contact(runtime, "ana@acme.example")
    path = f"/contacts/{ana.id}"
    page = client.get(path).get_data(as_text=True)
    assert "meeting_booked" in page and "event meeting_booked" in page
    assert "guide-nurture" in page  # the plan, in explain's words
    assert 'aria-label="fit over time"' in page and 'aria-label="engagement over time"' in page
    client.post(f"{path}/action", data={"action": "pause", "csrf_token": csrf(client, path)})
    page = client.get(path).get_data(as_text=True)
    assert contact(runtime, "ana@acme.example").paused
    assert re.search(r'<tr class="event">.*?paused.*?by=dashboard: ops@keel.example', page, re.S)
    assert "Resume" in page
    assert isinstance(runtime.clock, FixedClock)
    runtime.clock.advance(timedelta(minutes=1))
    client.post(f"{path}/action", data={"action": "resume", "csrf_token": csrf(client, path)})
    assert not contact(runtime, "ana@acme.example").paused
    refused = client.post(
        f"{path}/action",
        data={"action": "stage", "stage": "mql", "reason": " ", "csrf_token": csrf(client, path)},
    )
    assert refused.status_code == 422
    client.post(
        f"{path}/action",
        data={
            "action": "stage",
            "stage": "mql",
            "reason": "no budget",
            "csrf_token": csrf(client, path),
        },
    )
    assert contact(runtime, "ana@acme.example").stage == "mql"
    assert "no budget (dashboard: ops@keel.example)" in client.get(path).get_data(as_text=True)
    client.post(
        f"{path}/action", data={"action": "do_not_contact", "csrf_token": csrf(client, path)}
    )
    with sessions(runtime.database)() as session:
        assert (
            session.scalar(
                select(Suppression.reason).where(Suppression.email == "ana@acme.example")
            )
            == "do_not_contact"
        )
    assert "Suppressed: do_not_contact" in client.get(path).get_data(as_text=True)


def test_one_click_unsubscribe_still_needs_no_csrf_and_no_cookie(client: FlaskClient) -> None:
    assert client.post("/u/not-a-token", data={"List-Unsubscribe": "One-Click"}).status_code == 404


def test_workflows_content_queue_and_settings(client: FlaskClient, runtime: Runtime) -> None:
    from sqlalchemy import update

    from nurture.models import Message

    log_in(client)
    add_contact(runtime, "cy@gamma.example", **PROFILE)  # a lead: her first email goes now
    runtime.dispatcher.tick()
    with sessions(runtime.database)() as session:
        sent = session.scalars(select(Message)).all()
    assert sent, "the example sends cy her first email"
    page = client.get("/workflows").get_data(as_text=True)
    first = sent[0]
    row = re.search(
        rf"<tr><td>{first.phase}</td><td><a [^>]+>{first.content_id}</a></td>\s*<td>(\d+)</td>",
        page,
    )
    assert row and int(row.group(1)) == 1
    assert "people wait with their track used up" in page

    preview = client.get("/content", query_string={"piece": first.content_id}).get_data(
        as_text=True
    )
    assert "sandbox srcdoc=" in preview and "Subject:" in preview
    mine = client.get(
        "/content", query_string={"piece": first.content_id, "contact": "cy@gamma.example"}
    )
    assert mine.status_code == 200 and "Ana" in mine.get_data(as_text=True)
    assert client.get("/content", query_string={"contact": "nobody@x.example"}).status_code == 404
    assert client.get("/content", query_string={"piece": "no/such"}).status_code == 404

    with sessions(runtime.database).begin() as session:
        session.execute(update(Message).where(Message.id == first.id).values(status="unknown"))
    queue = client.get("/queue").get_data(as_text=True)
    assert "It went: mark sent" in queue and "Due in the next 24 hours" in queue
    token = csrf(client, "/queue")
    assert client.post(f"/queue/{first.id}", data={"outcome": "sent"}).status_code == 400
    assert (
        client.post(f"/queue/{first.id}", data={"outcome": "sent", "csrf_token": token}).status_code
        == 302
    )
    with sessions(runtime.database)() as session:
        assert session.get(Message, first.id).status == "sent"
    assert (
        client.post(f"/queue/{first.id}", data={"outcome": "sent", "csrf_token": token}).status_code
        == 404
    )

    settings = client.get("/settings").get_data(as_text=True)
    assert (
        "per_week: 3" in settings and "enter_when: fit &gt;= 30 and engagement &gt;= 35" in settings
    )
