"""The dispatch loop: claim due enrollments, plan, pace, render, record, hand to the transport.

The deciding is done by the pure modules (planner, pacing); this module only reads what they
need and writes what they decided. A batch's cap checks and its reservations (message rows
with unique keys) commit in one write transaction, so two dispatchers cannot both take the
last slot of a day, and a step can never produce two emails.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import threading
import zlib
from collections import Counter, defaultdict
from collections.abc import Sequence, Set
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, bindparam, func, insert, select, update
from sqlalchemy import Engine as Database
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from nurture import metrics, sendhours
from nurture.clock import Clock
from nurture.config import CapsOverride
from nurture.contacts import ContactLike, LazyVariables, profile, zone_of
from nurture.content import render_email
from nurture.core import sendtime
from nurture.core.decisions import ACTIVE, WAITING, Defer, End, Idle, Later, Situation, next_action
from nurture.core.engagement import Engagement, Occurred
from nurture.core.pacing import Policy, Runs
from nurture.core.planner import Mark, Send
from nurture.core.versions import Kind, Outline, outline, place
from nurture.db import (
    Record,
    among,
    is_sqlite,
    lock_for_transaction,
    records,
    write_transaction,
)
from nurture.feedback import insert_new, suppress
from nurture.journeys import perform
from nurture.models import (
    FAILED,
    QUEUED,
    SENDING,
    SENT,
    UNKNOWN,
    Contact,
    Deferral,
    Enrollment,
    Event,
    JourneyStep,
    Message,
    Suppression,
)
from nurture.problems import ProjectError
from nurture.project import Project, load_project
from nurture.promotion import promoted
from nurture.reload import Stamp, load_outlines, stamp, sync_versions
from nurture.tracking import Links
from nurture.transport import (
    DeliveryUnknown,
    Interrupted,
    Interruptible,
    Outgoing,
    Rejected,
    Transport,
    sender_domain,
)

log = logging.getLogger(__name__)
_table = cast(Table, Enrollment.__table__)
#: What the deciding, the render and the journey actions read of a person (not the consent
#: record nor when the row was made: fewer values to convert per claimed person).
_CLAIMED = [
    column
    for column in cast(Table, Contact.__table__).columns
    if column.name not in ("consent_source", "consent_at", "created_at")
]
#: Core tables for the batch inserts (the ORM's bulk path costs more than the insert itself).
#: The batch's reads and writes run on the session's connection (`session.connection()`):
#: same transaction, without the ORM's result machinery, which costs more per row than SQLite.
_messages = cast(Table, Message.__table__)
_deferrals = cast(Table, Deferral.__table__)
_journey_steps = cast(Table, JourneyStep.__table__)
#: One statement for every claimed enrollment: rows share their keys, so it runs as one batch.
_UPDATE_ENROLLMENT = (
    update(_table)
    .where(_table.c.id == bindparam("b_id"))
    .values(
        {
            name: bindparam(name)
            for name in (
                "status",
                "places",
                "version",
                "due_at",
                "last_sent_at",
                "hold_reason",
                "ended_at",
                "end_reason",
            )
        }
    )
)

#: The event kinds send_time reads (a person's real ones only).
_ENGAGED = sendtime.ENGAGED

#: The outcome of each message not sent, in one statement for a chunk (executemany).
_SETTLE = (
    update(_messages)
    .where(_messages.c.rfc_message_id == bindparam("b_mid"))
    .values(status=bindparam("status"), error=bindparam("error"))
)
#: Message states that count against caps: everything that may have reached the person.
COUNTED = (QUEUED, SENDING, SENT, UNKNOWN)
HARD_BOUNCE = "hard bounce:"
#: Messages marked `sending` together, per connection: fewer commits, and at most this many
#: per connection become `unknown` if the process dies mid-chunk.
_IN_FLIGHT_PER_CONNECTION = 8


class _MessageKeys:
    """Message keys as `secrets.token_urlsafe(12)` makes them (12 random bytes, 16 URL-safe
    characters), drawn from one read of the system's randomness per 256 emails rather than
    one per email: 12 bytes are 16 base64 characters with no padding, so the encoding of
    256 keys' bytes is their 256 encodings end to end."""

    _AT_ONCE = 256

    def __init__(self) -> None:
        self._ready: list[str] = []

    def draw(self) -> str:
        if not self._ready:
            text = base64.urlsafe_b64encode(secrets.token_bytes(12 * self._AT_ONCE)).decode()
            self._ready = [text[i : i + 16] for i in range(0, len(text), 16)]
        return self._ready.pop()


