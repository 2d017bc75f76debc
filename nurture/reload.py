"""Workflow versions in the database, and people carried across an edit: the I/O around
nurture/versions.py.

`sync_versions` records each workflow file the engine runs (text and digest, first seen at)
and, in the same transaction, moves every open enrollment that is on another version, on a
renamed workflow or on index positions from before step ids, to its place in the current
one. `Stamp` tells cheaply (file sizes and modification times) whether the project's files
changed, so the running engine reloads them between two ticks.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine as Database
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from nurture.db import lock_for_transaction, sessions, write_transaction
from nurture.decisions import ACTIVE, EXITED, PAUSED, WAITING
from nurture.models import Contact, Enrollment, Message, WorkflowVersion
from nurture.project import SETTINGS_FILE, Project
from nurture.versions import (
    HELD,
    Carried,
    Kind,
    Outline,
    gone,
    outline,
    outline_from_json,
    outline_to_json,
    place,
)

OPEN = (ACTIVE, WAITING, PAUSED)
_CHUNK = 500

Stamp = tuple[tuple[str, int, int], ...]


def stamp(root: Path) -> Stamp:
    """Every project file's (path, size, mtime in ns): equal stamps, nothing to reload."""
    paths = [root / SETTINGS_FILE, *(root / "workflows").glob("*.y*ml")]
    content = root / "content"
    if content.is_dir():
        paths.extend(p for p in content.rglob("*") if p.is_file())
    found = []
    for path in sorted(paths):
        try:
            info = path.stat()
        except OSError:
            continue
        found.append((str(path), info.st_size, info.st_mtime_ns))
    return tuple(found)


@dataclass
class Placed:
    """One open enrollment and where the current files put it."""

    id: int
    contact: str
    workflow: str
    status: str
    carried: Carried


@dataclass
class Survey:
    """Every open enrollment off the current versions, and where each goes: what
    `sync_versions` applies and `nurture plan` shows."""

    placed: dict[str, list[Placed]] = field(default_factory=lambda: defaultdict(list))
    #: workflow id -> (number, outline) of the version its people are on now (the newest).
    previous: dict[str, tuple[int, Outline]] = field(default_factory=dict)
    gone: dict[str, int] = field(default_factory=dict)


def survey(session: Session, project: Project) -> Survey:
    """Where the current files put every open enrollment not yet on them (pure reads)."""
    result = Survey()
    versions: dict[tuple[str, str], Outline] = {}
    newest: dict[str, tuple[int, Outline]] = {}
    for row in session.execute(
        select(
            WorkflowVersion.workflow,
            WorkflowVersion.digest,
            WorkflowVersion.number,
            WorkflowVersion.outline,
        ).order_by(WorkflowVersion.number)
    ):
        versions[(row.workflow, row.digest)] = outline_from_json(row.outline)
        newest[row.workflow] = (row.number, versions[(row.workflow, row.digest)])
    for workflow in project.workflows.values():
        for name in (workflow.id, *workflow.renamed_from):
            if name in newest:
                result.previous.setdefault(workflow.id, newest[name])
    known = set(project.workflows) | set(project.renamed_workflows)
    rows = session.execute(
        select(
            Enrollment.id,
            Enrollment.workflow,
            Enrollment.status,
            Enrollment.places,
            Enrollment.positions,
            Enrollment.version,
            Enrollment.hold_reason,
            Contact.id.label("contact_id"),
            Contact.email,
            Contact.stage,
        )
        .join(Contact, Contact.id == Enrollment.contact_id)
        .where(Enrollment.status.in_(OPEN))
        .order_by(Enrollment.id)
    ).all()
    pending = []
    for row in rows:
        if row.workflow not in known:
            if not (row.hold_reason or "").startswith(HELD):
                result.gone[row.workflow] = result.gone.get(row.workflow, 0) + 1
            continue
        current = project.workflows[project.renamed_workflows.get(row.workflow, row.workflow)]
        if row.workflow == current.id and row.version in (None, current.digest):
            continue  # on the current version, or not planned yet (placed at its first turn)
        pending.append(row)
    received = _received(session, project, {row.contact_id for row in pending})
    settings = project.settings
    for row in pending:
        current = project.workflows[project.renamed_workflows.get(row.workflow, row.workflow)]
        carried = place(
            row.version,
            row.places,
            row.positions,
            versions.get((row.workflow, row.version or "")),
            outline(current),
            phase=settings.phase_of(row.stage),
            received=received[row.contact_id],
            workflow=current.id,
            aliases=project.content_aliases,
        )
        result.placed[current.id].append(
            Placed(row.id, row.email, row.workflow, row.status, carried)
        )
    return result


