"""`nurture plan --days N`: the next N days rehearsed for the real population, old workflow
versions against the files as they are now, each on its own copy of the database.

The live database is never written: it is copied twice (SQLite's online backup, so a running
engine's writes cannot tear the copy). One copy runs the project with every workflow file
put back to the newest version the engine recorded (the one its people are on), the other
runs the files as they are. Both run the real engine on a simulated clock that starts at
now, with nobody new arriving and nobody reacting (what is already due, and what the waits
bring): the difference is what the edit does.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from nurture.clock import FixedClock
from nurture.db import sessions
from nurture.drive import drive
from nurture.models import SENT, Message
from nurture.runtime import open_runtime
from nurture.transport import NullTransport


class NotSupported(ValueError):
    """The database is not one a rehearsal can copy (PostgreSQL, for now)."""


@dataclass(frozen=True)
class Rehearsal:
    days: int
    start: datetime
    #: content id -> emails sent in the rehearsal, with the recorded versions and with the files.
    old: dict[str, int]
    new: dict[str, int]

    def lines(self) -> list[str]:
        pieces = sorted(set(self.old) | set(self.new))
        width = max((len(p) for p in pieces), default=7)
        out = [
            f"next {self.days} days from {self.start:%Y-%m-%d %H:%M} UTC, on a copy of the "
            "database (nobody new, nobody reacting): emails per content",
            f"  {'content':<{width}}  {'before':>6}  {'after':>6}  change",
        ]
        for piece in pieces:
            before, after = self.old.get(piece, 0), self.new.get(piece, 0)
            change = f"{after - before:+d}" if after != before else "="
            out.append(f"  {piece:<{width}}  {before:>6}  {after:>6}  {change}")
        out.append(
            f"  {'total':<{width}}  {sum(self.old.values()):>6}  {sum(self.new.values()):>6}"
        )
        return out


def sqlite_path(url: str) -> Path:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        raise NotSupported(
            f"--days rehearses on a copy of a SQLite file; {parsed.get_backend_name()} is not "
            "supported yet (run it on a SQLite copy of the data, or without --days)"
        )
    return Path(parsed.database)


def _copy(source: Path, target: Path) -> None:
    with sqlite3.connect(source) as live, sqlite3.connect(target) as copy:
        live.backup(copy)
    live.close()
    copy.close()


def _old_project(root: Path, target: Path, versions: dict[str, str]) -> None:
    """`root` copied to `target` with workflows/ holding the recorded versions' texts."""
    shutil.copytree(root, target, ignore=shutil.ignore_patterns("*.db", "*.db-*", ".nurture"))
    folder = target / "workflows"
    for path in folder.glob("*.y*ml"):
        path.unlink()
    for workflow, text in versions.items():
        (folder / f"{workflow}.yaml").write_text(text, encoding="utf-8")


def _run(root: Path, database: Path, start: datetime, end: datetime) -> dict[str, int]:
    clock = FixedClock(start)
    runtime = open_runtime(
        root, clock=clock, database=f"sqlite:///{database}", transport=NullTransport()
    )
    try:
        make = sessions(runtime.database)
        with make() as session:
            before = session.scalar(select(func.max(Message.id))) or 0
        drive(runtime, clock, [], end, lambda *_: None, lambda _sent: [])
        with make() as session:
            return {
                content: count
                for content, count in session.execute(
                    select(Message.content_id, func.count())
                    .where(Message.id > before, Message.status == SENT)
                    .group_by(Message.content_id)
                )
            }
    finally:
        runtime.database.dispose()


def _recorded(path: Path) -> dict[str, str]:
    """The newest recorded text of each workflow in the SQLite file at `path`."""
    with sqlite3.connect(path) as connection:
        rows = connection.execute(
            "SELECT workflow, text FROM workflow_versions ORDER BY workflow, number"
        ).fetchall()
    connection.close()
    return {workflow: text for workflow, text in rows}


def rehearse_edit(root: Path, url: str, now: datetime, days: int) -> Rehearsal:
    """Run the next `days` days on two copies of the database at `url`: the workflow
    versions its people are on, and the files under `root` as they are now."""
    source = sqlite_path(url)
    if not source.is_file():
        raise NotSupported(f"--days: no database file at {source}")
    end = now + timedelta(days=days)
    with tempfile.TemporaryDirectory(prefix="nurture-plan-") as tmp:
        work = Path(tmp)
        _copy(source, work / "old.db")
        _copy(source, work / "new.db")
        _old_project(root, work / "old", _recorded(work / "old.db"))
        old = _run(work / "old", work / "old.db", now, end)
        new = _run(root, work / "new.db", now, end)
    return Rehearsal(days, now, old, new)
