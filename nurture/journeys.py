"""Doing a journey's action steps, in the dispatcher's transaction, through the one path
each thing already has: stage moves and field changes through nurture/feedback.py, notes
to the owner or a team address through nurture/notices.py, webhooks signed and retried as
the sales hand-off's (nurture/handoffs.py)."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine as Database
from sqlalchemy.orm import Session

from nurture.contacts import profile
from nurture.db import claim_due, release_claimed, write_transaction
from nurture.feedback import DELIVERED, GAVE_UP, PENDING, move_stage, upsert_contact
from nurture.handoffs import LEASE, Post, handoff_secret, http_post, sign
from nurture.models import Contact, JourneyStep
from nurture.notices import queue_notice
from nurture.project import Project
from nurture.workflows import ActionStep, MoveStage, Notify, SetField, Webhook


@dataclass
class Done:
    """What an action did, in words, and what its journey step row should hold."""

    detail: str
    values: dict[str, Any] = field(default_factory=dict)


def perform(
    session: Session, project: Project, contact: Any, step: ActionStep, now: datetime
) -> Done:
    """Do `step` for `contact`; say what was done (kept with the step)."""
    action = step.action
    if isinstance(action, Webhook):
        return Done(
            f"webhook to {action.url}",
            {"url": action.url, "status": PENDING, "next_attempt_at": now},
        )
    if isinstance(action, Notify):
        to = contact.owner if action.to == "owner" else action.to
        if not to:
            return Done("note not sent: the contact has no owner")
        name = " ".join(p for p in (contact.first_name, contact.last_name) if p) or contact.email
        queue_notice(
            session,
            "journey",
            to,
            action.subject,
            f"{name} <{contact.email}> reached step {step.id} of a workflow.\n"
            f"Stage {contact.stage}, fit {contact.fit:g}.\n",
            now,
            contact.id,
        )
        return Done(f"note to {to}: {action.subject}")
    if isinstance(action, SetField):
        try:
            with session.begin_nested():
                upsert_contact(session, project, contact.email, {action.field: action.value}, now)
        except ValueError as exc:
            return Done(f"{action.field} not set: {exc}")
        return Done(f"set {action.field} = {action.value!r}")
    assert isinstance(action, MoveStage)
    with session.begin_nested():
        move_stage(session, project, contact.email, action.to, action.reason, now, by_hand=False)
    return Done(f"stage -> {action.to}: {action.reason}")


def deliver_webhooks(
    project: Project,
    database: Database,
    now: datetime,
    post: Post = http_post,
    limit: int = 50,
    stop: threading.Event | None = None,
) -> tuple[int, int]:
    """POST the due webhook actions; (delivered, failed attempts). Signed as the hand-off
    (`X-Nurture-Delivery: journey-<id>` the same on every retry), retried with the
    hand-off's `retries` and `retry_backoff`."""
    settings = project.settings.handoff
    secret = handoff_secret(settings)
    with write_transaction(database) as session:
        due = claim_due(session, JourneyStep, PENDING, now, LEASE, limit)
        if due and secret is None:
            for step in due:
                step.status, step.next_attempt_at = GAVE_UP, None
                step.detail = f"webhook to {step.url}: not sent, no secret to sign with"
            return 0, 0
        bodies = []
        for step in due:
            contact = session.get_one(Contact, step.contact_id)
            data = {
                "kind": "journey_step",
                "workflow": step.workflow,
                "step": step.step_key,
                "at": step.at.isoformat(),
                "contact": {
                    "email": contact.email,
                    "stage": contact.stage,
                    "fit": contact.fit,
                    **profile(contact, project.settings),
                },
            }
            bodies.append((step.id, step.url or "", json.dumps(data, default=str).encode()))
    delivered = failed = 0
    retries = settings.retries if settings else 8
    for index, (step_id, url, body) in enumerate(bodies):
        if stop is not None and stop.is_set():
            release_claimed(database, JourneyStep, [b[0] for b in bodies[index:]], now)
            break
        assert secret is not None
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "nurture-journey/1",
            "X-Nurture-Delivery": f"journey-{step_id}",
            "X-Nurture-Signature": sign(secret, body, int(now.timestamp())),
        }
        code, error = post(url, body, headers)
        ok = code is not None and 200 <= code < 300
        with write_transaction(database) as session:
            step = session.get_one(JourneyStep, step_id)
            step.attempts += 1
            if ok:
                step.status, step.next_attempt_at = DELIVERED, None
                step.detail = f"webhook to {url}: delivered ({code})"
                delivered += 1
                continue
            failed += 1
            step.detail = f"webhook to {url}: {code or error}"[:1000]
            if step.attempts > retries:
                step.status, step.next_attempt_at = GAVE_UP, None
            elif settings is not None:
                step.next_attempt_at = now + settings.retry_backoff * 2 ** (step.attempts - 1)
    return delivered, failed
