"""Delivery: MIME building, and transports (the outbox folder by default)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Protocol

from nurture.config import Sender


@dataclass(frozen=True)
class Outgoing:
    """One rendered email, ready to hand to a transport."""

    key: str
    to: str
    to_name: str | None
    subject: str
    html: str
    text: str
    unsubscribe_url: str
    sent_at: datetime


class Transport(Protocol):
    def send(self, outgoing: Outgoing) -> None: ...


def message_id(key: str, sender: Sender) -> str:
    return f"<{key}@{sender.from_address.rsplit('@', 1)[1]}>"


def build_mime(outgoing: Outgoing, sender: Sender) -> EmailMessage:
    """RFC 5322 multipart/alternative with RFC 8058 one-click unsubscribe headers."""
    domain = sender.from_address.rsplit("@", 1)[1]
    mime = EmailMessage()
    mime["From"] = Address(sender.from_name, addr_spec=sender.from_address)
    mime["To"] = Address(outgoing.to_name or "", addr_spec=outgoing.to)
    if sender.reply_to:
        mime["Reply-To"] = sender.reply_to
    mime["Subject"] = outgoing.subject
    mime["Date"] = format_datetime(outgoing.sent_at)
    mime["Message-ID"] = message_id(outgoing.key, sender)
    mailto = f"mailto:unsubscribe@{domain}?subject=unsubscribe-{outgoing.key}"
    mime["List-Unsubscribe"] = f"<{outgoing.unsubscribe_url}>, <{mailto}>"
    mime["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    mime.set_content(outgoing.text, subtype="plain", charset="utf-8")
    mime.add_alternative(outgoing.html, subtype="html", charset="utf-8")
    return mime


class OutboxTransport:
    """Writes each email as an .eml file: the default, to read before any real sending."""

    def __init__(self, directory: Path, sender: Sender) -> None:
        self.directory = directory
        self.sender = sender
        directory.mkdir(parents=True, exist_ok=True)

    def send(self, outgoing: Outgoing) -> None:
        data = bytes(build_mime(outgoing, self.sender))
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
