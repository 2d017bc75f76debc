"""Problems found in a project's files, each naming the file, the line and the field."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, order=True)
class Problem:
    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.message}"


class ProjectError(Exception):
    """One or more problems that keep a project from loading; nothing starts."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = sorted(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def unknown_segment(name: str, known: Mapping[str, Any]) -> str:
    """`unknown segment 'x'; did you mean y?` (and the known ones when nothing is close)."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    if close:
        return f"unknown segment {name!r}; did you mean {close[0]}?"
    names = ", ".join(sorted(known)) or "none: add segments/<name>.yaml"
    return f"unknown segment {name!r} (segments: {names})"
