"""A synthetic population lived through the real engine on a simulated clock.

People arrive during the whole period (a first wave, then a steady flow), in many time zones
and with varied profiles, and behave after their persona: champions click, act and step up;
readers open and seldom act; some unsubscribe; ghosts ignore everything. What they do is read
from the project itself (nurture/behaviour.py), so any project simulates. Their events go
through the same code as real ones (an open or a click is linked to its email, as the
tracking links link it), sales answers hand-offs, and the dispatcher sends on the same caps:
what the simulation shows is what the engine does. The clock where a run stopped, and what
people were still about to do, are kept in the database so `--resume` goes on from there.
"""

from __future__ import annotations

import json
import random
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import median
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from nurture.audit import holdout_sends, load_records, violations
from nurture.behaviour import Repertoire, repertoire
from nurture.clock import FixedClock, db_instant
from nurture.db import sessions, write_transaction
from nurture.drive import Action, Sent, drive
from nurture.feedback import record_event, sales_outcome, upsert_contact
from nurture.models import Contact, Deferral, Event, Message, ReportCache
from nurture.phases import PHASES
from nurture.runtime import Runtime, open_runtime
from nurture.transport import NullTransport, Transport

#: The `report_cache` row that keeps where a simulation stopped, for `--resume`.
STATE = "simulation"
START = datetime(2026, 1, 5, 7, 0, tzinfo=UTC)
ZONES = [
    "Europe/Paris",
    "Europe/London",
    "America/New_York",
    "America/Los_Angeles",
    "America/Sao_Paulo",
    "Asia/Kolkata",
    "Asia/Tokyo",
    "Australia/Adelaide",
    "America/St_Johns",
    "Asia/Kathmandu",
    "Europe/Berlin",
    "Pacific/Auckland",
]
SECTORS = [
    "saas",
    "software",
    "fintech",
    "marketplace",
    "edtech",
    "retail",
    "manufacturing",
    "consulting",
]
SENIORITY = ["c_level", "vp", "director", "head", "manager", "individual", "individual", "student"]
ROLES = ["Customer Success", "Product", "Marketing", "Engineering", "Sales", "Operations"]
FIRST = [
    "Ana",
    "Louis",
    "Chloé",
    "Noah",
    "Priya",
    "Kenji",
    "Maria",
    "Tom",
    "Léa",
    "Omar",
    "Ines",
    "Sam",
]
LAST = [
    "Martin",
    "Bernard",
    "Smith",
    "García",
    "Rossi",
    "Sato",
    "Müller",
    "Dubois",
    "Khan",
    "Silva",
]
COMPANIES = [
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Hooli",
    "Stark",
    "Wayne",
    "Tyrell",
    "Soylent",
]


@dataclass(frozen=True)
class Persona:
    name: str
    weight: float
    open: float
    click: float
    act: float  # a click that leads on: a download, a pricing visit, a webinar
    meeting: float  # booking a meeting after decision content
    unsubscribe: float


#: The local hours people read their mail at: each person has one (drawn from the seed and
#: their address), so `send_time: best` has an hour to find.
READING_HOURS = (8, 9, 9, 10, 11, 12, 13, 14, 14, 15, 16, 17)
#: The share of a person's opens at their hour; the others come any time within 36 h.
AT_THEIR_HOUR = 0.75

PERSONAS = (
    Persona("champion", 0.25, 0.9, 0.7, 0.6, 0.35, 0.0),
    Persona("reader", 0.35, 0.8, 0.15, 0.1, 0.02, 0.01),
    Persona("unsubscriber", 0.1, 0.5, 0.05, 0.0, 0.0, 0.5),
    Persona("ghost", 0.3, 0.05, 0.0, 0.0, 0.0, 0.0),
)


@dataclass
class Result:
    days: int
    contacts: int
    stages: dict[str, int]
    messages_by_phase: dict[str, int]
    events: dict[str, int]
    deferrals: dict[str, int]
    violations: list[str]
    seed: int = 0
    until: str = ""
    #: Median hours from sending to the first real open: of the emails sent at the person's
    #: best hour (`best`, send_time: best) and of the others (`due`).
    hours_to_open: dict[str, float | None] = field(default_factory=dict)
    #: Emails timed by send_time: best, and how many went at the hour their person reads at.
    send_time: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


class NothingToResume(ValueError):
    """The database holds no simulation to go on with."""


