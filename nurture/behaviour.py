"""What synthetic people can do in a project, read from the project itself.

The simulator must work on any project, not only the example: the events that bring people
in are the enter_on events of the first nurtured stage (and the workflows' entry events);
the things an interested person does are the project's own events that earn engagement
points; the step up to the next stage is that stage's enter_on event. Pure: settings and
workflows in, a repertoire out.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nurture import expressions
from nurture.config import BUILTIN_EVENTS, Settings
from nurture.phases import PHASES
from nurture.workflows import Workflow

#: `'/pricing' in event.url` and `event.url == '/pricing'`: values a rule asks an event for.
_IN = re.compile(r"""(['"])(?P<value>[^'"]*)\1\s+in\s+event\.(?P<key>\w+)""")
_EQ = re.compile(r"""event\.(?P<key>\w+)\s*==\s*(['"])(?P<value>[^'"]*)\2""")


@dataclass(frozen=True)
class Deed:
    """An event kind a person records, with the properties that make its scoring rule count;
    `unique` names a property that must differ each time (the rule's once_per)."""

    kind: str
    points: float
    properties: tuple[tuple[str, str], ...] = ()
    unique: str | None = None

    def props(self, token: str) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.properties)
        if self.unique is not None and self.unique not in out:
            out[self.unique] = f"{self.kind}-{token}"
        return out


@dataclass(frozen=True)
class Repertoire:
    #: Events that bring a person into the nurture (the first nurtured stage's enter_on).
    arrivals: tuple[str, ...]
    #: When no event does: the stage a newcomer is put in (as an import would).
    arrival_stage: str | None
    #: Per content phase, what an interested reader does after a click.
    interest: Mapping[str, tuple[Deed, ...]]
    #: Per stage, the event that moves a person to the next stage (when one does).
    advance: Mapping[str, str]
    #: Lead sources named in nurture.yaml (the dashboard's cost per lead).
    sources: tuple[str, ...] = field(default=())


def repertoire(settings: Settings, workflows: Mapping[str, Workflow]) -> Repertoire:
    own = set(settings.event_kinds) - BUILTIN_EVENTS
    stages = list(settings.stages)
    nurtured = [s for s in stages if s.phase is not None]
    first = nurtured[0] if nurtured else None
    arrivals = [k for k in (first.enter_on if first else []) if k in own]
    for workflow in workflows.values():
        arrivals += [k for k in workflow.enter.events if k in own and k not in arrivals]
    movers = {kind for stage in stages if stage is not first for kind in stage.enter_on}
    ending = set(settings.disqualify.events)
    for workflow in workflows.values():
        ending |= set(workflow.goals.events)
    deeds = sorted(
        (
            deed
            for rule in settings.scoring.engagement.rules
            if rule.event in own and rule.points > 0 and rule.event not in movers | ending
            for deed in [_deed(rule.event, rule.points, rule.when, rule.once_per, settings)]
            if deed is not None
        ),
        key=lambda d: (d.points, d.kind, d.properties),
    )
    interest = _tiers(deeds)
    advance: dict[str, str] = {}
    for lower, higher in itertools.pairwise(stages):
        kinds = [k for k in higher.enter_on if k in own]
        if kinds:
            advance[lower.name] = kinds[0]
    return Repertoire(
        arrivals=tuple(arrivals),
        arrival_stage=None if arrivals or first is None else first.name,
        interest=interest,
        advance=advance,
        sources=tuple(name for name in settings.sources),
    )


def _deed(
    kind: str, points: float, when: str | None, once_per: str | None, settings: Settings
) -> Deed | None:
    """The deed that earns this rule's points, or None when no simple event does."""
    properties: dict[str, str] = {}
    if when is not None:
        for pattern in (_IN, _EQ):
            for match in pattern.finditer(when):
                properties.setdefault(match["key"], match["value"])
        event = {**properties}
        if once_per is not None:
            event.setdefault(once_per, "x")
        variables = {**settings.lists, "event": event, "contact": {}, "fit": 0, "engagement": 0}
        if not expressions.evaluate(when, variables):
            return None
    return Deed(kind, points, tuple(sorted(properties.items())), once_per)


def _tiers(deeds: list[Deed]) -> dict[str, tuple[Deed, ...]]:
    """Small steps after early content, bigger ones later: the deeds, lowest points first,
    cut in as many tiers as there are phases."""
    if not deeds:
        return {phase: () for phase in PHASES}
    out: dict[str, tuple[Deed, ...]] = {}
    count = len(PHASES)
    for rank, phase in enumerate(PHASES):
        low = rank * len(deeds) // count
        high = max(low + 1, (rank + 1) * len(deeds) // count)
        out[phase] = tuple(deeds[low:high])
    return out
