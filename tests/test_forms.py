"""Lead capture: HTML forms, consent records, double opt-in, the honeypot."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from nurture.clock import FixedClock
from nurture.db import sessions
from nurture.jobs import run_periodic
from nurture.models import Consent, Contact, Event, Notice
from nurture.runtime import Runtime
from nurture.web import create_app
from tests.helpers import contact, outbox, parse_eml


@pytest.fixture
def client(runtime: Runtime) -> FlaskClient:
    return create_app(runtime).test_client()


def consents(runtime: Runtime) -> list[Consent]:
    with sessions(runtime.database)() as session:
        return list(session.scalars(select(Consent).order_by(Consent.id)))


def kinds(runtime: Runtime) -> list[str]:
    with sessions(runtime.database)() as session:
        return list(session.scalars(select(Event.kind).order_by(Event.id)))


def test_a_form_makes_a_lead_records_consent_and_redirects(
    runtime: Runtime, client: FlaskClient
) -> None:
    reply = client.post(
        "/f/guide",
        data={
            "email": "Ana@Acme.example",
            "first_name": "Ana",
            "company": "Acme",
            "website": "",
            "role": "VP Success",
            "admin": "yes",
        },
        headers={"Referer": "https://keel-retention.example/guide", "User-Agent": "Mozilla/5.0"},
    )
    assert reply.status_code == 303
    assert reply.headers["Location"] == "https://keel-retention.example/guide/thanks"
    ana = contact(runtime, "ana@acme.example")
    assert (ana.stage, ana.first_name, ana.company, ana.source) == (
        "lead",
        "Ana",
        "Acme",
        "form guide",
    )
    assert ana.consent_source == "form guide" and ana.consent_at == runtime.clock.now()
    [consent] = consents(runtime)
    assert (
        consent.text.startswith("Send me the guide") and consent.confirmed_at == runtime.clock.now()
    )
    assert consent.legal_basis == "consent" and consent.properties == {
        "page": "https://keel-retention.example/guide"
    }
    assert consent.user_agent == "Mozilla/5.0" and consent.ip == "127.0.0.1"
    assert kinds(runtime) == ["form_submitted"]


def test_the_honeypot_keeps_bots_out_and_they_see_the_thank_you_page(
    runtime: Runtime, client: FlaskClient
) -> None:
    reply = client.post(
        "/f/guide",
        data={
            "email": "bot@spam.example",
            "first_name": "X",
            "company": "Y",
            "website": "http://spam.example",
        },
    )
    assert reply.status_code == 303 and reply.headers["Location"].endswith("/guide/thanks")
    with sessions(runtime.database)() as session:
        assert session.scalars(select(Contact)).all() == []
    assert consents(runtime) == []


def test_missing_and_bad_fields_show_what_to_fix_and_keep_nothing(
    runtime: Runtime, client: FlaskClient
) -> None:
    reply = client.post(
        "/f/guide", data={"email": "not an address", "first_name": "<script>alert(1)</script>"}
    )
    assert reply.status_code == 422
    page = reply.get_data(as_text=True)
    assert (
        "email: please give a valid email address" in page
        and "company: this field is required" in page
    )
    bad_size = client.post(
        "/f/guide",
        data={
            "email": "ana@acme.example",
            "first_name": "Ana",
            "company": "Acme",
            "company_size": "huge",
        },
    )
    assert bad_size.status_code == 422 and "company_size" in bad_size.get_data(as_text=True)
    assert client.post("/f/nope", data={"email": "ana@acme.example"}).status_code == 404
    with sessions(runtime.database)() as session:
        assert session.scalars(select(Contact)).all() == []


def test_double_opt_in_makes_a_lead_only_on_confirming(
    runtime: Runtime, client: FlaskClient
) -> None:
    assert isinstance(runtime.clock, FixedClock)
    reply = client.post("/f/newsletter", data={"email": "bo@beta.example", "first_name": "Bo"})
    assert reply.status_code == 303
    bo = contact(runtime, "bo@beta.example")
    assert bo.stage == "contact" and bo.consent_at is None
    assert kinds(runtime) == []
    run_periodic(runtime, runtime.clock.now())
    [mail] = [parse_eml(p) for p in outbox(runtime)]
    assert mail["To"] == "bo@beta.example" and mail["Subject"] == "Please confirm your subscription"
    assert mail["List-Unsubscribe"] is None and mail["Auto-Submitted"] == "auto-generated"
    text = mail.get_body(("plain",)).get_content()
    assert "monthly newsletter" in text
    url = re.search(r"http://localhost:5000(/f/confirm/\S+)", text)
    assert url is not None
    link = url.group(1)
    # Opening the link (or a scanner fetching it) confirms nothing: the page asks.
    page = client.get(link)
    assert page.status_code == 200 and "Yes, confirm" in page.get_data(as_text=True)
    assert contact(runtime, "bo@beta.example").stage == "contact"
    runtime.clock.advance(timedelta(hours=2))
    confirmed = client.post(link)
    assert confirmed.status_code == 303
    bo = contact(runtime, "bo@beta.example")
    assert bo.stage == "lead" and bo.consent_source == "form newsletter"
    [consent] = consents(runtime)
    assert consent.confirmed_at == runtime.clock.now()
    assert kinds(runtime) == ["newsletter_signup"]
    # A second confirmation changes nothing.
    assert client.post(link).status_code == 303
    assert kinds(runtime) == ["newsletter_signup"]
    assert "already confirmed" in client.get(link).get_data(as_text=True)


def test_a_forged_or_expired_confirmation_changes_nothing(
    runtime: Runtime, client: FlaskClient
) -> None:
    assert isinstance(runtime.clock, FixedClock)
    client.post("/f/newsletter", data={"email": "bo@beta.example"})
    with sessions(runtime.database)() as session:
        notice = session.scalars(select(Notice)).one()
    match = re.search(r"/f/confirm/(\S+)", notice.text)
    assert match is not None
    token = match.group(1)
    assert client.post(f"/f/confirm/{token[:-2]}xx").status_code == 404
    assert client.post("/f/confirm/1").status_code == 404
    runtime.clock.advance(timedelta(days=8))
    assert client.post(f"/f/confirm/{token}").status_code == 410
    assert contact(runtime, "bo@beta.example").stage == "contact"
    assert kinds(runtime) == []