def simulate(
    root: Path,
    *,
    days: int,
    contacts: int | None,
    seed: int,
    database: str | None = None,
    export: TextIO | None = None,
    transport: Transport | None = None,
    start: datetime = START,
    resume: bool = False,
    progress: Callable[[float], None] | None = None,
) -> Result:
    """Live `contacts` new people through `days` simulated days. With `resume`, go on from
    where an earlier run on the same database stopped (its clock, its seed, what its people
    were about to do); `contacts` None then keeps the earlier run's arrivals per day.
    `progress` hears the simulated days lived so far."""
    clock = FixedClock(start)
    runtime = open_runtime(
        root, clock=clock, database=database, transport=transport or NullTransport()
    )
    state: dict[str, Any] = {}
    if resume:
        state = _load_state(runtime)
        start = datetime.fromisoformat(state["clock"])
        clock.set(start)
        seed = int(state["seed"])
        if contacts is None:
            contacts = round(state["contacts"] * days / max(1, state["days"]))
    count = contacts if contacts is not None else 0
    project = runtime.project
    rep = repertoire(project.settings, project.workflows)
    rng = random.Random(f"{seed}:{start.isoformat()}" if resume else seed)
    first = int(state.get("people", 0))
    people = _population(rng, count, start, days, rep, seed, first, launch=not resume)
    pending = [Action.from_dict(item) for item in state.get("pending", [])]
    arrivals = [
        Action(
            person["arrives"],
            email=person["email"],
            kind="arrive",
            properties={"profile": person["profile"], "via": person["via"]},
        )
        for person in people
    ]
    end = start + timedelta(days=days)
    driven = drive(
        runtime,
        clock,
        [*pending, *arrivals],
        end,
        lambda session, action, now: _perform(session, runtime, rep, rng, seed, action, now),
        lambda sent: _react(
            rng,
            rep,
            persona_of(seed, sent.email),
            sent,
            reading_hour(seed, sent.email),
            ZoneInfo(sent.timezone or project.settings.timezone),
        ),
        None if progress is None else lambda now: progress((now - start) / timedelta(days=1)),
    )
    with write_transaction(runtime.database) as session:
        session.merge(
            ReportCache(
                name=STATE,
                computed_at=end,
                data={
                    "clock": end.isoformat(),
                    "seed": seed,
                    "people": first + count,
                    "contacts": state.get("contacts", count) if resume else count,
                    "days": state.get("days", days) if resume else days,
                    "pending": [action.as_dict() for action in driven.pending],
                },
            )
        )
    result = _result(runtime, days, count, export, seed)
    result.seed, result.until = seed, end.isoformat()
    runtime.database.dispose()
    return result


def _load_state(runtime: Runtime) -> dict[str, Any]:
    with Session(runtime.database) as session:
        row = session.get(ReportCache, STATE)
    if row is None:
        runtime.database.dispose()
        raise NothingToResume("--resume: this database holds no simulation to go on with")
    return dict(row.data)


def ascii_letters(name: str) -> str:
    """`name` lower-cased with its accents taken off, for an address: "Léa" -> "lea",
    "Müller" -> "muller" (not "la", "mller")."""
    decomposed = unicodedata.normalize("NFKD", name.lower())
    return decomposed.encode("ascii", "ignore").decode()


def persona_of(seed: int, email: str) -> Persona:
    """A person's persona, drawn from the seed and their address: the same on a resume."""
    draw = random.Random(f"{seed}/{email}")
    return draw.choices(PERSONAS, [p.weight for p in PERSONAS])[0]


def reading_hour(seed: int, email: str) -> int:
    """The local hour a person reads their mail at, drawn from the seed and their address."""
    return random.Random(f"{seed}/{email}/hour").choice(READING_HOURS)


def _read_at(rng: random.Random, sent: Sent, hour: int, zone: ZoneInfo) -> datetime:
    """When a person reads an email: mostly at their hour (minutes after it arrives when it
    arrives then, else at their next one), else any time within 36 h."""
    if rng.random() >= AT_THEIR_HOUR:
        return sent.sent_at + timedelta(minutes=rng.randrange(20, 36 * 60))
    arrived = sent.sent_at.astimezone(zone)
    if arrived.hour == hour:
        return sent.sent_at + timedelta(minutes=rng.randrange(5, 50))
    wall = arrived.replace(tzinfo=None, hour=hour, minute=rng.randrange(50), second=0)
    if wall <= arrived.replace(tzinfo=None):
        wall += timedelta(days=1)
    return wall.replace(tzinfo=zone, microsecond=0).astimezone(UTC)


