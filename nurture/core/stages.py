"""Stage rules: from scores, profile and the event just recorded, where a contact belongs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from nurture import expressions
from nurture.config import DISQUALIFIED, FIRST_STAGE, Disqualify, Stage
from nurture.core.values import value


@value
class Move:
    to_stage: str
    reason: str


def next_stage(
    stages: Sequence[Stage],
    disqualify: Disqualify,
    current: str,
    variables: Mapping[str, Any],
    event_kind: str | None = None,
    *,
    by_hand: bool = False,
    before: Mapping[str, Any] | None = None,
) -> Move | None:
    """The automatic move for a contact now, if any.

    Moves go up only, to the highest stage whose rule matches; a disqualifying event or
    condition wins over everything. Moves down are made by people, with their reason.

    `by_hand`: the current stage was set by a person. It holds against the score rules
    (`enter_when`): one of them raises the contact only when it did not hold just before the
    event being recorded (`before`: the variables before its score changes) and holds now,
    i.e. the scores crossed its threshold again; without an event (`before` None) they do
    not. `enter_on` events and disqualification move the contact as always.
    """
    if current == DISQUALIFIED:
        return None
    if event_kind is not None and event_kind in disqualify.events:
        return Move(DISQUALIFIED, f"event {event_kind}")
    if disqualify.when is not None and expressions.evaluate(disqualify.when, variables):
        return Move(DISQUALIFIED, f"rule {disqualify.when} ({_scores(variables)})")
    names = [FIRST_STAGE, *(stage.name for stage in stages)]
    rank = names.index(current) if current in names else 0
    for stage in reversed(stages):
        if names.index(stage.name) <= rank:
            break
        if event_kind is not None and event_kind in stage.enter_on:
            return Move(stage.name, f"event {event_kind}")
        if stage.enter_when is not None and expressions.evaluate(stage.enter_when, variables):
            if by_hand and (before is None or expressions.evaluate(stage.enter_when, before)):
                continue  # held at the stage set by hand: the threshold was not crossed again
            return Move(stage.name, f"rule {stage.enter_when} ({_scores(variables)})")
    return None


def _scores(variables: Mapping[str, Any]) -> str:
    return f"fit {variables.get('fit', 0):g}, engagement {variables.get('engagement', 0):.1f}"
