"""Real delivery to a real SMTP server on loopback (aiosmtpd)."""

from __future__ import annotations

import base64
import email
import email.policy
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select

from nurture.clock import FixedClock
from nurture.db import sessions
from nurture.models import Suppression
from nurture.runtime import Runtime, open_runtime
from nurture.transport import SmtpTransport
from tests.helpers import PROFILE as BASE_PROFILE
from tests.helpers import add_contact, messages
from tests.smtp_server import SmtpServer

PROFILE = {**BASE_PROFILE, "first_name": "Zoé", "last_name": "Ångström"}


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with SmtpServer() as server:
        yield server


def smtp_runtime(
    project_dir: Path, clock: FixedClock, database_url: str, smtp: SmtpServer, extra: str = ""
) -> Runtime:
    settings = project_dir / "nurture.yaml"
    settings.write_text(
        settings.read_text().replace("  account_per_day: 2", "")
        + f"\ndelivery:\n  smtp_url: {smtp.url}\n  pool: 4\n  retry_backoff: 0s\n{extra}"
    )
    return open_runtime(project_dir, clock=clock, database=database_url)


def parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def test_a_thousand_emails_arrive_whole(
    project_dir: Path, clock: FixedClock, tmp_path: Path, smtp: SmtpServer
) -> None:
    rt = smtp_runtime(project_dir, clock, f"sqlite:///{tmp_path / 'n.db'}", smtp)
    assert isinstance(rt.dispatcher.transport, SmtpTransport)
    for i in range(1000):
        add_contact(rt, f"person{i}@company{i}.example", **PROFILE)
    report = rt.dispatcher.tick()
    assert (report.sent, report.failed) == (1000, 0)
    received = smtp.recorder.messages
    assert len(received) == 1000
    assert Counter(tuple(rcpt) for rcpt, _ in received).most_common(1)[0][1] == 1
    ids = set()
    for rcpt, data in received:
        mime = parse(data)
        assert mime.get_content_type() == "multipart/alternative"
        kinds = [part.get_content_type() for part in mime.iter_parts()]
        assert kinds == ["text/plain", "text/html"]
        assert mime["To"].addresses[0].addr_spec == rcpt[0]
        assert mime["To"].addresses[0].display_name == "Zoé Ångström"
        assert b"=?utf-8?" in data.split(b"\r\n\r\n")[0]  # RFC 2047 in the raw header
        assert mime["From"] == "Keel <hello@keel-retention.example>"
        assert mime["Subject"] == "Zoé, the churn your dashboard does not show"
        assert parsedate_to_datetime(mime["Date"]) == clock.now()
        assert mime["Message-ID"].endswith("@keel-retention.example>")
        ids.add(mime["Message-ID"])
        assert mime["List-Id"] == "Keel <nurture.keel-retention.example>"
        https, mailto = (p.strip(" <>") for p in mime["List-Unsubscribe"].split(","))
        assert https.startswith("http://localhost:5000/u/") and mailto.startswith("mailto:")
        assert mime["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert len(ids) == 1000
    assert {m.status for m in messages(rt)} == {"sent"}
    rt.database.dispose()


def test_dkim_signature_verifies_and_covers_unsubscribe_headers(
    project_dir: Path, clock: FixedClock, tmp_path: Path, smtp: SmtpServer
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (project_dir / "dkim.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    public = base64.b64encode(
        key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    extra = (
        "  dkim:\n    domain: keel-retention.example\n    selector: nurture\n"
        "    private_key_file: dkim.pem\n"
    )
    rt = smtp_runtime(project_dir, clock, f"sqlite:///{tmp_path / 'n.db'}", smtp, extra)
    add_contact(rt, "ana@acme.example", **PROFILE)
    rt.dispatcher.tick()
    ((_, data),) = smtp.recorder.messages

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"nurture._domainkey.keel-retention.example."
        return b"v=DKIM1; k=rsa; p=" + public

    assert dkim.verify(data, dnsfunc=dns)
    signature = parse(data)["DKIM-Signature"].replace(" ", "").replace("\r\n", "")
    signed = signature.split("h=")[1].split(";")[0].lower().split(":")
    assert {"list-unsubscribe", "list-unsubscribe-post", "from", "subject"} <= set(signed)
    tampered = data.replace(
        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click", b"List-Unsubscribe-Post: nothing"
    )
    assert not dkim.verify(tampered, dnsfunc=dns)
    rt.database.dispose()


def test_4xx_is_retried_then_delivered(
    project_dir: Path, clock: FixedClock, database_url: str, smtp: SmtpServer
) -> None:
    rt = smtp_runtime(project_dir, clock, database_url, smtp)
    add_contact(rt, "later@acme.example", **PROFILE)
    assert rt.dispatcher.tick().sent == 1
    assert smtp.recorder.attempts["later@acme.example"] == 2
    assert [m.status for m in messages(rt)] == ["sent"]
    rt.database.dispose()


def test_a_5xx_recipient_becomes_a_suppression(
    project_dir: Path, clock: FixedClock, database_url: str, smtp: SmtpServer
) -> None:
    rt = smtp_runtime(project_dir, clock, database_url, smtp)
    add_contact(rt, "nobody@acme.example", **PROFILE)
    add_contact(rt, "ana@initech.example", **PROFILE)
    report = rt.dispatcher.tick()
    assert (report.sent, report.failed) == (1, 1)
    bounced = next(m for m in messages(rt) if m.status == "failed")
    assert bounced.error is not None and "550" in bounced.error
    with sessions(rt.database)() as session:
        suppression = session.scalars(select(Suppression)).one()
    assert (suppression.email, suppression.reason) == ("nobody@acme.example", "hard_bounced")
    assert rt.dispatcher.transport.size == 4  # type: ignore[attr-defined]
    rt.clock.advance(timedelta(days=7))  # type: ignore[attr-defined]
    rt.dispatcher.tick()
    assert smtp.recorder.attempts["nobody@acme.example"] == 1, "never tried again"
    rt.database.dispose()


def test_a_server_that_is_down_fails_the_message_not_the_engine(
    project_dir: Path, clock: FixedClock, tmp_path: Path
) -> None:
    from tests.smtp_server import free_port

    settings = project_dir / "nurture.yaml"
    settings.write_text(
        settings.read_text() + f"\ndelivery:\n  smtp_url: smtp://127.0.0.1:{free_port()}"
        "?tls=none&timeout=2\n  retries: 1\n  retry_backoff: 0s\n"
    )
    rt = open_runtime(project_dir, clock=clock, database=f"sqlite:///{tmp_path / 'n.db'}")
    add_contact(rt, "ana@acme.example", **PROFILE)
    report = rt.dispatcher.tick()
    assert report.failed == 1
    (message,) = messages(rt)
    assert message.status == "failed" and "gave up after 2 tries" in (message.error or "")
    rt.database.dispose()


def test_smtp_url_forms() -> None:
    from nurture.transport import SmtpUrl

    plain = SmtpUrl.parse("smtp://user%40x:p%3Ass@mail.example.com")
    assert (plain.host, plain.port, plain.starttls, plain.implicit_tls) == (
        "mail.example.com",
        587,
        True,
        False,
    )
    assert (plain.username, plain.password) == ("user@x", "p:ss")
    tls = SmtpUrl.parse("smtps://mail.example.com")
    assert (tls.port, tls.implicit_tls, tls.starttls) == (465, True, False)
    assert SmtpUrl.parse("smtp://127.0.0.1:2525?tls=none").starttls is False
    with pytest.raises(ValueError, match="not an smtp"):
        SmtpUrl.parse("http://mail.example.com")
