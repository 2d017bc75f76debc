"""A workflow's lift (treated against holdout) on many enrollments, counted and kept.

    python bench/lift.py [--enrollments 200000] [--runs 3] [--only sqlite|postgresql]

Builds, in the database itself (INSERT ... SELECT over a generated series), that many
contacts, each enrolled in guide-nurture (`holdout: 10%`: every tenth held out) over the
last 120 days, and stage moves: a fifth of them moved to MQL before entering, and after
entering 30% of those emailed and 25% of those held out reach MQL, a third of those SQL,
a third of those customer. Then times what the workflows page used to do on each view,
`lift.lift` for every workflow, against what it does now, `lift.cached_lifts` (the reports
job's figures, one row read), `--runs` times each: min / median / max, wall and this
process's CPU (on SQLite the query runs here).

PostgreSQL comes from NURTURE_TEST_POSTGRES_URL (default: the local `test` database), in a
schema of its own dropped at the end.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nurture import lift  # noqa: E402
from nurture.clock import FixedClock  # noqa: E402
from nurture.db import sessions  # noqa: E402
from nurture.runtime import Runtime, open_runtime  # noqa: E402
from nurture.seed import copy_project  # noqa: E402

sys.path.insert(0, str(REPO / "bench"))
from segments import _SERIES, NOW, POSTGRES, _minutes_ago, _spread  # noqa: E402  (bench/segments.py)


def build(rt: Runtime, people: int) -> None:
    database = rt.database
    dialect = database.dialect.name
    series = _SERIES[dialect]
    now = NOW.replace(tzinfo=None).isoformat(sep=" ") if dialect == "sqlite" else NOW
    entered = "(n * 7919) % 172800"  # minutes before now: up to 120 days
    # after entry, minutes later: reached (n % 100 < 30 emailed, < 25 held out) at +k days
    reached = "CASE WHEN n % 10 = 0 THEN (n / 10) % 100 < 25 ELSE (n / 10) % 100 < 30 END"
    later = f"{entered} - ((n * 31) % 50 + 1) * 1440"
    moves = [
        ("mql", f"{later}", reached),
        ("sql", f"{later} + 720", f"({reached}) AND n % 3 = 0"),
        ("customer", f"{later} + 1440", f"({reached}) AND n % 9 = 0"),
    ]
    statements = [
        series + "INSERT INTO contacts (id, email, custom, stage, stage_since, fit, engagement,"
        " engagement_at, paused, created_at) SELECT n, 'p' || n || '@co.example', '{}', 'lead',"
        f" {_minutes_ago(dialect, '200000')}, 20, 0, {_minutes_ago(dialect, '200000')}, false,"
        f" {_minutes_ago(dialect, '200000')} FROM s",
        series + "INSERT INTO enrollments (id, workflow, contact_id, status, positions, places,"
        " entered_at) SELECT n, 'guide-nurture', n, CASE WHEN n % 10 = 0 THEN 'holdout'"
        f" ELSE 'active' END, '{{}}', '{{}}', {_minutes_ago(dialect, entered)} FROM s",
        # a fifth were MQLs before entering (left out of the MQL counts)
        series + "INSERT INTO stage_moves (contact_id, at, from_stage, to_stage, reason)"
        f" SELECT n, {_minutes_ago(dialect, entered + ' + 60')}, 'lead', 'mql', 'before'"
        " FROM s WHERE n % 5 = 1",
        *(
            series + "INSERT INTO stage_moves (contact_id, at, from_stage, to_stage, reason)"
            f" SELECT n, {_minutes_ago(dialect, f'CASE WHEN {at} > 0 THEN {at} ELSE 0 END')},"
            f" 'lead', '{stage}', 'after' FROM s WHERE {when} AND {at} > 0"
            for stage, at, when in moves
        ),
    ]
    started = time.perf_counter()
    with database.begin() as connection:
        if dialect == "postgresql":
            connection.exec_driver_sql("SET LOCAL session_replication_role = replica")
        for statement in statements:
            connection.execute(text(statement), {"count": people, "now": now})
    with database.connect() as connection:
        if dialect == "postgresql":
            connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                "VACUUM ANALYZE"
            )
        else:
            connection.exec_driver_sql("ANALYZE")
    print(f"  built {people} enrollments: {time.perf_counter() - started:.0f}s", flush=True)


def _timed(work: Callable[[], Any], runs: int) -> tuple[str, Any]:
    walls, cpus, result = [], [], None
    for _ in range(runs):
        started, used = time.perf_counter(), time.process_time()
        result = work()
        walls.append(time.perf_counter() - started)
        cpus.append(time.process_time() - used)
    return f"wall {_spread(walls)}, CPU here {_spread(cpus)}", result


def measure(root: Path, url: str, people: int, runs: int) -> None:
    rt = open_runtime(root, clock=FixedClock(NOW), database=url)
    build(rt, people)
    settings, shares = rt.project.settings, lift.holdouts(rt.project.workflows)

    def live() -> dict[str, lift.Lift]:
        with sessions(rt.database)() as session:
            return {w: lift.lift(session, settings, w, s, NOW) for w, s in shares.items()}

    shown, counted = _timed(live, runs)
    print(f"  counted on each view (before): {shown}", flush=True)
    lift.refresh_lifts(rt.database, settings, shares, NOW)
    shown, kept = _timed(lambda: lift.cached_lifts(rt.database, settings, shares, NOW), runs)
    print(f"  kept by the reports job (now): {shown}", flush=True)
    assert kept == counted, "the kept lifts differ from those counted"
    guide = counted["guide-nurture"]
    print(f"  {lift.heading(guide)}")
    print(f"  reached MQL within 30 days: {guide.rows[0].sentence}")
    rt.database.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--enrollments", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", choices=["sqlite", "postgresql"])
    args = parser.parse_args()
    print(f"{args.enrollments} enrollments, {args.runs} runs each")
    with tempfile.TemporaryDirectory() as tmp:
        root = copy_project(REPO, Path(tmp) / "project")
        if args.only != "postgresql":
            print("SQLite:", flush=True)
            measure(root, f"sqlite:///{Path(tmp) / 'bench.db'}", args.enrollments, args.runs)
        if args.only != "sqlite":
            admin = create_engine(POSTGRES, isolation_level="AUTOCOMMIT")
            schema = f"bench_{uuid.uuid4().hex[:8]}"
            with admin.connect() as connection:
                connection.exec_driver_sql(f"CREATE SCHEMA {schema}")
            try:
                base = admin.url.render_as_string(hide_password=False)
                print("PostgreSQL:", flush=True)
                measure(
                    root, f"{base}?options=-csearch_path%3D{schema}", args.enrollments, args.runs
                )
            finally:
                with admin.connect() as connection:
                    connection.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
                admin.dispose()


if __name__ == "__main__":
    main()
