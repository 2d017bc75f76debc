"""Moving people across an edit of their workflow: pure rules, no database, no clock.

A person's place in a workflow is, per phase track, the id of the last step whose turn is
done (sent, passed over because they had it, or skipped by its condition), or of the arm of
a branch, wait_until or split they took (`<id>#then`, `#else`, `#<path>`); no entry means
the track has not started; `<id>#` (`past(id)`): done with that branch, wait or split,
whichever way (someone whose way was removed: they go on with what follows it). Nested
steps are read as a tree: each step knows the arm it is in (`StepInfo.arm`), and a place
is carried within the person's own arm. When the workflow's file changes, `carry` says
where each person goes in the new version:

- a step that keeps its id keeps its people, wherever it moved;
- a removed step: they go on with the next step that remains in their own arm (the way of
  the branch, wait or split they took), else with what follows that branch, wait or split
  (its continuation), never with a step of another arm; a removed arm (a split's path) or a
  removed branch, wait or split sends them to its continuation too;
- a renamed step (its content declared `renamed_from:`) is the same step;
- a new step after their place reaches them, also when they had finished the track;
  a new step placed before it does not (they are past it);
- a step moved from after their place to before it still reaches them;
- a removed track: people in that phase wait with the reason (held), never silently.

The planner then passes over every piece they already got, so nobody gets one twice, and a
step's wait counts from their last email. `carry` also says what changed for the person
(continue, move from a step to another, finish, held), which `nurture plan` counts: `finish`
only for someone who had a step to come and has none after the edit (who had finished
before and still has nothing left continues as they were).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence, Set
from datetime import timedelta
from enum import StrEnum
from typing import Any

from nurture.core.values import value
from nurture.workflows import Node, Workflow, _Compound

#: The start of every reason of someone the rules could not place (stored, shown by explain).
HELD = "held after an edit of"
#: The reason of someone who had nothing left before the edit and has nothing after it:
#: the edit does not change them (counted as `continue`, never as `finish`).
FINISHED = "had finished their track"
#: The prefix of the places key saying when a track's last wait started or ended (planner).
SINCE = "since:"


class Kind(StrEnum):
    CONTINUE = "continue"
    MOVE = "move"
    FINISH = "finish"
    HOLD = "hold"


@value
class StepInfo:
    id: str
    content: str
    wait: timedelta
    #: The arm the step (or arm) is in (`<id>#<way>`), None at the top of its track. Outlines
    #: recorded before arms were (None everywhere) are read as one flat list, as then.
    arm: str | None = None


def past(compound: str) -> str:
    """The place of someone done with branch, wait or split `compound`, whichever way."""
    return f"{compound}#"


def _parent(arm: str) -> str:
    """The branch, wait or split an arm (`<id>#<way>`) or a `past` place belongs to."""
    return arm.rpartition("#")[0]


#: phase -> the track's steps in the order people meet them.
Outline = Mapping[str, Sequence[StepInfo]]


def outline(workflow: Workflow) -> dict[str, list[StepInfo]]:
    """The workflow's steps per track, in order (computed once per loaded workflow)."""
    cached = _outlines.get(id(workflow))
    if cached is not None and cached[0] is workflow:
        return cached[1]
    made: dict[str, list[StepInfo]] = {
        phase: list(_infos(list(steps), None)) for phase, steps in workflow.tracks.items()
    }
    if len(_outlines) > 256:
        _outlines.clear()
    _outlines[id(workflow)] = (workflow, made)
    return made


_outlines: dict[int, tuple[Workflow, dict[str, list[StepInfo]]]] = {}


def _infos(steps: list[Node], arm: str | None) -> Iterator[StepInfo]:
    """`walk`'s order (depth first), each step and arm with the arm it is in."""
    for step in steps:
        yield StepInfo(step.key, step.content, step.wait, arm)
        if isinstance(step, _Compound):
            for key, inner in step.arms():
                yield StepInfo(key, "", timedelta(0), arm)
                yield from _infos(inner, key)


def outline_to_json(value: Outline) -> dict[str, Any]:
    return {
        phase: [
            {
                "id": s.id,
                "content": s.content,
                "wait": s.wait.total_seconds(),
                **({"arm": s.arm} if s.arm else {}),
            }
            for s in steps
        ]
        for phase, steps in value.items()
    }


