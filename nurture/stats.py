"""Per piece of content, and per subject line where a piece tests several: how many went,
and how many people (not machines) opened and clicked."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nurture.models import Event, Message
from nurture.vocabulary import BuiltinEvent, MessageStatus


@dataclass(frozen=True)
class Line:
    content_id: str
    variant: int | None
    sent: int
    opened: int
    clicked: int

    @property
    def open_rate(self) -> float:
        return self.opened / self.sent if self.sent else 0.0

    @property
    def click_rate(self) -> float:
        return self.clicked / self.sent if self.sent else 0.0


def content_stats(session: Session, content_ids: Collection[str] | None = None) -> list[Line]:
    """Sent counts, and messages with at least one real open and one real click (of the
    pieces `content_ids` only, when given)."""
    only = () if content_ids is None else (Message.content_id.in_(list(content_ids)),)
    sent = {
        (content, variant): count
        for content, variant, count in session.execute(
            select(Message.content_id, Message.subject_variant, func.count())
            .where(Message.status == MessageStatus.SENT, *only)
            .group_by(Message.content_id, Message.subject_variant)
        )
    }
    engaged = {
        (content, variant, kind): count
        for content, variant, kind, count in session.execute(
            select(
                Message.content_id,
                Message.subject_variant,
                Event.kind,
                func.count(func.distinct(Event.message_id)),
            )
            .join(Message, Message.id == Event.message_id)
            .where(
                Event.kind.in_((BuiltinEvent.EMAIL_OPENED, BuiltinEvent.EMAIL_CLICKED)),
                Event.machine.is_(None),
                *only,
            )
            .group_by(Message.content_id, Message.subject_variant, Event.kind)
        )
    }
    return [
        Line(
            content,
            variant,
            count,
            engaged.get((content, variant, BuiltinEvent.EMAIL_OPENED), 0),
            engaged.get((content, variant, BuiltinEvent.EMAIL_CLICKED), 0),
        )
        for (content, variant), count in sorted(
            sent.items(), key=lambda item: (item[0][0], item[0][1] or 0)
        )
    ]
