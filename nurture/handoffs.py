"""The sales hand-off webhook: a signed JSON POST per hand-off, retried with backoff.

Signature (Stripe's scheme): `X-Nurture-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of
"<t>.<body>" with the shared secret>`. `X-Nurture-Delivery` carries the hand-off id, the same
on every retry, so a receiver can drop a repeat.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine as Database
from sqlalchemy import select

from nurture import environment, metrics
from nurture.config import Handoff as HandoffSettings
from nurture.contacts import current_engagement, profile
from nurture.db import claim_due, release_claimed, write_transaction
from nurture.feedback import DELIVERED, GAVE_UP, PENDING
from nurture.models import Contact, Event, Handoff, HandoffAttempt
from nurture.project import Project

SECRET_ENV = environment.HANDOFF_SECRET
LEASE = timedelta(minutes=2)
#: (status code or None, error or None): what one POST gave.
Post = Callable[[str, bytes, dict[str, str]], tuple[int | None, str | None]]


def handoff_secret(settings: HandoffSettings | None) -> str | None:
    if settings is None:
        return None
    return environment.read(SECRET_ENV) or settings.webhook_secret


def sign(secret: str, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, header: str, body: bytes, now: datetime, tolerance: int = 300) -> bool:
    """What a receiver does: the signature matches and is no older than `tolerance` s."""
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now.timestamp() - timestamp) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, body, timestamp), f"t={timestamp},v1={parts.get('v1')}")


def http_post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int | None, str | None]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, None
    except urllib.error.HTTPError as exc:
        return exc.code, f"HTTP {exc.code} {exc.reason}"
    except (urllib.error.URLError, OSError) as exc:
        return None, str(getattr(exc, "reason", exc))[:500]


def payload(
    project: Project, handoff: Handoff, contact: Contact, events: list[Event], now: datetime
) -> dict[str, Any]:
    return {
        "type": "contact.handed_off",
        "handoff_id": handoff.id,
        "at": handoff.created_at.isoformat(),
        "stage": handoff.stage,
        "reason": handoff.reason,
        "contact": {
            **profile(contact, project.settings),
            "stage": contact.stage,
            "fit": contact.fit,
            "engagement": round(current_engagement(contact, project.settings, now), 2),
        },
        "recent_events": [
            {"kind": e.kind, "at": e.occurred_at.isoformat(), "properties": e.properties}
            for e in events
        ],
    }


def deliver_handoffs(
    project: Project,
    database: Database,
    now: datetime,
    post: Post = http_post,
    limit: int = 50,
    stop: threading.Event | None = None,
) -> tuple[int, int]:
    """POST the due hand-offs; (delivered, failed attempts). Each attempt is recorded. A
    `stop` is honoured between hand-offs: the ones not tried are due again at once."""
    settings = project.settings.handoff
    secret = handoff_secret(settings)
    if settings is None or settings.webhook_url is None or secret is None:
        return 0, 0
    with write_transaction(database) as session:
        due = claim_due(session, Handoff, PENDING, now, LEASE, limit)
        bodies = []
        for handoff in due:
            contact = session.get_one(Contact, handoff.contact_id)
            events = list(
                session.scalars(
                    select(Event)
                    .where(Event.contact_id == contact.id)
                    .order_by(Event.occurred_at.desc(), Event.id.desc())
                    .limit(10)
                )
            )
            data = payload(project, handoff, contact, events, now)
            bodies.append((handoff.id, json.dumps(data, default=str).encode()))
    delivered = failed = 0
    for index, (handoff_id, body) in enumerate(bodies):
        if stop is not None and stop.is_set():
            release_claimed(database, Handoff, [b[0] for b in bodies[index:]], now)
            break
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "nurture-handoff/1",
            "X-Nurture-Delivery": str(handoff_id),
            "X-Nurture-Signature": sign(secret, body, int(now.timestamp())),
        }
        code, error = post(settings.webhook_url, body, headers)
        ok = code is not None and 200 <= code < 300
        metrics.count_handoff(ok)
        with write_transaction(database) as session:
            handoff = session.get_one(Handoff, handoff_id)
            handoff.attempts += 1
            session.add(
                HandoffAttempt(handoff_id=handoff_id, at=now, status_code=code, error=error)
            )
            if ok:
                handoff.status, handoff.delivered_at, handoff.next_attempt_at = DELIVERED, now, None
                delivered += 1
                continue
            failed += 1
            if handoff.attempts > settings.retries:
                handoff.status, handoff.next_attempt_at = GAVE_UP, None
            else:
                handoff.next_attempt_at = now + settings.retry_backoff * 2 ** (handoff.attempts - 1)
    return delivered, failed