def outline_from_json(value: Mapping[str, Any]) -> dict[str, list[StepInfo]]:
    return {
        phase: [
            StepInfo(s["id"], s["content"], timedelta(seconds=s["wait"]), s.get("arm"))
            for s in steps
        ]
        for phase, steps in value.items()
    }


def step_renames(old: Outline, new: Outline, aliases: Mapping[str, str]) -> dict[str, str]:
    """Old step id -> new step id, for steps whose id changed because their content was
    renamed (the new piece lists the old id in `renamed_from:`)."""
    new_ids = {s.id for steps in new.values() for s in steps}
    by_content = {s.content: s.id for steps in new.values() for s in steps if s.content}
    renames: dict[str, str] = {}
    for steps in old.values():
        for step in steps:
            if step.id in new_ids or not step.content:
                continue
            target = by_content.get(aliases.get(step.content, ""))
            if target is not None and target not in {s.id for s in steps if s.id != step.id}:
                renames[step.id] = target
    return renames


def from_indexes(current: Outline, positions: Mapping[str, Any]) -> dict[str, str]:
    """Places from the index positions stored before step ids (`positions`: phase -> how
    many steps of the track were done), read against the workflow as it is now."""
    places: dict[str, str] = {}
    for phase, done in positions.items():
        steps = current.get(phase, [])
        if isinstance(done, int) and done > 0 and steps:
            places[phase] = steps[min(done, len(steps)) - 1].id
    return places


@value
class Carried:
    """Where a person goes in the new version, and what changed for them (their current
    phase's track): `was` the step they would have got next, `now` the one they will get
    (None: nothing left); `reason` says it in words."""

    places: dict[str, str]
    kind: Kind
    reason: str
    was: str | None = None
    now: str | None = None


class _Tree:
    """A track's outline as a tree: each step's arm, each arm's steps in order."""

    def __init__(self, steps: Sequence[StepInfo]) -> None:
        self.order = [s.id for s in steps]
        self.steps = {s.id: s for s in steps}
        self.arm = {s.id: s.arm for s in steps}
        self.arms = {s.id for s in steps if "#" in s.id}
        self.first_arm: dict[str, str] = {}
        for arm in self.order:
            if arm in self.arms:
                self.first_arm.setdefault(_parent(arm), arm)
        self.children: dict[str | None, list[str]] = {}
        for step in steps:
            if step.id not in self.arms:
                self.children.setdefault(step.arm, []).append(step.id)
        #: Recorded before arms were: read as one flat list, as it was then.
        self.flat = bool(self.arms) and not any(self.arm.values())

    def holds(self, place: str) -> bool:
        """Whether `place` is a place of this outline (a step, an arm, or `past` one)."""
        return place in self.steps or (place.endswith("#") and place[:-1] in self.first_arm)

    def after(self, key: str) -> str | None:
        """What comes once `key` (with all its ways) is done: the planner's `_after`."""
        if self.flat:
            at = self.order.index(key)
            return self.order[at + 1] if at + 1 < len(self.order) else None
        arm = self.arm.get(key)
        siblings = self.children.get(arm, [])
        at = siblings.index(key)
        if at + 1 < len(siblings):
            return siblings[at + 1]
        return None if arm is None else self.after(_parent(arm))

    def enter(self, arm: str) -> str | None:
        inner = self.children.get(arm)
        return inner[0] if inner else self.after(_parent(arm))

    def start(self, place: str | None) -> str | None:
        """The first step to look at from `place`."""
        if place is None or not self.holds(place):  # none yet, or not of this version
            return self.order[0] if self.order else None
        if place not in self.steps:
            return self.after(place[:-1])  # past a branch, wait or split
        if place in self.arms and not self.flat:
            return self.enter(place)
        return place if place in self.first_arm else self.after(place)

    def chain(self, key: str) -> list[str]:
        """The arms around `key`, innermost first."""
        found, arm = [], self.arm.get(key)
        while arm is not None:
            found.append(arm)
            arm = self.arm.get(arm)
        return found


_trees: dict[int, tuple[Sequence[StepInfo], _Tree]] = {}


def _tree(steps: Sequence[StepInfo]) -> _Tree:
    cached = _trees.get(id(steps))
    if cached is not None and cached[0] is steps:
        return cached[1]
    if len(_trees) > 256:
        _trees.clear()
    made = _Tree(steps)
    _trees[id(steps)] = (steps, made)
    return made


