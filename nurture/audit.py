"""Checks the design's invariants from the records alone, as an outsider would.

Used by `nurture simulate`, the end-to-end tests and anyone holding an export: every email's
phase matches the stage at send time, nobody got a piece twice, no cap or quiet hour broke,
nobody suppressed was written to, and every stage move has a reason.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from nurture.config import Settings
from nurture.core.holdouts import HOLDOUT
from nurture.core.pacing import Policy
from nurture.models import Contact, Enrollment, Message, StageMove, Suppression
from nurture.vocabulary import EnrollmentStatus, MessageStatus


@dataclass(frozen=True)
class SentRecord:
    email: str
    timezone: str
    content_id: str
    phase: str
    stage: str
    sent_at: datetime
    account: str | None = None


@dataclass(frozen=True)
class MoveRecord:
    email: str
    from_stage: str | None
    to_stage: str
    reason: str
    at: datetime


def load_records(
    session: Session, settings: Settings
) -> tuple[list[SentRecord], list[MoveRecord], dict[str, datetime]]:
    """Every counted message and every stage move, with the contact's zone, oldest first."""
    sent = [
        SentRecord(email, zone or settings.timezone, content, phase, stage, at, account)
        for email, zone, content, phase, stage, at, account in session.execute(
            select(
                Contact.email,
                Contact.timezone,
                Message.content_id,
                Message.phase,
                Message.stage_at_send,
                Message.sent_at,
                Contact.account,
            )
            .join(Contact, Contact.id == Message.contact_id)
            .where(
                Message.status.in_(
                    (
                        MessageStatus.SENDING,
                        MessageStatus.SENT,
                        MessageStatus.UNKNOWN,
                        MessageStatus.QUEUED,
                    )
                )
            )
            .order_by(Message.sent_at, Message.id)
        )
    ]
    moves = [
        MoveRecord(email, from_stage, to_stage, reason, at)
        for email, from_stage, to_stage, reason, at in session.execute(
            select(
                Contact.email,
                StageMove.from_stage,
                StageMove.to_stage,
                StageMove.reason,
                StageMove.at,
            )
            .join(Contact, Contact.id == StageMove.contact_id)
            .order_by(StageMove.at, StageMove.id)
        )
    ]
    suppressed = {
        email: at for email, at in session.execute(select(Suppression.email, Suppression.at))
    }
    return sent, moves, suppressed


def violations(
    sent: Sequence[SentRecord],
    moves: Sequence[MoveRecord],
    suppressed: Mapping[str, datetime],
    settings: Settings,
    policy: Policy,
    *,
    aliases: Mapping[str, str] | None = None,
) -> list[str]:
    """Every broken invariant in the records. `aliases` (earlier content id -> the piece
    that now bears it, `Project.content_aliases`) makes a piece renamed with `renamed_from:`
    the same piece: whoever got it under its old id must not get it under the new one."""
    found: list[str] = []
    phases = {stage.name: stage.phase for stage in settings.stages}
    stage_history: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
    for move in moves:
        stage_history[move.email].append((move.at, move.to_stage))
        if not move.reason.strip():
            found.append(f"{move.email}: stage move to {move.to_stage} at {move.at} has no reason")
    by_person: dict[str, list[SentRecord]] = defaultdict(list)
    for record in sent:
        by_person[record.email].append(record)
    for email, records in by_person.items():
        found.extend(
            _person(
                email,
                records,
                stage_history[email],
                suppressed.get(email),
                phases,
                policy,
                aliases or {},
            )
        )
    if policy.account_per_day is not None:
        found.extend(_accounts(sent, policy.account_per_day))
    return found


def _accounts(sent: Sequence[SentRecord], limit: int) -> Iterable[str]:
    """No recipient's local day saw more than `limit` emails to their account."""
    by_account: dict[str, list[SentRecord]] = defaultdict(list)
    for record in sent:
        if record.account:
            by_account[record.account].append(record)
    for account, records in by_account.items():
        zones = {record.timezone for record in records}
        per_day: dict[str, Counter[date]] = {zone: Counter() for zone in zones}
        for record in sorted(records, key=lambda r: r.sent_at):  # each send, on every clock
            for zone in zones:
                per_day[zone][record.sent_at.astimezone(ZoneInfo(zone)).date()] += 1
            day = record.sent_at.astimezone(ZoneInfo(record.timezone)).date()
            same_day = per_day[record.timezone][day]
            if same_day > limit:
                yield f"{account}: {same_day} emails on {day} ({record.timezone}), over {limit}"


