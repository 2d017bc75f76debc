"""When an event may say it happened: the one rule for the API, the command line and imports.

Pure: the caller passes `now`. An event from before 1970 or from the future (beyond a little
clock skew between the caller's machine and ours) is refused, never scored.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
CLOCK_SKEW = timedelta(minutes=5)


def problem(at: datetime, now: datetime) -> str | None:
    """Why `at` (timezone-aware) cannot be an event's time, or None when it can."""
    try:
        instant = at.astimezone(UTC)
    except OverflowError:
        return "is out of range once converted to UTC"
    if instant < EARLIEST:
        return "is before 1970-01-01T00:00:00Z"
    if instant > now + CLOCK_SKEW:
        return "is in the future"
    return None