def _next(steps: Sequence[StepInfo], pointer: str | None, received: Set[str]) -> str | None:
    """The next email someone at `pointer` gets, in their own arm or after it (a branch,
    wait or split not decided yet: read down its first way)."""
    tree = _tree(steps)
    key = tree.start(pointer)
    while key is not None:
        step = tree.steps[key]
        if step.content and step.content not in received:
            return key
        if key in tree.first_arm and not tree.flat:
            key = tree.enter(tree.first_arm[key])
        else:
            key = tree.after(key)
    return None


def _pointer(old: Sequence[str], new: Sequence[str], pointer: str) -> str | None:
    """The place in list `new` of someone whose last done entry of list `old` is `pointer`."""
    at = old.index(pointer)
    reached = set(old[: at + 1])
    anchor = next((new.index(o) for o in reversed(old[: at + 1]) if o in new), -1)
    for index, step in enumerate(new):
        done = step in reached if step in old else index <= anchor
        if not done:
            return new[index - 1] if index else None
    return new[-1] if new else None


def _carried(before: _Tree, after: _Tree, pointer: str) -> str | None:
    """The place in `after` of someone at `pointer` of `before` (see the module's rules):
    carried within the innermost arm around them that remains, never into another arm."""
    if before.flat or after.flat:
        return _pointer(before.order, after.order, pointer.removesuffix("#"))
    finished = pointer not in before.steps  # `past(...)`: done with that compound
    node = pointer[:-1] if finished else pointer
    deciding = not finished and (node in before.arms or node in before.first_arm)
    if deciding and node in after.steps and after.arm[node] == before.arm[node]:
        return node  # at a way taken, or waiting at (deciding) a step: still there
    around = [arm for arm in before.chain(node) if arm in after.arms]
    scope = around[0] if around else None
    level = _parent(node) if node in before.arms else node
    while before.arm[level] != scope:  # the step of that arm on their way
        level = _parent(before.arm[level] or "")
    place = _pointer(before.children.get(scope, []), after.children.get(scope, []), level)
    if place is None:
        return scope
    if place in after.first_arm and not (place == node and not finished):
        return past(place)  # done with it, or their way of it is gone: what follows it
    return place


def carry(
    old: Outline,
    new: Outline,
    places: Mapping[str, str],
    *,
    phase: str | None,
    received: Set[str],
    workflow: str,
    renames: Mapping[str, str] | None = None,
) -> Carried:
    """Where someone at `places` of version `old` goes in version `new`.

    `phase` is the phase their stage gets now (None: none), `received` every content id
    they ever got (canonical ids, renames applied), `renames` old step id -> new step id.
    """
    renames = renames or {}
    # `since:<phase>` (when a wait started or ended) goes along with the track's place.
    extra = {k: v for k, v in places.items() if k.startswith(SINCE)}
    places = {k: v for k, v in places.items() if not k.startswith(SINCE)}
    old_steps = {
        track: [StepInfo(renames.get(s.id, s.id), s.content, s.wait, s.arm) for s in steps]
        for track, steps in old.items()
    }
    if not renames:
        old_steps = {track: list(steps) for track, steps in old.items()}
    pointers = {track: renames.get(p, p) for track, p in places.items()}
    moved: dict[str, str] = {}
    lost: str | None = None
    for track, pointer in pointers.items():
        before = _tree(old_steps.get(track, []))
        after = _tree(new.get(track, []))
        if not after.order:
            continue  # the track is gone: its place goes with it
        if not before.holds(pointer):
            if after.holds(pointer):
                moved[track] = pointer  # already a place of the new version
            elif track == phase:
                lost = pointer
            continue
        place = _carried(before, after, pointer)
        if place is not None:
            moved[track] = place
    moved.update({k: v for k, v in extra.items() if k[len(SINCE) :] in moved})
    if phase is None:
        return Carried(moved, Kind.CONTINUE, "their stage receives no nurture")
    if lost is not None:
        return Carried(
            moved,
            Kind.HOLD,
            f"{HELD} {workflow}: their place {lost!r} is no step of the version they were "
            "on; held for a person to decide",
        )
    was = _next(old_steps.get(phase, []), pointers.get(phase), received)
    if not new.get(phase):
        if was is None:
            return Carried(moved, Kind.CONTINUE, f"{FINISHED}; no {phase} track any more")
        return Carried(
            moved,
            Kind.HOLD,
            f"{HELD} {workflow}: its {phase} track was removed before they got {was}; "
            "held until their stage moves to a phase it still has",
            was,
        )
    now = _next(new[phase], moved.get(phase), received)
    if now is None and was is None:
        return Carried(moved, Kind.CONTINUE, f"{FINISHED}; nothing new for them")
    if now is None:
        return Carried(moved, Kind.FINISH, f"all {phase} steps done", was)
    if now == was:
        return Carried(moved, Kind.CONTINUE, f"next {now}, as before", was, now)
    source = was or "the end of the track"
    return Carried(moved, Kind.MOVE, f"next {now} instead of {source}", was, now)