@dataclass
class Report:
    sent: int = 0
    deferred: int = 0
    #: Due, but their next step's wait has not run out: planned again when it does.
    later: int = 0
    #: Nothing to send until something changes (track done, paused, held, no track).
    idle: int = 0
    ended: int = 0
    failed: int = 0
    #: Handed to the server, no answer: maybe delivered, never sent again.
    unknown: int = 0
    deferral_reasons: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, other: Report) -> None:
        self.sent += other.sent
        self.deferred += other.deferred
        self.later += other.later
        self.idle += other.idle
        self.ended += other.ended
        self.failed += other.failed
        self.unknown += other.unknown
        for rule, count in other.deferral_reasons.items():
            self.deferral_reasons[rule] += count


@dataclass
class History:
    """Past sends the caps read: per contact, per account, sender-wide; and suppressions."""

    sent: dict[int, list[datetime]] = field(default_factory=lambda: defaultdict(list))
    received: dict[int, set[str]] = field(default_factory=lambda: defaultdict(set))
    #: Per contact, every piece with a message row in any status (renames applied): what
    #: the outbox's unique key (contact, content) holds, read so that a piece renamed with
    #: `renamed_from:`, or whose send failed, is passed over and never inserted again.
    recorded: dict[int, set[str]] = field(default_factory=lambda: defaultdict(set))
    account: dict[str, list[datetime]] = field(default_factory=lambda: defaultdict(list))
    #: The sender's sends, one entry per instant (a batch's emails share one).
    everyone: Runs = field(default_factory=Runs)
    suppressed: dict[str, str] = field(default_factory=dict)
    #: What each person did, by real people only (journey conditions, wait_until).
    engagement: dict[int, Engagement] = field(default_factory=dict)
    #: Each person's real opens and clicks, and everyone's per local hour (send_time: best).
    engaged_at: dict[int, list[datetime]] = field(default_factory=lambda: defaultdict(list))
    project_hours: sendtime.Hours = field(default_factory=sendtime.Hours)


