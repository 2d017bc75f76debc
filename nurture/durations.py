"""Durations as marketers write them: `3d`, `20h`, `1d12h`, `90m`, `45s`."""

from __future__ import annotations

import re
from datetime import timedelta

_PART = re.compile(r"(\d+)\s*(w|d|h|m|s)")
_WHOLE = re.compile(r"^\s*(?:\d+\s*[wdhms]\s*)+$")
_UNITS = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes", "s": "seconds"}


def parse_duration(text: str | int) -> timedelta:
    """Parse `2d`, `1d12h`, `30m`; a bare number is a count of days."""
    if isinstance(text, int):
        if text < 0:
            raise ValueError("a duration cannot be negative")
        return timedelta(days=text)
    if not _WHOLE.match(text):
        raise ValueError(
            f"{text!r} is not a duration; write a number and a unit, e.g. 3d, 20h, 1d12h, 90m"
        )
    delta = timedelta()
    for amount, unit in _PART.findall(text):
        delta += timedelta(**{_UNITS[unit]: int(amount)})
    return delta


def format_duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts) or "0s"
