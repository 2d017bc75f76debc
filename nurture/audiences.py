"""Enrolling a segment's people in a workflow (a backfill), and when their first emails
would go under the caps.

Every enrollment goes through the event pipeline's entry rule (`intake.enroll_people`:
eventrules.enter for that workflow, admitted): suppressed people, people already in the
workflow, people its reenter rule keeps out, people in one of its goal stages or in a
stage with no nurture are not enrolled. The enrollments are due at once and the
dispatcher paces their emails like any other: each person's caps, quiet hours and
weekdays, the account and sender caps.
A dry run does the same in a transaction it rolls back: nothing is applied unless asked.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from nurture.config import CapsOverride
from nurture.contacts import zone_of
from nurture.core.pacing import decide
from nurture.db import write_transaction
from nurture.intake import enroll_people
from nurture.models import Contact, Message
from nurture.problems import unknown_segment
from nurture.project import Project
from nurture.segments import audience, contact_ids, count
from nurture.segmentsql import RECEIVED_STATUSES
from nurture.workflows import Workflow


class AudienceError(ValueError):
    """An unknown workflow or segment, named."""


@dataclass
class Backfill:
    """What enrolling a segment in a workflow did (or, in a dry run, would do)."""

    workflow: str
    segment: str
    #: People in the segment now.
    members: int
    #: Those enrolled (contact ids, lowest first).
    entered: list[int] = field(default_factory=list)
    #: Those who entered held out by the workflow's holdout (recorded, never emailed by it).
    held_out: list[int] = field(default_factory=list)
    #: First emails per day (the project's zone): day -> (count, first, last instant).
    schedule: dict[date, tuple[int, datetime, datetime]] = field(default_factory=dict)
    #: Enrolled people no email can reach under the caps (sunset).
    unreachable: int = 0
    applied: bool = False

    @property
    def left_out(self) -> int:
        """Members not enrolled: suppressed, already in it, kept out by reenter, a goal
        stage, or a stage with no nurture."""
        return self.members - len(self.entered) - len(self.held_out)


class _DryRun(Exception):
    pass


def resolve(project: Project, workflow_id: str, segment: str | None) -> tuple[Workflow, str]:
    """The workflow, and the segment to enroll: the one given, or the one it enters by."""
    workflow = project.workflows.get(workflow_id)
    if workflow is None:
        known = ", ".join(sorted(project.workflows))
        raise AudienceError(f"unknown workflow {workflow_id!r} (workflows: {known})")
    name = segment or workflow.enter.segment
    if name is None:
        raise AudienceError(
            f"{workflow_id} does not enter by segment (enter: segment:); say which: --segment NAME"
        )
    if name not in project.segments:
        raise AudienceError(unknown_segment(name, project.segments))
    return workflow, name


def enroll(
    database: Engine,
    project: Project,
    workflow_id: str,
    segment: str | None,
    now: datetime,
    *,
    dry_run: bool,
) -> Backfill:
    """Enroll the segment's people in the workflow now (dry run: say what it would do)."""
    workflow, name = resolve(project, workflow_id, segment)
    result: Backfill | None = None
    try:
        with write_transaction(database) as session:
            result = _enroll_members(session, project, workflow, name, now)
            result.schedule, result.unreachable = first_emails(
                session, project, workflow, result.entered, now
            )
            result.applied = not dry_run
            if dry_run:
                raise _DryRun
    except _DryRun:
        pass
    assert result is not None
    return result


def _enroll_members(
    session: Session, project: Project, workflow: Workflow, name: str, now: datetime
) -> Backfill:
    segment = project.segments[name]
    found = audience(session, project.settings, segment, project.content_ids(), now)
    result = Backfill(workflow.id, name, count(session, found))
    after = 0
    while True:
        ids = contact_ids(session, found, after=after, limit=500)
        if not ids:
            return result
        after = ids[-1]
        addresses = list(
            session.scalars(select(Contact.email).where(Contact.id.in_(ids)).order_by(Contact.id))
        )
        entered = enroll_people(session, project, addresses, workflow.id, now)
        result.entered += sorted(i for i, done in entered.items() if done.enrolled)
        result.held_out += sorted(i for i, done in entered.items() if done.held_out)


