"""Counts and durations in words: "1 email", "3 people", "2 days 4 hours"."""

from __future__ import annotations

from datetime import timedelta

_IRREGULAR = {"person": "people"}
_UNITS = (("week", 604800), ("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1))


def counted(count: int, word: str, plural: str | None = None) -> str:
    """`count` and `word`, in the plural unless the count is one."""
    if count == 1:
        return f"{count} {word}"
    return f"{count} {plural or _IRREGULAR.get(word, word + 's')}"


def duration(value: timedelta) -> str:
    """A duration as people say it: `3 days`, `2 days 4 hours`, `1 hour 30 minutes`, `2 weeks`
    (weeks only when whole: `10 days`, not `1 week 3 days`)."""
    seconds = int(value.total_seconds())
    parts = []
    for name, size in _UNITS:
        if name == "week" and seconds % size:
            continue
        if seconds >= size:
            count, seconds = divmod(seconds, size)
            parts.append(counted(count, name))
    return " ".join(parts) or "0 seconds"
