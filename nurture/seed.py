"""Many leads at once, for load tests and benchmarks: bulk-inserted, chunk by chunk.

Each lead fits the example project's profile (fit 55), lives in one of the simulator's
zones, belongs to one of `accounts` companies and is enrolled in `workflow`, due at `now`.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, insert

from nurture.db import write_transaction
from nurture.models import Contact, Enrollment
from nurture.simulate import ZONES

CHUNK = 10_000


def copy_project(source: Path, destination: Path) -> Path:
    """The project at `source` (settings, workflows, content, segments) in a fresh folder."""
    destination.mkdir(parents=True)
    shutil.copy(source / "nurture.yaml", destination)
    for folder in ("workflows", "content", "segments"):
        if (source / folder).is_dir():
            shutil.copytree(source / folder, destination / folder)
    return destination


def lead(
    i: int, now: datetime, accounts: int, zones: Sequence[str] = tuple(ZONES)
) -> dict[str, Any]:
    return {
        "id": i,
        "email": f"person{i}@company{i % accounts}.example",
        "first_name": f"Name{i}",
        "account": f"company{i % accounts}.example",
        "sector": "saas",
        "company_size": 300,
        "seniority": "vp",
        "timezone": zones[i % len(zones)],
        "custom": {},
        "stage": "lead",
        "stage_since": now,
        "fit": 55.0,
        "engagement": 10.0,
        "engagement_at": now,
        "paused": False,
        "created_at": now,
    }


def _chunks(count: int) -> Iterator[range]:
    for start in range(1, count + 1, CHUNK):
        yield range(start, min(start + CHUNK, count + 1))


def seed_leads(
    database: Engine,
    count: int,
    now: datetime,
    *,
    workflow: str = "guide-nurture",
    accounts: int = 4000,
    zones: Sequence[str] = tuple(ZONES),
) -> None:
    """Insert `count` leads with ids 1..count, each enrolled and due at `now`."""
    for ids in _chunks(count):
        with write_transaction(database) as session:
            session.execute(insert(Contact), [lead(i, now, accounts, zones) for i in ids])
            session.execute(
                insert(Enrollment),
                [
                    {
                        "id": i,
                        "workflow": workflow,
                        "contact_id": i,
                        "status": "active",
                        "positions": {},
                        "entered_at": now,
                        "due_at": now,
                    }
                    for i in ids
                ],
            )
    if database.dialect.name == "postgresql":
        with database.begin() as connection:
            for table in ("contacts", "enrollments"):
                connection.exec_driver_sql(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), {count})"
                )
