"""Delivery: MIME building, and transports (the outbox folder by default)."""

from __future__ import annotations

import base64
import os
import queue
import smtplib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from email.utils import format_datetime, formataddr
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import dkim

from nurture.config import Dkim, Sender


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


def message_id(key: str, sender: Sender) -> str:
    return f"<{key}@{sender.from_address.rsplit('@', 1)[1]}>"


class Transport(Protocol):
    def send(self, outgoing: Outgoing) -> None:
        """Deliver one email; raise `Rejected` when the recipient is refused for good."""
        ...


class Rejected(Exception):
    """The receiving server refused the recipient with a 5xx reply: a hard bounce."""

    def __init__(self, code: int, reply: str) -> None:
        self.code, self.reply = code, reply
        super().__init__(f"{code} {reply}")


class TemporaryFailure(Exception):
    """The server kept answering 4xx (or dropping the line) after every retry."""


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
        self.domain = sender.from_address.rsplit("@", 1)[1]
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
            ("From", formataddr((sender.from_name, sender.from_address), charset="utf-8")),
            ("To", formataddr((outgoing.to_name or "", outgoing.to), charset="utf-8")),
            *([("Reply-To", sender.reply_to)] if sender.reply_to else []),
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
        data = head.encode() + b"\r\n" + parts + f"--{boundary}--\r\n".encode()
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
            raise ValueError(f"{url!r} is not an smtp:// or smtps:// URL with a host")
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
    """SMTP with a pool of persistent connections, retries on 4xx, 5xx recipients rejected.

    Thread-safe: each `send` borrows one connection from the pool, so as many sends run at
    once as the pool holds connections.
    """

    def __init__(
        self,
        url: str,
        builder: MimeBuilder,
        *,
        pool: int = 2,
        retries: int = 3,
        backoff: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = SmtpUrl.parse(url)
        self.builder = builder
        self.size = pool
        self.retries = retries
        self.backoff = backoff
        self.sleep = sleep
        self._idle: queue.LifoQueue[smtplib.SMTP] = queue.LifoQueue()

    def send(self, outgoing: Outgoing) -> None:
        data = self.builder.to_bytes(outgoing)
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                self.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                connection = self._acquire()
            except (smtplib.SMTPException, OSError) as exc:
                last = exc
                continue
            try:
                connection.sendmail(self.builder.sender.from_address, [outgoing.to], data)
            except smtplib.SMTPRecipientsRefused as exc:
                self._release(connection, reset=True)
                code, reply = exc.recipients.get(outgoing.to, (0, b""))
                if 500 <= code < 600:
                    raise Rejected(code, _text(reply)) from None
                last = exc
            except smtplib.SMTPResponseException as exc:
                self._release(connection, reset=True)
                if 500 <= exc.smtp_code < 600:
                    raise TemporaryFailure(
                        f"refused for good: {exc.smtp_code} {_text(exc.smtp_error)}"
                    ) from None
                last = exc
            except (smtplib.SMTPException, OSError) as exc:
                self._discard(connection)
                last = exc
            else:
                self._release(connection)
                return
        raise TemporaryFailure(f"gave up after {self.retries + 1} tries: {last}")

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


def _text(reply: bytes | str) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else reply