def _population(
    rng: random.Random,
    count: int,
    start: datetime,
    days: int,
    rep: Repertoire,
    seed: int,
    first: int,
    *,
    launch: bool,
) -> list[dict[str, Any]]:
    """`count` people: with `launch`, half arrive over the first weeks (the launch wave) and
    half all along the period, so its last days are as alive as any; else all along."""
    people = []
    wave = max(1, min(days // 3, 21)) * 24 * 60
    whole = days * 24 * 60
    for index in range(first, first + count):
        first_name, last = rng.choice(FIRST), rng.choice(LAST)
        company = rng.choice(COMPANIES)
        webmail = rng.random() < 0.15
        domain = "gmail.com" if webmail else f"{company.lower()}{index % 40}.example"
        email = f"{ascii_letters(first_name)}.{ascii_letters(last)}.{index}@{domain}"
        profile: dict[str, Any] = {
            "first_name": first_name,
            "last_name": last,
            "company": company,
            "sector": rng.choice(SECTORS),
            "company_size": rng.choice([8, 30, 80, 250, 900, 4000]),
            "seniority": rng.choice(SENIORITY),
            "role": rng.choice(ROLES),
            "timezone": rng.choice(ZONES),
        }
        if rep.sources:
            profile["source"] = rng.choice(rep.sources)
        via = rng.choice(rep.arrivals) if rep.arrivals else None
        span = wave if launch and rng.random() < 0.5 else whole
        arrives = start + timedelta(minutes=rng.randrange(span))
        people.append({"email": email, "profile": profile, "via": via, "arrives": arrives})
    return people


def _perform(
    session: Session,
    runtime: Runtime,
    rep: Repertoire,
    rng: random.Random,
    seed: int,
    action: Action,
    now: datetime,
) -> list[Action]:
    project = runtime.project
    email = action.email
    if action.kind == "arrive":
        via = action.properties["via"]
        upsert_contact(
            session,
            project,
            email,
            action.properties["profile"],
            now,
            stage=None if via else rep.arrival_stage,
            consent_source=f"simulated {via or 'import'}",
        )
        if via is None:
            return []
        outcome = record_event(session, project, email, via, now)
    elif action.kind in ("sales_accepted", "sales_rejected"):
        handoff = project.settings.handoff
        stage = session.scalar(select(Contact.stage).where(Contact.email == email))
        if handoff is None or stage != handoff.stage:
            return []  # the person moved on before sales answered
        accepted = action.kind == "sales_accepted"
        reason = "simulated: sales takes the lead" if accepted else "simulated: not ready to buy"
        outcome = sales_outcome(session, project, email, accepted, reason, now)
    else:
        outcome = record_event(
            session,
            project,
            email,
            action.kind,
            now,
            properties=action.properties,
            message_id=action.message_id,
        )
    return _after_moves(rng, rep, runtime, seed, email, [m.to_stage for m in outcome.moves], now)


def _after_moves(
    rng: random.Random,
    rep: Repertoire,
    runtime: Runtime,
    seed: int,
    email: str,
    stages: list[str],
    now: datetime,
) -> list[Action]:
    """What the others do when a person moves: sales answers a hand-off after a few days
    (until then the person gets the decision track); a deal goes on without emails."""
    settings = runtime.project.settings
    persona = persona_of(seed, email)
    out = []
    for stage in stages:
        handoff = settings.handoff
        if handoff is not None and stage == handoff.stage:
            draw = rng.random()
            if draw < 0.6:
                later = now + timedelta(days=rng.uniform(3, 9))
                out.append(Action(later, email=email, kind="sales_accepted"))
            elif draw < 0.8:
                later = now + timedelta(days=rng.uniform(5, 12))
                out.append(Action(later, email=email, kind="sales_rejected"))
        elif (
            settings.phase_of(stage) is None
            and stage in rep.advance
            and rng.random() < persona.meeting * 2
        ):
            later = now + timedelta(days=rng.uniform(7, 30))
            out.append(Action(later, email=email, kind=rep.advance[stage]))
    return out


def _react(
    rng: random.Random, rep: Repertoire, persona: Persona, sent: Sent, hour: int, zone: ZoneInfo
) -> list[Action]:
    actions = []
    later = _read_at(rng, sent, hour, zone)
    linked = {"message_id": sent.id}

    def add(kind: str, delay_minutes: int, properties: dict[str, Any], message: bool) -> None:
        at = later + timedelta(minutes=delay_minutes)
        actions.append(
            Action(
                at,
                email=sent.email,
                kind=kind,
                properties=properties,
                message_id=sent.id if message else None,
            )
        )

    if rng.random() < persona.unsubscribe:
        add("unsubscribed", 2, dict(linked), True)
        return actions
    if rng.random() < persona.open:
        add("email_opened", 0, dict(linked), True)
    if rng.random() < persona.click:
        add("email_clicked", 1, dict(linked), True)
        rank = PHASES.index(sent.phase) if sent.phase in PHASES else 0
        if rng.random() < persona.act:
            deeds = rep.interest.get(sent.phase, ())
            if deeds:
                deed = rng.choice(deeds)
                add(deed.kind, 3, deed.props(str(sent.id)), False)
            following = rep.interest.get(PHASES[min(rank + 1, len(PHASES) - 1)], ())
            if following and rng.random() < persona.act:
                deed = rng.choice(following)
                add(deed.kind, 60 * 24, deed.props(str(sent.id)), False)
        if rank > 0 and sent.stage in rep.advance and rng.random() < persona.meeting:
            add(rep.advance[sent.stage], 30, {}, False)
    return actions


def _counts(session: Session, column: InstrumentedAttribute[str]) -> dict[str, int]:
    rows = session.execute(select(column, func.count()).group_by(column))
    return {value: count for value, count in rows}


def _result(runtime: Runtime, days: int, contacts: int, export: TextIO | None, seed: int) -> Result:
    settings = runtime.project.settings
    with sessions(runtime.database)() as session:
        stages = _counts(session, Contact.stage)
        by_phase = _counts(session, Message.phase)
        events = _counts(session, Event.kind)
        # Totals in the database like the stages and emails (a resumed run included): each
        # rule that held an email, counted once per deferral.
        deferrals: Counter[str] = Counter()
        for rules, count in session.execute(
            select(Deferral.rules, func.count()).group_by(Deferral.rules)
        ):
            for rule in rules.split(","):
                deferrals[rule] += count
        sent, moves, suppressed = load_records(session, settings)
        held_out = holdout_sends(session)
        hours_to_open = _hours_to_open(session)
        timed = session.execute(
            select(Contact.email, Contact.timezone, Message.sent_at)
            .join(Contact, Contact.id == Message.contact_id)
            .where(Message.send_time.is_not(None))
        ).all()
    at_their_hour = sum(
        1
        for email, zone, sent_at in timed
        if sent_at.astimezone(ZoneInfo(zone or settings.timezone)).hour == reading_hour(seed, email)
    )
    if export is not None:
        for record in sent:
            export.write(
                json.dumps(
                    {
                        "type": "message",
                        "email": record.email,
                        "timezone": record.timezone,
                        "content_id": record.content_id,
                        "phase": record.phase,
                        "stage": record.stage,
                        "sent_at": record.sent_at.isoformat().replace("+00:00", "Z"),
                    }
                )
                + "\n"
            )
        for move in moves:
            export.write(
                json.dumps(
                    {
                        "type": "stage",
                        "email": move.email,
                        "from": move.from_stage,
                        "to": move.to_stage,
                        "reason": move.reason,
                        "at": move.at.isoformat().replace("+00:00", "Z"),
                    }
                )
                + "\n"
            )
    ordered = {name: stages.get(name, 0) for name in settings.stage_names}
    return Result(
        days=days,
        contacts=contacts,
        stages=ordered,
        messages_by_phase={p: by_phase.get(p, 0) for p in ("discovery", "evaluation", "decision")},
        events=events,
        deferrals=dict(deferrals),
        violations=[
            *violations(
                sent,
                moves,
                suppressed,
                settings,
                settings.caps.policy(),
                aliases=runtime.project.content_aliases,
            ),
            *held_out,
        ],
        hours_to_open=hours_to_open,
        send_time={"emails": len(timed), "at_their_hour": at_their_hour},
    )


def _hours_to_open(session: Session) -> dict[str, float | None]:
    """Median hours from sending to the first real open, per way the email was timed."""
    first = (
        select(Event.message_id, func.min(Event.occurred_at).label("at"))
        .where(Event.kind == "email_opened", Event.machine.is_(None))
        .group_by(Event.message_id)
        .subquery()
    )
    waits: dict[str, list[float]] = {"best": [], "due": []}
    for send_time, sent_at, opened_at in session.execute(
        select(Message.send_time, Message.sent_at, first.c.at).join(
            first, first.c.message_id == Message.id
        )
    ):
        hours = (db_instant(opened_at) - sent_at) / timedelta(hours=1)
        waits["best" if send_time else "due"].append(hours)
    return {k: round(median(v), 1) if v else None for k, v in waits.items()}
