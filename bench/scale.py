"""Scale-out: emails per second with 1, 2 and 4 `nurture worker` processes on PostgreSQL,
and with one on SQLite, a million contacts enrolled and due; each worker's peak memory.

    python bench/scale.py [--contacts 1000000] [--seconds 30] [--workers 1,2,4]

PostgreSQL comes from NURTURE_TEST_POSTGRES_URL (default: the local `test` database); the
benchmark works in a schema of its own and drops it at the end. The workers run for real
(`nurture worker --dry-run`: planned, paced, rendered and recorded, handed to no transport)
on a shared clock file set to a Monday 09:00 in Paris, where every contact lives, so each
is due and allowed. Throughput is the messages recorded between two counts taken
`--seconds` apart, after a warm-up. Peak memory is each worker's VmHWM.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, func, select, text

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nurture.clock import FixedClock  # noqa: E402
from nurture.db import make_engine  # noqa: E402
from nurture.models import Message  # noqa: E402
from nurture.runtime import open_runtime  # noqa: E402
from nurture.seed import copy_project, seed_leads  # noqa: E402
from tests.cluster import Cluster, peak_rss_mb  # noqa: E402

NOW = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # Monday 09:00 in Paris
POSTGRES = os.environ.get(
    "NURTURE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
RESET = [
    "DELETE FROM messages",
    "DELETE FROM deferrals",
    "UPDATE enrollments SET status = 'active', positions = '{}', due_at = :now,"
    " last_sent_at = NULL, hold_reason = NULL",
]


def measure(root: Path, url: str, workers: int, seconds: float) -> tuple[float, list[float]]:
    database = make_engine(url)
    with database.begin() as connection:
        for statement in RESET:
            connection.execute(text(statement), {"now": NOW.replace(tzinfo=None)})
    if database.dialect.name == "postgresql":
        with database.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                "VACUUM ANALYZE"
            )
    cluster = Cluster(root, url, root / f"clock-{workers}", size=workers)
    cluster.set_time(NOW)
    cluster.start()

    def sent() -> int:
        with database.connect() as connection:
            return int(connection.scalar(select(func.count()).select_from(Message)) or 0)

    time.sleep(5)  # start-up and warm-up
    first, started = sent(), time.perf_counter()
    time.sleep(seconds)
    last, elapsed = sent(), time.perf_counter() - started
    peaks = [peak_rss_mb(worker.pid) for worker in cluster.workers]
    cluster.stop()
    database.dispose()
    return (last - first) / elapsed, peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--workers", default="1,2,4")
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(POSTGRES, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    postgres = f"{admin.url.render_as_string(hide_password=False)}?options=-csearch_path%3D{schema}"
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = copy_project(REPO, Path(tmp) / "project")
            sqlite = f"sqlite:///{root / 'nurture.db'}"
            for url in (postgres, sqlite):
                rt = open_runtime(root, clock=FixedClock(NOW), database=url)
                started = time.perf_counter()
                seed_leads(
                    rt.database, args.contacts, NOW, accounts=args.contacts, zones=["Europe/Paris"]
                )
                print(
                    f"seeded {args.contacts} contacts in {time.perf_counter() - started:.0f}s"
                    f" ({rt.database.dialect.name})",
                    flush=True,
                )
                rt.database.dispose()
            for workers in counts:
                rate, peaks = measure(root, postgres, workers, args.seconds)
                rows.append((f"PostgreSQL, {workers} worker(s)", workers, rate, peaks))
                print(f"{rows[-1][0]}: {rate:,.0f} emails/s", flush=True)
            rate, peaks = measure(root, sqlite, 1, args.seconds)
            rows.append(("SQLite, 1 process", 1, rate, peaks))
    finally:
        with admin.connect() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()
    print(f"\ncontacts enrolled and due: {args.contacts:,}; cores: {os.cpu_count()}")
    for name, _, rate, peaks in rows:
        print(
            f"{name:<28} {rate:>8,.0f} emails/s   peak RSS per worker "
            f"{', '.join(f'{p:.0f}' for p in peaks)} MB"
        )
    base = rows[0][2]
    for _, workers, rate, _peaks in rows[1 : len(counts)]:
        print(f"scaling {workers} workers / 1: {rate / base:.2f}x (ideal {workers}x)")
    worst = max(p for row in rows for p in row[3])
    print(f"peak memory: {worst:.0f} MB at most per worker (aim: under 300 MB)")


if __name__ == "__main__":
    main()
