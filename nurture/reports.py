"""The numbers the dashboard shows: the funnel, sends, deferrals, deliverability, engagement,
and the contact list. Plain queries in, plain data out; the web layer only lays them out."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Select, and_, case, func, or_, select
from sqlalchemy.orm import Session

from nurture import diagram
from nurture.config import DISQUALIFIED, Settings
from nurture.content import Piece
from nurture.core.winner import Arm as WinnerArm
from nurture.core.winner import Verdict, decide
from nurture.db import write_transaction
from nurture.models import (
    SENT,
    Contact,
    Deferral,
    Enrollment,
    Event,
    JourneyStep,
    Message,
    ReportCache,
    ScoreChange,
    StageMove,
    WorkflowVersion,
)
from nurture.vocabulary import BuiltinEvent, EnrollmentStatus, MessageStatus
from nurture.workflows import (
    Arm,
    Compound,
)

#: Above this share of complaints, inbox providers start to refuse a sender (Gmail, Yahoo).
COMPLAINT_LINE = 0.003
PAGE_SIZE = 50
#: Up to this many matches, a search pages through their ids rather than through all contacts.
FEW = 5000


@dataclass(frozen=True)
class Step:
    stage: str
    title: str
    people: int
    reached: int
    conversion: float | None  # reached the next stage / reached this one
    median_days: float | None  # median time spent in this stage


@dataclass
class Overview:
    funnel: list[Step]
    disqualified: int
    cycle_days: float | None
    cost_per_lead: list[tuple[str, float, int, float | None]]  # source, cost, leads, per lead
    sent_today: int
    sent_week: int
    deferred_week: dict[str, int]
    delivered_month: int
    bounces_month: int
    complaints_month: int
    opens_week: int
    clicks_week: int
    machine_week: int
    sends_per_day: list[tuple[str, int]] = field(default_factory=list)
    history_at: str = ""
    moves_per_day: list[tuple[str, int]] = field(default_factory=list)

    @property
    def bounce_rate(self) -> float:
        return self.bounces_month / self.delivered_month if self.delivered_month else 0.0

    @property
    def complaint_rate(self) -> float:
        return self.complaints_month / self.delivered_month if self.delivered_month else 0.0

    @property
    def over_complaint_line(self) -> bool:
        return self.complaint_rate >= COMPLAINT_LINE


def funnel_history(session: Session, settings: Settings, now: datetime) -> dict[str, Any]:
    """What the past weeks say (who ever reached each stage, the median stay in each, the
    median sales cycle, sends, deliverability, engagement): read from millions of rows, so
    computed by a periodic job and kept in `report_cache`, not on each page view."""
    names = [s.name for s in settings.stages]
    reached = _ever_reached(session, names)
    durations = _stage_durations(session, now)
    last = names[-1] if names else None
    cycle = _median_days(
        [
            at - created
            for created, at in session.execute(
                select(Contact.created_at, func.min(StageMove.at))
                .join(StageMove, StageMove.contact_id == Contact.id)
                .where(StageMove.to_stage == last)
                .group_by(Contact.id, Contact.created_at)
            )
        ]
    )
    return {
        "version": HISTORY_VERSION,
        "computed_at": now.isoformat(),
        "reached": reached,
        "median_days": {name: _median_days(durations.get(name, [])) for name in names},
        "cycle_days": cycle,
        **_activity(session, now),
    }


def _ever_reached(session: Session, names: list[str]) -> dict[str, int]:
    """Per stage, the distinct contacts ever moved to it or to a stage above it: anyone at a
    stage passed every stage before it, even when a move skipped some, and is counted once
    however often they went up and down."""
    rank = case({name: index for index, name in enumerate(names)}, value=StageMove.to_stage)
    highest = (
        select(func.max(rank).label("top"))
        .where(StageMove.to_stage.in_(names))
        .group_by(StageMove.contact_id)
        .subquery()
    )
    at_top: dict[int, int] = {
        top: count
        for top, count in session.execute(
            select(highest.c.top, func.count()).group_by(highest.c.top)
        )
    }
    return {
        name: sum(at_top.get(top, 0) for top in range(index, len(names)))
        for index, name in enumerate(names)
    }


#: How old the cached funnel history may be before a page view computes it again.
HISTORY_VERSION = 3
HISTORY_MAX_AGE = timedelta(minutes=15)


def cached_history(database: Engine, settings: Settings, now: datetime) -> dict[str, Any]:
    """The funnel history from `report_cache`, computed (and kept) when missing or stale."""
    with database.connect() as connection:
        row = connection.execute(
            select(ReportCache.computed_at, ReportCache.data).where(ReportCache.name == "funnel")
        ).first()
    if (
        row is not None
        and now - row.computed_at < HISTORY_MAX_AGE
        and row.data.get("version") == HISTORY_VERSION
    ):
        return dict(row.data)
    return refresh_history(database, settings, now)


def refresh_history(database: Engine, settings: Settings, now: datetime) -> dict[str, Any]:
    with Session(database) as session:
        data = funnel_history(session, settings, now)
    with write_transaction(database) as session:
        session.merge(ReportCache(name="funnel", computed_at=now, data=data))
    return data


def overview(
    session: Session, settings: Settings, now: datetime, history: dict[str, Any]
) -> Overview:
    stages = list(settings.stages)
    names = [s.name for s in stages]
    people = dict(
        session.execute(select(Contact.stage, func.count()).group_by(Contact.stage)).all()
    )
    reached = history["reached"]
    funnel = []
    for index, stage in enumerate(stages):
        following = reached.get(names[index + 1], 0) if index + 1 < len(names) else None
        here = reached.get(stage.name, 0)
        funnel.append(
            Step(
                stage=stage.name,
                title=stage.title,
                people=people.get(stage.name, 0),
                reached=here,
                conversion=following / here if following is not None and here else None,
                median_days=history["median_days"].get(stage.name),
            )
        )
    cycle = history["cycle_days"]
    day = now - timedelta(days=1)
    week = now - timedelta(days=7)
    sent = select(func.count()).select_from(Message).where(Message.status == SENT)
    deferred = Counter[str]()
    for rules, count in session.execute(
        select(Deferral.rules, func.count()).where(Deferral.at >= week).group_by(Deferral.rules)
    ):
        for rule in rules.split(","):
            deferred[rule.strip()] += count
    return Overview(
        funnel=funnel,
        disqualified=people.get(DISQUALIFIED, 0),
        cycle_days=cycle,
        cost_per_lead=_cost_per_lead(session, settings),
        sent_today=session.scalar(sent.where(Message.sent_at >= day)) or 0,
        sent_week=session.scalar(sent.where(Message.sent_at >= week)) or 0,
        deferred_week=dict(deferred.most_common()),
        delivered_month=history["delivered_month"],
        bounces_month=history["bounces_month"],
        complaints_month=history["complaints_month"],
        opens_week=history["opens_week"],
        clicks_week=history["clicks_week"],
        machine_week=history["machine_week"],
        sends_per_day=[tuple(pair) for pair in history["sends_per_day"]],
        history_at=history["computed_at"],
        moves_per_day=[tuple(pair) for pair in history["moves_per_day"]],
    )


def _activity(session: Session, now: datetime) -> dict[str, Any]:
    """Sends, deliverability and engagement over the last weeks: counted over many rows, so
    kept with the funnel history."""
    week = now - timedelta(days=7)
    month = now - timedelta(days=30)
    kinds = dict(
        session.execute(
            select(Event.kind, func.count())
            .where(
                Event.occurred_at >= month,
                Event.kind.in_((BuiltinEvent.HARD_BOUNCED, BuiltinEvent.COMPLAINED)),
            )
            .group_by(Event.kind)
        ).all()
    )
    engagement = dict(
        session.execute(
            select(Event.kind, func.count())
            .where(
                Event.occurred_at >= week,
                Event.kind.in_((BuiltinEvent.EMAIL_OPENED, BuiltinEvent.EMAIL_CLICKED)),
                Event.machine.is_(None),
            )
            .group_by(Event.kind)
        ).all()
    )
    machines = session.scalar(
        select(func.count())
        .select_from(Event)
        .where(
            Event.occurred_at >= week,
            Event.kind.in_((BuiltinEvent.EMAIL_OPENED, BuiltinEvent.EMAIL_CLICKED)),
            Event.machine.is_not(None),
        )
    )
    delivered = session.scalar(
        select(func.count())
        .select_from(Message)
        .where(Message.status == SENT, Message.sent_at >= month)
    )
    return {
        "delivered_month": delivered or 0,
        "bounces_month": kinds.get(BuiltinEvent.HARD_BOUNCED, 0),
        "complaints_month": kinds.get(BuiltinEvent.COMPLAINED, 0),
        "opens_week": engagement.get(BuiltinEvent.EMAIL_OPENED, 0),
        "clicks_week": engagement.get(BuiltinEvent.EMAIL_CLICKED, 0),
        "machine_week": machines or 0,
        "sends_per_day": _sends_per_day(session, now, 14),
        "moves_per_day": _per_day(session, StageMove.at, now, 14),
    }


def _stage_durations(session: Session, now: datetime) -> dict[str, list[timedelta]]:
    """Per stage, how long each stay lasted (a stay still going counts up to now)."""
    stays: dict[str, list[timedelta]] = defaultdict(list)
    last: dict[int, tuple[str, datetime]] = {}
    for contact_id, stage, at in session.execute(
        select(StageMove.contact_id, StageMove.to_stage, StageMove.at).order_by(
            StageMove.contact_id, StageMove.at, StageMove.id
        )
    ):
        previous = last.get(contact_id)
        if previous is not None:
            stays[previous[0]].append(at - previous[1])
        last[contact_id] = (stage, at)
    for stage, since in last.values():
        stays[stage].append(now - since)
    return stays


def _median_days(spans: list[timedelta]) -> float | None:
    if not spans:
        return None
    return statistics.median(span.total_seconds() for span in spans) / 86400


def _cost_per_lead(
    session: Session, settings: Settings
) -> list[tuple[str, float, int, float | None]]:
    if not settings.sources:
        return []
    lead_stages = [s.name for s in settings.stages]
    counts = dict(
        session.execute(
            select(Contact.source, func.count())
            .where(Contact.source.in_(list(settings.sources)), Contact.stage.in_(lead_stages))
            .group_by(Contact.source)
        ).all()
    )
    out = []
    for name, source in settings.sources.items():
        leads = counts.get(name, 0)
        out.append(
            (source.label or name, source.cost, leads, source.cost / leads if leads else None)
        )
    return out


def _sends_per_day(session: Session, now: datetime, days: int) -> list[tuple[str, int]]:
    return _per_day(session, Message.sent_at, now, days, Message.status == SENT)


def _per_day(
    session: Session, column: Any, now: datetime, days: int, *where: Any
) -> list[tuple[str, int]]:
    """Rows per UTC day over the last `days` days, oldest first, days with none included."""
    start = (now - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    day = func.date(column)
    counts = {
        str(key): n
        for key, n in session.execute(
            select(day, func.count()).where(column >= start, *where).group_by(day)
        )
    }
    return [
        (key, counts.get(key, 0))
        for key in ((start + timedelta(days=n)).date().isoformat() for n in range(days))
    ]


def score_history(session: Session, contact_id: int) -> dict[str, list[tuple[datetime, float]]]:
    """Each axis's value after every change, oldest first: fit and engagement over time."""
    out: dict[str, list[tuple[datetime, float]]] = {"fit": [], "engagement": []}
    for axis, at, value in session.execute(
        select(ScoreChange.axis, ScoreChange.at, ScoreChange.value_after)
        .where(ScoreChange.contact_id == contact_id)
        .order_by(ScoreChange.at, ScoreChange.id)
    ):
        out.setdefault(axis, []).append((at, value))
    return out


