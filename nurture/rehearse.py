"""Rehearsal: one imagined person played through the real workflows and caps, day by day."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from nurture.clock import FixedClock
from nurture.config import Strict, TimeZoneName
from nurture.core.holdouts import HOLDOUT
from nurture.db import sessions
from nurture.drive import Action, Sent, drive
from nurture.durations import format_duration
from nurture.feedback import record_event, sales_outcome, upsert_contact
from nurture.models import (
    Contact,
    Deferral,
    Enrollment,
    Event,
    JourneyStep,
    Message,
    ScoreChange,
    StageMove,
)
from nurture.runtime import open_runtime
from nurture.transport import NullTransport
from nurture.workflows import WaitFor, Workflow
from nurture.yamlfile import parse_yaml, validate

EMAIL = "persona@rehearsal.example"


class PersonaAction(Strict):
    day: int = Field(ge=1, description="Day of the rehearsal (1 is the first).")
    at: str = Field(default="10:00", pattern=r"^\d{1,2}:\d{2}$", description="Local time.")
    event: str
    properties: dict[str, Any] = Field(default_factory=dict)


class Persona(Strict):
    name: str
    profile: dict[str, Any] = Field(default_factory=dict)
    timezone: TimeZoneName = "Europe/Paris"
    start: datetime = Field(
        default=datetime(2026, 3, 2, 9, 0),  # noqa: DTZ001 - a wall-clock time in `timezone`
        description="When the person arrives, on their own clock.",
    )
    enters_with: str = Field(
        default="content_downloaded", description="The event that makes a lead."
    )
    days: int = Field(default=30, ge=1, le=365)
    opens: Literal["every", "never"] = "every"
    clicks: Literal["every", "never", "evaluation", "decision"] = "never"
    actions: list[PersonaAction] = Field(default_factory=list)


def load_persona(path: Path) -> Persona:
    return validate(Persona, parse_yaml(path.read_text(encoding="utf-8"), str(path)))


def rehearse(root: Path, persona: Persona) -> list[str]:
    """The persona's timeline, one line per thing that happened, grouped by local day."""
    zone = ZoneInfo(persona.timezone)
    wall = persona.start
    if wall.tzinfo is not None:
        wall = wall.astimezone(zone).replace(tzinfo=None)
    start = wall.replace(tzinfo=zone).astimezone(UTC)
    end = start + timedelta(days=persona.days)
    clock = FixedClock(start)
    with tempfile.TemporaryDirectory() as tmp:
        runtime = open_runtime(
            root, clock=clock, database=str(Path(tmp) / "rehearsal.db"), transport=NullTransport()
        )
        make = sessions(runtime.database)
        with make.begin() as session:
            upsert_contact(
                session,
                runtime.project,
                EMAIL,
                {**persona.profile, "timezone": persona.timezone},
                start,
                consent_source="rehearsal",
            )
            record_event(session, runtime.project, EMAIL, persona.enters_with, start)
        actions = []
        for action in persona.actions:
            hour, minute = (int(part) for part in action.at.split(":"))
            local = (wall + timedelta(days=action.day - 1)).replace(hour=hour, minute=minute)
            actions.append(
                Action(
                    local.replace(tzinfo=zone).astimezone(UTC),
                    email=EMAIL,
                    kind=action.event,
                    properties=action.properties,
                )
            )

        def perform(session: Session, action: Action, now: datetime) -> None:
            if action.kind in ("sales_accepted", "sales_rejected"):
                accepted = action.kind == "sales_accepted"
                reason = str(action.properties.get("reason", "" if accepted else "not now"))
                sales_outcome(session, runtime.project, EMAIL, accepted, reason, now)
                return
            record_event(
                session,
                runtime.project,
                EMAIL,
                action.kind,
                now,
                properties=action.properties,
                message_id=action.message_id,
            )

        def react(sent: Sent) -> list[Action]:
            reactions = []
            if persona.opens == "every":
                reactions.append(
                    Action(
                        sent.sent_at + timedelta(hours=1),
                        email=EMAIL,
                        kind="email_opened",
                        properties={"message_id": sent.id},
                        message_id=sent.id,
                    )
                )
            if persona.clicks in ("every", sent.phase):
                reactions.append(
                    Action(
                        sent.sent_at + timedelta(hours=1, minutes=5),
                        email=EMAIL,
                        kind="email_clicked",
                        properties={"message_id": sent.id},
                        message_id=sent.id,
                    )
                )
            return reactions

        drive(runtime, clock, actions, end, perform, react)
        lines = _timeline(make, zone, start, persona, runtime.project.workflows)
        runtime.database.dispose()
    return lines


