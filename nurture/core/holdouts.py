"""Holdout groups: which entrants a workflow keeps out, to measure what it changes. Pure.

`holdout: 10%` on a workflow keeps a stable random tenth of the people who enter it out of
it: their enrollment is recorded with the status `holdout` (never due, never dispatched),
so `nurture lift` can compare what they did with what the people it emailed did. Who is
held out is a hash of (workflow id, contact id): the same in every run and every process,
whatever the order people arrive in, and independent of the split paths' hash.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from nurture.vocabulary import EnrollmentStatus

#: The enrollment status of a person held out of a workflow: recorded, never emailed by it.
HOLDOUT = EnrollmentStatus.HOLDOUT
#: The largest holdout share a workflow may ask for (beyond it, most people get nothing).
MAX_SHARE = 0.5

_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")
SHARE_PATTERN = _PERCENT.pattern


def parse_share(value: Any) -> float:
    """`"10%"` -> 0.1; a fraction already parsed stays as it is. Refuses anything outside
    0% to 50% and anything that is not a percentage, with a sentence saying so."""
    if isinstance(value, float) and not isinstance(value, bool):
        share = value
    else:
        match = _PERCENT.match(value) if isinstance(value, str) else None
        if match is None:
            raise ValueError(f"expected a percentage such as 10%, got {value!r}")
        share = float(match[1]) / 100
    if not 0 <= share <= MAX_SHARE:
        raise ValueError(
            f"a holdout is between 0% and {format_share(MAX_SHARE)}, got {format_share(share)}"
        )
    return share


def format_share(share: float) -> str:
    return f"{share * 100:g}%"


def stable_point(workflow: str, who: str) -> float:
    """A number in [0, 1) fixed by (workflow, person): sha256, not Python's salted hash."""
    digest = hashlib.sha256(f"holdout\x1f{workflow}\x1f{who}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def held_out(workflow: str, who: str, share: float) -> bool:
    """Whether person `who` (the contact id, as text) is in the holdout of `workflow`."""
    return share > 0 and stable_point(workflow, who) < share
