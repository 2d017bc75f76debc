"""How pages write times and durations: the Jinja filters every template uses.

`local_time` is the one way a page shows an instant: in the viewer's zone (the project's
`timezone`), to the minute, as people write it (`14 Mar 2025, 09:05`), never UTC with
microseconds. Pure formatting here; `register` binds the zone from the running project.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from flask import Flask, current_app

from nurture.core.words import duration
from nurture.durations import parse_duration

_DURATION = re.compile(r"^\s*(?:\d+\s*[wdhms]\s*)+$")


def local_time(value: datetime | str | None, zone: str, *, date_only: bool = False) -> str:
    """`value` (an aware datetime, or ISO 8601 text; naive means UTC) in `zone`, to the
    minute: `14 Mar 2025, 09:05`; `—` for nothing."""
    if value is None or value == "":
        return "—"
    at = datetime.fromisoformat(value) if isinstance(value, str) else value
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    local = at.astimezone(ZoneInfo(zone))
    text = f"{local.day} {local:%b %Y}"
    return text if date_only else f"{text}, {local:%H:%M}"


def human_duration(value: timedelta | str | int | None) -> str:
    """`1d12h` → `1 day 12 hours`; `30d` → `30 days`; other text unchanged."""
    if value is None:
        return "—"
    if isinstance(value, str):
        if not _DURATION.match(value):
            return value
        value = parse_duration(value)
    elif isinstance(value, int):
        value = timedelta(days=value)
    return duration(value)


def is_duration(value: object) -> bool:
    return isinstance(value, str) and bool(_DURATION.match(value))


def register(app: Flask) -> None:
    """The filters, bound to the project's zone (read at each render: a reload may change it)."""

    def zone() -> str:
        return str(current_app.extensions["nurture"].project.settings.timezone)

    app.add_template_filter(lambda value: local_time(value, zone()), "when")
    app.add_template_filter(human_duration, "duration")
    app.add_template_test(is_duration, "duration")
    app.add_template_global(zone, "viewer_zone")
