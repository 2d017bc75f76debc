"""One vocabulary: the status words and built-in kinds that several modules share.

Each is a `StrEnum`: a member *is* its string (`MessageStatus.SENT == "sent"`, it hashes,
formats and serialises as "sent"), so the values stored in the database and shown in JSON
are exactly the words they always were. Pure: imported by the core, the store and the web.
"""

from __future__ import annotations

from enum import StrEnum


class MessageStatus(StrEnum):
    """A message's life: queued -> sending -> sent or failed; unknown when handed over
    without an answer, or after a crash mid-send; cancelled when a stage move made a queued
    email the wrong one. Listed in the order of its life."""

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    UNKNOWN = "unknown"
    FAILED = "failed"
    CANCELLED = "cancelled"


class EnrollmentStatus(StrEnum):
    """An enrollment's state: active (due at `due_at`), waiting (for a person's action or a
    condition), paused, completed or exited (with an `end_reason`), or holdout (kept out of
    the workflow to measure its lift: never due)."""

    ACTIVE = "active"
    WAITING = "waiting"
    PAUSED = "paused"
    COMPLETED = "completed"
    EXITED = "exited"
    HOLDOUT = "holdout"


class BuiltinStage(StrEnum):
    """The stages every project has around its own: where people start, and where a
    disqualification puts them."""

    CONTACT = "contact"
    DISQUALIFIED = "disqualified"


class BuiltinEvent(StrEnum):
    """The event kinds nurture itself records or understands; a project adds its own."""

    EMAIL_OPENED = "email_opened"
    EMAIL_CLICKED = "email_clicked"
    UNSUBSCRIBED = "unsubscribed"
    HARD_BOUNCED = "hard_bounced"
    SOFT_BOUNCED = "soft_bounced"
    COMPLAINED = "complained"
    SALES_ACCEPTED = "sales_accepted"
    SALES_REJECTED = "sales_rejected"
    PAUSED = "paused"
    RESUMED = "resumed"
