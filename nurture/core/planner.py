"""Which email an enrollment sends next: pure, from the workflow, the stage's phase and history.

A track is a tree of steps: emails, branches (`if:`), waits for an event (`wait_until:`),
splits (A/B of paths) and actions. A person's place per track is the key of the last thing
done in it: a step, or an arm (`<id>#then`, `<id>#else`, `<id>#<path>`) when they took a way
of a branch, a wait or a split and have done none of its steps yet; the key of a wait_until
itself while they wait at it (`since:<phase>` in the places then says since when); `<id>#`
(`versions.past`) when done with one whichever way (an edit removed the way they took).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Set
from dataclasses import field
from datetime import datetime
from typing import Any

from nurture import expressions
from nurture.core.engagement import Engagement, functions
from nurture.core.values import value
from nurture.core.versions import SINCE, past
from nurture.phases import Phase
from nurture.workflows import ActionStep, Branch, Node, Split, Step, WaitFor, Workflow

#: phase -> the key of the last step or arm of that track whose turn is done (sent, passed
#: over, skipped, taken); a phase missing has not started. Never a list index: see
#: nurture/core/versions.py. `since:<phase>`: when the wait at a wait_until started (while the
#: place is that step), or when the last one ended (a floor for the next step's wait).
Places = dict[str, str]


def since_key(phase: str) -> str:
    return f"{SINCE}{phase}"


@value
class Mark:
    """A journey step done on the way: a way taken (`way`: then, else or a path id), a wait
    started (`way` "waiting"), or an action done (`action`)."""

    step: str
    way: str
    at: datetime
    action: ActionStep | None = None


@value
class Send:
    step: Step
    phase: Phase
    places: Places
    #: The places with the steps passed over or skipped on the way, but not `step` itself
    #: (where the person stays when a cap holds `step`).
    before: Places
    skipped: tuple[str, ...] = field(default=())
    marks: tuple[Mark, ...] = ()


@value
class WaitUntil:
    """The next step exists but its wait has not run out (or, `event` set: a wait_until
    waits for that event until `until`)."""

    until: datetime
    step: Node
    places: Places
    marks: tuple[Mark, ...] = ()
    event: str | None = None


@value
class Exhausted:
    """Nothing left to send in this phase: the person waits for new content or a new stage."""

    reason: str
    places: Places
    marks: tuple[Mark, ...] = ()


Plan = Send | WaitUntil | Exhausted
#: What a person did when nothing was read (their track asks nothing of it).
_NOTHING = Engagement()


@value
class _Index:
    """Where each step sits in a track's tree."""

    nodes: dict[str, Node]
    #: step key -> (its list, its index there, the arm key holding the list or None)
    position: dict[str, tuple[list[Node], int, str | None]]
    #: arm key -> (the compound step, the arm's steps)
    arms: dict[str, tuple[Node, list[Node]]]
    #: The places' key of when the track's last wait_until started or ended.
    since: str


_indexes: dict[tuple[int, str], tuple[Workflow, _Index]] = {}
#: The steps with ways to take.
_COMPOUND = (Branch, WaitFor, Split)


def _index(workflow: Workflow, phase: Phase) -> _Index:
    cached = _indexes.get((id(workflow), phase))
    if cached is not None and cached[0] is workflow:
        return cached[1]
    index = _Index({}, {}, {}, since_key(phase))

    def visit(steps: list[Node], arm: str | None) -> None:
        for number, step in enumerate(steps):
            index.nodes[step.key] = step
            index.position[step.key] = (steps, number, arm)
            if isinstance(step, _COMPOUND):
                for key, inner in step.arms():
                    index.arms[key] = (step, inner)
                    visit(inner, key)

    visit(workflow.track(phase), None)
    if len(_indexes) > 512:
        _indexes.clear()
    _indexes[(id(workflow), phase)] = (workflow, index)
    return index


def _after(index: _Index, key: str) -> Node | None:
    """What comes once step `key` (with all its ways) is done."""
    steps, number, arm = index.position[key]
    if number + 1 < len(steps):
        return steps[number + 1]
    return None if arm is None else _after(index, index.arms[arm][0].key)


def _enter(index: _Index, arm: str) -> Node | None:
    compound, steps = index.arms[arm]
    return steps[0] if steps else _after(index, compound.key)


def _take(
    index: _Index,
    places: Places,
    marks: list[Mark],
    phase: str,
    compound: Node,
    way: str,
    at: datetime,
) -> Node | None:
    """Take `way` of a branch, split or wait: the person's place becomes its arm; what
    they meet first there (or after it, when the arm is empty)."""
    arm = f"{compound.key}#{way}"
    places[phase] = arm
    marks.append(Mark(compound.key, way, at))
    return _enter(index, arm)


def _scope(
    variables: Mapping[str, Any], did: Engagement, received: Set[str], now: datetime
) -> dict[str, Any]:
    """What a journey condition sees: the person's variables and the engagement functions."""
    return {**variables, **functions(did, received, now)}


