"""The one place that reads the wall clock; everything else is handed a `Clock`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, timezone-aware, in UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FixedClock:
    """A clock that moves only when told to: for tests and the simulator."""

    def __init__(self, start: datetime) -> None:
        self._now = as_utc(start)

    def now(self) -> datetime:
        return self._now

    def set(self, instant: datetime) -> None:
        self._now = as_utc(instant)

    def advance(self, delta: timedelta) -> None:
        self._now += delta


class FileClock:
    """A clock read from a file holding one ISO 8601 instant: several processes share one
    simulated time (the multi-worker tests and rehearsals), moved by whoever writes it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def now(self) -> datetime:
        return as_utc(datetime.fromisoformat(self.path.read_text().strip()))


def as_utc(instant: datetime) -> datetime:
    """Aware UTC datetime; a naive one (as SQLite returns them) is taken as UTC."""
    if instant.tzinfo is None:
        return instant.replace(tzinfo=UTC)
    return instant.astimezone(UTC)


def db_instant(value: datetime | str) -> datetime:
    """An instant a database gave back from an aggregate or an expression (text on SQLite,
    where the column type is lost; naive on PostgreSQL after `timezone('UTC', ...)`), as an
    aware UTC datetime."""
    return as_utc(datetime.fromisoformat(value) if isinstance(value, str) else value)
