"""Fit and engagement scores: pure functions of the profile, the event and the ledger so far."""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from nurture import expressions
from nurture.config import Engagement, EngagementRule, FitRule
from nurture.core.values import value
from nurture.durations import format_duration


@value
class Change:
    """Points to add on one axis, and the rule that gives them."""

    axis: str
    points: float
    rule: str
    object_key: str | None = None


#: Step decay counts its periods from here (a Monday), so weekly periods end on Mondays.
DECAY_EPOCH = datetime(2001, 1, 1, tzinfo=UTC)
#: Engagement this close to zero is zero: decay never reaches it on its own.
NEGLIGIBLE = 0.05


def decayed(
    value: float, since: datetime, now: datetime, rules: Engagement
) -> tuple[float, datetime]:
    """Engagement `value` stored at `since`, as it stands at `now`, and the instant that
    value is exact at (store both and nothing is lost to rounding of periods).

    Half-life: exponential, continuous. Step decay: `percent` off at every period boundary
    passed in (since, now].
    """
    if now <= since or value == 0:
        return value, since
    if rules.half_life is not None:
        result = value * 0.5 ** ((now - since) / rules.half_life)
        return (0.0 if abs(result) < NEGLIGIBLE else float(result)), now
    if rules.decay is not None:
        every = rules.decay.every
        passed = (now - DECAY_EPOCH) // every - (since - DECAY_EPOCH) // every
        if passed <= 0:
            return value, since
        result = value * (1 - rules.decay.percent / 100) ** passed
        anchor = DECAY_EPOCH + ((now - DECAY_EPOCH) // every) * every
        return (0.0 if abs(result) < NEGLIGIBLE else float(result)), anchor
    return value, since


def as_of(
    changes: Sequence[Change], occurred_at: datetime, now: datetime, rules: Engagement
) -> list[Change]:
    """`changes` earned by an event at `occurred_at`, as they stand at `now`: an event
    recorded late (an import of last month's webinar) has decayed as if scored when it
    happened, so a late event adds what a timely one would hold by now. (An event dated
    after `now` counts as of now.)"""
    if occurred_at >= now:
        return list(changes)
    return [
        replace(change, points=decayed(change.points, occurred_at, now, rules)[0])
        for change in changes
    ]


def decay_label(rules: Engagement) -> str:
    if rules.half_life is not None:
        return f"decay: half-life {format_duration(rules.half_life)}"
    if rules.decay is not None:
        return f"decay: -{rules.decay.percent:g}% every {format_duration(rules.decay.every)}"
    return "no decay"


def fit_score(rules: Sequence[FitRule], variables: Mapping[str, Any]) -> tuple[float, list[str]]:
    """The fit of a profile, and the rules that gave it, as `label (+points)`."""
    total = 0.0
    reasons = []
    for rule in rules:
        if expressions.evaluate(rule.when, variables):
            total += rule.points
            reasons.append(f"{rule.label} ({rule.points:+g})")
    return total, reasons


def engagement_changes(
    rules: Sequence[EngagementRule],
    kind: str,
    properties: Mapping[str, Any],
    variables: Mapping[str, Any],
    *,
    scored_objects: Set[tuple[str, str]] = frozenset(),
    scored_today: Mapping[str, int] | None = None,
) -> list[Change]:
    """The engagement points one event earns.

    `scored_objects` holds the (rule, object) pairs that already earned points, so a second
    click on one email adds nothing; `scored_today` counts each rule's awards today.
    """
    changes = []
    for rule in rules:
        if rule.event != kind or rule.points == 0:
            continue
        object_key = None
        if rule.once_per is not None:
            value = properties.get(rule.once_per)
            object_key = f"{rule.once_per}={value}" if value is not None else None
            if object_key is not None and (rule.name, object_key) in scored_objects:
                continue
        if (
            rule.max_per_day is not None
            and (scored_today or {}).get(rule.name, 0) >= rule.max_per_day
        ):
            continue
        # The condition last: the checks above are look-ups, and most events fail one.
        if rule.when is not None and not expressions.evaluate(rule.when, variables):
            continue
        changes.append(Change("engagement", rule.points, rule.name, object_key))
    return changes
