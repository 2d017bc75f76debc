"""The dispatch loop: claim due enrollments, plan, pace, render, record, hand to the transport.

The deciding is done by the pure modules (planner, pacing); this module only reads what they
need and writes what they decided. A batch's cap checks and its reservations (message rows
with unique keys) commit in one write transaction, so two dispatchers cannot both take the
last slot of a day, and a step can never produce two emails.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import zlib
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, Row, Table, bindparam, func, insert, select, update
from sqlalchemy import Engine as Database
from sqlalchemy.orm import Session

from nurture.clock import Clock
from nurture.config import CapsOverride
from nurture.contacts import ContactLike, condition_variables, profile, zone_of
from nurture.db import is_sqlite, write_transaction
from nurture.decisions import ACTIVE, WAITING, Defer, End, Idle, Later, Situation, next_action
from nurture.feedback import suppress
from nurture.models import (
    FAILED,
    QUEUED,
    SENDING,
    SENT,
    UNKNOWN,
    Contact,
    Deferral,
    Enrollment,
    Message,
    Suppression,
)
from nurture.pacing import Policy
from nurture.planner import Send
from nurture.project import Project
from nurture.tracking import Links
from nurture.transport import Outgoing, Rejected, Transport

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
COUNTED = (QUEUED, SENDING, SENT, UNKNOWN)
HARD_BOUNCE = "hard bounce:"
#: Messages marked `sending` together, per connection: fewer commits, and at most this many
#: per connection become `unknown` if the process dies mid-chunk.
_IN_FLIGHT_PER_CONNECTION = 8


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
class History:
    """Past sends the caps read: per contact, per account, sender-wide; and suppressions."""

    sent: dict[int, list[datetime]] = field(default_factory=lambda: defaultdict(list))
    received: dict[int, set[str]] = field(default_factory=lambda: defaultdict(set))
    account: dict[str, list[datetime]] = field(default_factory=lambda: defaultdict(list))
    everyone: list[datetime] = field(default_factory=list)
    suppressed: dict[str, str] = field(default_factory=dict)


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
        self.sender = project.settings.sender.model_dump()
        self.domain = project.settings.sender.from_address.rsplit("@", 1)[1]
        self._policies: dict[tuple[str, str], Policy] = {}
        self._executor: ThreadPoolExecutor | None = None
        self.stopping = threading.Event()

    def tick(self) -> Report:
        """Work through everything due now, batch after batch, until `stop()` is called
        (then the batch in hand is finished, and no other is started)."""
        report = Report()
        now = self.clock.now()
        while not self.stopping.is_set():
            batch = self.dispatch_batch(now)
            report.add(batch)
            handled = batch.sent + batch.deferred + batch.waiting + batch.ended + batch.failed
            if handled < self.batch_size:
                break
        return report

    def stop(self) -> None:
        self.stopping.set()

    def wake_waiting(self) -> int:
        """Put every waiting enrollment back in line, to be planned again.

        Run at start-up: workflows and content may have changed since the last run, so a
        person whose track was used up may now have something new. Those with still nothing
        to receive go back to waiting at their next turn.
        """
        now = self.clock.now()
        with write_transaction(self.database) as session:
            result = session.execute(
                update(Enrollment)
                .where(Enrollment.status == WAITING)
                .values(status=ACTIVE, due_at=now, hold_reason=None)
            )
        return int(getattr(result, "rowcount", 0) or 0)

    def dispatch_batch(self, now: datetime) -> Report:
        batch = self.reserve(now)
        self._deliver(batch)
        return batch.report

    def reserve(self, now: datetime) -> _Batch:
        """The claim transaction: decide a batch and commit its messages as `queued`."""
        with write_transaction(self.database) as session:
            batch = self._decide(session, now)
            if batch.messages:
                session.execute(insert(Message), batch.messages)
            if batch.deferrals:
                session.execute(insert(Deferral), batch.deferrals)
            if batch.enrollments:
                session.execute(_UPDATE_ENROLLMENT, batch.enrollments)
        return batch

    def policy(self, workflow: str, contact_caps: dict[str, Any] | None) -> Policy:
        """Project caps, then the workflow's, then the contact's own (cached)."""
        key = (workflow, json.dumps(contact_caps, sort_keys=True) if contact_caps else "")
        if key not in self._policies:
            found = self.project.workflows.get(workflow)
            override = CapsOverride.model_validate(contact_caps) if contact_caps else None
            caps = self.project.settings.caps.merged(found.caps if found else None, override)
            self._policies[key] = caps.policy()
        return self._policies[key]

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
        history = self.history(session, now, contacts)
        for enrollment in enrollments:
            contact = contacts[enrollment.contact_id]
            self._step(enrollment, contact, history, now, batch)
        return batch

    def history(
        self, session: Session, now: datetime, contacts: dict[int, Row[Any]], *, lock: bool = True
    ) -> History:
        """What the caps need, read in the claiming transaction (after taking the locks)."""
        caps = self.project.settings.caps
        history = History()
        accounts = sorted({c.account for c in contacts.values() if c.account})
        if lock and not is_sqlite(self.database):
            # Two workers holding different people of one account, or sharing the sender's
            # rate, must not both take the last slot: serialize on the account and the rate.
            keys = [f"account:{a}" for a in accounts] if caps.account_per_day else []
            if caps.rate_per_minute or caps.rate_per_hour:
                keys.append("sender-rate")
            for key in sorted(keys):
                session.execute(select(func.pg_advisory_xact_lock(func.hashtext(key))))
        emails = [c.email for c in contacts.values()]
        for email, reason in session.execute(
            select(Suppression.email, Suppression.reason).where(Suppression.email.in_(emails))
        ):
            history.suppressed[email] = reason
        for contact_id, content_id, sent_at in session.execute(
            select(Message.contact_id, Message.content_id, Message.sent_at)
            .where(Message.contact_id.in_(list(contacts)), Message.status.in_(COUNTED))
            .order_by(Message.sent_at)
        ):
            history.sent[contact_id].append(sent_at)
            history.received[contact_id].add(content_id)
        if caps.account_per_day and accounts:
            # Two steps, so each uses its index: people of the accounts, then their recent sends.
            members = dict(
                session.execute(
                    select(Contact.id, Contact.account).where(Contact.account.in_(accounts))
                ).all()
            )
            for contact_id, sent_at in session.execute(
                select(Message.contact_id, Message.sent_at)
                .where(
                    Message.contact_id.in_(list(members)),
                    Message.sent_at >= now - timedelta(days=2),
                    Message.status.in_(COUNTED),
                )
                .order_by(Message.sent_at)
            ):
                history.account[members[contact_id] or ""].append(sent_at)
        if caps.rate_per_minute or caps.rate_per_hour:
            history.everyone.extend(
                session.scalars(
                    select(Message.sent_at)
                    .where(Message.status.in_(COUNTED), Message.sent_at >= now - timedelta(hours=1))
                    .order_by(Message.sent_at)
                )
            )
        return history

    def situation(
        self, enrollment: Row[Any], contact: Row[Any], history: History, now: datetime
    ) -> Situation:
        """What the pure decision needs about one claimed enrollment."""
        settings = self.project.settings
        person = cast(ContactLike, contact)
        return Situation(
            workflow_id=enrollment.workflow,
            workflow=self.project.workflows.get(enrollment.workflow),
            stage=contact.stage,
            phase=settings.phase_of(contact.stage),
            paused=contact.paused,
            suppression=history.suppressed.get(contact.email),
            positions=enrollment.positions,
            since=enrollment.last_sent_at or enrollment.entered_at,
            received=history.received[contact.id],
            sent=history.sent[contact.id],
            variables=condition_variables(person, settings, now),
            policy=self.policy(enrollment.workflow, contact.caps),
            zone=zone_of(person, settings),
            last_engaged=contact.last_engaged_at,
            held_until=contact.held_until,
            hold_reason=contact.hold_reason,
            account_sent=history.account[contact.account] if contact.account else [],
            global_sent=history.everyone,
        )

    def _step(
        self,
        enrollment: Row[Any],
        contact: Row[Any],
        history: History,
        now: datetime,
        batch: _Batch,
    ) -> None:
        situation = self.situation(enrollment, contact, history, now)
        action = next_action(situation, now)
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
        report = batch.report
        if isinstance(action, End):
            row.update(status=action.status, end_reason=action.reason, ended_at=now)
            report.ended += 1
        elif isinstance(action, Idle):
            row.update(
                status=action.status,
                hold_reason=action.reason,
                positions=action.positions,
                due_at=action.until,
            )
            report.waiting += 1
        elif isinstance(action, Later):
            row.update(due_at=action.until, positions=action.positions)
            report.waiting += 1
        elif isinstance(action, Defer):
            decision = action.decision
            row.update(
                due_at=decision.send_at, hold_reason=decision.reason, positions=action.positions
            )
            batch.deferrals.append(
                {
                    "enrollment_id": enrollment.id,
                    "contact_id": contact.id,
                    "content_id": action.step.content,
                    "at": now,
                    "until": decision.send_at,
                    "rules": ",".join(h.rule for h in decision.holds),
                    "reason": decision.reason,
                }
            )
            report.deferred += 1
            for hold in decision.holds:
                report.deferral_reasons[hold.rule] += 1
        else:
            self._reserve(
                enrollment, contact, situation.variables["contact"], action.plan, now, batch
            )
            row.update(
                positions=action.plan.positions,
                last_sent_at=now,
                due_at=action.next_due,
                hold_reason=action.next_reason,
            )
            if action.next_due is None:
                row.update(status=WAITING)
            for times in (situation.sent, situation.account_sent, situation.global_sent):
                cast(list[datetime], times).append(now)
            history.received[contact.id].add(action.plan.step.content)

    def _reserve(
        self,
        enrollment: Row[Any],
        contact: Row[Any],
        fields: dict[str, Any],
        plan: Send,
        now: datetime,
        batch: _Batch,
    ) -> None:
        key = secrets.token_urlsafe(12)
        piece = self.project.content[plan.step.content]
        variant = zlib.crc32(key.encode()) % piece.variants if piece.variants > 1 else None
        outgoing = self._outgoing(contact, fields, piece.id, key, now, variant)
        batch.messages.append(
            {
                "enrollment_id": enrollment.id,
                "contact_id": contact.id,
                "workflow": enrollment.workflow,
                "step_key": plan.step.content,
                "content_id": piece.id,
                "phase": piece.phase,
                "stage_at_send": contact.stage,
                "subject": outgoing.subject,
                "subject_variant": variant,
                "rfc_message_id": f"<{key}@{self.domain}>",
                "status": QUEUED,
                "created_at": now,
                "sent_at": now,
            }
        )
        batch.outgoing.append(outgoing)
        batch.report.sent += 1

    def _outgoing(
        self,
        contact: Row[Any],
        fields: dict[str, Any],
        content_id: str,
        key: str,
        now: datetime,
        variant: int | None = None,
    ) -> Outgoing:
        """Render one piece for one person, bound to the message `key`."""
        unsubscribe_url = self.links.unsubscribe_url(key)
        rendered = self.project.content[content_id].render(
            {"contact": fields, "sender": self.sender, "unsubscribe_url": unsubscribe_url},
            variant or 0,
            fields.get("language"),
        )
        return Outgoing(
            key=key,
            to=contact.email,
            to_name=_full_name(contact),
            subject=rendered.subject,
            html=self.links.track(rendered.html, key, unsubscribe_url),
            text=rendered.text,
            unsubscribe_url=unsubscribe_url,
            sent_at=now,
        )

    def _deliver(self, batch: _Batch) -> None:
        sent, failed = self.deliver(batch.outgoing)
        batch.report.sent -= len(batch.outgoing) - sent
        batch.report.failed += failed

    def deliver(self, outgoing: list[Outgoing]) -> tuple[int, int]:
        """Hand queued emails to the transport, at most once each; return (sent, failed).

        Each message goes queued -> sending (committed before the SMTP conversation) ->
        sent or failed (committed after). Only the messages this call moved from queued to
        sending are handed over, so two processes can never deliver one message twice. A
        crash in between leaves `sending`: `reconcile` later marks it unknown, never re-sent.
        """
        width = getattr(self.transport, "size", 1)
        sent = failed = 0
        # A network conversation can die half-way: keep few messages in flight per connection.
        # Writing a file or nothing cannot leave a half-sent email: take the whole batch.
        whole = max(len(outgoing), 1)
        step = width * _IN_FLIGHT_PER_CONNECTION if hasattr(self.transport, "size") else whole
        for start in range(0, len(outgoing), step):
            chunk = outgoing[start : start + step]
            with write_transaction(self.database) as session:
                claimed = set(
                    session.scalars(
                        update(Message)
                        .where(
                            Message.rfc_message_id.in_([self._mid(o) for o in chunk]),
                            Message.status == QUEUED,
                        )
                        .values(status=SENDING)
                        .returning(Message.rfc_message_id)
                    )
                )
            mine = [o for o in chunk if self._mid(o) in claimed]
            if width > 1 and len(mine) > 1:
                results = list(self._pool(width).map(self._attempt, mine))
            else:
                results = [self._attempt(o) for o in mine]
            delivered = [self._mid(o) for o, error in zip(mine, results, strict=True) if not error]
            with write_transaction(self.database) as session:
                if delivered:
                    session.execute(
                        update(Message)
                        .where(Message.rfc_message_id.in_(delivered))
                        .values(status=SENT)
                    )
                for item, error in zip(mine, results, strict=True):
                    if error is None:
                        continue
                    session.execute(
                        update(Message)
                        .where(Message.rfc_message_id == self._mid(item))
                        .values(status=FAILED, error=error)
                    )
                    if error.startswith(HARD_BOUNCE):
                        suppress(session, item.to, "hard_bounced", error, self.clock.now())
            sent += len(delivered)
            failed += len(mine) - len(delivered)
        return sent, failed

    def _attempt(self, outgoing: Outgoing) -> str | None:
        """None when delivered, else why not (a hard bounce starts with HARD_BOUNCE)."""
        try:
            self.transport.send(outgoing)
        except Rejected as exc:
            log.warning("%s refused %s: %s", outgoing.to, self._mid(outgoing), exc)
            return f"{HARD_BOUNCE} {exc}"
        except Exception as exc:  # any other failure fails this message, not the batch
            log.warning("sending %s to %s failed: %s", self._mid(outgoing), outgoing.to, exc)
            return str(exc)[:1000] or type(exc).__name__
        return None

    def reconcile(self) -> tuple[int, int]:
        """Settle what a dead process left: (marked unknown, delivered late).

        A message still `sending` after the lease may or may not have gone: it becomes
        `unknown` for a person to decide, and is never re-sent automatically. A message
        still `queued` after the lease never reached the transport: it is delivered now,
        unless its address was suppressed meanwhile.
        """
        now = self.clock.now()
        expired = now - self.project.settings.delivery.lease
        with write_transaction(self.database) as session:
            unknown = session.execute(
                update(Message)
                .where(Message.status == SENDING, Message.created_at < expired)
                .values(status=UNKNOWN, error="delivery not confirmed: the sender stopped")
            )
        late = self._deliver_queued(Message.created_at < expired)
        return int(getattr(unknown, "rowcount", 0) or 0), late

    def settle(self, message_id: int, *, sent: bool) -> bool:
        """A person's decision on an `unknown` message: it did go (`sent`), or send it now.

        Returns False when the message is not `unknown` (nothing changes then).
        """
        with write_transaction(self.database) as session:
            changed = session.execute(
                update(Message)
                .where(Message.id == message_id, Message.status == UNKNOWN)
                .values(status=SENT if sent else QUEUED, error=None)
            )
        if not getattr(changed, "rowcount", 0):
            return False
        if not sent:
            self._deliver_queued(Message.id == message_id)
        return True

    def _deliver_queued(self, which: ColumnElement[bool]) -> int:
        """Render again and deliver queued messages (with their original key), unless the
        address was suppressed meanwhile; return how many went."""
        now = self.clock.now()
        with write_transaction(self.database) as session:
            queued = session.execute(
                select(
                    Message.rfc_message_id,
                    Message.content_id,
                    Message.subject_variant,
                    *Contact.__table__.columns,
                )
                .join(Contact, Contact.id == Message.contact_id)
                .where(Message.status == QUEUED, which)
                .limit(self.batch_size)
            ).all()
            blocked = {
                email
                for (email,) in session.execute(
                    select(Suppression.email).where(
                        Suppression.email.in_([r.email for r in queued])
                    )
                )
            }
            session.execute(
                update(Message)
                .where(
                    Message.rfc_message_id.in_(
                        [r.rfc_message_id for r in queued if r.email in blocked]
                    )
                )
                .values(status=FAILED, error="suppressed before delivery")
            )
        outgoing = [
            self._outgoing(
                row,
                profile(cast(ContactLike, row), self.project.settings),
                row.content_id,
                row.rfc_message_id.strip("<>").split("@")[0],
                now,
                row.subject_variant,
            )
            for row in queued
            if row.email not in blocked
        ]
        delivered, _ = self.deliver(outgoing)
        return delivered

    def _mid(self, outgoing: Outgoing) -> str:
        return f"<{outgoing.key}@{self.domain}>"

    def _pool(self, width: int) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=width, thread_name_prefix="deliver")
        return self._executor


def _full_name(contact: Row[Any]) -> str | None:
    name = " ".join(part for part in (contact.first_name, contact.last_name) if part)
    return name or None
