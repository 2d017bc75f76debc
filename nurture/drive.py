"""The real engine on a simulated clock: people act, the dispatcher ticks, people react.

Shared by `nurture simulate` (a population) and the rehearsal of one persona. The clock jumps
from one moment something is due (an enrollment or a person's action) to the next.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nurture.clock import FixedClock
from nurture.core.decisions import ACTIVE
from nurture.db import sessions
from nurture.models import Contact, Enrollment, Message
from nurture.runtime import Runtime


@dataclass(order=True)
class Action:
    """Something a person does at a moment: an event kind with its properties, and the
    message it answers (an open or a click is linked to its email, as tracking links it)."""

    at: datetime
    seq: int = 0
    email: str = field(compare=False, default="")
    kind: str = field(compare=False, default="")
    properties: dict[str, Any] = field(compare=False, default_factory=dict)
    message_id: int | None = field(compare=False, default=None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "email": self.email,
            "kind": self.kind,
            "properties": self.properties,
            "message_id": self.message_id,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Action:
        return cls(
            datetime.fromisoformat(data["at"]),
            email=data["email"],
            kind=data["kind"],
            properties=dict(data["properties"]),
            message_id=data["message_id"],
        )


@dataclass(frozen=True)
class Sent:
    """An email the engine just sent, for the person to react to."""

    id: int
    email: str
    phase: str
    sent_at: datetime
    stage: str = ""
    #: The person's own zone (None: the project's).
    timezone: str | None = None


@dataclass
class Driven:
    """What a drive left: the deferrals by rule, and the actions still to come after `end`."""

    deferrals: Counter[str]
    pending: list[Action]


def drive(
    runtime: Runtime,
    clock: FixedClock,
    actions: Iterable[Action],
    end: datetime,
    perform: Callable[[Session, Action, datetime], Iterable[Action] | None],
    react: Callable[[Sent], Iterable[Action]],
    progress: Callable[[datetime], None] | None = None,
) -> Driven:
    """Run until `end` or until nothing is due. `perform` records an action and may return
    more (sales answering a hand-off); `progress` hears the simulated time after each step."""
    queue: list[Action] = []
    sequence = 0

    def push(action: Action) -> None:
        nonlocal sequence
        sequence += 1
        action.seq = sequence
        heapq.heappush(queue, action)

    for action in actions:
        push(action)
    make = sessions(runtime.database)
    with make() as session:
        seen = session.scalar(select(func.max(Message.id))) or 0
    deferrals: Counter[str] = Counter()
    while True:
        with make() as session:
            due = session.scalar(
                select(func.min(Enrollment.due_at)).where(Enrollment.status == ACTIVE)
            )
        moments = [t for t in (due, queue[0].at if queue else None) if t is not None]
        if not moments:
            break
        now = max(min(moments), clock.now())
        if now > end:
            break
        clock.set(now)
        with make.begin() as session:
            while queue and queue[0].at <= now:
                for follow in perform(session, heapq.heappop(queue), now) or ():
                    push(follow)
        deferrals.update(runtime.dispatcher.tick().deferral_reasons)
        with make() as session:
            fresh = session.execute(
                select(
                    Message.id,
                    Contact.email,
                    Message.phase,
                    Message.sent_at,
                    Message.stage_at_send,
                    Contact.timezone,
                )
                .join(Contact, Contact.id == Message.contact_id)
                .where(Message.id > seen, Message.sent_at.is_not(None))
                .order_by(Message.id)
            ).all()
        for row in fresh:
            seen = row.id
            sent = Sent(
                row.id, row.email, row.phase, row.sent_at, row.stage_at_send or "", row.timezone
            )
            for action in react(sent):
                push(action)
        if progress is not None:
            progress(now)
        clock.set(now + timedelta(minutes=1))
    return Driven(deferrals, sorted(queue))
