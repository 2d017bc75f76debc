"""Delivery: MIME building, and transports (the outbox folder by default)."""

from __future__ import annotations

import base64
import os
import queue
import re
import smtplib
import ssl
import threading
from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from email.utils import format_datetime, formataddr
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import parse_qs, unquote, urlsplit

import dkim
import idna

from nurture.config import Dkim, Sender
from nurture.redact import redact_text


@dataclass(frozen=True)
class Outgoing:
    """One rendered email, ready to hand to a transport."""

    key: str
    to: str
    to_name: str | None
    subject: str
    html: str
    text: str
    unsubscribe_url: str | None
    sent_at: datetime


def wire_address(address: str) -> tuple[str, bool]:
    """The address as it goes on the wire, and whether it needs SMTPUTF8 (RFC 6531).

    A non-ASCII domain goes as IDNA (punycode), which every server takes; only a non-ASCII
    local part needs a server that offers SMTPUTF8. Raises ValueError for a domain IDNA
    refuses.
    """
    local, _, domain = address.rpartition("@")
    if not domain.isascii():
        try:
            domain = idna.encode(domain, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise ValueError(f"{address!r}: the domain is not a valid IDNA name: {exc}") from None
    return f"{local}@{domain}", not local.isascii()


def sender_domain(sender: Sender) -> str:
    """The sender's domain as it goes in Message-ID, List-Id and mailto: (IDNA)."""
    return wire_address(sender.from_address)[0].rsplit("@", 1)[1]


def message_id(key: str, sender: Sender) -> str:
    return f"<{key}@{sender_domain(sender)}>"


class Transport(Protocol):
    def send(self, outgoing: Outgoing) -> None:
        """Deliver one email, or raise: `Rejected` (hard bounce), `Refused` (failed for good),
        `DeliveryUnknown` (handed over, unanswered: never send again), `Interrupted` (a stop
        came before it was handed over), anything else (failed)."""
        ...


@runtime_checkable
class Interruptible(Protocol):
    def interrupt(self) -> None:
        """Stop waiting to try again: sends in their backoff raise `Interrupted` at once."""
        ...


class Rejected(Exception):
    """The receiving server refused the recipient with a 5xx reply: a hard bounce."""

    def __init__(self, code: int, reply: str) -> None:
        self.code, self.reply = code, reply
        super().__init__(f"{code} {reply}")


class Refused(Exception):
    """Failed for good, the address not at fault: a 5xx to MAIL, DATA or the message, or a
    server without SMTPUTF8 for an address that needs it. Never tried again."""


class TemporaryFailure(Exception):
    """The server kept answering 4xx (or dropping the line) after every retry; the message
    was never accepted."""


class DeliveryUnknown(Exception):
    """The message body was handed to the server and no answer came (a timeout, a dropped
    connection): it may have been delivered, so it must never be sent again."""


class Interrupted(Exception):
    """A stop was asked while waiting to try again; nothing was handed to the server."""


SIGNED_HEADERS = (
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "MIME-Version",
    "Content-Type",
)


class MimeBuilder:
    """RFC 5322 bytes for an `Outgoing`: multipart/alternative, RFC 8058 headers, DKIM."""

    def __init__(
        self,
        sender: Sender,
        list_id: str | None = None,
        dkim: Dkim | None = None,
        root: Path | None = None,
    ) -> None:
        self.sender = sender
        self.domain = sender_domain(sender)
        self.list_id = list_id or f"{sender.from_name} <nurture.{self.domain}>"
        self.dkim = dkim
        self._dkim_key = (
            ((root or Path()) / dkim.private_key_file).read_bytes() if dkim is not None else None
        )

    def to_bytes(self, outgoing: Outgoing) -> bytes:
        """CRLF-terminated bytes as they go on the wire, DKIM-signed when configured.

        The shape never varies (two base64 parts in multipart/alternative), so it is laid
        out directly: the email package's generator costs more than everything else on this
        path. Header values still come from email.utils and email.header (RFC 2047).
        """
        sender = self.sender
        boundary = f"=_nurture_{outgoing.key}"
        mailto = f"mailto:unsubscribe@{self.domain}?subject=unsubscribe-{outgoing.key}"
        headers = [
            ("From", _mailbox(sender.from_name, sender.from_address)),
            ("To", _mailbox(outgoing.to_name, outgoing.to)),
            *([("Reply-To", _mailbox(None, sender.reply_to))] if sender.reply_to else []),
            ("Subject", _header(outgoing.subject)),
            ("Date", format_datetime(outgoing.sent_at)),
            ("Message-ID", message_id(outgoing.key, sender)),
            *(
                [
                    ("List-Id", _header(self.list_id)),
                    ("List-Unsubscribe", f"<{outgoing.unsubscribe_url}>, <{mailto}>"),
                    ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
                ]
                if outgoing.unsubscribe_url is not None
                else [("Auto-Submitted", "auto-generated")]
            ),
            ("MIME-Version", "1.0"),
            ("Content-Type", f'multipart/alternative; boundary="{boundary}"'),
        ]
        head = "".join(f"{name}: {value}\r\n" for name, value in headers)
        parts = b"".join(
            f'--{boundary}\r\nContent-Type: text/{kind}; charset="utf-8"\r\n'
            "Content-Transfer-Encoding: base64\r\n\r\n".encode()
            + base64.encodebytes(body.encode()).replace(b"\n", b"\r\n")
            for kind, body in (("plain", outgoing.text), ("html", outgoing.html))
        )
        data = head.encode("utf-8") + b"\r\n" + parts + f"--{boundary}--\r\n".encode()
        if self.dkim is None or self._dkim_key is None:
            return data
        signature = dkim.sign(
            data,
            self.dkim.selector.encode(),
            self.dkim.domain.encode(),
            self._dkim_key,
            include_headers=[h.encode() for h in SIGNED_HEADERS if _has_header(data, h)],
        )
        return bytes(signature) + data


def _mailbox(name: str | None, address: str) -> str:
    """A From/To/Reply-To value: the display name in RFC 2047 words where needed; the address
    as on the wire (IDNA domain), left in UTF-8 when its local part is not ASCII (RFC 6532:
    only an SMTPUTF8 conversation carries such a message)."""
    wire, _ = wire_address(address)
    if wire.isascii():
        return formataddr((name or "", wire), charset="utf-8")
    if not name:
        return wire
    # formataddr refuses a UTF-8 address: let it quote or encode the name, then put it in.
    return formataddr((name, "a@b"), charset="utf-8")[: -len("a@b>")] + wire + ">"


def _header(value: str) -> str:
    """RFC 2047 encoded words where the text is not plain ASCII."""
    return value if value.isascii() else Header(value, "utf-8").encode(linesep="\r\n")


def _has_header(data: bytes, name: str) -> bool:
    head = data.split(b"\r\n\r\n", 1)[0].lower()
    return head.startswith(name.lower().encode() + b":") or (
        b"\r\n" + name.lower().encode() + b":" in head
    )


class OutboxTransport:
    """Writes each email as an .eml file: the default, to read before any real sending."""

    def __init__(self, directory: Path, builder: MimeBuilder) -> None:
        self.directory = directory
        self.builder = builder
        directory.mkdir(parents=True, exist_ok=True)

    def send(self, outgoing: Outgoing) -> None:
        data = self.builder.to_bytes(outgoing)
        stamp = outgoing.sent_at.strftime("%Y%m%dT%H%M%SZ")
        final = self.directory / f"{stamp}-{outgoing.key}.eml"
        partial = final.with_suffix(".part")
        partial.write_bytes(data)
        os.replace(partial, final)


class NullTransport:
    """Sends nothing: for benchmarks of everything before delivery."""

    def __init__(self) -> None:
        self.count = 0

    def send(self, outgoing: Outgoing) -> None:
        self.count += 1


@dataclass(frozen=True)
class SmtpUrl:
    host: str
    port: int
    implicit_tls: bool
    starttls: bool
    username: str | None
    password: str | None
    timeout: float

    @classmethod
    def parse(cls, url: str) -> SmtpUrl:
        """smtp://user:pass@host:587 (STARTTLS required), smtps://host:465 (TLS from the
        start); `?tls=none` allows a plain connection, for a relay on the same machine."""
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            shown = redact_text(url)
            raise ValueError(f"{shown!r} is not an smtp:// or smtps:// URL with a host")
        query = parse_qs(parts.query)
        plain = query.get("tls", [""])[0] == "none"
        return cls(
            host=parts.hostname,
            port=parts.port or (465 if parts.scheme == "smtps" else 587),
            implicit_tls=parts.scheme == "smtps",
            starttls=parts.scheme == "smtp" and not plain,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            timeout=float(query.get("timeout", ["30"])[0]),
        )


class SmtpTransport:
    """SMTP with a pool of persistent connections, at most once per message.

    Each `send` is one SMTP transaction, led step by step (EHLO, MAIL, RCPT, DATA, the body)
    so that it knows which side of the body a failure falls on. Before the body (a refused
    connection, a 4xx, a dropped line, a timeout, up to the DATA command's 354) nothing was
    handed over: it tries again, `retries` times with a doubling `backoff`. After the body's
    final dot, 250 is sent, 4xx means the server did not take it (tried again), 5xx refused
    it (`Refused`), and no answer at all is `DeliveryUnknown`: never sent again.

    Thread-safe: each `send` borrows one connection from the pool, so as many sends run at
    once as the pool holds connections. `interrupt()` cuts every backoff short.
    """

    def __init__(
        self,
        url: str,
        builder: MimeBuilder,
        *,
        pool: int = 2,
        retries: int = 3,
        backoff: float = 2.0,
    ) -> None:
        self.url = SmtpUrl.parse(url)
        self.builder = builder
        self.size = pool
        self.retries = retries
        self.backoff = backoff
        self.stopping = threading.Event()
        self._idle: queue.LifoQueue[smtplib.SMTP] = queue.LifoQueue()

    def interrupt(self) -> None:
        self.stopping.set()

    def send(self, outgoing: Outgoing) -> None:
        data = self.builder.to_bytes(outgoing)
        sender, sender_utf8 = wire_address(self.builder.sender.from_address)
        to, to_utf8 = wire_address(outgoing.to)
        utf8 = sender_utf8 or to_utf8 or not data.isascii()
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt and self.stopping.wait(self.backoff * 2 ** (attempt - 1)):
                raise Interrupted(f"stopped before delivery, after {attempt} tries: {last}")
            try:
                connection = self._acquire()
            except (smtplib.SMTPException, OSError) as exc:
                last = exc
                continue
            try:
                self._transaction(connection, sender, to, data, utf8)
            except (Rejected, Refused, smtplib.SMTPResponseException) as exc:
                self._release(connection, reset=True)
                if not isinstance(exc, smtplib.SMTPResponseException):
                    raise
                last = exc  # a 4xx: the server did not take it
            except DeliveryUnknown:
                self._discard(connection)
                raise
            except (smtplib.SMTPException, OSError) as exc:  # dropped before the body
                self._discard(connection)
                last = exc
            else:
                self._release(connection)
                return
        raise TemporaryFailure(f"gave up after {self.retries + 1} tries: {last}")

    def _transaction(
        self, connection: smtplib.SMTP, sender: str, to: str, data: bytes, utf8: bool
    ) -> None:
        """One message. Raises SMTPResponseException for a 4xx (try again), OSError or
        SMTPException for a failure before the body, or one of the final exceptions."""
        connection.ehlo_or_helo_if_needed()
        options: list[str] = []
        if utf8:
            if not connection.has_extn("smtputf8"):
                raise Refused(
                    f"the server does not offer SMTPUTF8 (RFC 6531), which {to} needs "
                    "(an address with a non-ASCII local part)"
                )
            options = ["SMTPUTF8", *(["BODY=8BITMIME"] if connection.has_extn("8bitmime") else [])]
        code, reply = connection.mail(sender, options)
        _check(code, reply, "MAIL FROM", (250,))
        code, reply = connection.rcpt(to)
        if 500 <= code < 600:
            raise Rejected(code, _text(reply))
        _check(code, reply, "RCPT TO", (250, 251))
        code, reply = connection.docmd("DATA")
        _check(code, reply, "DATA", (354,))
        # From here on the body is handed over: only the server's answer says what happened.
        try:
            connection.send(_dot_stuffed(data))
            code, reply = connection.getreply()
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryUnknown(
                f"handed to the server, no answer after the message ({exc}): may have been "
                "delivered, not sent again"
            ) from None
        if 200 <= code < 300:
            return
        if 400 <= code < 600:
            _check(code, reply, "the message", ())
        raise DeliveryUnknown(f"handed to the server, unreadable answer: {code} {_text(reply)}")

    def close(self) -> None:
        while not self._idle.empty():
            self._discard(self._idle.get_nowait())

    def _acquire(self) -> smtplib.SMTP:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            return self._connect()

    def _release(self, connection: smtplib.SMTP, *, reset: bool = False) -> None:
        try:
            if reset:
                connection.rset()
        except (smtplib.SMTPException, OSError):
            self._discard(connection)
            return
        if self._idle.qsize() < self.size:
            self._idle.put(connection)
        else:
            self._discard(connection)

    def _discard(self, connection: smtplib.SMTP) -> None:
        try:
            connection.quit()
        except (smtplib.SMTPException, OSError):
            connection.close()

    def _connect(self) -> smtplib.SMTP:
        url = self.url
        context = ssl.create_default_context()
        connection: smtplib.SMTP
        if url.implicit_tls:
            connection = smtplib.SMTP_SSL(url.host, url.port, timeout=url.timeout, context=context)
        else:
            connection = smtplib.SMTP(url.host, url.port, timeout=url.timeout)
            if url.starttls:
                connection.starttls(context=context)
        if url.username:
            connection.login(url.username, url.password or "")
        return connection


def _check(code: int, reply: bytes, step: str, expected: tuple[int, ...]) -> None:
    """Raise for an unexpected reply: a 4xx (or any non-5xx) is worth another try, a 5xx
    is final."""
    if code in expected:
        return
    if 500 <= code < 600:
        raise Refused(f"refused for good at {step}: {code} {_text(reply)}")
    raise smtplib.SMTPResponseException(code, reply)


_LEADING_DOT = re.compile(rb"(?m)^\.")


def _dot_stuffed(data: bytes) -> bytes:
    """The DATA payload (RFC 5321 4.5.2): a leading dot doubled, then CRLF . CRLF."""
    body = _LEADING_DOT.sub(b"..", data)
    return body + (b"" if body.endswith(b"\r\n") else b"\r\n") + b".\r\n"


def _text(reply: bytes | str) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else reply
