"""What one enrollment does next: pure, so the dispatcher and `nurture explain` agree.

Given what is known about an enrollment at `now`, `next_action` says: end it (goal,
suppression, disqualification), hold it (paused, track used up, sunset), wait for the
step's delay, defer the email (a cap holds it, with every reason), or send a given step now.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from nurture.config import DISQUALIFIED
from nurture.core import sendtime
from nurture.core.engagement import Engagement, waiting_reason
from nurture.core.pacing import Decision, Policy, decide
from nurture.core.planner import Exhausted, Mark, Send, WaitUntil, plan_next
from nurture.core.values import value
from nurture.core.versions import gone
from nurture.phases import Phase
from nurture.vocabulary import EnrollmentStatus
from nurture.workflows import Node, Step, Workflow

ACTIVE, WAITING, PAUSED = EnrollmentStatus.ACTIVE, EnrollmentStatus.WAITING, EnrollmentStatus.PAUSED
COMPLETED, EXITED = EnrollmentStatus.COMPLETED, EnrollmentStatus.EXITED


@dataclass(slots=True)
class Situation:
    """Everything the decision needs about one enrollment and its contact."""

    workflow_id: str
    workflow: Workflow | None
    stage: str
    phase: Phase | None
    paused: bool
    suppression: str | None
    places: Mapping[str, str]
    since: datetime
    received: Set[str]
    sent: Sequence[datetime]
    variables: Mapping[str, Any]
    policy: Policy
    zone: ZoneInfo
    last_engaged: datetime | None = None
    held_until: datetime | None = None
    hold_reason: str | None = None
    #: Why an edit of the workflow left this person without a place (nurture/core/versions.py).
    held_by_edit: str | None = None
    account_sent: Sequence[datetime] = ()
    global_sent: Sequence[datetime] = ()
    #: What the person did (real engagement only), for journey conditions and wait_until.
    engagement: Engagement | None = None
    #: Names the person for splits (a stable hash of it, the workflow and the step).
    who: str = ""
    #: When the person entered the workflow (a wait_until counting from entry).
    entered: datetime | None = None
    #: The person's real opens and clicks (last `sendtime.LOOKBACK`), for `send_time: best`.
    engaged_at: Sequence[datetime] = ()
    #: When a send_time hold of the next email runs out (it is held for its hour once).
    hour_held_until: datetime | None = None
    #: Everyone's real engagement per local hour: the hour of people without their own.
    project_hours: sendtime.Hours = field(default_factory=sendtime.Hours)
    #: Every piece with a message row for them, whatever its status, under its current id
    #: (renames applied): the outbox's unique key allows one row per piece, so these are
    #: passed over even when not received (a failed send, a piece renamed since).
    recorded: Set[str] = frozenset()


@value
class End:
    status: str
    reason: str


@value
class Idle:
    """Nothing to do until something changes (a stage, new content, a resume) or `until`."""

    status: str
    reason: str
    places: dict[str, str]
    until: datetime | None = None
    marks: tuple[Mark, ...] = ()


@value
class Later:
    """The next step's own wait has not run out (`reason` set: a wait_until waits for an
    event, and the event wakes the person before `until`)."""

    until: datetime
    step: Node
    places: dict[str, str]
    marks: tuple[Mark, ...] = ()
    reason: str | None = None


@value
class Defer:
    """A cap holds the next email: it goes at `decision.send_at`, for `decision.reason`."""

    step: Step
    decision: Decision
    places: dict[str, str]
    marks: tuple[Mark, ...] = ()


@value
class Go:
    """Send `plan.step` now; afterwards the enrollment is due at `next_due` (None: waits),
    at `places` (past the journey steps that follow at once: a branch taken, a wait
    started), having done `marks` (the plan's and those)."""

    plan: Send
    next_due: datetime | None
    next_reason: str | None
    places: dict[str, str]
    marks: tuple[Mark, ...] = ()
    #: `send_time: best`: the hour chosen and why, in words.
    send_time: str | None = None


Action = End | Idle | Later | Defer | Go


def next_action(s: Situation, now: datetime) -> Action:
    if s.workflow is None:
        return Idle(WAITING, gone(s.workflow_id), dict(s.places))
    if s.suppression is not None:
        return End(EXITED, f"suppressed: {s.suppression}")
    if s.stage == DISQUALIFIED:
        return End(EXITED, "disqualified")
    if s.stage in s.workflow.goals.stages:
        return End(COMPLETED, f"goal: reached stage {s.stage}")
    if s.held_by_edit is not None:
        return Idle(WAITING, s.held_by_edit, dict(s.places))
    if s.paused:
        return Idle(PAUSED, "contact paused", dict(s.places))
    if s.held_until is not None and s.held_until > now:
        return Idle(ACTIVE, s.hold_reason or "held", dict(s.places), s.held_until)
    plan = plan_next(
        s.workflow,
        s.phase,
        s.places,
        s.received,
        since=s.since,
        now=now,
        variables=s.variables,
        engagement=s.engagement,
        who=s.who,
        entered=s.entered,
        recorded=s.recorded,
    )
    if isinstance(plan, Exhausted):
        return Idle(WAITING, plan.reason, plan.places, marks=plan.marks)
    if isinstance(plan, WaitUntil):
        return _later(plan)
    decision = _caps(s, now)
    chosen = None
    if s.workflow.best_time(plan.step):
        decision, chosen = _at_best_hour(s, decision, now)
    if not decision.send_now:
        held = dict(plan.before)
        if decision.send_at is None:
            return Idle(WAITING, decision.reason, held, marks=plan.marks)
        return Defer(plan.step, decision, held, plan.marks)
    following = plan_next(
        s.workflow,
        s.phase,
        plan.places,
        {*s.received, plan.step.content},
        since=now,
        now=now,
        variables=s.variables,
        engagement=s.engagement,
        who=s.who,
        entered=s.entered,
        recorded=s.recorded,
    )
    if isinstance(following, Send):
        return Go(plan, now, None, plan.places, plan.marks, chosen)
    marks = plan.marks + following.marks
    if isinstance(following, Exhausted):
        return Go(plan, None, following.reason, following.places, marks, chosen)
    return Go(plan, following.until, _later(following).reason, following.places, marks, chosen)


def _caps(s: Situation, now: datetime) -> Decision:
    """What the caps say at `now` (nurture/core/pacing.py)."""
    return decide(
        now=now,
        sent=s.sent,
        policy=s.policy,
        zone=s.zone,
        last_engaged=s.last_engaged,
        account_sent=s.account_sent,
        global_sent=s.global_sent,
    )


def _at_best_hour(s: Situation, decision: Decision, now: datetime) -> tuple[Decision, str]:
    """`send_time: best`: the caps' decision moved to the person's hour (unless its hold for
    the hour ran out), and why (said of an email that goes at another hour: why not then)."""
    person = sendtime.tally(((at, s.zone, 1) for at in s.engaged_at), now)
    choice = sendtime.choose(person, s.project_hours, s.policy, s.zone)
    held = s.hour_held_until
    placed = decision
    if held is None or now < held:
        placed = sendtime.place(decision, choice=choice, zone=s.zone, caps_at=lambda t: _caps(s, t))
    if placed.send_now and now.astimezone(s.zone).hour != choice.hour:
        if held is not None and now >= held:
            return placed, f"{choice.why}; held for it once already: sent as the caps allow"
        return placed, f"{choice.why}; none allowed within 24 h of when it was due: sent as due"
    return placed, choice.why


def _later(plan: WaitUntil) -> Later:
    reason = None
    if plan.event is not None:
        reason = waiting_reason(plan.event, plan.until, plan.step.key)
    return Later(plan.until, plan.step, plan.places, plan.marks, reason)
