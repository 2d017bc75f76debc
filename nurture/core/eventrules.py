"""What a batch of events does, decided in memory: data in, data out, `now` passed in.

`decide` takes the people of a batch as `Person` (their row, enrollments, client ids, the
once-per objects and today's awards their rules need) and the events in order, and returns
every row to write: events, ledger lines, stage moves, contact and enrollment changes, new
enrollments, suppressions, account holds, message cancellations and hand-offs. A single
event is a batch of one. nurture/intake.py loads the people and writes the result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from nurture import expressions
from nurture.config import DISQUALIFIED, SUPPRESSING_EVENTS, Settings
from nurture.contacts import condition_variables, current_engagement, zone_of
from nurture.core.decisions import ACTIVE, COMPLETED, EXITED, PAUSED, WAITING
from nurture.core.engagement import WAITS_FOR
from nurture.core.holdouts import HOLDOUT, held_out
from nurture.core.scoring import Change, as_of, engagement_changes, fit_score
from nurture.core.stages import Move, next_stage
from nurture.core.values import value
from nurture.workflows import Workflow

OPEN_STATUSES = (ACTIVE, WAITING, PAUSED)


@value
class Incoming:
    """One event to record; `email` is normalized."""

    email: str
    kind: str
    occurred_at: datetime | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    client_event_id: str | None = None
    message_id: int | None = None


@dataclass
class Enrolled:
    """One enrollment as the rules see it; `changed` holds the columns to write."""

    id: int | None  # None: entered in this batch
    workflow: str
    status: str
    ended_at: datetime | None
    hold_reason: str | None
    changed: dict[str, Any] = field(default_factory=dict)

    def set(self, **values: Any) -> None:
        for name in ("status", "ended_at", "hold_reason"):
            if name in values:
                setattr(self, name, values[name])
        self.changed.update(values)


@dataclass
class Person:
    """A contact and what its events' rules need, kept current across the batch."""

    id: int
    email: str
    account: str | None
    timezone: str | None
    custom: dict[str, Any]
    stage: str
    stage_since: datetime
    fit: float
    engagement: float
    engagement_at: datetime
    fields: dict[str, Any]
    client_ids: dict[str, int] = field(default_factory=dict)  # < 0: -1 - index in this batch
    scored: set[tuple[str, str]] = field(default_factory=set)
    awards: list[tuple[str, datetime]] = field(default_factory=list)  # the last two days'
    today: dict[str, int] | None = None  # awards per rule today, from `awards`
    enrollments: dict[str, Enrolled] = field(default_factory=dict)
    suppressed: bool = False
    #: The current stage was set by a person (its latest move was by hand): it holds against
    #: the score rules until a threshold is crossed again (nurture/core/stages.py `next_stage`).
    stage_by_hand: bool = False
    changed: dict[str, Any] = field(default_factory=dict)  # contact columns to write


@dataclass
class Decision:
    """What one event did, for callers to report: its event (`event`, an index into
    `Decided.events`, or `stored_id` for a repeat of a stored event) and what it changed."""

    person: Person
    event: int | None = None
    stored_id: int | None = None
    duplicate: bool = False
    stage: str = ""
    changes: list[Change] = field(default_factory=list)
    moves: list[Move] = field(default_factory=list)
    enrolled: list[str] = field(default_factory=list)
    #: Workflows the person entered held out (recorded, never emailed by them).
    held_out: list[str] = field(default_factory=list)
    ended: list[str] = field(default_factory=list)


@dataclass
class HandOff:
    """A move up to the hand-off stage: the row and the owner's note are written after."""

    person: Person
    move: Move
    engagement: float


@dataclass
class Decided:
    """Every row a batch writes, in order; `event` fields are indexes into `events`."""

    decisions: list[Decision] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    score_changes: list[tuple[int | None, dict[str, Any]]] = field(default_factory=list)
    stage_moves: list[tuple[int | None, dict[str, Any]]] = field(default_factory=list)
    suppressions: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    holds: list[dict[str, Any]] = field(default_factory=list)
    cancels: list[dict[str, Any]] = field(default_factory=list)
    handoffs: list[HandOff] = field(default_factory=list)


