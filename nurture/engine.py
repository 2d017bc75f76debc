"""The dispatch loop: claim due enrollments, plan, pace, render, record, hand to the transport.

The deciding is done by the pure modules (planner, pacing); this module only reads what they
need and writes what they decided. A batch's cap checks and its reservations (message rows
with unique keys) commit in one write transaction, so two dispatchers cannot both take the
last slot of a day, and a step can never produce two emails.
"""

from __future__ import annotations

import logging
import secrets
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Engine as Database
from sqlalchemy import Row, Table, bindparam, insert, select, update
from sqlalchemy.orm import Session

from nurture.clock import Clock
from nurture.config import DISQUALIFIED
from nurture.contacts import ContactLike, condition_variables, profile, zone_of
from nurture.db import is_sqlite, write_transaction
from nurture.feedback import ACTIVE, COMPLETED, EXITED, PAUSED, WAITING
from nurture.models import Contact, Deferral, Enrollment, Message, Suppression
from nurture.pacing import decide
from nurture.planner import Exhausted, Send, WaitUntil, plan_next
from nurture.project import Project
from nurture.tracking import Links
from nurture.transport import Outgoing, Transport

log = logging.getLogger(__name__)
_table = cast(Table, Enrollment.__table__)
#: One statement for every claimed enrollment: rows share their keys, so it runs as one batch.
_UPDATE_ENROLLMENT = (
    update(_table)
    .where(_table.c.id == bindparam("b_id"))
    .values(
        {
            name: bindparam(name)
            for name in (
                "status",
                "positions",
                "due_at",
                "last_sent_at",
                "hold_reason",
                "ended_at",
                "end_reason",
            )
        }
    )
)

#: Message states that count against caps: everything that may have reached the person.
COUNTED = ("queued", "sending", "sent", "unknown")


@dataclass
class Report:
    sent: int = 0
    deferred: int = 0
    waiting: int = 0
    ended: int = 0
    failed: int = 0
    deferral_reasons: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, other: Report) -> None:
        self.sent += other.sent
        self.deferred += other.deferred
        self.waiting += other.waiting
        self.ended += other.ended
        self.failed += other.failed
        for rule, count in other.deferral_reasons.items():
            self.deferral_reasons[rule] += count


