"""Small helpers shared by tests."""

from __future__ import annotations

import email
import email.policy
import subprocess
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from sqlalchemy import select

from nurture.db import sessions
from nurture.feedback import Outcome, record_event, upsert_contact
from nurture.models import Contact, Message
from nurture.runtime import Runtime
from nurture.transport import OutboxTransport

#: A contact who fits the example project's profile (fit 55), in Paris.
PROFILE: dict[str, Any] = {
    "first_name": "Ana",
    "sector": "saas",
    "company_size": 300,
    "seniority": "vp",
    "timezone": "Europe/Paris",
}


def outbox(rt: Runtime) -> list[Path]:
    transport = rt.dispatcher.transport
    assert isinstance(transport, OutboxTransport)
    return sorted(transport.directory.glob("*.eml"))


def parse_eml(path: Path) -> EmailMessage:
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def add_contact(rt: Runtime, address: str, stage: str | None = "lead", **fields: Any) -> Outcome:
    with sessions(rt.database).begin() as session:
        return upsert_contact(session, rt.project, address, fields, rt.clock.now(), stage=stage)


def event(rt: Runtime, address: str, kind: str, **properties: Any) -> Outcome:
    with sessions(rt.database).begin() as session:
        return record_event(
            session, rt.project, address, kind, rt.clock.now(), properties=properties
        )


def contact(rt: Runtime, address: str) -> Contact:
    with sessions(rt.database)() as session:
        found = session.scalar(select(Contact).where(Contact.email == address))
        assert found is not None
        return found


def messages(rt: Runtime, address: str | None = None) -> list[Message]:
    with sessions(rt.database)() as session:
        query = select(Message).order_by(Message.sent_at, Message.id)
        if address:
            query = query.join(Contact, Contact.id == Message.contact_id).where(
                Contact.email == address
            )
        return list(session.scalars(query))


def write(root: Path, relative: str, text: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def local(instant: datetime, zone: str) -> datetime:
    from zoneinfo import ZoneInfo

    return instant.astimezone(ZoneInfo(zone))


def props(**values: Any) -> Mapping[str, Any]:
    return values


def with_transport(rt: Runtime, transport: Any) -> Any:
    """A second dispatcher on the same project and database, delivering through `transport`."""
    from nurture.engine import Dispatcher

    return Dispatcher(rt.project, rt.database, transport, rt.clock, rt.links)


def race(rt: Runtime, dispatchers: int = 4, batch_size: int = 25, ticks: int = 3) -> None:
    """Several dispatchers in threads, released at once, over the same due work."""
    import threading

    from nurture.engine import Dispatcher

    pool = [
        Dispatcher(
            rt.project,
            rt.database,
            rt.dispatcher.transport,
            rt.clock,
            rt.links,
            batch_size=batch_size,
        )
        for _ in range(dispatchers)
    ]
    barrier = threading.Barrier(dispatchers)
    errors: list[BaseException] = []

    def work(dispatcher: Dispatcher) -> None:
        try:
            barrier.wait()
            for _ in range(ticks):
                dispatcher.tick()
        except BaseException as exc:  # report any failure from the thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(d,)) for d in pool]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def sends_per(rt: Runtime) -> tuple[dict[int, int], dict[str | None, int], int]:
    """Emails per contact, per account, and how many (contact, content) pairs repeat."""
    from sqlalchemy import func

    with sessions(rt.database)() as session:
        per_contact = dict(
            session.execute(
                select(Message.contact_id, func.count()).group_by(Message.contact_id)
            ).all()
        )
        per_account = dict(
            session.execute(
                select(Contact.account, func.count())
                .select_from(Message)
                .join(Contact, Contact.id == Message.contact_id)
                .group_by(Contact.account)
            ).all()
        )
        repeats = session.execute(
            select(Message.contact_id, Message.content_id)
            .group_by(Message.contact_id, Message.content_id)
            .having(func.count() > 1)
        ).all()
    return per_contact, per_account, len(repeats)


def configure_handoff(project_dir: Path, url: str | None, *, end_nurture: bool = False) -> None:
    """The example project's hand-off, with a webhook to `url` and `end_nurture` as given."""
    settings = project_dir / "nurture.yaml"
    text = settings.read_text()
    text = text.replace(
        "  # webhook_url: https://crm.keel-retention.example/hooks/nurture\n",
        f"  webhook_url: {url}\n" if url else "",
    )
    text = text.replace("  end_nurture: false ", f"  end_nurture: {str(end_nurture).lower()} ")
    settings.write_text(text)


def wait_until(
    condition: Callable[[], bool],
    what: str,
    *,
    process: subprocess.Popen[Any] | None = None,
    timeout: float = 300,
) -> None:
    """Poll `condition` until it holds. Fails at once if `process` (the thing expected to make
    progress) has exited; the deadline is only a safety net, generous for a loaded machine."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"{what}: the process exited with {process.returncode}")
        assert time.monotonic() < deadline, f"still waiting for {what} after {timeout:.0f} s"
        time.sleep(0.1)