def _received(session: Session, project: Project, contacts: Iterable[int]) -> dict[int, set[str]]:
    """Per contact, every piece with a message row (any status, renames applied): the
    outbox's unique key allows one row per person and piece, so the planner passes these over."""
    received: dict[int, set[str]] = defaultdict(set)
    ids = sorted(contacts)
    for start in range(0, len(ids), _CHUNK):
        for contact_id, content_id in session.execute(
            select(Message.contact_id, Message.content_id).where(
                Message.contact_id.in_(ids[start : start + _CHUNK])
            )
        ):
            received[contact_id].add(project.canonical(content_id))
    return received


def sync_versions(database: Database, project: Project, now: datetime) -> dict[str, Counter[str]]:
    """Record the current version of every workflow and carry everyone onto it, in one
    transaction (nothing half-applied); return per workflow how many continue, move,
    finish or are held."""
    with write_transaction(database) as session:
        # Two workers taking up the same edit must not both record it nor both carry people.
        lock_for_transaction(session, "workflow-versions")
        numbers = dict(
            session.execute(
                select(WorkflowVersion.workflow, func.max(WorkflowVersion.number)).group_by(
                    WorkflowVersion.workflow
                )
            ).all()
        )
        known = {
            (w, d)
            for w, d in session.execute(select(WorkflowVersion.workflow, WorkflowVersion.digest))
        }
        new_rows: dict[str, WorkflowVersion] = {}
        for workflow in project.workflows.values():
            if (workflow.id, workflow.digest) in known:
                continue
            previous = max([numbers.get(name, 0) for name in (workflow.id, *workflow.renamed_from)])
            row = WorkflowVersion(
                workflow=workflow.id,
                number=previous + 1,
                digest=workflow.digest,
                text=workflow.text,
                outline=outline_to_json(outline(workflow)),
                first_seen_at=now,
                summary={},
            )
            session.add(row)
            new_rows[workflow.id] = row
        session.flush()
        found = survey(session, project)
        counts: dict[str, Counter[str]] = defaultdict(Counter)
        taken = _enrolled(session, found)
        for workflow_id, placed in found.placed.items():
            digest = project.workflows[workflow_id].digest
            for item in placed:
                _apply(session, item, workflow_id, digest, now, taken)
                counts[workflow_id][item.carried.kind] += 1
            if workflow_id in new_rows:
                new_rows[workflow_id].summary = dict(counts[workflow_id])
        for name in found.gone:
            session.execute(
                update(Enrollment)
                .where(Enrollment.workflow == name, Enrollment.status.in_((ACTIVE, WAITING)))
                .values(status=WAITING, hold_reason=gone(name), due_at=None)
            )
            counts[name][Kind.HOLD] += found.gone[name]
    return counts


def _enrolled(session: Session, found: Survey) -> set[tuple[str, int]]:
    """(workflow, contact) pairs already taken among the workflows people are renamed into."""
    renamed = {wf for wf, placed in found.placed.items() if any(p.workflow != wf for p in placed)}
    if not renamed:
        return set()
    return {
        (w, c)
        for w, c in session.execute(
            select(Enrollment.workflow, Enrollment.contact_id).where(
                Enrollment.workflow.in_(renamed)
            )
        )
    }


def _apply(
    session: Session,
    item: Placed,
    workflow: str,
    digest: str,
    now: datetime,
    taken: set[tuple[str, int]],
) -> None:
    values: dict[str, Any] = {"places": item.carried.places, "version": digest}
    if item.workflow != workflow:
        contact_id = session.scalar(select(Enrollment.contact_id).where(Enrollment.id == item.id))
        assert contact_id is not None
        if (workflow, contact_id) in taken:
            session.execute(
                update(Enrollment)
                .where(Enrollment.id == item.id)
                .values(
                    status=EXITED,
                    end_reason=f"workflow {item.workflow} renamed to {workflow}, where they "
                    "already are",
                    ended_at=now,
                    due_at=None,
                )
            )
            return
        taken.add((workflow, contact_id))
        values["workflow"] = workflow
    if item.carried.kind is Kind.HOLD:
        values.update(status=WAITING, hold_reason=item.carried.reason, due_at=None)
    elif item.status != PAUSED:
        # Planned again at once: a changed wait counts from their last email, a new step
        # reaches those who had finished, the rest continue where they were.
        values.update(status=ACTIVE, due_at=now, hold_reason=None)
    session.execute(update(Enrollment).where(Enrollment.id == item.id).values(values))


