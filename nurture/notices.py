"""System emails (opt-in confirmations, notes to a contact's owner): queued in the same
transaction as what caused them, delivered by the periodic job through the transport.

They are not marketing: no caps, no unsubscribe header, no tracking.
"""

from __future__ import annotations

import html
import secrets
from datetime import datetime, timedelta

from sqlalchemy import Engine as Database
from sqlalchemy.orm import Session

from nurture.db import claim_due, write_transaction
from nurture.models import FAILED, QUEUED, SENT, Notice
from nurture.transport import Outgoing, Rejected, Transport

LEASE = timedelta(minutes=5)
TRIES = 6
BACKOFF = timedelta(minutes=1)


def queue_notice(
    session: Session,
    kind: str,
    to: str,
    subject: str,
    text: str,
    now: datetime,
    contact_id: int | None = None,
) -> Notice:
    notice = Notice(
        contact_id=contact_id,
        kind=kind,
        to=to,
        subject=subject,
        text=text,
        created_at=now,
        status=QUEUED,
        attempts=0,
        next_attempt_at=now,
    )
    session.add(notice)
    return notice


def deliver_notices(
    database: Database, transport: Transport, now: datetime, limit: int = 100
) -> int:
    """Send the due notices; how many went. A refused address fails at once; anything else
    is tried again with a doubling wait, `TRIES` times in all."""
    with write_transaction(database) as session:
        due = [
            (n.id, n.to, n.subject, n.text)
            for n in claim_due(session, Notice, QUEUED, now, LEASE, limit)
        ]
    sent = 0
    for notice_id, to, subject, text in due:
        outgoing = Outgoing(
            key=f"notice.{notice_id}.{secrets.token_hex(6)}",
            to=to,
            to_name=None,
            subject=subject,
            html="<p>" + html.escape(text).replace("\n", "<br>\n") + "</p>",
            text=text,
            unsubscribe_url=None,
            sent_at=now,
        )
        error: str | None = None
        final = False
        try:
            transport.send(outgoing)
        except Rejected as exc:
            error, final = str(exc), True
        except Exception as exc:  # any other failure is retried, and recorded
            error = f"{type(exc).__name__}: {exc}"
        with write_transaction(database) as session:
            notice = session.get_one(Notice, notice_id)
            notice.attempts += 1
            if error is None:
                notice.status, notice.sent_at, notice.next_attempt_at = SENT, now, None
                notice.error = None
                sent += 1
            elif final or notice.attempts >= TRIES:
                notice.status, notice.error, notice.next_attempt_at = FAILED, error, None
            else:
                notice.error = error
                notice.next_attempt_at = now + BACKOFF * 2 ** (notice.attempts - 1)
    return sent