def decide(
    settings: Settings,
    workflows: Mapping[str, Workflow],
    people: Mapping[str, Person],
    items: Sequence[Incoming],
    now: datetime,
) -> Decided:
    """Record `items` in order for `people` (by address): what `record_event` did for one
    event, for the whole batch. `people` are changed in place (they stay current)."""
    out = Decided()
    waited = frozenset(kind for w in workflows.values() for kind in w.waits_on)
    midnights = {p.id: _midnight(p, settings, now) for p in people.values()}
    for item in items:
        person = people[item.email]
        cid = item.client_event_id
        if cid is not None and cid in person.client_ids:
            known = person.client_ids[cid]
            decision = Decision(person, -1 - known if known < 0 else None, duplicate=True)
            decision.stored_id = known if known >= 0 else None
            decision.stage = person.stage
            out.decisions.append(decision)
            continue
        index = len(out.events)
        decision = Decision(person, index)
        out.decisions.append(decision)
        _event(settings, workflows, person, item, now, midnights[person.id], waited, index, out)
        if cid is not None:
            person.client_ids[cid] = -1 - index
        decision.stage = person.stage
    return out


def _midnight(person: Person, settings: Settings, now: datetime) -> datetime:
    return now.astimezone(zone_of(person, settings)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )


def _event(
    settings: Settings,
    workflows: Mapping[str, Workflow],
    person: Person,
    item: Incoming,
    now: datetime,
    midnight: datetime,
    waited: frozenset[str],
    index: int,
    out: Decided,
) -> None:
    """Store the event, then score it, move the stage, end goals and enroll, in that order."""
    decision = out.decisions[-1]
    props = item.properties
    occurred_at = item.occurred_at or now
    out.events.append(
        {
            "contact_id": person.id,
            "kind": item.kind,
            "occurred_at": occurred_at,
            "recorded_at": now,
            "properties": props,
            "client_event_id": item.client_event_id,
            "message_id": item.message_id,
            "machine": str(props["machine"])[:40] if props.get("machine") else None,
        }
    )
    if item.kind in SUPPRESSING_EVENTS:
        row = {"email": person.email, "reason": item.kind, "at": now}
        out.suppressions.append((index, row))
        person.suppressed = True
    if props.get("machine"):
        return  # stored for the record, never scored: a machine is not a person
    event_vars = {"kind": item.kind, **props}
    variables = condition_variables(person, settings, now, event_vars, fields=person.fields)
    today = person.today
    if today is None:  # awards per rule since the start of the person's local day
        today = person.today = {}
        for rule, at in person.awards:
            if at >= midnight:
                today[rule] = today.get(rule, 0) + 1
    changes = engagement_changes(
        settings.scoring.engagement.rules,
        item.kind,
        props,
        variables,
        scored_objects=person.scored,
        scored_today=today,
    )
    changes = as_of(changes, occurred_at, now, settings.scoring.engagement)
    engagement = current_engagement(person, settings, now)
    for change in changes:
        engagement += change.points
        out.score_changes.append(
            (
                index,
                {
                    "contact_id": person.id,
                    "at": now,
                    "axis": "engagement",
                    "points": change.points,
                    "value_after": engagement,
                    "rule": change.rule,
                    "object_key": change.object_key,
                },
            )
        )
        if change.object_key is not None:
            person.scored.add((change.rule, change.object_key))
        today[change.rule] = today.get(change.rule, 0) + 1  # awarded now: today
    if changes:
        _set(person, engagement=engagement, engagement_at=now)
        if sum(c.points for c in changes) > 0:
            _set(person, last_engaged_at=now)
            for enrollment in person.enrollments.values():  # real engagement wakes them
                if enrollment.status == WAITING:
                    enrollment.set(status=ACTIVE, due_at=now, hold_reason=None)
    decision.changes = changes
    if item.kind in waited:  # the event a wait_until waits for came: plan them now
        prefix = f"{WAITS_FOR} {item.kind} until "
        for enrollment in person.enrollments.values():
            if enrollment.status == ACTIVE and (enrollment.hold_reason or "").startswith(prefix):
                enrollment.set(due_at=now)
    stage_rules(
        settings, workflows, person, now, event_vars, index, decision, out, before=variables
    )
    for enrollment in _open(person):
        workflow = workflows.get(enrollment.workflow)
        if workflow is not None and item.kind in workflow.goals.events:
            _end(enrollment, COMPLETED, f"goal: {item.kind}", now, decision)
    if item.kind in settings.account_pause.events:
        _hold(settings, person, f"{person.email} had {item.kind}", now, out)
    enter(settings, workflows, person, now, item.kind, decision)


def _set(person: Person, **values: Any) -> None:
    for name, given in values.items():
        setattr(person, name, given)
    person.changed.update(values)


def _open(person: Person) -> list[Enrolled]:
    return [e for e in person.enrollments.values() if e.status in OPEN_STATUSES]