def _journey_line(step: JourneyStep, workflows: Mapping[str, Workflow]) -> str:
    """One journey step in words: a wait started, a way taken, an action done."""
    found = workflows.get(step.workflow)
    kind = next(
        (
            type(s).__name__
            for phase in (found.tracks if found else {})
            for s in found.flat(phase)  # type: ignore[union-attr]
            if s.key == step.step_key
        ),
        "",
    )
    where = f"{step.workflow}/{step.step_key}"
    if step.way == "waiting":
        what = found and next(
            (
                s.wait_until
                for phase in found.tracks
                for s in found.flat(phase)
                if isinstance(s, WaitFor) and s.key == step.step_key
            ),
            None,
        )
        event = f" for {what.event}, at most {format_duration(what.timeout)}" if what else ""
        return f"waits{event} ({where})"
    if kind == "WaitFor":
        came = "the event came" if step.way == "then" else "no event before the timeout"
        return f"{came}: takes {step.way} ({where})"
    if kind == "Branch":
        holds = "holds" if step.way == "then" else "does not hold"
        return f"branch: the condition {holds}, takes {step.way} ({where})"
    if kind == "Split":
        return f"split: path {step.way} ({where})"
    return f"action {step.way}: {step.detail or 'done'} ({where})"


def _timeline(
    make: Any,
    zone: ZoneInfo,
    start: datetime,
    persona: Persona,
    workflows: Mapping[str, Workflow],
) -> list[str]:
    entries: list[tuple[datetime, int, str]] = []
    with make() as session:
        for step in session.scalars(select(JourneyStep)):
            entries.append((step.at, 2, _journey_line(step, workflows)))
        contact = session.scalars(select(Contact)).one()
        for m in session.scalars(select(Message)):
            entries.append(
                (m.sent_at, 2, f"email {m.content_id} ({m.phase}, stage {m.stage_at_send})")
            )
        for s in session.scalars(select(ScoreChange)):
            entries.append((s.at, 1, f"{s.points:+g} {s.axis}: {s.rule} (now {s.value_after:.1f})"))
        for move in session.scalars(select(StageMove)):
            entries.append(
                (move.at, 1, f"stage {move.from_stage or '-'} -> {move.to_stage}: {move.reason}")
            )
        for d in session.scalars(select(Deferral)):
            until = d.until.astimezone(zone).strftime("%a %H:%M") if d.until else "never"
            entries.append((d.at, 3, f"held {d.content_id} until {until}: {d.reason}"))
        for event in session.scalars(select(Event).where(Event.kind == "email_opened")):
            entries.append(
                (event.occurred_at, 1, "opened the last email (scores nothing: opens lie)")
            )
        for e in session.scalars(select(Enrollment)):
            held = " (held out: none of its emails)" if e.status == HOLDOUT else ""
            entries.append((e.entered_at, 1, f"entered workflow {e.workflow}{held}"))
            if e.ended_at:
                entries.append((e.ended_at, 4, f"left workflow {e.workflow}: {e.end_reason}"))
        final = f"after {persona.days} days: stage {contact.stage}, fit {contact.fit:g}"
    lines = [f"{persona.name} ({persona.timezone})"]
    day = None
    for at, _, text in sorted(entries, key=lambda entry: (entry[0], entry[1])):
        local = at.astimezone(zone)
        number = (local.date() - start.astimezone(zone).date()).days + 1
        if number != day:
            day = number
            lines.append(f"day {number:>2} {local:%a %d %b}")
        lines.append(f"  {local:%H:%M}  {text}")
    lines.append(final)
    return lines
