"""Accounts: the people of one company, with their fit and engagement rolled up.

A contact's account is given (the `account` field) or taken from its address's domain,
free-mail domains aside. The account caps and the account pause count on it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime

from nurture.config import DISQUALIFIED, Settings
from nurture.contacts import ContactLike, current_engagement
from nurture.core.values import value


@value
class AccountScore:
    people: int
    fit: float
    engagement: float
    stages: dict[str, int]
    furthest_stage: str


def rollup(members: Sequence[ContactLike], settings: Settings, now: datetime) -> AccountScore:
    """Fit is the best member's (the company fits once); engagement adds up (each person's
    interest counts); the furthest stage is the most advanced any member reached."""
    if not members:
        raise ValueError("an account has at least one person")
    order = settings.stage_names
    ranked = [m.stage for m in members if m.stage in order and m.stage != DISQUALIFIED]
    return AccountScore(
        people=len(members),
        fit=max(m.fit for m in members),
        engagement=sum(current_engagement(m, settings, now) for m in members),
        stages=dict(Counter(m.stage for m in members)),
        furthest_stage=max(ranked, key=order.index) if ranked else members[0].stage,
    )