def first_emails(
    session: Session, project: Project, workflow: Workflow, people: list[int], now: datetime
) -> tuple[dict[date, tuple[int, datetime, datetime]], int]:
    """When the first email of each of `people` would go under the caps (their own past
    emails, their account's, the sender's rate, their quiet hours and weekdays), taking
    them in the order the dispatcher does (by id); per day in the project's zone, and how
    many cannot be reached at all."""
    settings = project.settings
    zone = ZoneInfo(settings.timezone)
    sent: dict[int, list[datetime]] = defaultdict(list)
    account_sent: dict[str, list[datetime]] = defaultdict(list)
    everyone: list[datetime] = []
    contacts: dict[int, Contact] = {}
    for start in range(0, len(people), 500):
        chunk = people[start : start + 500]
        contacts.update(
            (c.id, c) for c in session.scalars(select(Contact).where(Contact.id.in_(chunk)))
        )
        for contact_id, sent_at in session.execute(
            select(Message.contact_id, Message.sent_at)
            .where(Message.contact_id.in_(chunk), Message.status.in_(RECEIVED_STATUSES))
            .order_by(Message.sent_at)
        ):
            sent[contact_id].append(sent_at)
    days: Counter[date] = Counter()
    bounds: dict[date, tuple[datetime, datetime]] = {}
    unreachable = 0
    for contact_id in people:
        contact = contacts[contact_id]
        phase = settings.phase_of(contact.stage)
        track = workflow.track(phase)
        if not track:
            continue
        caps = settings.caps.merged(
            workflow.caps, CapsOverride.model_validate(contact.caps) if contact.caps else None
        )
        account = account_sent[contact.account] if contact.account else []
        decision = decide(
            now=now + track[0].wait,
            sent=sent[contact_id],
            policy=caps.policy(),
            zone=zone_of(contact, settings),
            last_engaged=contact.last_engaged_at,
            account_sent=account,
            global_sent=everyone,
        )
        at = decision.send_at
        if at is None:
            unreachable += 1
            continue
        everyone.append(at)
        everyone.sort()
        if contact.account:
            account_sent[contact.account] = sorted([*account, at])
        day = at.astimezone(zone).date()
        days[day] += 1
        first, last = bounds.get(day, (at, at))
        bounds[day] = (min(first, at), max(last, at))
    schedule = {day: (days[day], *bounds[day]) for day in sorted(days)}
    return schedule, unreachable


def schedule_lines(backfill: Backfill, zone: str) -> list[str]:
    """`Mon 2 Mar 2026: 120 first emails, 09:00 to 17:42` per day (the project's zone)."""
    where = ZoneInfo(zone)
    lines = [f"  first emails, paced by the caps ({zone} time):"] if backfill.schedule else []
    for day, (number, first, last) in backfill.schedule.items():
        emails = "first email" if number == 1 else "first emails"
        lines.append(
            f"    {day:%a} {day.day} {day:%b %Y}: {number} {emails}, "
            f"{first.astimezone(where):%H:%M} to {last.astimezone(where):%H:%M}"
        )
    if backfill.unreachable:
        lines.append(f"  {backfill.unreachable} cannot be emailed under the caps (sunset)")
    return lines


def summary(backfill: Backfill) -> str:
    """One line: how many are in the segment, how many enter, how many are left out."""
    verb = "entered" if backfill.applied else "would enter"
    return (
        f"{backfill.workflow} <- segment {backfill.segment}: {backfill.members} in the segment, "
        f"{len(backfill.entered)} {verb}, "
        + (f"{len(backfill.held_out)} held out, " if backfill.held_out else "")
        + f"{backfill.left_out} left out (suppressed, already "
        "in it, kept out by reenter or a goal stage, or in a stage with no nurture)"
    )
