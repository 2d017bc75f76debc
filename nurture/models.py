"""The database: contacts, events, ledgers, enrollments, the outbox, suppressions."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Select,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    func,
    select,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from nurture.vocabulary import MessageStatus


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on SQLite as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; pass an aware UTC instant")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def bind_processor(self, dialect: Dialect) -> Any:
        """On SQLite, the stored text in one step: what `process_bind_param` then SQLite's
        DATETIME processor give (`YYYY-MM-DD HH:MM:SS.ffffff`, UTC; a test compares them),
        at a third of their cost. A batch binds one instant many times: the last is kept."""
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)
        #: (instant, text): one tuple, replaced whole, so threads sharing it never mix two.
        last: list[tuple[datetime | None, str]] = [(None, "")]

        def process(value: datetime | None) -> str | None:
            if value is None:
                return None
            kept = last[0]
            if value is kept[0]:
                return kept[1]
            if value.tzinfo is None:
                raise ValueError("naive datetime given to the database; pass an aware UTC instant")
            stored = value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
            last[0] = (value, stored)
            return stored

        return process

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


#: Message statuses (nurture/vocabulary.py `MessageStatus`), by their short names.
QUEUED, SENDING, SENT = MessageStatus.QUEUED, MessageStatus.SENDING, MessageStatus.SENT
FAILED, UNKNOWN = MessageStatus.FAILED, MessageStatus.UNKNOWN
CANCELLED = MessageStatus.CANCELLED
#: Every status a message can have, in the order of its life, as plain words (click.Choice
#: would offer an enum's member names instead of its values).
MESSAGE_STATUSES = tuple(status.value for status in MessageStatus)

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


class Contact(Base):
    __tablename__ = "contacts"
    __table_args__ = (
        # The dashboard's search: the start of a name or a company, in any case.
        Index("ix_contacts_first_name_lower", func.lower(text("first_name"))),
        Index("ix_contacts_last_name_lower", func.lower(text("last_name"))),
        Index("ix_contacts_company_lower", func.lower(text("company"))),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    first_name: Mapped[str | None] = mapped_column(String(200))
    last_name: Mapped[str | None] = mapped_column(String(200))
    company: Mapped[str | None] = mapped_column(String(200))
    account: Mapped[str | None] = mapped_column(String(255), index=True)
    sector: Mapped[str | None] = mapped_column(String(100))
    company_size: Mapped[int | None] = mapped_column(Integer)
    role: Mapped[str | None] = mapped_column(String(200))
    seniority: Mapped[str | None] = mapped_column(String(50))
    country: Mapped[str | None] = mapped_column(String(2))
    timezone: Mapped[str | None] = mapped_column(String(64))
    language: Mapped[str | None] = mapped_column(String(16))
    source: Mapped[str | None] = mapped_column(String(100))
    owner: Mapped[str | None] = mapped_column(String(320))
    custom: Mapped[dict[str, Any]] = mapped_column(default=dict)
    consent_source: Mapped[str | None] = mapped_column(String(200))
    consent_at: Mapped[datetime | None]
    stage: Mapped[str] = mapped_column(String(50), index=True)
    stage_since: Mapped[datetime]
    fit: Mapped[float] = mapped_column(Float, default=0.0)
    engagement: Mapped[float] = mapped_column(Float, default=0.0)
    engagement_at: Mapped[datetime]
    last_engaged_at: Mapped[datetime | None]
    paused: Mapped[bool] = mapped_column(default=False)
    held_until: Mapped[datetime | None]
    hold_reason: Mapped[str | None] = mapped_column(Text)
    caps: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime]


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("contact_id", "client_event_id"),
        Index("ix_events_contact_occurred", "contact_id", "occurred_at"),
        Index("ix_events_kind_occurred", "kind", "occurred_at", "machine"),
        # Segments (`did`, `clicked`, `opened` as EXISTS per contact): one seek per person
        # on what people, not machines, did. `machine` (always NULL here) is in it so that
        # SQLite answers from the index alone (it does not see that the WHERE implies it).
        Index(
            "ix_events_real_contact_kind",
            "contact_id",
            "kind",
            "occurred_at",
            "message_id",
            "machine",
            sqlite_where=text("machine IS NULL"),
            postgresql_where=text("machine IS NULL"),
        ),
        # Segments, from the events' side: the people who did a kind since an instant
        # (PostgreSQL's hash semi-joins read it alone, not the table).
        Index(
            "ix_events_real_kind_at",
            "kind",
            "occurred_at",
            "contact_id",
            "machine",
            sqlite_where=text("machine IS NULL"),
            postgresql_where=text("machine IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[datetime]
    recorded_at: Mapped[datetime]
    properties: Mapped[dict[str, Any]] = mapped_column(default=dict)
    client_event_id: Mapped[str | None] = mapped_column(String(200))
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id", ondelete="SET NULL"))
    #: Why a machine, not a person, did this (a privacy proxy's open, a scanner's click).
    machine: Mapped[str | None] = mapped_column(String(40))


#: `Engaged.content_id` of events about no message (a page view, a webinar).
NO_CONTENT = ""


class Engaged(Base):
    """What people (not machines) did, one row per person, event kind and piece of content
    (the content of the message the event is about; NO_CONTENT for none): the first and the
    last time, and how many events. Kept by the events' one write path
    (nurture/eventstore.py) in the transaction that stores them, so that segments
    (`clicked`, `opened`, `did(..., within=...)`) read a few rows per person, not their
    events. Equal at every commit to the same figures counted from `events` and `messages`
    (`eventstore.summary_of_events()`)."""

    __tablename__ = "engagement_summary"
    __table_args__ = (
        # did(kind, within=...): the people who did a kind since an instant.
        Index("ix_engagement_summary_kind_last", "kind", "last_at", "contact_id"),
        # clicked(content), opened(content): the people who did a kind on a piece.
        Index("ix_engagement_summary_kind_content", "kind", "content_id", "contact_id"),
        # SQLite: the rows kept in the primary key's order (one seek reads a person's rows).
        {"sqlite_with_rowid": False},
    )

    contact_id: Mapped[int] = mapped_column(
        ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(64), primary_key=True)
    content_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    first_at: Mapped[datetime]
    last_at: Mapped[datetime]
    events: Mapped[int] = mapped_column(Integer)


class ScoreChange(Base):
    """The score ledger: every change of fit or engagement with its cause."""

    __tablename__ = "score_changes"
    __table_args__ = (Index("ix_score_changes_contact_at", "contact_id", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    at: Mapped[datetime]
    axis: Mapped[str] = mapped_column(String(16))
    points: Mapped[float] = mapped_column(Float)
    value_after: Mapped[float] = mapped_column(Float)
    rule: Mapped[str] = mapped_column(String(300))
    event_id: Mapped[int | None] = mapped_column(ForeignKey("events.id", ondelete="SET NULL"))
    object_key: Mapped[str | None] = mapped_column(String(500))


class RuleSet(Base):
    """A version of the rules that compute a stored score (kind `fit`: the fit rules with
    the lists and custom fields they read), by digest. The newest row of a kind is what the
    stored scores follow once its `done_at` is set; before that, a rescore is under way."""

    __tablename__ = "rule_sets"
    __table_args__ = (Index("ix_rule_sets_kind_id", "kind", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    digest: Mapped[str] = mapped_column(String(64))
    rules: Mapped[dict[str, Any]] = mapped_column(JSON)
    seen_at: Mapped[datetime]
    done_at: Mapped[datetime | None]


class StageMove(Base):
    """The stage ledger: every move with its reason."""

    __tablename__ = "stage_moves"
    __table_args__ = (
        Index("ix_stage_moves_contact_at", "contact_id", "at"),
        Index("ix_stage_moves_to_stage", "to_stage", "contact_id"),
        Index("ix_stage_moves_at", "at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    at: Mapped[datetime]
    from_stage: Mapped[str | None] = mapped_column(String(50))
    to_stage: Mapped[str] = mapped_column(String(50))
    reason: Mapped[str] = mapped_column(Text)
    event_id: Mapped[int | None] = mapped_column(ForeignKey("events.id", ondelete="SET NULL"))
    #: Made by a person (`nurture contact stage`, the API, the dashboard): the stage holds
    #: against the score rules until the scores cross a threshold again (nurture/core/stages.py).
    by_hand: Mapped[bool] = mapped_column(default=False, server_default=false())


def latest_stage_moves(contact_ids: Iterable[int]) -> Select[int, bool, str]:
    """Each contact's latest stage move, the one that set its stage now: (contact_id,
    by_hand, reason). Latest means the largest id, the order the moves were recorded in (a
    contact's moves are written under its row lock); `at` is no tie-breaker to trust, as
    two moves of one transaction share it. The one reading of "set by hand" (intake, explain)."""
    ids = list(contact_ids)
    latest = (
        select(func.max(StageMove.id))
        .where(StageMove.contact_id.in_(ids))
        .group_by(StageMove.contact_id)
    )
    return select(StageMove.contact_id, StageMove.by_hand, StageMove.reason).where(
        StageMove.id.in_(latest)
    )


class Enrollment(Base):
    __tablename__ = "enrollments"
    __table_args__ = (
        UniqueConstraint("workflow", "contact_id"),
        Index("ix_enrollments_due", "status", "due_at", "id"),
        Index("ix_enrollments_contact", "contact_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    workflow: Mapped[str] = mapped_column(String(100))
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16))
    #: Before step ids (migration 0008): phase -> how many steps were done. Read once, when
    #: the engine first plans the enrollment, to set `places`; never written since.
    positions: Mapped[dict[str, Any]] = mapped_column(default=dict)
    #: The person's place: phase -> the id of the last step of that track whose turn is done.
    places: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    #: The digest (sha256 of the file) of the workflow version `places` refers to; None
    #: until the engine first plans the enrollment (then `places` is empty or from `positions`).
    version: Mapped[str | None] = mapped_column(String(64))
    entered_at: Mapped[datetime]
    due_at: Mapped[datetime | None]
    last_sent_at: Mapped[datetime | None]
    hold_reason: Mapped[str | None] = mapped_column(Text)
    ended_at: Mapped[datetime | None]
    end_reason: Mapped[str | None] = mapped_column(Text)


class WorkflowVersion(Base):
    """Each change of a workflow file the engine took up: enrollments point at one by
    (`workflow`, `digest`); `outline` is its steps per track, in order (id, content, wait).
    A file put back to an earlier text is a new number with that version's digest (a revert)."""

    __tablename__ = "workflow_versions"
    __table_args__ = (UniqueConstraint("workflow", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    workflow: Mapped[str] = mapped_column(String(100))
    #: 1, 2, 3... per workflow id, in the order the engine first ran them.
    number: Mapped[int] = mapped_column(Integer)
    digest: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    outline: Mapped[dict[str, Any]] = mapped_column(JSON)
    first_seen_at: Mapped[datetime]
    #: What the engine did with the people in flight when it took this version up:
    #: {"continue": n, "move": n, "finish": n, "hold": n}.
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Message(Base):
    """The outbox. Its unique keys make a second send of a step, or of a content, impossible."""

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("enrollment_id", "step_key"),
        UniqueConstraint("contact_id", "content_id"),
        Index("ix_messages_contact_sent", "contact_id", "sent_at"),
        Index("ix_messages_sent_at", "sent_at", "status"),
        # Only the few messages not yet settled: a full status index would tempt planners
        # away from (contact_id, sent_at) in the dispatcher's history reads.
        Index(
            "ix_messages_unsettled",
            "status",
            sqlite_where=text("status IN ('queued', 'sending', 'unknown')"),
            postgresql_where=text("status IN ('queued', 'sending', 'unknown')"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    enrollment_id: Mapped[int] = mapped_column(ForeignKey("enrollments.id", ondelete="CASCADE"))
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    workflow: Mapped[str] = mapped_column(String(100))
    step_key: Mapped[str] = mapped_column(String(100))
    content_id: Mapped[str] = mapped_column(String(200))
    phase: Mapped[str] = mapped_column(String(16))
    stage_at_send: Mapped[str] = mapped_column(String(50))
    subject: Mapped[str] = mapped_column(Text)
    subject_variant: Mapped[int | None] = mapped_column(Integer)
    rfc_message_id: Mapped[str] = mapped_column(String(300), unique=True)
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime]
    error: Mapped[str | None] = mapped_column(Text)
    #: `send_time: best`: the hour chosen and why ("best hour 14:00 Europe/Paris from 7 real
    #: opens/clicks"); None for an email sent when due.
    send_time: Mapped[str | None] = mapped_column(Text)


class Deferral(Base):
    """An email held by a cap: when, until when, and why."""

    __tablename__ = "deferrals"
    __table_args__ = (Index("ix_deferrals_at", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    enrollment_id: Mapped[int] = mapped_column(ForeignKey("enrollments.id", ondelete="CASCADE"))
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    content_id: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime]
    until: Mapped[datetime | None]
    rules: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text)


class Suppression(Base):
    """Absolute: no marketing email to this address, whatever a workflow says."""

    __tablename__ = "suppressions"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    reason: Mapped[str] = mapped_column(String(50))
    source: Mapped[str | None] = mapped_column(String(200))
    at: Mapped[datetime]


class ProviderEvent(Base):
    """A provider's webhook event already applied: each is applied once, however often sent."""

    __tablename__ = "provider_events"
    __table_args__ = (UniqueConstraint("provider", "event_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    provider: Mapped[str] = mapped_column(String(20))
    event_id: Mapped[str] = mapped_column(String(300))
    kind: Mapped[str] = mapped_column(String(30))
    email: Mapped[str] = mapped_column(String(320))
    at: Mapped[datetime]


class ApiKey(Base):
    """An API key, stored as its SHA-256: the key itself is shown once, at creation."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class Consent(Base):
    """Where, when and on which words a person agreed to receive email."""

    __tablename__ = "consents"
    __table_args__ = (Index("ix_consents_contact", "contact_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(String(200))
    text: Mapped[str] = mapped_column(Text)
    legal_basis: Mapped[str] = mapped_column(String(50))
    at: Mapped[datetime]
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(400))
    confirmed_at: Mapped[datetime | None]
    properties: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Handoff(Base):
    """A contact handed to sales: the webhook's delivery, and what sales did with it."""

    __tablename__ = "handoffs"
    __table_args__ = (
        Index("ix_handoffs_due", "status", "next_attempt_at"),
        Index("ix_handoffs_open", "outcome", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    stage: Mapped[str] = mapped_column(String(50))
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]
    outcome: Mapped[str | None] = mapped_column(String(16))
    outcome_at: Mapped[datetime | None]
    outcome_reason: Mapped[str | None] = mapped_column(Text)


class HandoffAttempt(Base):
    """One try at the hand-off webhook, with what the receiver answered."""

    __tablename__ = "handoff_attempts"
    __table_args__ = (Index("ix_handoff_attempts_handoff", "handoff_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    handoff_id: Mapped[int] = mapped_column(ForeignKey("handoffs.id", ondelete="CASCADE"))
    at: Mapped[datetime]
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)


class Notice(Base):
    """A system email (an opt-in confirmation, a note to a contact's owner): not marketing,
    so no caps, and delivered by the same transport."""

    __tablename__ = "notices"
    __table_args__ = (Index("ix_notices_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(30))
    to: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)


class User(Base):
    """A person who may open the dashboard; the password is kept only as its hash."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime]
    last_login_at: Mapped[datetime | None]


class DashboardSession(Base):
    """One dashboard login. The browser's signed cookie carries a random id; only its sha256
    is kept, so a stolen database holds no usable session. Revoked at logout, at a password
    change, or by `nurture user sessions end`."""

    __tablename__ = "dashboard_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class LoginAttempt(Base):
    """Each dashboard login tried: the throttle counts the failures per account and per
    client address from here, so it holds across processes and restarts."""

    __tablename__ = "login_attempts"
    __table_args__ = (
        Index("ix_login_attempts_email_at", "email", "at"),
        Index("ix_login_attempts_address_at", "address", "at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    address: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime]
    succeeded: Mapped[bool]


class ReportCache(Base):
    """Numbers too costly to count on every page view (the funnel's history), kept as JSON
    with the instant they were computed; a periodic job renews them."""

    __tablename__ = "report_cache"

    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    computed_at: Mapped[datetime]
    data: Mapped[dict[str, Any]] = mapped_column(JSON)


class JourneyStep(Base):
    """A journey step done for one enrollment: a way taken (a branch's then/else, a split's
    path, a wait_until's then/else), a wait started (`waiting`), an action done (its kind).
    The unique key makes each action happen at most once per enrollment step (and entry)."""

    __tablename__ = "journey_steps"
    __table_args__ = (
        UniqueConstraint("enrollment_id", "entered_at", "step_key", "way"),
        Index("ix_journey_steps_contact", "contact_id", "at"),
        # Only the webhooks still to deliver: the ways taken, waits and other actions (one
        # or more per email sent) have no attempt to make and stay out of this index.
        Index(
            "ix_journey_steps_due",
            "status",
            "next_attempt_at",
            sqlite_where=text("next_attempt_at IS NOT NULL"),
            postgresql_where=text("next_attempt_at IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    enrollment_id: Mapped[int] = mapped_column(ForeignKey("enrollments.id", ondelete="CASCADE"))
    #: The enrollment's `entered_at`: a person who enters again (`reenter:`) goes round again.
    entered_at: Mapped[datetime]
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    workflow: Mapped[str] = mapped_column(String(100))
    step_key: Mapped[str] = mapped_column(String(100))
    way: Mapped[str] = mapped_column(String(40))
    at: Mapped[datetime]
    #: What the action did, in words (the timeline shows it).
    detail: Mapped[str | None] = mapped_column(Text)
    #: A webhook action: where it posts, and its delivery (pending, delivered, failed).
    url: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str | None] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    next_attempt_at: Mapped[datetime | None]


class SubjectWinner(Base):
    """The subject line a test promoted (`promote_winner: true`): from `decided_at` on,
    every email of the piece gets `variant`; `reason` is the verdict that called it."""

    __tablename__ = "subject_winners"

    content_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    variant: Mapped[int] = mapped_column(Integer)
    decided_at: Mapped[datetime]
    reason: Mapped[str] = mapped_column(Text)
