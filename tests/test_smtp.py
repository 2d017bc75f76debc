"""Real delivery to a real SMTP server on loopback (aiosmtpd)."""

from __future__ import annotations

import base64
import email
import email.policy
import time
from collections import Counter
from collections.abc import Callable, Iterator
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
from nurture.models import Contact, Suppression
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


def parse_utf8(data: bytes) -> EmailMessage:
    """As an RFC 6532 reader does: UTF-8 headers (the email package keeps raw bytes of a
    header as surrogates, so the text is decoded first)."""
    message = email.message_from_string(data.decode("utf-8"), policy=email.policy.default)
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


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    """Poll `condition` until it holds (a generous deadline, for a loaded machine)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.05)


@pytest.mark.parametrize("pool", [1, 4])
def test_no_answer_after_the_body_is_unknown_and_never_sent_again(
    project_dir: Path, clock: FixedClock, database_url: str, pool: int
) -> None:
    """The server takes the message but answers the final dot after the client's timeout:
    one copy each, `unknown`, counted by explain and the caps, never tried again."""
    people = [f"p{i}@c{i}.example" for i in range(4)]
    with SmtpServer(answer_delay=3) as slow:
        settings = project_dir / "nurture.yaml"
        settings.write_text(
            settings.read_text().replace("  account_per_day: 2", "")
            + f"\ndelivery:\n  smtp_url: {slow.url}&timeout=1\n  pool: {pool}\n"
            "  retries: 3\n  retry_backoff: 0s\n"
        )
        rt = open_runtime(project_dir, clock=clock, database=database_url)
        for address in people:
            add_contact(rt, address, **PROFILE)
        report = rt.dispatcher.tick()
        assert dict(slow.recorder.attempts) == dict.fromkeys(people, 1), "tried once each"
        assert (report.sent, report.failed, report.unknown) == (0, 0, 4)
        wait_for(lambda: len(slow.recorder.messages) >= 4, "the server to keep the messages")
        rt.clock.advance(timedelta(minutes=11))  # type: ignore[attr-defined]
        assert rt.dispatcher.reconcile() == (0, 0), "the reconciler sends nothing again"
        assert slow.recorder.received() == dict.fromkeys(people, 1), "one copy each"
    first = messages(rt)
    assert [m.status for m in first] == ["unknown"] * 4
    assert all("no answer after the message" in (m.error or "") for m in first)
    from nurture.explain import explain

    assert "1 email so far" in explain(rt, people[0])[0]
    with sessions(rt.database)() as session:
        row = session.execute(select(Contact).where(Contact.email == people[0])).scalar_one()
        history = rt.dispatcher.history(session, rt.clock.now(), {row.id: row}, lock=False)
    assert history.sent[row.id] == [first[0].sent_at], "the caps count it"
    assert first[0].content_id in history.received[row.id], "never planned again"
    rt.database.dispose()


def test_a_4xx_to_the_final_dot_is_tried_again_and_delivered_once(
    project_dir: Path, clock: FixedClock, database_url: str, smtp: SmtpServer
) -> None:
    rt = smtp_runtime(project_dir, clock, database_url, smtp)
    people = ["deferred@acme.example", "later@initech.example", "dropped@hooli.example"]
    for address in people:
        add_contact(rt, address, **PROFILE)
    report = rt.dispatcher.tick()
    assert (report.sent, report.failed, report.unknown) == (3, 0, 0)
    assert smtp.recorder.bodies["deferred@acme.example"] == 2, "the 451 was tried again"
    assert smtp.recorder.attempts["later@initech.example"] == 2, "the RCPT 451 too"
    assert smtp.recorder.attempts["dropped@hooli.example"] == 2, "and the dropped line"
    assert smtp.recorder.received() == dict.fromkeys(people, 1)
    assert [m.status for m in messages(rt)] == ["sent"] * 3
    rt.database.dispose()


def test_an_address_with_a_non_ascii_local_part_goes_with_smtputf8(
    project_dir: Path, clock: FixedClock, tmp_path: Path
) -> None:
    with SmtpServer(smtputf8=True) as utf8:
        rt = smtp_runtime(project_dir, clock, f"sqlite:///{tmp_path / 'n.db'}", utf8)
        add_contact(rt, "josé@acme.example", **PROFILE)
        add_contact(rt, "ana@initech.example", **PROFILE)
        report = rt.dispatcher.tick()
        assert (report.sent, report.failed) == (2, 0)
        received = dict((rcpt[0], data) for rcpt, data in utf8.recorder.messages)
    mime = parse_utf8(received["josé@acme.example"])
    assert mime["To"].addresses[0].addr_spec == "josé@acme.example"
    assert mime["To"].addresses[0].display_name == "Zoé Ångström"
    assert received["ana@initech.example"].isascii(), "only the message that needs it"
    assert {m.status for m in messages(rt)} == {"sent"}
    rt.database.dispose()


def test_a_server_without_smtputf8_fails_such_an_address_clearly_once(
    project_dir: Path, clock: FixedClock, tmp_path: Path, smtp: SmtpServer
) -> None:
    rt = smtp_runtime(project_dir, clock, f"sqlite:///{tmp_path / 'n.db'}", smtp)
    add_contact(rt, "josé@acme.example", **PROFILE)
    add_contact(rt, "ana@initech.example", **PROFILE)
    report = rt.dispatcher.tick()
    assert (report.sent, report.failed) == (1, 1)
    assert smtp.recorder.received() == {"ana@initech.example": 1}
    assert "josé@acme.example" not in smtp.recorder.attempts, "never tried, never retried"
    failed = next(m for m in messages(rt) if m.status == "failed")
    assert "does not offer SMTPUTF8" in (failed.error or "")
    with sessions(rt.database)() as session:
        assert session.scalars(select(Suppression)).all() == [], "the address is not at fault"
    rt.database.dispose()


def test_a_non_ascii_domain_goes_as_idna_and_the_outbox_file_reads_back(
    project_dir: Path, clock: FixedClock, smtp: SmtpServer, tmp_path: Path
) -> None:
    from nurture.config import Sender
    from nurture.transport import MimeBuilder, OutboxTransport, Outgoing

    sender = Sender(
        from_name="Keel", from_address="hello@keel-retention.example", postal_address="x"
    )
    builder = MimeBuilder(sender)
    transport = SmtpTransport(smtp.url, builder, pool=1, retries=0)
    outgoing = Outgoing(
        key="k1",
        to="ana@bücher.example",
        to_name="Zoé",
        subject="Bonjour",
        html="<p>Hi</p>",
        text="Hi",
        unsubscribe_url=None,
        sent_at=clock.now(),
    )
    transport.send(outgoing)
    transport.close()
    ((rcpt, data),) = smtp.recorder.messages
    assert rcpt == ["ana@xn--bcher-kva.example"] and data.isascii()
    outbox = OutboxTransport(tmp_path / "outbox", builder)
    outbox.send(outgoing)
    outbox.send(Outgoing(**{**outgoing.__dict__, "key": "k2", "to": "josé@bücher.example"}))
    read = {
        path.name.split("-")[-1]: parse_utf8(path.read_bytes())
        for path in (tmp_path / "outbox").glob("*.eml")
    }
    assert read["k1.eml"]["To"].addresses[0].addr_spec == "ana@xn--bcher-kva.example"
    assert read["k2.eml"]["To"].addresses[0].addr_spec == "josé@xn--bcher-kva.example"
    assert read["k2.eml"]["To"].addresses[0].display_name == "Zoé"
