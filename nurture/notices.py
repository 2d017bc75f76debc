"""System emails (opt-in confirmations, notes to a contact's owner): queued in the same
transaction as what caused them, delivered by the periodic job through the transport.

They are not marketing: no caps, no unsubscribe header, no tracking.
"""

from __future__ import annotations

import html
import secrets
import threading
from datetime import datetime, timedelta

from sqlalchemy import Engine as Database
from sqlalchemy.orm import Session

from nurture.db import claim_due, release_claimed, write_transaction
from nurture.models import FAILED, QUEUED, SENT, UNKNOWN, Notice
from nurture.transport import (
    DeliveryUnknown,
    Interrupted,
    Outgoing,
    Refused,
    Rejected,
    Transport,
)

LEASE = timedelta(minutes=5)
TRIES = 6
BACKOFF = timedelta(minutes=1)
#: Opt-in confirmations to one address for one form: none within this long of the last...
CONFIRM_GAP = timedelta(minutes=10)
#: ...and at most this many a day.
CONFIRM_PER_DAY = 3


def may_confirm_again(earlier: list[datetime], now: datetime) -> bool:
    """Whether one more opt-in confirmation may go to an address for a form, which had one
    at each of `earlier`: a form posted again and again (a double click, a bot, someone
    signing up another person) must not become a stream of emails to that address."""
    recent = [at for at in earlier if at > now - timedelta(days=1)]
    return len(recent) < CONFIRM_PER_DAY and all(at <= now - CONFIRM_GAP for at in recent)


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
    database: Database,
    transport: Transport,
    now: datetime,
    limit: int = 100,
    stop: threading.Event | None = None,
) -> int:
    """Send the due notices; how many went. A refused address fails at once; one handed
    over without an answer is `unknown`, never sent again; anything else is tried again
    with a doubling wait, `TRIES` times in all. A `stop` is honoured between notices: the
    ones not tried are due again at once, for the next run."""
    with write_transaction(database) as session:
        due = [
            (n.id, n.to, n.subject, n.text)
            for n in claim_due(session, Notice, QUEUED, now, LEASE, limit)
        ]
    sent = 0
    for index, (notice_id, to, subject, text) in enumerate(due):
        if stop is not None and stop.is_set():
            release_claimed(database, Notice, [n[0] for n in due[index:]], now)
            break
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
        final: str | None = None
        try:
            transport.send(outgoing)
        except Interrupted:  # never handed over: due again at once, for the next run
            release_claimed(database, Notice, [n[0] for n in due[index:]], now)
            break
        except (Rejected, Refused) as exc:
            error, final = str(exc), FAILED
        except DeliveryUnknown as exc:
            error, final = str(exc), UNKNOWN
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
                notice.status, notice.error, notice.next_attempt_at = final or FAILED, error, None
            else:
                notice.error = error
                notice.next_attempt_at = now + BACKOFF * 2 ** (notice.attempts - 1)
    return sent