def _person(
    email: str,
    records: list[SentRecord],
    history: list[tuple[datetime, str]],
    suppressed_at: datetime | None,
    phases: Mapping[str, str | None],
    policy: Policy,
    aliases: Mapping[str, str],
) -> Iterable[str]:
    seen: dict[str, str] = {}
    per_day: dict[object, int] = defaultdict(int)
    times = [r.sent_at for r in records]
    for index, record in enumerate(records):
        where = f"{email}: {record.content_id} at {record.sent_at.isoformat()}"
        piece = aliases.get(record.content_id, record.content_id)
        if piece in seen:
            earlier = seen[piece]
            also = f" (earlier as {earlier})" if earlier != record.content_id else ""
            yield f"{where}: content sent twice{also}"
        seen.setdefault(piece, record.content_id)
        stage = _stage_at(history, record.sent_at)
        if stage is not None and stage != record.stage:
            yield f"{where}: recorded stage {record.stage}, but the ledger says {stage}"
        if phases.get(record.stage) != record.phase:
            yield f"{where}: {record.phase} content sent to a contact in stage {record.stage}"
        if suppressed_at is not None and record.sent_at >= suppressed_at:
            yield f"{where}: sent after suppression at {suppressed_at.isoformat()}"
        local = record.sent_at.astimezone(ZoneInfo(record.timezone))
        if policy.is_quiet(local.time()):
            yield f"{where}: sent in quiet hours ({local:%H:%M} local)"
        if local.weekday() not in policy.weekdays:
            yield f"{where}: sent on a non-sending day ({local:%A})"
        per_day[local.date()] += 1
        if per_day[local.date()] > policy.per_day:
            yield f"{where}: more than {policy.per_day} on {local.date()} (local)"
        if index and record.sent_at - times[index - 1] < policy.min_gap:
            yield f"{where}: gap under {policy.min_gap} since the previous email"
        window = index + 1 - bisect_right(times, record.sent_at - timedelta(days=7))
        if window > policy.per_week:
            yield f"{where}: {window} emails in 7 days, over {policy.per_week}"
        month = index + 1 - bisect_right(times, record.sent_at - timedelta(days=30))
        if policy.per_month is not None and month > policy.per_month:
            yield f"{where}: {month} emails in 30 days, over {policy.per_month}"


def _stage_at(history: list[tuple[datetime, str]], instant: datetime) -> str | None:
    stage = None
    for at, to_stage in history:
        if at > instant:
            break
        stage = to_stage
    return stage


def stranded(session: Session) -> list[str]:
    """Enrollments without a state reason: every one is due (active with a time), waiting
    or paused with a reason, or ended with one. Anyone else was dropped silently."""
    found = []
    for row in session.execute(
        select(
            Enrollment.id,
            Enrollment.workflow,
            Enrollment.status,
            Enrollment.due_at,
            Enrollment.hold_reason,
            Enrollment.end_reason,
        )
    ):
        where = f"enrollment {row.id} ({row.workflow})"
        if row.status == EnrollmentStatus.ACTIVE and row.due_at is None:
            found.append(f"{where}: active but due at no time")
        elif (
            row.status in (EnrollmentStatus.WAITING, EnrollmentStatus.PAUSED)
            and not row.hold_reason
        ):
            found.append(f"{where}: {row.status} without a reason")
        elif (
            row.status in (EnrollmentStatus.COMPLETED, EnrollmentStatus.EXITED)
            and not row.end_reason
        ):
            found.append(f"{where}: ended without a reason")
        elif row.status not in set(EnrollmentStatus):
            found.append(f"{where}: unknown status {row.status!r}")
    return found


def holdout_sends(session: Session) -> list[str]:
    """Every message (whatever its status, queued included) a workflow made for a person
    held out of it: there must be none."""
    rows = session.execute(
        select(Contact.email, Message.workflow, Message.content_id, Message.status)
        .join(
            Enrollment,
            (Enrollment.workflow == Message.workflow)
            & (Enrollment.contact_id == Message.contact_id),
        )
        .join(Contact, Contact.id == Message.contact_id)
        .where(Enrollment.status == HOLDOUT)
        .order_by(Message.id)
    )
    return [
        f"{email}: {content} ({status}) from {workflow}, which holds them out"
        for email, workflow, content, status in rows
    ]