@dataclass
class _Batch:
    """What one claimed batch decided, to be written in the same transaction."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    outgoing: list[Outgoing] = field(default_factory=list)
    enrollments: list[dict[str, Any]] = field(default_factory=list)
    deferrals: list[dict[str, Any]] = field(default_factory=list)
    report: Report = field(default_factory=Report)


class Dispatcher:
    def __init__(
        self,
        project: Project,
        database: Database,
        transport: Transport,
        clock: Clock,
        links: Links,
        *,
        batch_size: int | None = None,
    ) -> None:
        self.project = project
        self.database = database
        self.transport = transport
        self.clock = clock
        self.links = links
        self.batch_size = batch_size or project.settings.batch_size
        self.policy = project.settings.caps.policy()
        self.sender = project.settings.sender.model_dump()
        self.domain = project.settings.sender.from_address.rsplit("@", 1)[1]

    def tick(self) -> Report:
        """Work through everything due now, batch after batch."""
        report = Report()
        now = self.clock.now()
        while True:
            batch = self.dispatch_batch(now)
            report.add(batch)
            handled = batch.sent + batch.deferred + batch.waiting + batch.ended + batch.failed
            if handled < self.batch_size:
                return report

    def dispatch_batch(self, now: datetime) -> Report:
        with write_transaction(self.database) as session:
            batch = self._decide(session, now)
            if batch.messages:
                session.execute(insert(Message), batch.messages)
            if batch.deferrals:
                session.execute(insert(Deferral), batch.deferrals)
            if batch.enrollments:
                session.execute(_UPDATE_ENROLLMENT, batch.enrollments)
        self._deliver(batch)
        return batch.report

    def _decide(self, session: Session, now: datetime) -> _Batch:
        claim = (
            select(
                Enrollment.id,
                Enrollment.workflow,
                Enrollment.contact_id,
                Enrollment.positions,
                Enrollment.entered_at,
                Enrollment.last_sent_at,
            )
            .where(Enrollment.status == ACTIVE, Enrollment.due_at <= now)
            .order_by(Enrollment.due_at, Enrollment.id)
            .limit(self.batch_size)
        )
        if not is_sqlite(self.database):
            claim = claim.with_for_update(skip_locked=True)
        enrollments = session.execute(claim).all()
        batch = _Batch()
        if not enrollments:
            return batch
        contact_ids = sorted({e.contact_id for e in enrollments})
        lock = select(*Contact.__table__.columns).where(Contact.id.in_(contact_ids))
        lock = lock.order_by(Contact.id)
        if not is_sqlite(self.database):
            lock = lock.with_for_update()
        contacts = {c.id: c for c in session.execute(lock)}
        emails = [c.email for c in contacts.values()]
        suppressed = {
            email: reason
            for email, reason in session.execute(
                select(Suppression.email, Suppression.reason).where(Suppression.email.in_(emails))
            )
        }
        sent_times: dict[int, list[datetime]] = defaultdict(list)
        received: dict[int, set[str]] = defaultdict(set)
        history = session.execute(
            select(Message.contact_id, Message.content_id, Message.sent_at)
            .where(Message.contact_id.in_(contact_ids), Message.status.in_(COUNTED))
            .order_by(Message.sent_at)
        )
        for contact_id, content_id, sent_at in history:
            sent_times[contact_id].append(sent_at)
            received[contact_id].add(content_id)
        for enrollment in enrollments:
            contact = contacts[enrollment.contact_id]
            self._step(
                enrollment,
                contact,
                suppressed.get(contact.email),
                sent_times[contact.id],
                received[contact.id],
                now,
                batch,
            )
        return batch

    def _step(
        self,
        enrollment: Row[Any],
        contact: Row[Any],
        suppression: str | None,
        sent: list[datetime],
        received: set[str],
        now: datetime,
        batch: _Batch,
    ) -> None:
        settings = self.project.settings
        workflow = self.project.workflows.get(enrollment.workflow)
        row: dict[str, Any] = {
            "b_id": enrollment.id,
            "status": ACTIVE,
            "positions": enrollment.positions,
            "due_at": None,
            "last_sent_at": enrollment.last_sent_at,
            "hold_reason": None,
            "ended_at": None,
            "end_reason": None,
        }
        batch.enrollments.append(row)
        end = None
        if workflow is None:
            end = (EXITED, f"workflow {enrollment.workflow} no longer exists")
        elif suppression is not None:
            end = (EXITED, f"suppressed: {suppression}")
        elif contact.stage == DISQUALIFIED:
            end = (EXITED, "disqualified")
        elif contact.stage in workflow.goals.stages:
            end = (COMPLETED, f"goal: reached stage {contact.stage}")
        if end is not None:
            row.update(status=end[0], end_reason=end[1], ended_at=now, due_at=None)
            batch.report.ended += 1
            return
        assert workflow is not None
        if contact.paused:
            row.update(status=PAUSED, due_at=None, hold_reason="contact paused")
            batch.report.waiting += 1
            return
        phase = settings.phase_of(contact.stage)
        person = cast(ContactLike, contact)
        fields = profile(person, settings)
        variables = condition_variables(person, settings, now, fields=fields)
        since = enrollment.last_sent_at or enrollment.entered_at
        plan = plan_next(
            workflow,
            phase,
            enrollment.positions,
            received,
            since=since,
            now=now,
            variables=variables,
        )
        if isinstance(plan, Exhausted):
            row.update(
                status=WAITING, due_at=None, hold_reason=plan.reason, positions=plan.positions
            )
            batch.report.waiting += 1
            return
        if isinstance(plan, WaitUntil):
            row.update(due_at=plan.until, positions=plan.positions, hold_reason=None)
            batch.report.waiting += 1
            return
        decision = decide(now=now, sent=sent, policy=self.policy, zone=zone_of(person, settings))
        if not decision.send_now:
            held = dict(plan.positions)
            held[plan.phase] -= 1
            rules = ",".join(h.rule for h in decision.holds)
            row.update(positions=held, hold_reason=decision.reason, due_at=decision.send_at)
            if decision.send_at is None:
                row.update(status=WAITING)
            batch.deferrals.append(
                {
                    "enrollment_id": enrollment.id,
                    "contact_id": contact.id,
                    "content_id": plan.step.content,
                    "at": now,
                    "until": decision.send_at,
                    "rules": rules,
                    "reason": decision.reason,
                }
            )
            batch.report.deferred += 1
            for hold in decision.holds:
                batch.report.deferral_reasons[hold.rule] += 1
            return
        self._reserve(enrollment, contact, fields, workflow.id, plan, now, batch, row)
        sent.append(now)
        received.add(plan.step.content)
        following = plan_next(
            workflow, phase, plan.positions, received, since=now, now=now, variables=variables
        )
        if isinstance(following, Exhausted):
            row.update(status=WAITING, due_at=None, hold_reason=following.reason)
        else:
            row.update(due_at=following.until if isinstance(following, WaitUntil) else now)

    def _reserve(
        self,
        enrollment: Row[Any],
        contact: Row[Any],
        fields: dict[str, Any],
        workflow_id: str,
        plan: Send,
        now: datetime,
        batch: _Batch,
        row: dict[str, Any],
    ) -> None:
        piece = self.project.content[plan.step.content]
        key = secrets.token_urlsafe(12)
        unsubscribe_url = self.links.unsubscribe_url(key)
        rendered = piece.render(
            {
                "contact": fields,
                "sender": self.sender,
                "unsubscribe_url": unsubscribe_url,
            }
        )
        batch.messages.append(
            {
                "enrollment_id": enrollment.id,
                "contact_id": contact.id,
                "workflow": workflow_id,
                "step_key": plan.step.content,
                "content_id": piece.id,
                "phase": piece.phase,
                "stage_at_send": contact.stage,
                "subject": rendered.subject,
                "rfc_message_id": f"<{key}@{self.domain}>",
                "status": "sending",
                "created_at": now,
                "sent_at": now,
            }
        )
        batch.outgoing.append(
            Outgoing(
                key=key,
                to=contact.email,
                to_name=_full_name(contact),
                subject=rendered.subject,
                html=rendered.html,
                text=rendered.text,
                unsubscribe_url=unsubscribe_url,
                sent_at=now,
            )
        )
        row.update(positions=plan.positions, last_sent_at=now, hold_reason=None)
        batch.report.sent += 1

    def _deliver(self, batch: _Batch) -> None:
        """Hand each reserved email to the transport, then record how it went."""
        if not batch.outgoing:
            return
        delivered: list[str] = []
        failures: list[dict[str, Any]] = []
        for outgoing in batch.outgoing:
            message_id = f"<{outgoing.key}@{self.domain}>"
            try:
                self.transport.send(outgoing)
            except Exception as exc:  # a transport error fails this message, not the batch
                log.warning("sending %s to %s failed: %s", message_id, outgoing.to, exc)
                failures.append({"mid": message_id, "error": str(exc)[:1000]})
            else:
                delivered.append(message_id)
        with write_transaction(self.database) as session:
            if delivered:
                session.execute(
                    update(Message)
                    .where(Message.rfc_message_id.in_(delivered))
                    .values(status="sent")
                )
            for failure in failures:
                session.execute(
                    update(Message)
                    .where(Message.rfc_message_id == failure["mid"])
                    .values(status="failed", error=failure["error"])
                )
        batch.report.sent -= len(failures)
        batch.report.failed += len(failures)


def _full_name(contact: Row[Any]) -> str | None:
    name = " ".join(part for part in (contact.first_name, contact.last_name) if part)
    return name or None