@dataclass
class _Batch:
    """What one claimed batch decided, to be written in the same transaction."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    outgoing: list[Outgoing] = field(default_factory=list)
    enrollments: list[dict[str, Any]] = field(default_factory=list)
    deferrals: list[dict[str, Any]] = field(default_factory=list)
    #: Journey steps done (ways taken, waits started, actions): (enrollment row, contact row, mark).
    journey: list[tuple[Record, Record, Mark]] = field(default_factory=list)
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
        self.domain = sender_domain(project.settings.sender)
        self._policies: dict[tuple[str, str], Policy] = {}
        self._winners: dict[str, int] = {}
        self._executor: ThreadPoolExecutor | None = None
        self.stopping = threading.Event()
        self._stamp: Stamp | None = None
        self._outlines: dict[tuple[str, str], Outline] = {}
        #: Everyone's real engagement per local hour, and when it was tallied.
        self._hours: tuple[datetime, sendtime.Hours] | None = None
        self._keys = _MessageKeys()

    def tick(self) -> Report:
        """Work through everything due now, batch after batch, until `stop()` is called
        (then the batch in hand is finished, and no other is started)."""
        report = Report()
        self.refresh()
        now = self.clock.now()
        while not self.stopping.is_set():
            batch = self.dispatch_batch(now)
            report.add(batch)
            handled = batch.sent + batch.deferred + batch.later + batch.idle + batch.ended
            handled += batch.failed + batch.unknown
            if handled < self.batch_size:
                break
        return report

    def stop(self) -> None:
        """Start no other batch; cut the transport's backoff waits short (what waited goes
        back to `queued`, never handed over)."""
        self.stopping.set()
        if isinstance(self.transport, Interruptible):
            self.transport.interrupt()

    def refresh(self) -> bool:
        """Take up changed project files between two ticks; return True when it did.

        A cheap check (sizes and modification times) each tick; on a change, the whole
        project is loaded and checked again: a broken edit is logged with its file:line
        problems and the version running goes on. Every workflow's version is recorded and
        the people on an older one are carried onto it (nurture/core/versions.py), in one
        transaction. The first call records the versions the engine starts with.
        """
        current = stamp(self.project.root)
        if current == self._stamp:
            return False
        first = self._stamp is None
        self._stamp = current
        if not first:
            try:
                project = load_project(self.project.root)
            except ProjectError as exc:
                log.error(
                    "project files changed but do not load; the last good version goes on:\n%s", exc
                )
                return False
            self.project = project
            self._policies.clear()
            self.sender = project.settings.sender.model_dump()
        synced = sync_versions(self.database, self.project, self.clock.now())
        for change in synced.changes:
            kinds = synced.counts.get(change.workflow, Counter[str]())
            moved = ", ".join(f"{n} {k}" for k, n in kinds.items()) or "nobody in flight"
            log.info("workflow %s: %s; %s", change.workflow, change.describe(), moved)
        changed = {change.workflow for change in synced.changes}
        for workflow, kinds in synced.counts.items():
            if workflow not in changed:
                log.info(
                    "workflow %s: %s", workflow, ", ".join(f"{n} {k}" for k, n in kinds.items())
                )
        return not first

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

    @metrics.timed_batch
    def dispatch_batch(self, now: datetime) -> Report:
        batch = self.reserve(now)
        self._deliver(batch)
        return batch.report

    def reserve(self, now: datetime) -> _Batch:
        """The claim transaction: decide a batch and commit its messages as `queued`."""
        with write_transaction(self.database) as session:
            batch = self._decide(session, now)
            if batch.messages:
                session.connection().execute(insert(_messages), batch.messages)
            if batch.deferrals:
                session.connection().execute(insert(_deferrals), batch.deferrals)
            if batch.enrollments:
                session.connection().execute(_UPDATE_ENROLLMENT, batch.enrollments)
            if batch.journey:
                self._journey_steps(session, batch.journey)
        metrics.count_deferrals(batch.deferrals)
        return batch

    def _journey_steps(self, session: Session, done: Sequence[tuple[Record, Record, Mark]]) -> None:
        """Record the journey steps of a batch: the ways taken and waits started in one
        statement (a repeat is dropped by the unique key), each action on its own."""
        plain = [_journey_row(e, c, m) for e, c, m in done if m.action is None]
        if plain:
            build = postgresql.insert if not is_sqlite(self.database) else sqlite.insert
            statement = build(_journey_steps).on_conflict_do_nothing(index_elements=_JOURNEY_KEY)
            session.connection().execute(statement, plain)
        for enrollment, contact, mark in done:
            if mark.action is not None:
                self._journey_step(session, enrollment, contact, mark)

    def _journey_step(
        self, session: Session, enrollment: Record, contact: Record, mark: Mark
    ) -> None:
        """Record a journey step; do its action if this is the first time (the unique key
        (enrollment, entry, step, way) makes it once per enrollment step, whoever races)."""
        values = _journey_row(enrollment, contact, mark)
        keys = _JOURNEY_KEY
        if not insert_new(session, JourneyStep, values, keys) or mark.action is None:
            return
        done = perform(session, self.project, contact, mark.action, mark.at)
        session.execute(
            update(JourneyStep)
            .where(*(getattr(JourneyStep, k) == values[k] for k in keys))
            .values(detail=done.detail[:1000], **done.values)
        )

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
                Enrollment.places,
                Enrollment.positions,
                Enrollment.version,
                Enrollment.entered_at,
                Enrollment.last_sent_at,
                Enrollment.due_at,
                Enrollment.hold_reason,
            )
            .where(Enrollment.status == ACTIVE, Enrollment.due_at <= now)
            .order_by(Enrollment.due_at, Enrollment.id)
            .limit(self.batch_size)
        )
        if not is_sqlite(self.database):
            claim = claim.with_for_update(skip_locked=True)
        enrollments = records(session.connection().execute(claim))
        batch = _Batch()
        if not enrollments:
            return batch
        contact_ids = sorted({e.contact_id for e in enrollments})
        lock = select(*_CLAIMED).where(among(self.database, Contact.id, contact_ids))
        lock = lock.order_by(Contact.id)
        if not is_sqlite(self.database):
            lock = lock.with_for_update()
        contacts = {c.id: c for c in records(session.connection().execute(lock))}
        phase_of = self.project.settings.phase_of
        engaged: set[int] = set()
        timed: set[int] = set()
        for e in enrollments:
            workflow = self.project.workflows.get(e.workflow)
            if workflow is not None:
                phase = phase_of(contacts[e.contact_id].stage)
                if workflow.reads_engagement(phase):
                    engaged.add(e.contact_id)
                if workflow.times_sends(phase):
                    timed.add(e.contact_id)
        history = self.history(session, now, contacts, engagement_of=engaged, timed_of=timed)
        self._winners = promoted(session)  # subject tests that promoted a winner
        self.load_versions(session, enrollments)
        for enrollment in enrollments:
            contact = contacts[enrollment.contact_id]
            self._step(enrollment, contact, history, now, batch)
        return batch

    def history(
        self,
        session: Session,
        now: datetime,
        contacts: dict[int, Record],
        *,
        lock: bool = True,
        engagement_of: Set[int] | None = None,
        timed_of: Set[int] | None = None,
    ) -> History:
        """What the caps need, read in the claiming transaction (after taking the locks).

        What people did is read for `engagement_of` only (None: everyone, when some
        workflow asks what people did), the people whose track has a step that asks it;
        when they engaged, for `send_time: best`, for `timed_of` only (None: everyone, when
        some workflow times its emails)."""
        caps = self.project.settings.caps
        history = History()
        accounts = sorted({c.account for c in contacts.values() if c.account})
        if lock and not is_sqlite(self.database):
            # Two workers holding different people of one account, or sharing the sender's
            # rate, must not both take the last slot: serialize on the account and the rate.
            keys = [f"account:{a}" for a in accounts] if caps.account_per_day else []
            if caps.rate_per_minute or caps.rate_per_hour:
                keys.append("sender-rate")
            lock_for_transaction(session, *sorted(keys))
        emails = [c.email for c in contacts.values()]
        for email, reason in session.connection().execute(
            select(Suppression.email, Suppression.reason).where(
                among(self.database, Suppression.email, emails)
            )
        ):
            history.suppressed[email] = reason
        for contact_id, content_id, sent_at, status in session.connection().execute(
            select(Message.contact_id, Message.content_id, Message.sent_at, Message.status)
            .where(among(self.database, Message.contact_id, contacts))
            .order_by(Message.sent_at)
        ):
            piece = self.project.canonical(content_id)
            history.recorded[contact_id].add(piece)
            if status in COUNTED:
                history.sent[contact_id].append(sent_at)
                history.received[contact_id].add(piece)
        engaged = (
            (list(contacts) if self._journeys() else [])
            if engagement_of is None
            else sorted(engagement_of)
        )
        if engaged:
            self._engagement(session, engaged, history)
        timed = (
            (
                list(contacts)
                if any(w.uses_send_time for w in self.project.workflows.values())
                else []
            )
            if timed_of is None
            else sorted(timed_of)
        )
        if timed:
            self._engaged_at(session, now, timed, history)
        if caps.account_per_day and accounts:
            # Two steps, so each uses its index: people of the accounts, then their recent sends.
            members = dict(
                session.connection()
                .execute(
                    select(Contact.id, Contact.account).where(
                        among(self.database, Contact.account, accounts)
                    )
                )
                .all()
            )
            for contact_id, sent_at in session.connection().execute(
                select(Message.contact_id, Message.sent_at)
                .where(
                    # An IN list, not `among`: a plan for an array of unknown length may
                    # read every recent send by the (sent_at, status) index instead.
                    Message.contact_id.in_(list(members)),
                    Message.sent_at >= now - timedelta(days=2),
                    Message.status.in_(COUNTED),
                )
                .order_by(Message.sent_at)
            ):
                history.account[members[contact_id] or ""].append(sent_at)
        if caps.rate_per_minute or caps.rate_per_hour:
            # The sender's sends over the longest rate window, as (instant, how many): a batch
            # shares one instant, so this reads and keeps a row per batch, not one per email.
            window = timedelta(hours=1) if caps.rate_per_hour else timedelta(minutes=1)
            for sent_at, count in session.connection().execute(
                select(Message.sent_at, func.count())
                .where(Message.status.in_(COUNTED), Message.sent_at >= now - window)
                .group_by(Message.sent_at)
                .order_by(Message.sent_at)
            ):
                history.everyone.add(sent_at, count)
        return history

    def _journeys(self) -> bool:
        """Whether some workflow asks what people did (else the history read skips it)."""
        return any(w.journeys for w in self.project.workflows.values())

    def _engagement(self, session: Session, contact_ids: list[int], history: History) -> None:
        """Per person: the pieces opened and clicked, the last time of each event kind, and
        the events some wait_until waits for; machines' events left out. Three reads per
        batch, never one per step."""
        opened: dict[int, set[str]] = defaultdict(set)
        clicked: dict[int, set[str]] = defaultdict(set)
        last: dict[int, dict[str, datetime]] = defaultdict(dict)
        events: dict[int, list[Occurred]] = defaultdict(list)
        real = (among(self.database, Event.contact_id, contact_ids), Event.machine.is_(None))
        for contact_id, kind, at in session.connection().execute(
            select(Event.contact_id, Event.kind, func.max(Event.occurred_at))
            .where(*real)
            .group_by(Event.contact_id, Event.kind)
        ):
            last[contact_id][kind] = at
        for contact_id, kind, content_id in session.connection().execute(
            select(Event.contact_id, Event.kind, Message.content_id)
            .join(Message, Message.id == Event.message_id)
            .where(*real, Event.kind.in_(("email_opened", "email_clicked")))
            .distinct()
        ):
            target = opened if kind == "email_opened" else clicked
            target[contact_id].add(self.project.canonical(content_id))
        watched = set().union(*(w.waits_on for w in self.project.workflows.values()))
        if watched:
            for contact_id, kind, at, properties in session.connection().execute(
                select(Event.contact_id, Event.kind, Event.occurred_at, Event.properties)
                .where(*real, Event.kind.in_(sorted(watched)))
                .order_by(Event.occurred_at, Event.id)
            ):
                events[contact_id].append(Occurred(kind, at, properties or {}))
        for contact_id in contact_ids:
            history.engagement[contact_id] = Engagement(
                frozenset(opened[contact_id]),
                frozenset(clicked[contact_id]),
                last[contact_id],
                tuple(events[contact_id]),
            )

    def _engaged_at(
        self, session: Session, now: datetime, contact_ids: list[int], history: History
    ) -> None:
        """For send_time: each person's real opens and clicks of the last
        `sendtime.LOOKBACK` (one read per batch), and everyone's per local hour (tallied
        by the reports job, read at most once an hour; see nurture/sendhours.py)."""
        for contact_id, at in session.connection().execute(
            select(Event.contact_id, Event.occurred_at).where(
                among(self.database, Event.contact_id, contact_ids),
                Event.kind.in_(_ENGAGED),
                Event.machine.is_(None),
                Event.occurred_at >= now - sendtime.LOOKBACK,
            )
        ):
            history.engaged_at[contact_id].append(at)
        if self._hours is None or not now - _HOURS_KEPT < self._hours[0] <= now:
            zone = self.project.settings.timezone
            self._hours = (now, sendhours.project_hours(session, zone, now))
        history.project_hours = self._hours[1]

    def load_versions(self, session: Session, enrollments: Sequence[Record]) -> None:
        """Read the outlines of the older versions some of `enrollments` are on (rare: the
        engine carries people onto a new version when it takes it up)."""
        wanted = {
            (e.workflow, e.version)
            for e in enrollments
            if e.version not in (None, self._digest(e.workflow))
            and (e.workflow, e.version) not in self._outlines
        }
        if wanted:
            self._outlines.update(load_outlines(session, wanted))

    def _digest(self, workflow: str) -> str | None:
        found = self.project.workflows.get(workflow)
        return found.digest if found else None

    def place(
        self, enrollment: Record, contact: Record, received: Set[str]
    ) -> tuple[dict[str, Any], str | None]:
        """The enrollment's place on the current version, and why it is held (if it is)."""
        workflow = self.project.workflows.get(enrollment.workflow)
        if workflow is None or enrollment.version == workflow.digest:
            return enrollment.places, None
        if enrollment.version is None and not enrollment.positions:
            return enrollment.places, None  # not planned yet: what `place` gives, sooner
        carried = place(
            enrollment.version,
            enrollment.places,
            enrollment.positions,
            self._outlines.get((enrollment.workflow, enrollment.version or "")),
            outline(workflow),
            phase=self.project.settings.phase_of(contact.stage),
            received=received,
            workflow=workflow.id,
            aliases=self.project.content_aliases,
        )
        return carried.places, carried.reason if carried.kind is Kind.HOLD else None

    def situation(
        self, enrollment: Record, contact: Record, history: History, now: datetime
    ) -> Situation:
        """What the pure decision needs about one claimed enrollment."""
        settings = self.project.settings
        person = cast(ContactLike, contact)
        places, held = self.place(enrollment, contact, history.recorded[contact.id])
        return Situation(
            workflow_id=enrollment.workflow,
            workflow=self.project.workflows.get(enrollment.workflow),
            stage=contact.stage,
            phase=settings.phase_of(contact.stage),
            paused=contact.paused,
            suppression=history.suppressed.get(contact.email),
            places=places,
            held_by_edit=held,
            since=enrollment.last_sent_at or enrollment.entered_at,
            received=history.received[contact.id],
            sent=history.sent[contact.id],
            variables=LazyVariables(person, settings, now, profile(person, settings)),
            policy=self.policy(enrollment.workflow, contact.caps),
            zone=zone_of(person, settings),
            last_engaged=contact.last_engaged_at,
            held_until=contact.held_until,
            hold_reason=contact.hold_reason,
            account_sent=history.account[contact.account] if contact.account else [],
            global_sent=history.everyone,
            engagement=history.engagement.get(contact.id),
            who=str(contact.id),
            entered=enrollment.entered_at,
            engaged_at=history.engaged_at.get(contact.id, ()),
            hour_held_until=(
                enrollment.due_at if sendtime.MARK in (enrollment.hold_reason or "") else None
            ),
            project_hours=history.project_hours,
            recorded=history.recorded[contact.id],
        )

    def _step(
        self,
        enrollment: Record,
        contact: Record,
        history: History,
        now: datetime,
        batch: _Batch,
    ) -> None:
        situation = self.situation(enrollment, contact, history, now)
        action = next_action(situation, now)
        row: dict[str, Any] = {
            "b_id": enrollment.id,
            "status": ACTIVE,
            "places": situation.places,
            "version": self._digest(enrollment.workflow) or enrollment.version,
            "due_at": None,
            "last_sent_at": enrollment.last_sent_at,
            "hold_reason": None,
            "ended_at": None,
            "end_reason": None,
        }
        batch.enrollments.append(row)
        batch.journey.extend((enrollment, contact, m) for m in getattr(action, "marks", ()))
        report = batch.report
        if isinstance(action, End):
            row.update(status=action.status, end_reason=action.reason, ended_at=now)
            report.ended += 1
        elif isinstance(action, Idle):
            row.update(
                status=action.status,
                hold_reason=action.reason,
                places=action.places,
                due_at=action.until,
            )
            report.idle += 1
        elif isinstance(action, Later):
            row.update(due_at=action.until, places=action.places, hold_reason=action.reason)
            report.later += 1
        elif isinstance(action, Defer):
            decision = action.decision
            row.update(due_at=decision.send_at, hold_reason=decision.reason, places=action.places)
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
            batch.messages[-1]["send_time"] = action.send_time
            row.update(
                places=action.places,
                last_sent_at=now,
                due_at=action.next_due,
                hold_reason=action.next_reason,
            )
            if action.next_due is None:
                row.update(status=WAITING)
            for times in (situation.sent, situation.account_sent, situation.global_sent):
                cast(list[datetime], times).append(now)
            history.received[contact.id].add(action.plan.step.content)
            history.recorded[contact.id].add(action.plan.step.content)

    def _reserve(
        self,
        enrollment: Record,
        contact: Record,
        fields: dict[str, Any],
        plan: Send,
        now: datetime,
        batch: _Batch,
    ) -> None:
        key = self._keys.draw()
        piece = self.project.content[plan.step.content]
        variant = zlib.crc32(key.encode()) % piece.variants if piece.variants > 1 else None
        variant = self._winners.get(piece.id, variant)
        outgoing = self._outgoing(contact, fields, piece.id, key, now, variant)
        batch.messages.append(
            {
                "enrollment_id": enrollment.id,
                "contact_id": contact.id,
                "workflow": enrollment.workflow,
                "step_key": plan.step.key,
                "content_id": piece.id,
                "phase": piece.phase,
                "stage_at_send": contact.stage,
                "subject": outgoing.subject,
                "subject_variant": variant,
                "rfc_message_id": f"<{key}@{self.domain}>",
                "status": QUEUED,
                "created_at": now,
                "sent_at": now,
                "send_time": None,
            }
        )
        batch.outgoing.append(outgoing)
        batch.report.sent += 1

    def _outgoing(
        self,
        contact: Record,
        fields: dict[str, Any],
        content_id: str,
        key: str,
        now: datetime,
        variant: int | None = None,
    ) -> Outgoing:
        """Render one piece for one person, bound to the message `key`."""
        unsubscribe_url = self.links.unsubscribe_url(key)
        rendered = render_email(
            self.project.content[content_id], fields, self.sender, unsubscribe_url, variant or 0
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
        done = self._hand_over(batch.outgoing)
        batch.report.sent -= len(batch.outgoing) - done[SENT]
        batch.report.failed += done[FAILED]
        batch.report.unknown += done[UNKNOWN]

    def deliver(self, outgoing: list[Outgoing]) -> tuple[int, int]:
        """Hand queued emails to the transport, at most once each; return (sent, failed)."""
        done = self._hand_over(outgoing)
        return done[SENT], done[FAILED]

    def _hand_over(self, outgoing: list[Outgoing]) -> Counter[str]:
        """Deliver queued emails, at most once each; how many ended in each status.

        Each message goes queued -> sending (committed before the SMTP conversation) ->
        sent, failed or unknown (committed after). Only the messages this call moved from
        queued to sending are handed over, so two processes can never deliver one message
        twice. `unknown`: the body reached the server and no answer came; it counts as
        received and is never sent again. A crash in between leaves `sending`: `reconcile`
        later marks it unknown. A stop during a retry's wait puts it back to `queued`.
        """
        width = getattr(self.transport, "size", 1)
        done: Counter[str] = Counter()
        # A network conversation can die half-way: keep few messages in flight per connection.
        # Writing a file or nothing cannot leave a half-sent email: take the whole batch.
        whole = max(len(outgoing), 1)
        step = width * _IN_FLIGHT_PER_CONNECTION if hasattr(self.transport, "size") else whole
        for start in range(0, len(outgoing), step):
            chunk = outgoing[start : start + step]
            with write_transaction(self.database) as session:
                claimed = set(
                    session.connection().scalars(
                        update(_messages)
                        .where(
                            _messages.c.rfc_message_id.in_([self._mid(o) for o in chunk]),
                            _messages.c.status == QUEUED,
                        )
                        .values(status=SENDING)
                        .returning(_messages.c.rfc_message_id)
                    )
                )
            mine = [o for o in chunk if self._mid(o) in claimed]
            if width > 1 and len(mine) > 1:
                results = list(self._pool(width).map(self._attempt, mine))
            else:
                results = [self._attempt(o) for o in mine]
            outcomes = list(zip(mine, results, strict=True))
            delivered = [self._mid(o) for o, (status, _) in outcomes if status == SENT]
            others = [
                {"b_mid": self._mid(o), "status": status, "error": error}
                for o, (status, error) in outcomes
                if status != SENT
            ]
            with write_transaction(self.database) as session:
                if delivered:
                    session.connection().execute(
                        update(_messages)
                        .where(_messages.c.rfc_message_id.in_(delivered))
                        .values(status=SENT)
                    )
                if others:
                    session.connection().execute(_SETTLE, others)
                for item, (status, error) in outcomes:
                    done[status] += 1
                    if status == FAILED and (error or "").startswith(HARD_BOUNCE):
                        suppress(session, item.to, "hard_bounced", error, self.clock.now())
        metrics.count_deliveries(self.transport, done)
        return done

    def _attempt(self, outgoing: Outgoing) -> tuple[str, str | None]:
        """What one hand-over gave: (status, why); a hard bounce's why starts with
        HARD_BOUNCE."""
        mid = self._mid(outgoing)
        try:
            self.transport.send(outgoing)
        except Rejected as exc:
            log.warning("message %s refused: %s", outgoing.key, exc, extra={"message_id": mid})
            return FAILED, f"{HARD_BOUNCE} {exc}"
        except DeliveryUnknown as exc:
            log.warning("message %s unknown: %s", outgoing.key, exc, extra={"message_id": mid})
            return UNKNOWN, str(exc)[:1000]
        except Interrupted as exc:
            return QUEUED, str(exc)[:1000]
        except Exception as exc:  # any other failure fails this message, not the batch
            log.warning("message %s failed: %s", outgoing.key, exc, extra={"message_id": mid})
            return FAILED, str(exc)[:1000] or type(exc).__name__
        return SENT, None

    def reconcile(self) -> tuple[int, int]:
        """Settle what a dead process left: (marked unknown, delivered late).

        A message still `sending` after the lease may or may not have gone: it becomes
        `unknown` for a person to decide, and is never re-sent automatically. Messages
        still `queued` after the lease never reached the transport: they are delivered now,
        batch after batch until none is left (or a stop is asked), unless the address was
        suppressed meanwhile.
        """
        now = self.clock.now()
        expired = now - self.project.settings.delivery.lease
        with write_transaction(self.database) as session:
            unknown = session.execute(
                update(Message)
                .where(Message.status == SENDING, Message.created_at < expired)
                .values(status=UNKNOWN, error="delivery not confirmed: the sender stopped")
            )
        late = 0
        while not self.stopping.is_set():
            found, delivered = self._deliver_queued(Message.created_at < expired)
            late += delivered
            if found < self.batch_size:
                break
        marked = int(getattr(unknown, "rowcount", 0) or 0)
        metrics.count_deliveries(self.transport, {UNKNOWN: marked})
        return marked, late

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

    def _deliver_queued(self, which: ColumnElement[bool]) -> tuple[int, int]:
        """Render again and deliver one batch of queued messages (with their original key),
        unless the address was suppressed meanwhile; return (found, delivered)."""
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
                .order_by(Message.id)
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
        return len(queued), self._hand_over(outgoing)[SENT]

    def _mid(self, outgoing: Outgoing) -> str:
        return f"<{outgoing.key}@{self.domain}>"

    def _pool(self, width: int) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=width, thread_name_prefix="deliver")
        return self._executor


#: The unique key of a journey step: once per enrollment, entry, step and way.
_JOURNEY_KEY = ["enrollment_id", "entered_at", "step_key", "way"]


def _journey_row(enrollment: Record, contact: Record, mark: Mark) -> dict[str, Any]:
    return {
        "enrollment_id": enrollment.id,
        "entered_at": enrollment.entered_at,
        "contact_id": contact.id,
        "workflow": enrollment.workflow,
        "step_key": mark.step,
        "way": mark.way,
        "at": mark.at,
    }


#: Everyone's engagement per hour is tallied again after this long.
_HOURS_KEPT = timedelta(hours=1)


def _full_name(contact: Record) -> str | None:
    name = " ".join(part for part in (contact.first_name, contact.last_name) if part)
    return name or None
