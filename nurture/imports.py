"""CSV import: columns mapped to fields, rows checked one by one, the bad ones reported with
their reason and the good ones kept; one contact per normalized address."""

from __future__ import annotations

import codecs
import csv
import difflib
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Engine as Database

from nurture.config import EDITABLE_FIELDS, CustomField
from nurture.contacts import clean_profile, normalize_email
from nurture.db import write_transaction
from nurture.errors import InvalidValue
from nurture.feedback import upsert_contact
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


#: Headers read as a field without --map (compared once accents, case and punctuation
#: are gone: `Prénom`, `E-mail`, `Société`), French and English. A declared custom field
#: of the header's own name comes first; `phone` is read only if declared (custom_fields).
SYNONYMS = {
    "email": (
        "e_mail",
        "email_address",
        "e_mail_address",
        "mail",
        "courriel",
        "adresse_email",
        "adresse_e_mail",
        "adresse_mail",
        "mail_address",
    ),
    "first_name": ("firstname", "first", "given_name", "forename", "prenom"),
    "last_name": ("lastname", "last", "surname", "family_name", "nom", "nom_de_famille"),
    "company": (
        "company_name",
        "organization",
        "organisation",
        "societe",
        "entreprise",
        "raison_sociale",
        "employer",
        "employeur",
    ),
    "role": (
        "job_title",
        "title",
        "position",
        "job",
        "poste",
        "fonction",
        "titre",
        "intitule_du_poste",
    ),
    "company_size": (
        "size",
        "employees",
        "number_of_employees",
        "effectif",
        "effectifs",
        "taille",
        "taille_entreprise",
        "taille_de_l_entreprise",
        "nombre_de_salaries",
    ),
    "sector": ("industry", "secteur", "secteur_d_activite", "activite"),
    "seniority": ("level", "niveau", "seniorite", "anciennete"),
    "country": ("pays", "country_code", "code_pays"),
    "timezone": ("time_zone", "tz", "fuseau", "fuseau_horaire"),
    "language": ("lang", "langue", "locale"),
    "account": ("compte", "domain", "domaine"),
    "source": ("origine", "provenance", "lead_source"),
    "owner": ("proprietaire", "commercial", "sales_owner", "account_owner"),
    "phone": (
        "telephone",
        "tel",
        "phone_number",
        "mobile",
        "portable",
        "telephone_mobile",
        "numero_de_telephone",
    ),
}
_BY_SYNONYM = {alias: name for name, aliases in SYNONYMS.items() for alias in aliases}


class UnknownColumns(ValueError):
    """Columns that are no field: the import stops before any row is read."""

    def __init__(self, unknown: list[tuple[str, str | None]], *, email: bool = True) -> None:
        self.unknown = unknown
        lines = [f"{len(unknown)} column(s) match no field; nothing was imported:"]
        for column, field_name in unknown:
            if field_name:
                hint = f"--map {_quoted(column, field_name)} (closest field)"
            else:
                hint = "no close field; declare one under custom_fields: in nurture.yaml"
            lines.append(f"  {column!r}: {hint}, or --map {_quoted(column, '')} to leave it out")
        lines.append(
            "Say for each: --map COLUMN=FIELD reads it into FIELD (a profile or declared "
            "custom field), --map COLUMN= leaves it out."
        )
        if not email:
            lines.append("And no column holds the email address: name one with --map COLUMN=email")
        super().__init__("\n".join(lines))


def _quoted(column: str, target: str) -> str:
    pair = f"{column}={target}"
    return pair if re.fullmatch(r"[\w.=-]+", pair) else f"'{pair}'"


def header_key(column: str) -> str:
    """`Prénom ` -> prenom, `E-mail` -> e_mail: how headers are compared."""
    plain = unicodedata.normalize("NFKD", column).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "_", plain.strip().lower()).strip("_")


