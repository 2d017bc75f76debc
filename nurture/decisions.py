"""What one enrollment does next: pure, so the dispatcher and `nurture explain` agree.

Given what is known about an enrollment at `now`, `next_action` says: end it (goal,
suppression, disqualification), hold it (paused, track used up, sunset), wait for the
step's delay, defer the email (a cap holds it, with every reason), or send a given step now.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from nurture.config import DISQUALIFIED
from nurture.pacing import Decision, Policy, decide
from nurture.phases import Phase
from nurture.planner import Exhausted, Send, WaitUntil, plan_next
from nurture.workflows import Step, Workflow

ACTIVE, WAITING, PAUSED, COMPLETED, EXITED = "active", "waiting", "paused", "completed", "exited"


@dataclass(slots=True)
class Situation:
    """Everything the decision needs about one enrollment and its contact."""

    workflow_id: str
    workflow: Workflow | None
    stage: str
    phase: Phase | None
    paused: bool
    suppression: str | None
    positions: Mapping[str, int]
    since: datetime
    received: Set[str]
    sent: Sequence[datetime]
    variables: Mapping[str, Any]
    policy: Policy
    zone: ZoneInfo
    last_engaged: datetime | None = None
    held_until: datetime | None = None
    hold_reason: str | None = None
    account_sent: Sequence[datetime] = ()
    global_sent: Sequence[datetime] = ()


@dataclass(frozen=True)
class End:
    status: str
    reason: str


@dataclass(frozen=True)
class Idle:
    """Nothing to do until something changes (a stage, new content, a resume) or `until`."""

    status: str
    reason: str
    positions: dict[str, int]
    until: datetime | None = None


@dataclass(frozen=True)
class Later:
    """The next step's own wait has not run out."""

    until: datetime
    step: Step
    positions: dict[str, int]


@dataclass(frozen=True)
class Defer:
    """A cap holds the next email: it goes at `decision.send_at`, for `decision.reason`."""

    step: Step
    decision: Decision
    positions: dict[str, int]


@dataclass(frozen=True)
class Go:
    """Send `plan.step` now; afterwards the enrollment is due at `next_due` (None: waits)."""

    plan: Send
    next_due: datetime | None
    next_reason: str | None


Action = End | Idle | Later | Defer | Go


def next_action(s: Situation, now: datetime) -> Action:
    if s.workflow is None:
        return End(EXITED, f"workflow {s.workflow_id} no longer exists")
    if s.suppression is not None:
        return End(EXITED, f"suppressed: {s.suppression}")
    if s.stage == DISQUALIFIED:
        return End(EXITED, "disqualified")
    if s.stage in s.workflow.goals.stages:
        return End(COMPLETED, f"goal: reached stage {s.stage}")
    if s.paused:
        return Idle(PAUSED, "contact paused", dict(s.positions))
    if s.held_until is not None and s.held_until > now:
        return Idle(ACTIVE, s.hold_reason or "held", dict(s.positions), s.held_until)
    plan = plan_next(
        s.workflow, s.phase, s.positions, s.received, since=s.since, now=now, variables=s.variables
    )
    if isinstance(plan, Exhausted):
        return Idle(WAITING, plan.reason, plan.positions)
    if isinstance(plan, WaitUntil):
        return Later(plan.until, plan.step, plan.positions)
    decision = decide(
        now=now,
        sent=s.sent,
        policy=s.policy,
        zone=s.zone,
        last_engaged=s.last_engaged,
        account_sent=s.account_sent,
        global_sent=s.global_sent,
    )
    if not decision.send_now:
        held = dict(plan.positions)
        held[plan.phase] -= 1
        if decision.send_at is None:
            return Idle(WAITING, decision.reason, held)
        return Defer(plan.step, decision, held)
    following = plan_next(
        s.workflow,
        s.phase,
        plan.positions,
        {*s.received, plan.step.content},
        since=now,
        now=now,
        variables=s.variables,
    )
    if isinstance(following, Exhausted):
        return Go(plan, None, following.reason)
    return Go(plan, following.until if isinstance(following, WaitUntil) else now, None)
