"""Dispatch throughput: emails planned, rendered and recorded per second, against a floor.

    python bench/dispatch.py [--contacts 100000] [--send-time]

Sets up N contacts due at once (bulk-inserted on a fresh SQLite file), then times the real
dispatcher with outbox writing switched off (a null transport). In the same run it times the
floor: one Jinja render of the same content plus one row insert per email. It prints both
rates and their ratio, the figure to drive down. With --send-time, the workflow has
`send_time: best` and each person 3 real opens (and a machine's) at 09:xx Paris, so every
email still goes now, after the engagement-hour reads.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Column, Integer, MetaData, String, Table, Text, insert

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nurture.clock import FixedClock  # noqa: E402
from nurture.content import sample_variables  # noqa: E402
from nurture.db import write_transaction  # noqa: E402
from nurture.models import Event  # noqa: E402
from nurture.runtime import open_runtime  # noqa: E402
from nurture.seed import copy_project, seed_leads  # noqa: E402
from nurture.transport import NullTransport  # noqa: E402

NOW = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # Monday 09:00 in Paris


def setup(root: Path, count: int, *, send_time: bool = False) -> None:
    if send_time:
        workflow = root / "workflows" / "guide-nurture.yaml"
        workflow.write_text(workflow.read_text().replace("tracks:", "send_time: best\ntracks:", 1))
    rt = open_runtime(root, clock=FixedClock(NOW), transport=NullTransport())
    seed_leads(rt.database, count, NOW, accounts=count, zones=["Europe/Paris"])
    if send_time:  # 3 real opens at 09:xx Paris a week apart, and a privacy proxy's
        for start in range(0, count, 5000):
            rows = [
                {
                    "contact_id": i,
                    "kind": "email_opened",
                    "occurred_at": at,
                    "recorded_at": at,
                    "properties": {},
                    "machine": "Apple Mail Privacy Protection" if week == 4 else None,
                }
                for i in range(start + 1, min(start + 5000, count) + 1)
                for week in range(1, 5)
                for at in [NOW - timedelta(weeks=week) + timedelta(minutes=i % 50)]
            ]
            with write_transaction(rt.database) as session:
                session.execute(insert(Event), rows)
    rt.database.dispose()


def engine_rate(root: Path, count: int) -> float:
    rt = open_runtime(root, clock=FixedClock(NOW), transport=NullTransport())
    started = time.perf_counter()
    report = rt.dispatcher.tick()
    elapsed = time.perf_counter() - started
    assert report.sent == count, f"expected {count} sent, got {report}"
    rt.database.dispose()
    return count / elapsed


def floor_rate(root: Path, count: int) -> float:
    """One render of the same piece per email and one row insert per email, batched alike."""
    rt = open_runtime(root, clock=FixedClock(NOW), transport=NullTransport())
    piece = rt.project.content["discovery/hidden-cost-of-churn"]
    variables = sample_variables([], rt.project.settings.sender.model_dump())
    scratch = Table(
        "floor_rows",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("contact_id", Integer),
        Column("subject", String(300)),
        Column("body", Text),
    )
    scratch.create(rt.database)
    batch = rt.dispatcher.batch_size
    started = time.perf_counter()
    for start in range(0, count, batch):
        rows = []
        for i in range(start, min(start + batch, count)):
            variables["contact"]["first_name"] = f"Name{i}"
            html = piece.template.render(variables)
            rows.append({"contact_id": i, "subject": "s", "body": html[:10]})
        with write_transaction(rt.database) as session:
            session.execute(insert(scratch), rows)
    elapsed = time.perf_counter() - started
    rt.database.dispose()
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--send-time", action="store_true", help="send_time: best on the workflow")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = copy_project(REPO, Path(tmp) / "project")
        setup(root, args.contacts, send_time=args.send_time)
        engine = engine_rate(root, args.contacts)
        floor = floor_rate(root, args.contacts)
    print(f"contacts due:          {args.contacts}")
    print(f"engine:                {engine:,.0f} emails/s (planned, paced, rendered, recorded)")
    print(f"floor:                 {floor:,.0f} emails/s (one Jinja render + one row insert)")
    print(f"ratio:                 {floor / engine:.1f}x the floor's time per email (drive down)")


if __name__ == "__main__":
    main()
