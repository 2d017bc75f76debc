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
from nurture.db import sessions
from nurture.decisions import ACTIVE
from nurture.models import Contact, Enrollment, Message
from nurture.runtime import Runtime


@dataclass(order=True)
class Action:
    """Something a person does at a moment: an event kind with its properties."""

    at: datetime
    seq: int = 0
    email: str = field(compare=False, default="")
    kind: str = field(compare=False, default="")
    properties: dict[str, Any] = field(compare=False, default_factory=dict)


@dataclass(frozen=True)
class Sent:
    """An email the engine just sent, for the person to react to."""

    id: int
    email: str
    phase: str
    sent_at: datetime


def drive(
    runtime: Runtime,
    clock: FixedClock,
    actions: Iterable[Action],
    end: datetime,
    perform: Callable[[Session, Action, datetime], None],
    react: Callable[[Sent], Iterable[Action]],
) -> Counter[str]:
    """Run until `end` or until nothing is due; return the deferrals by rule."""
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
    seen = 0
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
                perform(session, heapq.heappop(queue), now)
        deferrals.update(runtime.dispatcher.tick().deferral_reasons)
        with make() as session:
            fresh = session.execute(
                select(Message.id, Contact.email, Message.phase, Message.sent_at)
                .join(Contact, Contact.id == Message.contact_id)
                .where(Message.id > seen)
                .order_by(Message.id)
            ).all()
        for row in fresh:
            seen = row.id
            for action in react(Sent(row.id, row.email, row.phase, row.sent_at)):
                push(action)
        clock.set(now + timedelta(minutes=1))
    return deferrals
