"""A real SMTP server (aiosmtpd) on loopback that records what it receives."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller


@dataclass
class Recorder:
    """aiosmtpd handler: keeps every message; refuses `nobody*` for good, `later*` once at
    RCPT (and drops the line for `dropped*` once there), `deferred*` once after the message (451 to the final dot: not taken). It answers
    the final dot after `answer_delay` seconds (the message is kept all the same)."""

    messages: list[tuple[list[str], bytes]] = field(default_factory=list)
    attempts: Counter[str] = field(default_factory=Counter)
    bodies: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    answer_delay: float = 0.0

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:  # fmt: skip
        with self.lock:
            self.attempts[address] += 1
            tries = self.attempts[address]
        if address.startswith("nobody"):
            return "550 5.1.1 no such user"
        if address.startswith("later") and tries == 1:
            return "451 4.3.0 try again later"
        if address.startswith("dropped") and tries == 1:
            server.transport.close()  # the line drops before the message
            return "421 4.4.2 closing"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            for address in envelope.rcpt_tos:
                self.bodies[address] += 1
            if any(a.startswith("deferred") and self.bodies[a] == 1 for a in envelope.rcpt_tos):
                return "451 4.3.0 not now"
            self.messages.append((list(envelope.rcpt_tos), bytes(envelope.original_content)))
        if self.answer_delay:
            await asyncio.sleep(self.answer_delay)
        return "250 Message accepted"

    def received(self) -> Counter[str]:
        """How many copies each address got."""
        with self.lock:
            return Counter(address for rcpt, _ in self.messages for address in rcpt)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class SmtpServer:
    def __init__(self, port: int = 0, *, smtputf8: bool = False, answer_delay: float = 0) -> None:
        self.recorder = Recorder(answer_delay=answer_delay)
        self.controller = Controller(
            self.recorder,
            hostname="127.0.0.1",
            port=port or free_port(),
            enable_SMTPUTF8=smtputf8,
        )

    def __enter__(self) -> SmtpServer:
        self.controller.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.controller.stop()

    @property
    def port(self) -> int:
        return int(self.controller.port)

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}?tls=none"
