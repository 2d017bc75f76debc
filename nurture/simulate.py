"""A synthetic population lived through the real engine on a simulated clock.

People arrive over the first weeks, in many time zones and with varied profiles, and behave
after their persona: champions click, read and book meetings; readers open and seldom act;
some unsubscribe; ghosts ignore everything. Their events go through the same code as real
ones, and the dispatcher sends on the same caps, so what the simulation shows is what the
engine does.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from nurture.audit import load_records, violations
from nurture.clock import FixedClock
from nurture.db import sessions
from nurture.drive import Action, Sent, drive
from nurture.feedback import record_event, upsert_contact
from nurture.models import Contact, Event, Message
from nurture.runtime import Runtime, open_runtime
from nurture.transport import NullTransport, Transport

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

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def simulate(
    root: Path,
    *,
    days: int,
    contacts: int,
    seed: int,
    database: str | None = None,
    export: TextIO | None = None,
    transport: Transport | None = None,
    start: datetime = START,
) -> Result:
    clock = FixedClock(start)
    runtime = open_runtime(
        root, clock=clock, database=database, transport=transport or NullTransport()
    )
    rng = random.Random(seed)
    people = _population(rng, contacts, start, days)
    personas = {p["email"]: p["persona"] for p in people}
    arrivals = [
        Action(
            person["arrives"],
            email=person["email"],
            kind="arrive",
            properties={"profile": person["profile"], "via": person["via"]},
        )
        for person in people
    ]
    deferrals = drive(
        runtime,
        clock,
        arrivals,
        start + timedelta(days=days),
        lambda session, action, now: _perform(session, runtime, action, now),
        lambda sent: _react(rng, personas[sent.email], sent),
    )
    return _result(runtime, days, contacts, dict(deferrals), export)


def _population(rng: random.Random, count: int, start: datetime, days: int) -> list[dict[str, Any]]:
    people = []
    spread = max(1, min(days // 3, 21)) * 24 * 60
    weights = [p.weight for p in PERSONAS]
    for index in range(count):
        persona = rng.choices(PERSONAS, weights)[0]
        first, last = rng.choice(FIRST), rng.choice(LAST)
        company = rng.choice(COMPANIES)
        webmail = rng.random() < 0.15
        domain = "gmail.com" if webmail else f"{company.lower()}{index % 40}.example"
        email = f"{first.lower()}.{last.lower()}.{index}@{domain}".encode(
            "ascii", "ignore"
        ).decode()
        source = rng.choice(["guide", "newsletter", "webinar"])
        profile: dict[str, Any] = {
            "first_name": first,
            "last_name": last,
            "company": company,
            "sector": rng.choice(SECTORS),
            "company_size": rng.choice([8, 30, 80, 250, 900, 4000]),
            "seniority": rng.choice(SENIORITY),
            "role": rng.choice(ROLES),
            "timezone": rng.choice(ZONES),
            "source": source,
        }
        via = {
            "guide": "content_downloaded",
            "newsletter": "newsletter_signup",
            "webinar": "webinar_registered",
        }[source]
        arrives = start + timedelta(minutes=rng.randrange(spread))
        people.append(
            {"email": email, "persona": persona, "profile": profile, "via": via, "arrives": arrives}
        )
    return people


def _perform(session: Session, runtime: Runtime, action: Action, now: datetime) -> None:
    project = runtime.project
    if action.kind == "arrive":
        upsert_contact(
            session,
            project,
            action.email,
            action.properties["profile"],
            now,
            consent_source=f"simulated {action.properties['via']}",
        )
        record_event(session, project, action.email, action.properties["via"], now)
        return
    record_event(session, project, action.email, action.kind, now, properties=action.properties)


def _react(rng: random.Random, persona: Persona, sent: Sent) -> list[Action]:
    actions = []
    message_id, phase = sent.id, sent.phase
    later = sent.sent_at + timedelta(minutes=rng.randrange(20, 36 * 60))

    def add(kind: str, delay_minutes: int, **properties: Any) -> None:
        at = later + timedelta(minutes=delay_minutes)
        actions.append(Action(at, email=sent.email, kind=kind, properties=properties))

    if rng.random() < persona.unsubscribe:
        add("unsubscribed", 2, message_id=message_id)
        return actions
    if rng.random() < persona.open:
        add("email_opened", 0, message_id=message_id)
    if rng.random() < persona.click:
        add("email_clicked", 1, message_id=message_id)
        if rng.random() < persona.act:
            follow = {
                "discovery": ("content_downloaded", {"asset": f"guide-{message_id}"}),
                "evaluation": ("page_visited", {"url": "https://keel-retention.example/pricing"}),
                "decision": ("page_visited", {"url": "https://keel-retention.example/demo"}),
            }[phase]
            add(follow[0], 3, **follow[1])
            if phase == "discovery" and rng.random() < persona.act:
                add("page_visited", 6, url="https://keel-retention.example/pricing")
            if phase == "evaluation" and rng.random() < 0.5:
                add("webinar_attended", 60 * 24, webinar="retention-playbook")
        if phase != "discovery" and rng.random() < persona.meeting:
            add("meeting_booked", 30, message_id=message_id)
    return actions


def _counts(session: Session, column: InstrumentedAttribute[str]) -> dict[str, int]:
    rows = session.execute(select(column, func.count()).group_by(column))
    return {value: count for value, count in rows}


def _result(
    runtime: Runtime, days: int, contacts: int, deferrals: dict[str, int], export: TextIO | None
) -> Result:
    settings = runtime.project.settings
    with sessions(runtime.database)() as session:
        stages = _counts(session, Contact.stage)
        by_phase = _counts(session, Message.phase)
        events = _counts(session, Event.kind)
        sent, moves, suppressed = load_records(session, settings)
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
        deferrals=deferrals,
        violations=violations(sent, moves, suppressed, settings, settings.caps.policy()),
    )
