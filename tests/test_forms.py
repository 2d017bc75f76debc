"""Lead capture: HTML forms, consent records, double opt-in, the honeypot."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from nurture.clock import FixedClock
from nurture.db import sessions
from nurture.jobs import run_periodic
from nurture.models import Consent, Contact, Event, Notice
from nurture.runtime import Runtime, open_runtime
from nurture.web import create_app
from tests.helpers import add_contact, contact, outbox, parse_eml


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
            "consent": "on",
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
            "consent": "on",
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
    reply = client.post(
        "/f/newsletter", data={"email": "bo@beta.example", "first_name": "Bo", "consent": "on"}
    )
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
    client.post("/f/newsletter", data={"email": "bo@beta.example", "consent": "on"})
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


def notices_to(runtime: Runtime, address: str) -> list[Notice]:
    with sessions(runtime.database)() as session:
        return list(session.scalars(select(Notice).where(Notice.to == address)))


def test_an_unconfirmed_double_opt_in_changes_nobody_until_confirmed(
    runtime: Runtime, client: FlaskClient
) -> None:
    add_contact(runtime, "bo@beta.example", stage=None, first_name="Bo", company="Beta")
    before = contact(runtime, "bo@beta.example")
    reply = client.post(
        "/f/newsletter",
        data={
            "email": "bo@beta.example",
            "first_name": "Mallory",
            "company": "Evil",
            "consent": "on",
        },
    )
    assert reply.status_code == 303
    after = contact(runtime, "bo@beta.example")
    assert (after.first_name, after.company, after.source, after.stage, after.fit) == (
        "Bo",
        "Beta",
        None,
        before.stage,
        before.fit,
    )
    assert after.consent_at is None and kinds(runtime) == []
    [consent] = consents(runtime)
    assert consent.confirmed_at is None
    assert consent.properties["pending"] == {"first_name": "Mallory", "company": "Evil"}
    [notice] = notices_to(runtime, "bo@beta.example")
    match = re.search(r"/f/confirm/(\S+)", notice.text)
    assert match is not None
    assert client.get(f"/f/confirm/{match.group(1)}").status_code == 200
    assert contact(runtime, "bo@beta.example").first_name == "Bo"  # opening is not confirming
    assert client.post(f"/f/confirm/{match.group(1)}").status_code == 303
    confirmed = contact(runtime, "bo@beta.example")
    assert (confirmed.first_name, confirmed.company, confirmed.stage) == ("Mallory", "Evil", "lead")
    assert confirmed.consent_source == "form newsletter"
    assert kinds(runtime) == ["newsletter_signup"]


def test_a_new_address_is_kept_bare_until_confirmed(runtime: Runtime, client: FlaskClient) -> None:
    data = {"email": "cy@gamma.example", "first_name": "Cy", "company": "Gamma", "consent": "1"}
    assert client.post("/f/newsletter", data=data).status_code == 303
    cy = contact(runtime, "cy@gamma.example")
    assert (cy.first_name, cy.company, cy.source, cy.stage) == (
        None,
        None,
        "form newsletter",
        "contact",
    )
    [notice] = notices_to(runtime, "cy@gamma.example")
    match = re.search(r"/f/confirm/(\S+)", notice.text)
    assert match is not None
    assert client.post(f"/f/confirm/{match.group(1)}").status_code == 303
    cy = contact(runtime, "cy@gamma.example")
    assert (cy.first_name, cy.company, cy.stage) == ("Cy", "Gamma", "lead")


def test_posting_again_and_again_sends_one_confirmation_per_window(
    runtime: Runtime, client: FlaskClient
) -> None:
    assert isinstance(runtime.clock, FixedClock)
    data = {"email": "bo@beta.example", "first_name": "Bo", "consent": "on"}
    for _ in range(15):
        reply = client.post("/f/newsletter", data=data)
        assert reply.status_code == 303
        assert reply.headers["Location"].endswith("/newsletter/check-your-inbox")
    assert len(notices_to(runtime, "bo@beta.example")) == 1 and len(consents(runtime)) == 1
    run_periodic(runtime, runtime.clock.now())
    assert len(outbox(runtime)) == 1
    runtime.clock.advance(timedelta(minutes=9))
    client.post("/f/newsletter", data=data)
    assert len(notices_to(runtime, "bo@beta.example")) == 1
    runtime.clock.advance(timedelta(minutes=2))  # 11 minutes after the first
    client.post("/f/newsletter", data=data)
    client.post("/f/newsletter", data=data)
    assert len(notices_to(runtime, "bo@beta.example")) == 2
    runtime.clock.advance(timedelta(minutes=11))
    client.post("/f/newsletter", data=data)
    assert len(notices_to(runtime, "bo@beta.example")) == 3
    for _ in range(10):  # at most three a day, however far apart
        runtime.clock.advance(timedelta(hours=1))
        client.post("/f/newsletter", data=data)
    assert len(notices_to(runtime, "bo@beta.example")) == 3
    runtime.clock.advance(timedelta(days=1))
    client.post("/f/newsletter", data=data)
    assert len(notices_to(runtime, "bo@beta.example")) == 4
    # Another address, or another form, has its own window.
    client.post("/f/newsletter", data={**data, "email": "cy@gamma.example"})
    assert len(notices_to(runtime, "cy@gamma.example")) == 1


@pytest.mark.parametrize("consent", [None, "", "off", "false", "0"])
@pytest.mark.parametrize("name", ["guide", "newsletter"])
def test_without_the_consent_ticked_nothing_is_kept(
    runtime: Runtime, client: FlaskClient, name: str, consent: str | None
) -> None:
    data = {"email": "ana@acme.example", "first_name": "Ana", "company": "Acme"}
    if consent is not None:
        data["consent"] = consent
    reply = client.post(f"/f/{name}", data=data)
    assert reply.status_code == 422 and reply.mimetype == "text/html"
    page = reply.get_data(as_text=True)
    assert "consent: please tick the box to agree" in page
    with sessions(runtime.database)() as session:
        assert session.scalars(select(Contact)).all() == []
        assert session.scalars(select(Notice)).all() == []
    assert consents(runtime) == [] and kinds(runtime) == []


def test_the_consent_page_speaks_the_forms_language(
    project_dir: Path, runtime: Runtime, clock: FixedClock
) -> None:
    settings = project_dir / "nurture.yaml"
    text = settings.read_text()
    text = text.replace(
        "    event: newsletter_signup\n",
        "    event: newsletter_signup\n    language: fr\n    consent_field: accord\n",
    )
    settings.write_text(text)
    french = open_runtime(project_dir, clock=clock, database=str(runtime.database.url))
    try:
        client = create_app(french).test_client()
        reply = client.post("/f/newsletter", data={"email": "lea@acme.example", "consent": "on"})
        assert reply.status_code == 422
        page = reply.get_data(as_text=True)
        assert '<html lang="fr">' in page and "accord : cochez la case pour accepter" in page
        ticked = client.post("/f/newsletter", data={"email": "lea@acme.example", "accord": "oui"})
        assert ticked.status_code == 303
    finally:
        french.database.dispose()
