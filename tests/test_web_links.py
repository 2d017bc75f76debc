"""The links inside emails, through Flask's test client on a real database."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from nurture.db import sessions
from nurture.models import Contact, Event, ScoreChange, Suppression
from nurture.runtime import Runtime
from nurture.web import create_app
from tests.helpers import PROFILE, add_contact, messages, outbox, parse_eml

BROWSER = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Version/17.5 Safari/605.1.15"
)


@pytest.fixture
def sent(runtime: Runtime) -> dict[str, str]:
    """One email really sent, and the links inside it."""
    add_contact(runtime, "ana@acme.example", **PROFILE)
    runtime.dispatcher.tick()
    mime = parse_eml(outbox(runtime)[0])
    html = next(p for p in mime.iter_parts() if p.get_content_type() == "text/html").get_content()
    links = {
        "unsubscribe": mime["List-Unsubscribe"].split("<")[1].split(">")[0],
        "click": re.search(r'href="(http://localhost:5000/c/[^"]+)"', html).group(1),  # type: ignore[union-attr]
        "open": re.search(r'src="(http://localhost:5000/o/[^"]+)"', html).group(1),  # type: ignore[union-attr]
    }
    return {name: url.removeprefix("http://localhost:5000") for name, url in links.items()}


@pytest.fixture
def client(runtime: Runtime) -> FlaskClient:
    return create_app(runtime).test_client()


def later(runtime: Runtime, **delta: float) -> None:
    runtime.clock.advance(timedelta(**delta))  # type: ignore[attr-defined]


def events(runtime: Runtime, kind: str) -> list[Event]:
    with sessions(runtime.database)() as session:
        return list(session.scalars(select(Event).where(Event.kind == kind).order_by(Event.id)))


def points(runtime: Runtime) -> float:
    with sessions(runtime.database)() as session:
        return sum(
            session.scalars(select(ScoreChange.points).where(ScoreChange.axis == "engagement"))
        )


def suppressed(runtime: Runtime) -> list[str]:
    with sessions(runtime.database)() as session:
        return list(session.scalars(select(Suppression.reason)))


def test_one_click_unsubscribe_needs_no_cookie_and_works_at_once(
    runtime: Runtime, client: FlaskClient, sent: dict[str, str]
) -> None:
    response = client.post(sent["unsubscribe"], data={"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200
    assert "Set-Cookie" not in response.headers
    assert suppressed(runtime) == ["unsubscribed"]
    later(runtime, days=7)
    assert runtime.dispatcher.tick().sent == 0


def test_a_tampered_token_changes_nothing(
    runtime: Runtime, client: FlaskClient, sent: dict[str, str]
) -> None:
    token = sent["unsubscribe"].removeprefix("/u/")
    forged = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    for path in (f"/u/{forged}", "/u/nothing", f"/u/{token}x"):
        assert client.post(path, data={"List-Unsubscribe": "One-Click"}).status_code == 404
        assert client.get(path).status_code == 404
    assert client.get("/c/" + sent["click"].removeprefix("/c/")[:-2] + "zz").status_code == 404
    assert client.get("/o/forged.token").status_code == 404
    assert suppressed(runtime) == [] and events(runtime, "email_clicked") == []


def test_the_page_offers_fewer_emails_and_a_pause(
    runtime: Runtime, client: FlaskClient, sent: dict[str, str]
) -> None:
    page = client.get(sent["unsubscribe"])
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert (
        "ana@acme.example" in text
        and "Receive fewer emails" in text
        and "Pause for 30 days" in text
    )
    assert client.post(sent["unsubscribe"], data={"choice": "fewer"}).status_code == 200
    with sessions(runtime.database)() as session:
        contact = session.scalars(select(Contact)).one()
        assert contact.caps == {"per_week": 1}
    assert client.post(sent["unsubscribe"], data={"choice": "pause"}).status_code == 200
    with sessions(runtime.database)() as session:
        contact = session.scalars(select(Contact)).one()
        assert contact.held_until == runtime.clock.now() + timedelta(days=30)
    assert client.post(sent["unsubscribe"], data={"choice": "delete-everything"}).status_code == 400
    assert suppressed(runtime) == []
    assert client.post(sent["unsubscribe"], data={"choice": "unsubscribe"}).status_code == 200
    assert suppressed(runtime) == ["unsubscribed"]


def test_a_person_clicking_is_scored_and_redirected(
    runtime: Runtime, client: FlaskClient, sent: dict[str, str]
) -> None:
    later(runtime, hours=2)
    response = client.get(sent["click"], headers={"User-Agent": BROWSER})
    assert response.status_code == 302
    assert (
        response.headers["Location"] == "https://keel-retention.example/guides/quiet-churn-signals"
    )
    (click,) = events(runtime, "email_clicked")
    assert "machine" not in click.properties and click.message_id == messages(runtime)[0].id
    assert points(runtime) == 5
    client.get(sent["click"], headers={"User-Agent": BROWSER})
    assert points(runtime) == 5, "a second click on one email adds nothing"


@pytest.mark.parametrize(
    ("method", "agent", "after", "reason"),
    [
        ("HEAD", BROWSER, 3600, "HEAD request"),
        (
            "GET",
            "Mozilla/5.0 (compatible; Barracuda Sentinel)",
            3600,
            "security scanner user agent",
        ),
        ("GET", BROWSER, 2, "clicked within 10 s of delivery"),
        ("GET", "", 3600, "no user agent"),
    ],
)
def test_scanner_clicks_are_stored_flagged_and_never_scored(
    runtime: Runtime,
    client: FlaskClient,
    sent: dict[str, str],
    method: str,
    agent: str,
    after: int,
    reason: str,
) -> None:
    later(runtime, seconds=after)
    response = client.open(sent["click"], method=method, headers={"User-Agent": agent})
    assert response.status_code == 302
    (click,) = events(runtime, "email_clicked")
    assert click.properties["machine"] == reason
    assert points(runtime) == 0


def test_privacy_proxy_opens_are_flagged(
    runtime: Runtime, client: FlaskClient, sent: dict[str, str]
) -> None:
    later(runtime, hours=1)
    response = client.get(sent["open"], headers={"User-Agent": "Mozilla/5.0"})
    assert response.status_code == 200 and response.mimetype == "image/gif"
    assert "no-store" in response.headers["Cache-Control"]
    client.get(
        sent["open"],
        headers={"User-Agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) GoogleImageProxy"},
    )
    client.get(sent["open"], headers={"User-Agent": BROWSER})
    flags = [e.properties.get("machine") for e in events(runtime, "email_opened")]
    assert flags == ["Apple Mail Privacy Protection", "mail privacy proxy", None]


def test_health(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}


BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def one_character_changes(token: str) -> list[str]:
    """Every token that differs from `token` in exactly one character (base64url or '.')."""
    return [
        token[:i] + other + token[i + 1 :]
        for i in range(len(token))
        for other in BASE64URL + "."
        if other != token[i]
    ]


def test_every_one_character_forgery_is_404_and_records_nothing(
    runtime: Runtime, client: FlaskClient, sent: dict[str, str]
) -> None:
    """base64 leaves spare bits in a signature's last character; only the canonical token
    that was signed is accepted, so no altered character gets through."""
    later(runtime, hours=2)
    tried = 0
    for name, method, data in (
        ("click", "GET", None),
        ("open", "GET", None),
        ("unsubscribe", "POST", {"List-Unsubscribe": "One-Click"}),
    ):
        prefix, token = sent[name].rsplit("/", 1)
        for forged in one_character_changes(token):
            reply = client.open(f"{prefix}/{forged}", method=method, data=data)
            assert reply.status_code == 404, (name, forged)
            tried += 1
    assert tried > 3 * 60 * 64
    with sessions(runtime.database)() as session:
        assert session.scalars(select(Event)).all() == []
    assert suppressed(runtime) == []
    assert client.get(sent["click"], headers={"User-Agent": BROWSER}).status_code == 302
    assert len(events(runtime, "email_clicked")) == 1, "the real token still works"