def stage_rules(
    settings: Settings,
    workflows: Mapping[str, Workflow],
    person: Person,
    now: datetime,
    event_vars: dict[str, Any] | None,
    index: int | None,
    decision: Decision,
    out: Decided,
    cause: str | None = None,
    before: Mapping[str, Any] | None = None,
) -> None:
    """Apply the automatic stage moves the person now meets (after event `index`, if any;
    `cause` is added to each move's reason). `before` holds the variables from before the
    event's score changes: a stage set by hand yields only to a threshold crossed again."""
    kind = event_vars["kind"] if event_vars else None
    for _ in range(len(settings.stage_names)):
        variables = condition_variables(person, settings, now, event_vars, fields=person.fields)
        found = next_stage(
            settings.stages,
            settings.disqualify,
            person.stage,
            variables,
            kind,
            by_hand=person.stage_by_hand,
            before=before,
        )
        if found is None:
            return
        if cause:
            found = Move(found.to_stage, f"{found.reason} ({cause})")
        move(settings, workflows, person, found, now, index, decision, out)


def move(
    settings: Settings,
    workflows: Mapping[str, Workflow],
    person: Person,
    move: Move,
    now: datetime,
    index: int | None,
    decision: Decision,
    out: Decided,
    event_id: int | None = None,
    *,
    by_hand: bool = False,
) -> None:
    """Record the move (caused by event `index` of the batch, or the stored `event_id`, if
    any; `by_hand` when a person made it) and re-route the person's enrollments: hand-off,
    hold, recycling, goals, exits."""
    out.stage_moves.append(
        (
            index,
            {
                **({"event_id": event_id} if event_id is not None else {}),
                "contact_id": person.id,
                "at": now,
                "from_stage": person.stage,
                "to_stage": move.to_stage,
                "reason": move.reason,
                "by_hand": by_hand,
            },
        )
    )
    person.stage_by_hand = by_hand
    names = settings.stage_names
    upward = names.index(move.to_stage) > names.index(person.stage)
    _set(person, stage=move.to_stage, stage_since=now)
    decision.moves.append(move)
    phase = settings.phase_of(move.to_stage)
    out.cancels.append(
        {
            "b_contact": person.id,
            "b_phase": phase or "",
            "b_error": f"stage moved to {move.to_stage} before it went",
        }
    )
    if move.to_stage in settings.account_pause.stages:
        _hold(settings, person, f"{person.email} reached {move.to_stage}", now, out)
    handoff = settings.handoff
    handed_off = handoff is not None and upward and move.to_stage == handoff.stage
    if handed_off:
        out.handoffs.append(HandOff(person, move, current_engagement(person, settings, now)))
    if not upward and move.to_stage == settings.recycle_stage:
        for enrollment in person.enrollments.values():  # back into what progress ended
            if enrollment.status == COMPLETED:
                enrollment.set(
                    status=ACTIVE, due_at=now, ended_at=None, end_reason=None, hold_reason=None
                )
    for enrollment in _open(person):
        workflow = workflows.get(enrollment.workflow)
        if handed_off and handoff is not None and handoff.end_nurture:
            _end(enrollment, COMPLETED, "goal: handed off to sales", now, decision)
        elif move.to_stage == DISQUALIFIED:
            _end(enrollment, EXITED, f"disqualified: {move.reason}", now, decision)
        elif workflow is not None and move.to_stage in workflow.goals.stages:
            _end(enrollment, COMPLETED, f"goal: reached stage {move.to_stage}", now, decision)
        elif enrollment.status != PAUSED:
            enrollment.set(status=ACTIVE, due_at=now, hold_reason=None)


def rescore_fit(
    settings: Settings, person: Person, now: datetime, cause: str | None, out: Decided
) -> bool:
    """The person's fit under the current rules; True when it changed (and a ledger line
    saying why is added)."""
    variables = condition_variables(person, settings, now, fields=person.fields)
    fit, reasons = fit_score(settings.scoring.fit, variables)
    if fit == person.fit:
        return False
    rule = "; ".join(reasons) or "no fit rule matches"
    out.score_changes.append(
        (
            None,
            {
                "contact_id": person.id,
                "at": now,
                "axis": "fit",
                "points": fit - person.fit,
                "value_after": fit,
                "rule": f"{cause}: {rule}"[:300] if cause else rule,
                "object_key": None,
            },
        )
    )
    _set(person, fit=fit)
    return True


