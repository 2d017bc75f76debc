"""The project's best send hour (what `send_time: best` uses for people with no engagement of
their own): everyone's real opens and clicks per local hour, tallied by SQL and kept in
`report_cache`, so that the dispatcher reads one row in its claim transaction instead of
grouping months of events there. The periodic reports job renews it (`refresh_if_stale`);
until it has run, or when its figures are older than `MAX_AGE`, the dispatcher tallies them
itself (`project_hours`), as it did before.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from nurture.clock import db_instant
from nurture.core import sendtime
from nurture.db import write_transaction
from nurture.models import Contact, Event, ReportCache

#: The report_cache row.
NAME = "send_hours"
#: The reports job renews the figures when they are this old.
REFRESH = timedelta(hours=1)
#: Older figures are not used (the job has stopped): the dispatcher tallies them itself.
MAX_AGE = timedelta(hours=2)


def tally(session: Session, default_zone: str, now: Any) -> sendtime.Hours:
    """Everyone's real opens and clicks per local hour: counted in SQL per zone and UTC
    hour, then placed on each zone's clock and weighed by age."""
    if session.get_bind().dialect.name == "sqlite":
        hour: Any = func.strftime("%Y-%m-%d %H:00:00", Event.occurred_at)
    else:
        hour = func.date_trunc("hour", func.timezone("UTC", Event.occurred_at))
    rows = session.execute(
        select(Contact.timezone, hour, func.count())
        .join(Contact, Contact.id == Event.contact_id)
        .where(
            Event.kind.in_(sendtime.ENGAGED),
            Event.machine.is_(None),
            Event.occurred_at >= now - sendtime.LOOKBACK,
        )
        .group_by(Contact.timezone, hour)
    ).all()
    return sendtime.tally(
        ((db_instant(at), ZoneInfo(zone or default_zone), count) for zone, at, count in rows),
        now,
    )


def cached(session: Session, now: Any, max_age: timedelta = MAX_AGE) -> sendtime.Hours | None:
    """The kept figures, when computed at most `max_age` before `now` (one primary-key read)."""
    row = session.execute(
        select(ReportCache.computed_at, ReportCache.data).where(ReportCache.name == NAME)
    ).first()
    if row is None or not now - max_age < row.computed_at <= now:
        return None
    return sendtime.Hours(tuple(float(w) for w in row.data["weights"]), int(row.data["events"]))


def project_hours(session: Session, default_zone: str, now: Any) -> sendtime.Hours:
    """The kept figures, or (none fresh) tallied now."""
    found = cached(session, now)
    return found if found is not None else tally(session, default_zone, now)


def refresh_if_stale(database: Engine, default_zone: str, now: Any) -> bool:
    """Tally and keep the figures unless those kept are younger than REFRESH; True if done."""
    with Session(database) as session:
        if cached(session, now, REFRESH) is not None:
            return False
        hours = tally(session, default_zone, now)
    data = {"weights": list(hours.weights), "events": hours.events}
    with write_transaction(database) as session:
        session.merge(ReportCache(name=NAME, computed_at=now, data=data))
    return True
