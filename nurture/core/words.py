"""Counts in words: "1 email", "2 emails", "1 person", "3 people"."""

from __future__ import annotations

_IRREGULAR = {"person": "people"}


def counted(count: int, word: str, plural: str | None = None) -> str:
    """`count` and `word`, in the plural unless the count is one."""
    if count == 1:
        return f"{count} {word}"
    return f"{count} {plural or _IRREGULAR.get(word, word + 's')}"
