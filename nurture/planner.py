"""Which email an enrollment sends next: pure, from the workflow, the stage's phase and history."""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from nurture import expressions
from nurture.phases import Phase
from nurture.workflows import Step, Workflow


@dataclass(frozen=True)
class Send:
    step: Step
    phase: Phase
    positions: dict[str, int]
    skipped: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class WaitUntil:
    """The next step exists but its wait has not run out."""

    until: datetime
    step: Step
    positions: dict[str, int]


@dataclass(frozen=True)
class Exhausted:
    """Nothing left to send in this phase: the person waits for new content or a new stage."""

    reason: str
    positions: dict[str, int]


Plan = Send | WaitUntil | Exhausted


def plan_next(
    workflow: Workflow,
    phase: Phase | None,
    positions: Mapping[str, int],
    received: Set[str],
    *,
    since: datetime,
    now: datetime,
    variables: Mapping[str, Any],
) -> Plan:
    """The next step of `workflow` for a person whose stage gets `phase` content.

    `received` holds every content id the person ever got (from any workflow): those steps
    are passed over, so nobody gets a piece twice. `since` is when the previous email of this
    enrollment went (or when the person entered): each step's wait counts from it. A step
    whose condition does not hold when it comes due is skipped for good.
    """
    updated = dict(positions)
    if phase is None:
        return Exhausted("the current stage receives no nurture", updated)
    track = workflow.track(phase)
    index = updated.get(phase, 0)
    skipped: list[str] = []
    while index < len(track):
        step = track[index]
        if step.content in received:
            index += 1
            updated[phase] = index
            continue
        due = since + step.wait
        if due > now:
            return WaitUntil(due, step, updated)
        if step.when is not None and not expressions.evaluate(step.when, variables):
            skipped.append(step.content)
            index += 1
            updated[phase] = index
            continue
        updated[phase] = index + 1
        return Send(step, phase, updated, tuple(skipped))
    return Exhausted(f"all {phase} content of {workflow.id} sent", updated)
