"""CSV import: columns mapped to fields, rows checked one by one, the bad ones reported with
their reason and the good ones kept; one contact per normalized address."""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Engine as Database
from sqlalchemy import select

from nurture.config import EDITABLE_FIELDS
from nurture.contacts import clean_profile, normalize_email
from nurture.db import write_transaction
from nurture.feedback import upsert_contact
from nurture.models import Contact
from nurture.project import Project

BATCH = 500


@dataclass(frozen=True)
class Good:
    line: int
    email: str
    fields: dict[str, Any]


@dataclass(frozen=True)
class Bad:
    line: int
    row: dict[str, str]
    reason: str


@dataclass
class ImportReport:
    created: int = 0
    updated: int = 0
    merged: int = 0
    rejected: list[Bad] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)


def column_map(
    columns: Iterable[str], explicit: Mapping[str, str], custom_fields: Iterable[str]
) -> tuple[dict[str, str], list[str]]:
    """{column: field} and the columns left out. `explicit` wins; an empty field drops a
    column; other columns map to the field of their name (`First Name` -> first_name)."""
    known = {"email", *EDITABLE_FIELDS, *custom_fields}
    for column, target in explicit.items():
        if target and target not in known:
            raise ValueError(
                f"--map {column}={target}: unknown field; known: {', '.join(sorted(known))}"
            )
    mapping, ignored = {}, []
    for column in columns:
        if column in explicit:
            if explicit[column]:
                mapping[column] = explicit[column]
            continue
        name = re.sub(r"[^a-z0-9]+", "_", column.strip().lower()).strip("_")
        if name in ("e_mail", "email_address", "mail"):
            name = "email"
        if name in known:
            mapping[column] = name
        else:
            ignored.append(column)
    missing = set(explicit) - set(columns)
    if missing:
        raise ValueError(f"--map names column(s) not in the file: {', '.join(sorted(missing))}")
    if "email" not in mapping.values():
        raise ValueError("no column holds the email address; name one with --map COLUMN=email")
    return mapping, ignored


def check_rows(
    rows: Iterable[tuple[int, dict[str, str]]], mapping: Mapping[str, str], custom_fields: list[str]
) -> Iterator[Good | Bad]:
    """Each row checked on its own: the email and every mapped field."""
    for line, row in rows:
        values = {target: (row.get(column) or "").strip() for column, target in mapping.items()}
        raw_email = values.pop("email", "")
        if not raw_email:
            yield Bad(line, row, "missing field: email")
            continue
        try:
            address = normalize_email(raw_email)
        except ValueError:
            yield Bad(line, row, f"invalid email: {raw_email!r}")
            continue
        try:
            clean_profile(values, custom_fields)
        except ValueError as exc:
            name, _, message = str(exc).partition(": ")
            reason = "unknown time zone" if name == "timezone" else f"invalid {name}"
            yield Bad(line, row, f"{reason}: {message or exc}")
            continue
        yield Good(line, address, {k: v for k, v in values.items() if v})


def read_csv(handle: IO[str]) -> tuple[list[str], Iterator[tuple[int, dict[str, str]]]]:
    """Header and numbered rows of a CSV whose delimiter is `,`, `;` or a tab."""
    sample = handle.read(8192)
    handle.seek(0)
    try:
        dialect: Any = csv.Sniffer().sniff(sample, delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.DictReader(handle, dialect=dialect)
    columns = list(reader.fieldnames or [])

    def rows() -> Iterator[tuple[int, dict[str, str]]]:
        for row in reader:
            yield reader.line_num, {k: v for k, v in row.items() if isinstance(k, str)}

    return columns, rows()


def import_csv(
    project: Project,
    database: Database,
    path: Path,
    explicit: Mapping[str, str],
    now: datetime,
    *,
    stage: str | None = None,
    source: str | None = None,
    consent: str | None = None,
    progress: Callable[[int], None] = lambda n: None,
) -> ImportReport:
    """Import `path`; bad rows go in the report, good rows are kept (committed by batches)."""
    custom = project.settings.custom_fields
    report = ImportReport()
    with path.open(encoding="utf-8-sig", newline="") as handle:
        report.columns, rows = read_csv(handle)
        mapping, report.ignored_columns = column_map(report.columns, explicit, custom)
        batch: dict[str, Good] = {}
        seen: set[str] = set()
        for item in check_rows(rows, mapping, custom):
            progress(1)
            if isinstance(item, Bad):
                report.rejected.append(item)
                continue
            if item.email in seen:
                report.merged += 1
                if item.email in batch:
                    earlier = batch[item.email]
                    item = Good(earlier.line, item.email, {**earlier.fields, **item.fields})
            seen.add(item.email)
            batch[item.email] = item
            if len(batch) >= BATCH:
                _write(project, database, batch.values(), now, stage, source, consent, report)
                batch = {}
        _write(project, database, batch.values(), now, stage, source, consent, report)
    return report


def _write(
    project: Project,
    database: Database,
    rows: Iterable[Good],
    now: datetime,
    stage: str | None,
    source: str | None,
    consent: str | None,
    report: ImportReport,
) -> None:
    rows = list(rows)
    if not rows:
        return
    with write_transaction(database) as session:
        existing = set(
            session.scalars(select(Contact.email).where(Contact.email.in_([r.email for r in rows])))
        )
        for row in rows:
            fields = dict(row.fields)
            if source and row.email not in existing:
                fields.setdefault("source", source)
            upsert_contact(
                session, project, row.email, fields, now, stage=stage, consent_source=consent
            )
            if row.email in existing:
                report.updated += 1
            else:
                report.created += 1


def write_rejects(path: Path, columns: list[str], rejected: list[Bad]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["line", "reason", *columns])
        for bad in rejected:
            writer.writerow([bad.line, bad.reason, *(bad.row.get(c, "") for c in columns)])
