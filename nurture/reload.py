"""Workflow versions in the database, and people carried across an edit: the I/O around
nurture/core/versions.py.

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
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import Engine as Database
from sqlalchemy import and_, func, not_, or_, select, update
from sqlalchemy.orm import Session

from nurture.core.decisions import ACTIVE, EXITED, PAUSED, WAITING
from nurture.core.versions import (
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
from nurture.core.words import counted, duration
from nurture.db import lock_for_transaction, sessions, write_transaction
from nurture.models import Contact, Enrollment, Message, WorkflowVersion
from nurture.project import SETTINGS_FILE, Project

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
    # Who is on a workflow's current version, or not planned yet, is placed at its next
    # turn: left out in SQL, so a start-up reads only the people an edit concerns.
    settled = [
        and_(
            Enrollment.workflow == workflow.id,
            or_(Enrollment.version.is_(None), Enrollment.version == workflow.digest),
        )
        for workflow in project.workflows.values()
    ]
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
        .where(Enrollment.status.in_(OPEN), not_(or_(False, *settled)))
        .order_by(Enrollment.id)
    ).all()
    pending = []
    for row in rows:
        if row.workflow not in known:
            if not (row.hold_reason or "").startswith(HELD):
                result.gone[row.workflow] = result.gone.get(row.workflow, 0) + 1
            continue
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


@dataclass(frozen=True)
class VersionChange:
    """A workflow version the engine took up: `number` recorded now, `previous` the one its
    people were on (None: the first), `restores` the earlier number whose text it puts back."""

    workflow: str
    number: int
    previous: int | None
    restores: int | None

    def describe(self) -> str:
        if self.previous is None:
            return f"version {self.number} recorded"
        again = f" (the text of version {self.restores} again)" if self.restores else ""
        return f"version {self.previous} -> {self.number}{again}"


@dataclass
class Synced:
    """What `sync_versions` did: per workflow how many continue, move, finish or are held,
    and the versions it recorded."""

    counts: dict[str, Counter[str]]
    changes: list[VersionChange]


def newest_versions(session: Session) -> dict[str, tuple[int, str]]:
    """workflow id -> (number, digest) of its newest recorded version."""
    newest: dict[str, tuple[int, str]] = {}
    for workflow, number, digest in session.execute(
        select(WorkflowVersion.workflow, WorkflowVersion.number, WorkflowVersion.digest).order_by(
            WorkflowVersion.number
        )
    ):
        newest[workflow] = (number, digest)
    return newest


def earlier_number(session: Session, workflow: str, digest: str) -> int | None:
    """The first version of `workflow` recorded with `digest` (None: a text never run)."""
    return session.scalar(
        select(func.min(WorkflowVersion.number)).where(
            WorkflowVersion.workflow == workflow, WorkflowVersion.digest == digest
        )
    )


def sync_versions(database: Database, project: Project, now: datetime) -> Synced:
    """Record the current version of every workflow and carry everyone onto it, in one
    transaction (nothing half-applied); return per workflow how many continue, move,
    finish or are held, and the versions recorded. A file whose text differs from its
    newest version is a new version, also when it puts an earlier text back (a revert)."""
    with write_transaction(database) as session:
        # Two workers taking up the same edit must not both record it nor both carry people.
        lock_for_transaction(session, "workflow-versions")
        newest = newest_versions(session)
        new_rows: dict[str, WorkflowVersion] = {}
        recorded: list[VersionChange] = []
        for workflow in project.workflows.values():
            current = newest.get(workflow.id)
            if current is not None and current[1] == workflow.digest:
                continue
            names = (workflow.id, *workflow.renamed_from)
            previous = max((newest[name][0] for name in names if name in newest), default=0)
            restores = earlier_number(session, workflow.id, workflow.digest)
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
            recorded.append(VersionChange(workflow.id, previous + 1, previous or None, restores))
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
        _rename_closed(session, project)
        for name in found.gone:
            session.execute(
                update(Enrollment)
                .where(Enrollment.workflow == name, Enrollment.status.in_((ACTIVE, WAITING)))
                .values(status=WAITING, hold_reason=gone(name), due_at=None)
            )
            counts[name][Kind.HOLD] += found.gone[name]
    return Synced(counts, recorded)


def _rename_closed(session: Session, project: Project) -> None:
    """The rows of a renamed workflow's earlier ids that `survey` does not carry (held out,
    completed, exited) go under its id too: whoever was held out stays out of it and is
    counted by its lift, whoever left it enters again only by its `reenter:` rule. A person
    who already has a row under the new id keeps that one (the old row stays as it was)."""
    for old, new in project.renamed_workflows.items():
        taken = select(Enrollment.contact_id).where(Enrollment.workflow == new)
        session.execute(
            update(Enrollment)
            .where(Enrollment.workflow == old, Enrollment.contact_id.not_in(taken))
            .values(workflow=new)
        )


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


#: The order `nurture plan` lists what happens to people: as `carry` decides it.
_KINDS = (Kind.CONTINUE, Kind.MOVE, Kind.FINISH, Kind.HOLD)


def edit_plan(database: Database, project: Project) -> list[dict[str, Any]]:
    """What the engine will do when it takes up the files as they are now: per workflow,
    the steps added, removed, moved, renamed and re-timed, and per change of place how many
    people continue, move, finish or are held, and why. Reads only; changes nothing.

    Steps are named by their id everywhere; `contents` gives the piece a step sends when
    its id is not the piece's own id. A file put back to an earlier text is a change (the
    next version, `restores` the number of the one it puts back)."""
    from nurture.core.versions import changes

    with sessions(database)() as session:
        found = survey(session, project)
        newest = newest_versions(session)
        restores = {
            workflow.id: earlier_number(session, workflow.id, workflow.digest)
            for workflow in project.workflows.values()
        }
    report = []
    for workflow in project.workflows.values():
        previous = found.previous.get(workflow.id)
        current = newest.get(workflow.id)
        entry: dict[str, Any] = {
            "workflow": workflow.id,
            "from_version": previous[0] if previous else None,
            "changed": current is None or current[1] != workflow.digest,
            "restores": None,
        }
        steps = [s for steps in outline(workflow).values() for s in steps]
        if previous is not None:
            if entry["changed"]:
                entry["restores"] = restores[workflow.id]
            diff = changes(previous[1], outline(workflow), project.content_aliases)
            entry.update(
                added=diff.added,
                removed=diff.removed,
                moved=diff.moved,
                renamed=diff.renamed,
                waits={
                    k: {"from_seconds": a.total_seconds(), "to_seconds": b.total_seconds()}
                    for k, (a, b) in diff.waits.items()
                },
            )
            steps.extend(s for old in previous[1].values() for s in old)
        entry["contents"] = {s.id: s.content for s in steps if s.content and s.content != s.id}
        groups: Counter[tuple[str, str | None, str | None, str]] = Counter()
        for item in found.placed.get(workflow.id, []):
            c = item.carried
            groups[(c.kind.value, c.was, c.now, c.reason if c.kind is Kind.HOLD else "")] += 1
        order = {kind.value: index for index, kind in enumerate(_KINDS)}
        entry["people"] = [
            {"kind": k, "from": was, "to": now, "reason": reason or None, "count": n}
            for (k, was, now, reason), n in sorted(
                groups.items(), key=lambda g: (order[g[0][0]], -g[1], str(g[0]))
            )
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


def _step(key: str, *, contents: Mapping[str, str]) -> str:
    """A step by its id, with the piece it sends when the id does not say it."""
    return f"{key} ({contents[key]})" if key in contents else key


def format_plan(report: list[dict[str, Any]]) -> list[str]:
    lines: list[str] = []
    for entry in report:
        name = entry["workflow"]
        contents: dict[str, str] = entry.get("contents") or {}
        step = partial(_step, contents=contents)
        if entry.get("gone"):
            lines.append(f"{name}: the file is gone")
        elif not entry["changed"]:
            lines.append(f"{name}: unchanged (version {entry['from_version']})")
            continue
        elif entry["from_version"] is None:
            lines.append(f"{name}: new, becomes version 1")
        else:
            again = f" (the text of version {entry['restores']} again)" if entry["restores"] else ""
            lines.append(
                f"{name}: version {entry['from_version']} -> {entry['from_version'] + 1}{again}"
            )
        for key in ("added", "removed", "moved"):
            if entry.get(key):
                lines.append(f"  steps {key}: {', '.join(step(k) for k in entry[key])}")
        for old, new in (entry.get("renamed") or {}).items():
            lines.append(f"  step renamed: {old} -> {step(new)}")
        for key, wait in (entry.get("waits") or {}).items():
            a, b = (timedelta(seconds=wait[k]) for k in ("from_seconds", "to_seconds"))
            lines.append(
                f"  wait of {step(key)}: {duration(a)} -> {duration(b)} (counted from each "
                "person's last email)"
            )
        same = [g for g in entry["people"] if g["kind"] == Kind.CONTINUE]
        if same:
            going = sum(g["count"] for g in same if g["to"])
            done = sum(g["count"] for g in same if not g["to"])
            parts = [f"{going} continue as before"] if going else []
            parts += (
                [f"{done} had finished their track and still have nothing left"] if done else []
            )
            lines.append(f"  {counted(going + done, 'person')} unaffected: {', '.join(parts)}")
        for group in entry["people"]:
            who = counted(group["count"], "person")
            if group["kind"] == Kind.CONTINUE:
                continue
            if group["kind"] == Kind.MOVE:
                lines.append(
                    f"  {who} move: next step {step(group['to'])} instead of "
                    + (
                        f"step {step(group['from'])}"
                        if group["from"]
                        else "nothing (they had finished)"
                    )
                )
            elif group["kind"] == Kind.FINISH:
                lines.append(
                    f"  {who} finish: nothing left for them instead of step {step(group['from'])}"
                )
            else:
                lines.append(f"  {who} held: {group['reason']}")
        if not entry["people"]:
            lines.append("  nobody in flight is affected")
    return lines
