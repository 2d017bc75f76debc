"""Segments (`segments/*.yaml`): named audiences, a condition over the profile, the stage, the
scores and what people did, counted, listed and exported by SQL (nurture/segmentsql.py).

A segment file:

    name: Engaged evaluators
    description: MQLs who clicked in the last two weeks.
    when: "stage == 'mql' and did('email_clicked', within='14d')"

Its id is the file name (`segments/engaged-evaluators.yaml` -> `engaged-evaluators`).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Annotated, Any

from pydantic import AfterValidator, Field, ValidationInfo
from pydantic.json_schema import SkipJsonSchema
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from nurture import segmentsql
from nurture.config import PROFILE_FIELDS, Settings, Strict, check_contact_fields
from nurture.contacts import current_engagement, profile
from nurture.core import engagement
from nurture.models import Contact
from nurture.problems import Problem, ProjectError
from nurture.yamlfile import parse_yaml, validate

#: Names a segment's condition may use: no `event` (a segment is not about one event).
SEGMENT_NAMES = (engagement.BASE_NAMES - {"event"}) | engagement.FUNCTIONS
#: Contacts per page (the API's default and the dashboard's sample).
PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


def _condition(source: str, info: ValidationInfo) -> str:
    context = info.context or {}
    settings: Settings | None = context.get("settings")
    names = set(SEGMENT_NAMES) | (set(settings.lists) if settings else set())
    engagement.check(
        source,
        names,
        content=context.get("content") or None,
        events=settings.event_kinds if settings else None,
    )
    if settings is not None:
        check_contact_fields(source, settings.contact_fields)
        try:
            segmentsql.check(source, settings, context.get("content_ids", {}))
        except segmentsql.Unsupported as exc:
            raise ValueError(f"cannot be counted in the database: {exc}") from None
    return source


SegmentCondition = Annotated[str, AfterValidator(_condition)]


class Segment(Strict):
    id: SkipJsonSchema[str] = ""
    name: str = Field(min_length=1, max_length=200, description="What the dashboard calls it.")
    description: str | None = Field(default=None, max_length=2000)
    when: SegmentCondition = Field(
        description=(
            "Who is in it: a condition over contact.<field>, stage, fit, engagement, "
            "days_in_stage, the lists, and clicked(...), opened(...), received(...), "
            "did(kind, within='7d')."
        )
    )


def load_segments(
    root: Path,
    settings: Settings,
    content: Mapping[str, str],
    content_ids: Mapping[str, tuple[str, ...]],
    display: Any = str,
) -> tuple[dict[str, Segment], list[Problem]]:
    """Every `segments/*.yaml` of the project, and the problems of those that do not load."""
    found: dict[str, Segment] = {}
    problems: list[Problem] = []
    context = {"settings": settings, "content": dict(content), "content_ids": content_ids}
    for path in sorted((root / "segments").glob("*.y*ml")):
        shown = display(path)
        try:
            doc = parse_yaml(path.read_text(encoding="utf-8"), shown)
            segment = validate(Segment, doc, context)
        except ProjectError as exc:
            problems.extend(exc.problems)
            continue
        found[path.stem] = segment.model_copy(update={"id": path.stem})
    return found, problems


@dataclass(frozen=True)
class Audience:
    """A segment ready to query: its WHERE clause at one instant, on one database."""

    segment: Segment
    clause: ColumnElement[bool]
    now: datetime


def audience(
    session: Session,
    settings: Settings,
    segment: Segment,
    content_ids: Mapping[str, tuple[str, ...]],
    now: datetime,
) -> Audience:
    dialect = session.get_bind().dialect.name
    scope = segmentsql.Scope(settings, now, dialect, content_ids)
    return Audience(segment, segmentsql.where(segment.when, scope), now)


def count(session: Session, audience: Audience) -> int:
    return session.scalar(select(func.count()).select_from(Contact).where(audience.clause)) or 0


def contact_ids(
    session: Session, audience: Audience, after: int = 0, limit: int = 1000
) -> list[int]:
    """The ids of members after `after`, lowest first (keyset pages over the whole segment)."""
    return list(
        session.scalars(
            select(Contact.id)
            .where(audience.clause, Contact.id > after)
            .order_by(Contact.id)
            .limit(limit)
        )
    )


def page(session: Session, audience: Audience, number: int, size: int = PAGE_SIZE) -> list[Contact]:
    """Page `number` (from 1) of the members, by id."""
    return list(
        session.scalars(
            select(Contact)
            .where(audience.clause)
            .order_by(Contact.id)
            .offset((number - 1) * size)
            .limit(size)
        )
    )


def holds(session: Session, audience: Audience, contact_id: int) -> bool:
    """Whether one contact is a member now."""
    found = session.scalar(select(Contact.id).where(audience.clause, Contact.id == contact_id))
    return found is not None


def columns(settings: Settings) -> list[str]:
    """The columns of a member row (CSV export, API): profile, custom fields, stage, scores."""
    return [
        "id",
        *PROFILE_FIELDS,
        *settings.custom_fields,
        "stage",
        "fit",
        "engagement",
    ]


def row(contact: Contact, settings: Settings, now: datetime) -> dict[str, Any]:
    """One member as the export and the API show them (engagement as of `now`)."""
    return {
        "id": contact.id,
        **profile(contact, settings),
        "stage": contact.stage,
        "fit": round(contact.fit, 1),
        "engagement": round(current_engagement(contact, settings, now), 1),
    }


def members(session: Session, audience: Audience, chunk: int = 1000) -> Iterator[Contact]:
    """Every member, by id, read `chunk` at a time."""
    after = 0
    while True:
        batch = list(
            session.scalars(
                select(Contact)
                .where(audience.clause, Contact.id > after)
                .order_by(Contact.id)
                .limit(chunk)
            )
        )
        yield from batch
        if len(batch) < chunk:
            return
        after = batch[-1].id
        session.expunge_all()


def _cell(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text: none is empty, and text starting like a
    formula (=, +, -, @) gets a leading quote so it is never run as one."""
    if value is None:
        return ""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def export(session: Session, audience: Audience, settings: Settings, out: IO[str]) -> int:
    """Write the members as CSV (a header, one row each); return how many."""
    writer = csv.DictWriter(out, fieldnames=columns(settings), extrasaction="ignore")
    writer.writeheader()
    written = 0
    for contact in members(session, audience):
        values = row(contact, settings, audience.now)
        writer.writerow({k: _cell(v) for k, v in values.items()})
        written += 1
    return written