@dataclass(frozen=True)
class Page:
    rows: list[Any]
    total: int
    page: int
    pages: int


def find_contacts(
    session: Session,
    *,
    query: str = "",
    stage: str | None = None,
    workflow: str | None = None,
    fit_min: float | None = None,
    fit_max: float | None = None,
    engagement_min: float | None = None,
    engagement_max: float | None = None,
    page: int = 1,
) -> Page:
    """Contacts whose email, name or company starts with `query` (or contains it, for an
    address), with the filters, newest first, PAGE_SIZE a page."""
    statement: Select[Any] = select(Contact)
    text = query.strip().lower()
    if text:
        # Prefix ranges, which the email index and the lower(...) indexes serve.
        end = text[:-1] + chr(ord(text[-1]) + 1)
        statement = statement.where(
            or_(
                *(
                    and_(column >= text, column < end)
                    for column in (
                        Contact.email,
                        func.lower(Contact.first_name),
                        func.lower(Contact.last_name),
                        func.lower(Contact.company),
                    )
                )
            )
        )
    if stage:
        statement = statement.where(Contact.stage == stage)
    if workflow:
        statement = statement.where(
            Contact.id.in_(select(Enrollment.contact_id).where(Enrollment.workflow == workflow))
        )
    if fit_min is not None:
        statement = statement.where(Contact.fit >= fit_min)
    if fit_max is not None:
        statement = statement.where(Contact.fit <= fit_max)
    if engagement_min is not None:
        statement = statement.where(Contact.engagement >= engagement_min)
    if engagement_max is not None:
        statement = statement.where(Contact.engagement <= engagement_max)
    total = session.scalar(select(func.count()).select_from(statement.subquery())) or 0
    pages = max(1, -(-total // PAGE_SIZE))
    page = min(max(page, 1), pages)
    offset = (page - 1) * PAGE_SIZE
    if text and total <= FEW:
        # Few matches: take their ids through the search indexes, then the page by id. Asked
        # in id order at once, a database walks every contact to find the few.
        ids = sorted(session.scalars(statement.with_only_columns(Contact.id)), reverse=True)
        chosen = ids[offset : offset + PAGE_SIZE]
        rows = list(
            session.scalars(
                select(Contact).where(Contact.id.in_(chosen)).order_by(Contact.id.desc())
            )
        )
    else:
        rows = list(
            session.scalars(statement.order_by(Contact.id.desc()).limit(PAGE_SIZE).offset(offset))
        )
    return Page(rows, total, page, pages)


@dataclass(frozen=True)
class Entry:
    at: datetime
    kind: str  # event, email, score, stage
    what: str
    why: str


def timeline(session: Session, contact_id: int, limit: int = 200) -> list[Entry]:
    """Events, emails, score changes, stage moves and deferrals, newest first, each with its
    reason."""
    sources: list[tuple[Any, Any, Callable[[Any], Entry]]] = [
        (
            Event,
            Event.occurred_at,
            lambda e: Entry(e.occurred_at, "event", e.kind, _props(e.properties)),
        ),
        (
            Message,
            Message.sent_at,
            lambda m: Entry(
                m.sent_at,
                "email",
                f"{m.content_id} ({m.phase})",
                f"{m.status}: {m.subject}"
                + (f" · send time: {m.send_time}" if m.send_time else ""),
            ),
        ),
        (
            ScoreChange,
            ScoreChange.at,
            lambda c: Entry(
                c.at, "score", f"{c.axis} {c.points:+.1f} → {c.value_after:.1f}", c.rule
            ),
        ),
        (
            StageMove,
            StageMove.at,
            lambda m: Entry(m.at, "stage", f"{m.from_stage or '—'} → {m.to_stage}", m.reason),
        ),
        (
            Deferral,
            Deferral.at,
            lambda d: Entry(d.at, "deferral", f"{d.content_id} held", d.reason),
        ),
    ]
    entries = [
        entry(row)
        for model, when, entry in sources
        for row in session.scalars(
            select(model).where(model.contact_id == contact_id).order_by(when.desc()).limit(limit)
        )
    ]
    return sorted(entries, key=lambda e: e.at, reverse=True)[:limit]


def _props(properties: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(properties.items()))


@dataclass(frozen=True)
class StepStats:
    """One step of a workflow (nested ones included, in the order people meet them) and its
    numbers. `content` is empty for a step that sends nothing (a branch, a wait_until, a
    split, an action): `kind` and `label` say what it is."""

    workflow: str
    phase: str
    content: str
    sent: int
    opened: int
    clicked: int
    unsubscribed: int
    bounced: int
    step: str = ""
    kind: str = "send"
    label: str = ""
    #: Open enrollments whose place in the track of their stage's phase is this step.
    here: int = 0
    #: The ways of a branch, wait_until or split, with how many people took each.
    ways: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class VersionRow:
    """One recorded version of a workflow file and what the engine did with its people."""

    number: int
    digest: str
    first_seen_at: datetime
    summary: dict[str, int]
    #: The earlier version whose text this one puts back (a revert), if any.
    restores: int | None = None


def workflow_stats(session: Session, project: Any) -> tuple[list[StepStats], dict[str, int]]:
    """Per step of every workflow: sent, real opens and clicks (messages with at least one),
    unsubscribes and bounces, the people there now and, per way of a branch, wait or split,
    how many took it; and per workflow, the people waiting with their track used up."""
    sent = dict(
        ((w, s), n)
        for w, s, n in session.execute(
            select(Message.workflow, Message.step_key, func.count())
            .where(Message.status == SENT)
            .group_by(Message.workflow, Message.step_key)
        )
    )
    failed = dict(
        ((w, s), n)
        for w, s, n in session.execute(
            select(Message.workflow, Message.step_key, func.count())
            .where(Message.status == MessageStatus.FAILED)
            .group_by(Message.workflow, Message.step_key)
        )
    )
    reactions: dict[tuple[str, str, str], int] = {}
    for w, s, kind, n in session.execute(
        select(
            Message.workflow, Message.step_key, Event.kind, func.count(func.distinct(Message.id))
        )
        .join(Message, Message.id == Event.message_id)
        .where(
            Event.kind.in_(
                (
                    BuiltinEvent.EMAIL_OPENED,
                    BuiltinEvent.EMAIL_CLICKED,
                    BuiltinEvent.UNSUBSCRIBED,
                    BuiltinEvent.HARD_BOUNCED,
                )
            ),
            Event.machine.is_(None),
        )
        .group_by(Message.workflow, Message.step_key, Event.kind)
    ):
        reactions[(w, s, kind)] = n
    taken = {
        (w, s, way): n
        for w, s, way, n in session.execute(
            select(
                JourneyStep.workflow, JourneyStep.step_key, JourneyStep.way, func.count()
            ).group_by(JourneyStep.workflow, JourneyStep.step_key, JourneyStep.way)
        )
    }
    here = _places_now(session, project)
    rows = []
    for workflow in project.workflows.values():
        for phase in workflow.tracks:
            for step in workflow.flat(phase):
                if isinstance(step, Arm):
                    continue
                key = (workflow.id, step.key)
                ways: tuple[tuple[str, int], ...] = ()
                if isinstance(step, Compound):
                    ways = tuple(
                        (arm.split("#", 1)[1], taken.get((*key, arm.split("#", 1)[1]), 0))
                        for arm, _steps in step.arms()
                    )
                rows.append(
                    StepStats(
                        workflow=workflow.id,
                        phase=phase,
                        content=step.content,
                        sent=sent.get(key, 0),
                        opened=reactions.get((*key, BuiltinEvent.EMAIL_OPENED), 0),
                        clicked=reactions.get((*key, BuiltinEvent.EMAIL_CLICKED), 0),
                        unsubscribed=reactions.get((*key, BuiltinEvent.UNSUBSCRIBED), 0),
                        bounced=failed.get(key, 0)
                        + reactions.get((*key, BuiltinEvent.HARD_BOUNCED), 0),
                        step=step.key,
                        kind=step.kind,
                        label=diagram.label(step),
                        here=here.get(key, 0),
                        ways=ways,
                    )
                )
    waiting = dict(
        session.execute(
            select(Enrollment.workflow, func.count())
            .where(Enrollment.status == EnrollmentStatus.WAITING)
            .group_by(Enrollment.workflow)
        ).all()
    )
    return rows, waiting


def _places_now(session: Session, project: Any) -> dict[tuple[str, str], int]:
    """(workflow, step key) -> open enrollments whose place in the track of their stage's
    phase is that step (its key, or one of its arms: took that way, nothing of it done yet)."""
    counts: Counter[tuple[str, str]] = Counter()
    for workflow, places, stage in session.execute(
        select(Enrollment.workflow, Enrollment.places, Contact.stage)
        .join(Contact, Contact.id == Enrollment.contact_id)
        .where(
            Enrollment.status.in_(
                (EnrollmentStatus.ACTIVE, EnrollmentStatus.WAITING, EnrollmentStatus.PAUSED)
            )
        )
    ):
        phase = project.settings.phase_of(stage) if stage else None
        place = (places or {}).get(phase) if phase else None
        if place:
            counts[(workflow, place.split("#", 1)[0])] += 1
    return counts


def workflow_versions(session: Session) -> dict[str, list[VersionRow]]:
    """Per workflow, its recorded versions, newest first."""
    found: dict[str, list[VersionRow]] = defaultdict(list)
    first: dict[tuple[str, str], int] = {}
    for row in session.scalars(
        select(WorkflowVersion).order_by(WorkflowVersion.workflow, WorkflowVersion.number)
    ):
        key = (row.workflow, row.digest)
        restores = first.setdefault(key, row.number)
        found[row.workflow].insert(
            0,
            VersionRow(
                row.number,
                row.digest,
                row.first_seen_at,
                dict(row.summary or {}),
                restores if restores != row.number else None,
            ),
        )
    return dict(found)


def planned(session: Session, now: datetime, limit: int = 200) -> tuple[int, list[Any]]:
    """Enrollments due in the next 24 hours (how many, and the first `limit`)."""
    window = (
        Enrollment.status == EnrollmentStatus.ACTIVE,
        Enrollment.due_at <= now + timedelta(days=1),
    )
    count = session.scalar(select(func.count()).select_from(Enrollment).where(*window)) or 0
    rows = session.execute(
        select(Enrollment.id, Enrollment.workflow, Enrollment.due_at, Contact.id, Contact.email)
        .join(Contact, Contact.id == Enrollment.contact_id)
        .where(*window)
        .order_by(Enrollment.due_at, Enrollment.id)
        .limit(limit)
    ).all()
    return count, list(rows)


def unknown_messages(session: Session, limit: int = 200) -> list[Any]:
    return list(
        session.execute(
            select(Message.id, Message.content_id, Message.created_at, Message.error, Contact.email)
            .join(Contact, Contact.id == Message.contact_id)
            .where(Message.status == MessageStatus.UNKNOWN)
            .order_by(Message.created_at)
            .limit(limit)
        ).all()
    )


@dataclass(frozen=True)
class SubjectResult:
    """One subject line of a piece: its text (per language) and its real numbers."""

    number: int  # 1-based, as `nurture stats` names it (#1, #2...)
    subjects: dict[str, str]  # language ("" for the piece's own) -> subject template
    sent: int
    opened: int
    clicked: int
    winner: bool = False


def subject_lines(piece: Piece) -> dict[str, list[str]]:
    """A piece's subject lines under test: per language ("" the original), in variant order."""
    return {"": piece.front.subject_lines} | {
        language: translation.front.subject_lines
        for language, translation in sorted(piece.translations.items())
    }


def subject_test(
    subjects: dict[str, list[str]], lines: list[Any]
) -> tuple[list[SubjectResult], Verdict]:
    """The subject lines of one piece (`subjects`: per language, the subject templates in
    variant order) with their sends and real opens and clicks (`lines`: `stats.Line`s of the
    piece), and the verdict of the winner rule (`nurture.core.winner`)."""
    count = max((len(texts) for texts in subjects.values()), default=1)
    by_variant = {line.variant or 0: line for line in lines}
    arms = [
        WinnerArm(getattr(by_variant.get(i), "sent", 0), getattr(by_variant.get(i), "clicked", 0))
        for i in range(count)
    ]
    verdict = decide(arms) if count > 1 else Verdict(None, "one subject line: no test")
    results = [
        SubjectResult(
            number=i + 1,
            subjects={lang: texts[i] for lang, texts in subjects.items() if i < len(texts)},
            sent=arms[i].sent,
            opened=getattr(by_variant.get(i), "opened", 0),
            clicked=arms[i].clicked,
            winner=verdict.winner == i,
        )
        for i in range(count)
    ]
    return results, verdict


def content_totals(lines: list[Any]) -> list[tuple[str, int, int, int]]:
    """Per piece (all its subject lines together): sent, and messages really opened and
    clicked, in piece order."""
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for line in lines:
        total = totals[line.content_id]
        total[0] += line.sent
        total[1] += line.opened
        total[2] += line.clicked
    return [(content, *_three(totals[content])) for content in sorted(totals)]


def _three(values: list[int]) -> tuple[int, int, int]:
    return values[0], values[1], values[2]