def column_map(
    columns: Iterable[str], explicit: Mapping[str, str], custom_fields: Iterable[str]
) -> tuple[dict[str, str], list[str]]:
    """{column: field} and the columns left out (`--map COL=`, only those).

    `explicit` wins; then a header naming a field (`First Name` -> first_name, a declared
    custom field by its name); then SYNONYMS. Any other column raises UnknownColumns, with
    the closest field for each: a column is never dropped unless asked to."""
    custom = set(custom_fields)
    known = {"email", *EDITABLE_FIELDS, *custom}
    for column, target in explicit.items():
        if target and target not in known:
            raise ValueError(
                f"--map {column}={target}: unknown field; known: {', '.join(sorted(known))}"
            )
    columns = list(columns)
    missing = set(explicit) - set(columns)
    if missing:
        raise ValueError(f"--map names column(s) not in the file: {', '.join(sorted(missing))}")
    mapping: dict[str, str] = {}
    left_out: list[str] = []
    unknown: list[tuple[str, str | None]] = []
    for column in columns:
        if column in explicit:
            if explicit[column]:
                mapping[column] = explicit[column]
            else:
                left_out.append(column)
            continue
        key = header_key(column)
        name = key if key in known else _BY_SYNONYM.get(key)
        if name in known:
            mapping[column] = name
        else:
            unknown.append((column, _closest(key, known)))
    if unknown:
        raise UnknownColumns(unknown, email="email" in mapping.values())
    by_field: dict[str, list[str]] = {}
    for column, name in mapping.items():
        by_field.setdefault(name, []).append(column)
    for name, found in by_field.items():
        if len(found) > 1:
            raise ValueError(
                f"columns {', '.join(map(repr, found))} all read into {name}; leave out all "
                f"but one with --map {_quoted(found[1], '')}"
            )
    if "email" not in mapping.values():
        raise ValueError("no column holds the email address; name one with --map COLUMN=email")
    return mapping, left_out


def _closest(key: str, known: set[str]) -> str | None:
    """The field a header most looks like: by name, or by one of its synonyms."""
    candidates = {name: name for name in known}
    candidates.update({a: n for a, n in _BY_SYNONYM.items() if n in known})
    close = difflib.get_close_matches(key, list(candidates), n=1, cutoff=0.6)
    return candidates[close[0]] if close else None


def check_rows(
    rows: Iterable[tuple[int, dict[str, str]]],
    mapping: Mapping[str, str],
    custom_fields: Mapping[str, CustomField],
) -> Iterator[Good | Bad]:
    """Each row checked on its own: the email and every mapped field."""
    for line, row in rows:
        values = {target: (row.get(column) or "").strip() for column, target in mapping.items()}
        if isinstance(row, Unreadable):
            yield Bad(line, {}, f"unreadable row: {row.reason}")
            continue
        raw_email = values.pop("email", "")
        if not raw_email:
            yield Bad(line, row, "missing field: email")
            continue
        try:
            address = normalize_email(raw_email)
        except ValueError as exc:
            yield Bad(line, row, f"invalid email: {exc}")
            continue
        try:
            clean_profile(values, custom_fields)
        except InvalidValue as exc:
            reason = "unknown time zone" if exc.field == "timezone" else f"invalid {exc.field}"
            yield Bad(line, row, f"{reason}: {exc.message or exc}")
            continue
        yield Good(line, address, {k: v for k, v in values.items() if v})


class Unreadable(dict[str, str]):
    """A row the CSV reader could not read (a field over csv.field_size_limit())."""

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason


def check_utf8(path: Path) -> None:
    """ValueError naming the file and the place unless it is all UTF-8: found before any
    row is written, so a file in another encoding is refused whole, not half imported."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                raise ValueError(
                    f"{path.name} is not UTF-8 text (byte {offset + exc.start}): "
                    "save it as CSV UTF-8 and import it again"
                ) from None
            offset += len(chunk)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise ValueError(f"{path.name} is not UTF-8 text (it ends mid-character)") from None


def read_csv(handle: IO[str]) -> tuple[list[str], Iterator[tuple[int, dict[str, str]]]]:
    """Header and numbered rows of a CSV whose delimiter is `,`, `;` or a tab; a row the
    reader cannot read comes as an Unreadable row, and the rows after it are read."""
    sample = handle.read(8192)
    handle.seek(0)
    try:
        dialect: Any = csv.Sniffer().sniff(sample, delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.DictReader(handle, dialect=dialect)
    columns = list(reader.fieldnames or [])

    def rows() -> Iterator[tuple[int, dict[str, str]]]:
        while True:
            line = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield line, Unreadable(str(exc))
                continue
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
    check_utf8(path)
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
    # By address: concurrent imports of the same people take their rows in one order.
    rows = sorted(rows, key=lambda r: r.email)
    if not rows:
        return
    created = 0
    with write_transaction(database) as session:
        for row in rows:
            outcome = upsert_contact(
                session,
                project,
                row.email,
                row.fields,
                now,
                stage=stage,
                stage_reason="set at CSV import" + (f" ({source})" if source else ""),
                consent_source=consent,
                on_create={"source": source} if source else None,
            )
            created += outcome.created
    report.created += created
    report.updated += len(rows) - created


def write_rejects(path: Path, columns: list[str], rejected: list[Bad]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["line", "reason", *columns])
        for bad in rejected:
            writer.writerow([bad.line, bad.reason, *(bad.row.get(c, "") for c in columns)])