def choose_path(split: Split, who: str, workflow: str) -> str:
    """The path of `split` for person `who`: a stable hash of (person, workflow, step id),
    spread over the paths in proportion to their weights."""
    digest = hashlib.sha256(f"{who}\x1f{workflow}\x1f{split.id}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") % sum(p.weight for p in split.split)
    for path in split.split:
        if point < path.weight:
            return path.id
        point -= path.weight
    return split.split[-1].id  # pragma: no cover - the weights sum up to more than point


def plan_next(
    workflow: Workflow,
    phase: Phase | None,
    places: Mapping[str, str],
    received: Set[str],
    *,
    since: datetime,
    now: datetime,
    variables: Mapping[str, Any],
    engagement: Engagement | None = None,
    who: str = "",
    entered: datetime | None = None,
    recorded: Set[str] = frozenset(),
) -> Plan:
    """The next step of `workflow` for a person whose stage gets `phase` content.

    `places` says, per track, the last step whose turn is done; the next one is read from the
    track's tree. `received` holds every content id the person ever got (from any workflow,
    renamed pieces under their current id): those steps are passed over, so nobody gets a
    piece twice. `since` is when the previous email of this enrollment went (or when the
    person entered): each step's wait counts from it (or from when the last wait_until ended,
    if later). A step whose condition does not hold when it comes due is skipped for good;
    a branch takes its way when it comes due, and keeps it. `engagement` is what the person
    did (for `clicked(...)` and the like, and wait_until); `who` names them for splits;
    `entered` is when they entered the workflow (a wait_until with `counts_from: entry`).
    `recorded`: pieces with a message row for them in any status (a failed send too): passed
    over like `received`, since the outbox holds one row per person and piece.
    """
    updated = dict(places)
    if phase is None:
        return Exhausted("the current stage receives no nurture", updated)
    track = workflow.tracks.get(phase)
    if not track:
        return Exhausted(
            f"{workflow.id} has no {phase} track: waits until the stage moves to a phase it has",
            updated,
        )
    index = _index(workflow, phase)
    did = engagement or _NOTHING
    # What conditions see, built at the first condition met (most plans meet none).
    scope: dict[str, Any] | None = None
    marks: list[Mark] = []
    skipped: list[str] = []
    pointer = updated.get(phase)
    waited = updated.get(index.since)
    floor = max(since, datetime.fromisoformat(waited)) if waited else since
    node: Node | None
    if pointer is None:
        node = track[0]
    elif pointer in index.arms:
        node = _enter(index, pointer)
    elif pointer in index.nodes:
        found = index.nodes[pointer]
        # At a branch, split or wait not decided yet: decide it; after anything else: go on.
        node = found if isinstance(found, _COMPOUND) else _after(index, pointer)
    elif pointer == past(pointer[:-1]) and pointer[:-1] in index.nodes:
        node = _after(index, pointer[:-1])  # done with it (an edit removed their way of it)
    else:
        return Exhausted(
            f"held: its place {pointer!r} is no step of {workflow.id} (picked up when the "
            "engine next loads the workflow)",
            updated,
        )

    while node is not None:
        key = node.key
        if updated.get(phase) != key:
            if isinstance(node, Step) and (node.content in received or node.content in recorded):
                updated[phase] = key
                node = _after(index, key)
                continue
            due = floor + node.wait
            if due > now:
                return WaitUntil(due, node, updated, tuple(marks))
            arrived = False
        else:
            arrived = True
        if isinstance(node, Step):
            if node.when is not None:
                scope = scope or _scope(variables, did, received, now)
                if not expressions.evaluate(node.when, scope):
                    skipped.append(node.content)
                    updated[phase] = key
                    node = _after(index, key)
                    continue
            return Send(node, phase, {**updated, phase: key}, updated, tuple(skipped), tuple(marks))
        if isinstance(node, Branch):
            scope = scope or _scope(variables, did, received, now)
            way = "then" if expressions.evaluate(node.if_, scope) else "else"
            node = _take(index, updated, marks, phase, node, way, now)
        elif isinstance(node, Split):
            node = _take(
                index, updated, marks, phase, node, choose_path(node, who, workflow.id), now
            )
        elif isinstance(node, ActionStep):
            updated[phase] = key
            marks.append(Mark(key, node.action.kind, now, node))
            node = _after(index, key)
        else:
            until = node.wait_until
            if arrived and updated.get(index.since):
                start = datetime.fromisoformat(updated[index.since])
            else:
                start = now
                updated[phase] = key
                updated[index.since] = start.isoformat()
                marks.append(Mark(key, "waiting", start))
            counted = entered if until.counts_from == "entry" and entered else start
            came = did.came(until.event, min(counted, start), until.where, variables)
            deadline = start + until.timeout
            if came is not None:
                floor = max(floor, came.at, start)
                updated[index.since] = floor.isoformat()
                node = _take(index, updated, marks, phase, node, "then", max(came.at, start))
            elif now >= deadline:
                floor = max(floor, deadline)
                updated[index.since] = floor.isoformat()
                node = _take(index, updated, marks, phase, node, "else", deadline)
            else:
                return WaitUntil(deadline, node, updated, tuple(marks), until.event)
    return Exhausted(f"all {phase} content of {workflow.id} sent", updated, tuple(marks))