#: `enrollments.version` of rows from before step ids: their `positions` are indexes, read
#: against the workflow files found at the engine's first start after the migration.
LEGACY = "index"


def gone(workflow: str) -> str:
    return (
        f"{HELD} {workflow}: workflow {workflow} is gone (no workflows/{workflow}.yaml); waits "
        f"until it returns or a workflow says renamed_from: {workflow}"
    )


def place(
    version: str | None,
    places: Mapping[str, str],
    positions: Mapping[str, Any],
    old: Outline | None,
    new: Outline,
    *,
    phase: str | None,
    received: Set[str],
    workflow: str,
    aliases: Mapping[str, str],
) -> Carried:
    """Where an enrollment stored on `version` (its outline `old`) stands in `new`.

    `version` None: not planned yet, at the start of each track; LEGACY: index `positions`
    read against `new`; an unknown version (no outline) is held, never restarted.
    """
    if version is None or version == LEGACY:
        start = dict(places) or from_indexes(new, positions)
        return Carried(start, Kind.CONTINUE, "first planned on this version")
    if old is None:
        return Carried(
            dict(places),
            Kind.HOLD,
            f"{HELD} {workflow}: the version it was on ({version[:12]}) is not recorded; "
            "held for a person to decide",
        )
    renames = step_renames(old, new, aliases)
    return carry(
        old, new, places, phase=phase, received=received, workflow=workflow, renames=renames
    )


@value
class Changes:
    """What an edit changed in a workflow's steps (ids per phase)."""

    added: list[str]
    removed: list[str]
    moved: list[str]
    renamed: dict[str, str]
    waits: dict[str, tuple[timedelta, timedelta]]

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.moved or self.renamed or self.waits)


def changes(old: Outline, new: Outline, aliases: Mapping[str, str]) -> Changes:
    renames = step_renames(old, new, aliases)
    old_steps = {renames.get(s.id, s.id): s for steps in old.values() for s in steps}
    new_steps = {s.id: s for steps in new.values() for s in steps}
    moved: list[str] = []
    for phase in new:
        before = [renames.get(s.id, s.id) for s in old.get(phase, [])]
        after = [s.id for s in new[phase]]
        common_before = [i for i in before if i in after]
        common_after = [i for i in after if i in before]
        keep = _longest_common(common_before, common_after)
        moved.extend(i for i in common_after if i not in keep)
    return Changes(
        added=[i for i in new_steps if i not in old_steps],
        removed=[i for i in old_steps if i not in new_steps],
        moved=moved,
        renamed=renames,
        waits={
            i: (old_steps[i].wait, s.wait)
            for i, s in new_steps.items()
            if i in old_steps and old_steps[i].wait != s.wait
        },
    )


def _longest_common(a: Sequence[str], b: Sequence[str]) -> set[str]:
    """The ids of a longest common subsequence of a and b: the steps that did not move."""
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) - 1, -1, -1):
        for j in range(len(b) - 1, -1, -1):
            table[i][j] = (
                table[i + 1][j + 1] + 1 if a[i] == b[j] else max(table[i + 1][j], table[i][j + 1])
            )
    kept: set[str] = set()
    i = j = 0
    while i < len(a) and j < len(b):
        if a[i] == b[j]:
            kept.add(a[i])
            i, j = i + 1, j + 1
        elif table[i + 1][j] >= table[i][j + 1]:
            i += 1
        else:
            j += 1
    return kept