def load_outlines(
    session: Session, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], Outline]:
    """The outlines of the given (workflow, digest) versions that are recorded."""
    wanted = {k for k in keys if k[1]}
    if not wanted:
        return {}
    rows = session.execute(
        select(WorkflowVersion.workflow, WorkflowVersion.digest, WorkflowVersion.outline).where(
            WorkflowVersion.digest.in_(sorted({d for _, d in wanted}))
        )
    )
    return {(w, d): outline_from_json(o) for w, d, o in rows if (w, d) in wanted}


def read_survey(database: Database, project: Project) -> Survey:
    with sessions(database)() as session:
        return survey(session, project)


def version_numbers(database: Database) -> Mapping[tuple[str, str], int]:
    with sessions(database)() as session:
        return {
            (w, d): n
            for w, d, n in session.execute(
                select(WorkflowVersion.workflow, WorkflowVersion.digest, WorkflowVersion.number)
            )
        }


def edit_plan(database: Database, project: Project) -> list[dict[str, Any]]:
    """What the engine will do when it takes up the files as they are now: per workflow,
    the steps added, removed, moved, renamed and re-timed, and per change of place how many
    people continue, move, finish or are held, and why. Reads only; changes nothing."""
    from nurture.versions import changes

    with sessions(database)() as session:
        found = survey(session, project)
        recorded = {
            (w, d)
            for w, d in session.execute(select(WorkflowVersion.workflow, WorkflowVersion.digest))
        }
    report = []
    for workflow in project.workflows.values():
        previous = found.previous.get(workflow.id)
        entry: dict[str, Any] = {
            "workflow": workflow.id,
            "from_version": previous[0] if previous else None,
            "changed": (workflow.id, workflow.digest) not in recorded,
        }
        if previous is not None:
            diff = changes(previous[1], outline(workflow), project.content_aliases)
            entry.update(
                added=diff.added,
                removed=diff.removed,
                moved=diff.moved,
                renamed=diff.renamed,
                waits={k: [str(a), str(b)] for k, (a, b) in diff.waits.items()},
            )
        groups: Counter[tuple[str, str | None, str | None, str]] = Counter()
        for item in found.placed.get(workflow.id, []):
            c = item.carried
            groups[(c.kind.value, c.was, c.now, c.reason if c.kind is Kind.HOLD else "")] += 1
        entry["people"] = [
            {"kind": k, "from": was, "to": now, "reason": reason or None, "count": n}
            for (k, was, now, reason), n in sorted(groups.items(), key=lambda g: str(g[0]))
        ]
        report.append(entry)
    for name, count in found.gone.items():
        report.append(
            {
                "workflow": name,
                "gone": True,
                "people": [
                    {
                        "kind": Kind.HOLD.value,
                        "from": None,
                        "to": None,
                        "reason": gone(name),
                        "count": count,
                    }
                ],
            }
        )
    return report


def format_plan(report: list[dict[str, Any]]) -> list[str]:
    lines: list[str] = []
    for entry in report:
        name = entry["workflow"]
        if entry.get("gone"):
            lines.append(f"{name}: the file is gone")
        elif not entry["changed"]:
            lines.append(f"{name}: unchanged (version {entry['from_version']})")
            continue
        elif entry["from_version"] is None:
            lines.append(f"{name}: new, becomes version 1")
        else:
            lines.append(f"{name}: version {entry['from_version']} -> {entry['from_version'] + 1}")
        for key in ("added", "removed", "moved"):
            if entry.get(key):
                lines.append(f"  steps {key}: {', '.join(entry[key])}")
        for old, new in (entry.get("renamed") or {}).items():
            lines.append(f"  step renamed: {old} -> {new}")
        for step, (a, b) in (entry.get("waits") or {}).items():
            lines.append(f"  wait of {step}: {a} -> {b} (counted from each person's last email)")
        for group in entry["people"]:
            n = group["count"]
            who = f"{n} {'person' if n == 1 else 'people'}"
            if group["kind"] == Kind.MOVE:
                lines.append(
                    f"  {who} move: next {group['to']} instead of "
                    f"{group['from'] or 'nothing (they had finished)'}"
                )
            elif group["kind"] == Kind.CONTINUE:
                lines.append(f"  {who} continue" + (f" with {group['to']}" if group["to"] else ""))
            elif group["kind"] == Kind.FINISH:
                lines.append(f"  {who} finish: nothing left for them in their track")
            else:
                lines.append(f"  {who} held: {group['reason']}")
        if not entry["people"]:
            lines.append("  nobody in flight is affected")
    return lines