@dataclass
class Rules:
    """The same rules applied outside an event (a move by hand, new fit rules, a profile
    edit): see intake.change_people. What each person's changes did is in `decisions`."""

    settings: Settings
    workflows: Mapping[str, Workflow]
    now: datetime
    out: Decided
    decisions: dict[int, Decision] = field(default_factory=dict)

    def decision(self, person: Person) -> Decision:
        if person.id not in self.decisions:
            self.decisions[person.id] = Decision(person)
        return self.decisions[person.id]

    def rescore_fit(self, person: Person, cause: str | None) -> bool:
        return rescore_fit(self.settings, person, self.now, cause, self.out)

    def move(
        self, person: Person, to: Move, event_id: int | None = None, *, by_hand: bool = False
    ) -> None:
        found = self.decision(person)
        move(
            self.settings,
            self.workflows,
            person,
            to,
            self.now,
            None,
            found,
            self.out,
            event_id,
            by_hand=by_hand,
        )

    def stage_rules(self, person: Person, cause: str | None = None) -> None:
        found = self.decision(person)
        stage_rules(
            self.settings, self.workflows, person, self.now, None, None, found, self.out, cause
        )

    def enter(self, person: Person, *, only: str | None = None, admitted: bool = False) -> None:
        found = self.decision(person)
        enter(
            self.settings,
            self.workflows,
            person,
            self.now,
            None,
            found,
            only=only,
            admitted=admitted,
        )


def _hold(settings: Settings, person: Person, why: str, now: datetime, out: Decided) -> None:
    """Hold the nurture of the other people of this person's account for a while."""
    if not person.account:
        return
    until = now + settings.account_pause.duration
    out.holds.append(
        {
            "b_account": person.account,
            "b_contact": person.id,
            "held_until": until,
            "hold_reason": f"account on hold until {until:%Y-%m-%d}: {why}",
        }
    )


def _end(enrollment: Enrolled, status: str, reason: str, now: datetime, decision: Decision) -> None:
    enrollment.set(status=status, end_reason=reason, ended_at=now, due_at=None)
    decision.ended.append(f"{enrollment.workflow}: {reason}")


def enter(
    settings: Settings,
    workflows: Mapping[str, Workflow],
    person: Person,
    now: datetime,
    kind: str | None,
    decision: Decision,
    *,
    only: str | None = None,
    admitted: bool = False,
) -> None:
    """Enter every workflow whose entry rule the person now meets, once per workflow: a new
    `Enrolled` (id None) or an earlier one started again (`reenter:`); said in the
    decision's `enrolled` (or `held_out`), read for a new entry by stage from its `moves`.

    `only`: just that workflow. `admitted`: the caller found the person in the audience the
    workflow enters by (a segment, read in SQL by intake.enter_segments, or `nurture enroll`):
    it is entered without reading its entry rule; every other check (a stage with nurture,
    suppression, not already in it, its reenter rule, its goal stages, holdout) applies."""
    if settings.phase_of(person.stage) is None or person.suppressed:
        return
    variables: dict[str, Any] | None = None  # built for the first entry rule read
    moves = decision.moves
    for workflow in workflows.values():
        if only not in (None, workflow.id) or not may_enter(settings, workflow, person, now):
            continue
        earlier = person.enrollments.get(workflow.id)
        entry = workflow.enter
        # Entering again takes a new reason to: an entry event, or a move into an entry stage.
        staged = person.stage in entry.stages and (
            earlier is None or any(m.to_stage in entry.stages for m in moves)
        )
        if not (admitted or staged or (kind is not None and kind in entry.events)):
            if entry.when is None:
                continue
            if variables is None:
                variables = condition_variables(person, settings, now, fields=person.fields)
            if not expressions.evaluate(entry.when, variables):
                continue
        if earlier is None:
            earlier = person.enrollments[workflow.id] = Enrolled(
                None, workflow.id, ACTIVE, None, None
            )
        out = earlier.id is None and held_out(workflow.id, str(person.id), workflow.holdout)
        earlier.set(  # `reenter:` lets them in again: from the start
            status=HOLDOUT if out else ACTIVE,  # a holdout is recorded, never due
            places={},
            positions={},
            version=None,
            entered_at=now,
            due_at=None if out else now,
            last_sent_at=None,
            hold_reason=None,
            ended_at=None,
            end_reason=None,
        )
        (decision.held_out if out else decision.enrolled).append(workflow.id)


def may_enter(settings: Settings, workflow: Workflow, person: Person, now: datetime) -> bool:
    """Whether the person may enter `workflow` now if its entry rule holds: a stage with
    nurture, not suppressed, not in one of its goal stages, not in it already, never held
    out of it, not just ended (what ended it is no new entry), and its reenter rule."""
    if settings.phase_of(person.stage) is None or person.suppressed:
        return False
    if person.stage in workflow.goals.stages:
        return False
    earlier = person.enrollments.get(workflow.id)
    return earlier is None or not (
        earlier.status in (*OPEN_STATUSES, HOLDOUT)  # a holdout stays out for good
        or earlier.ended_at == now
        or not workflow.may_reenter(earlier.ended_at, now)
    )
