"""Segment counts and first pages on a large database, on SQLite and on PostgreSQL.

    python bench/segments.py [--contacts 1000000] [--events 10000000] [--runs 3]

Builds, in the database itself (INSERT ... SELECT over a generated series: the build is
not what is measured), contacts with varied profiles, stages, scores and ages, one
enrollment and one email each, and events over 90 days (page views, opens, clicks, a tenth
of the opens and clicks a machine's) and their engagement summary (as migration 0019 fills
it: what segments read for clicked, opened and did); then, for each segment of the example
project and one more that reads decayed engagement and recent page views, times
`segments.count` and `segments.page(…, 1)` (50 people, by id) as `nurture segment show` and
the API run them, `--runs` times each, and prints min / median / max. Aim: each median under 1 s.
`--explain SEGMENT` prints the plan of one count instead (EXPLAIN QUERY PLAN on SQLite,
EXPLAIN ANALYZE on PostgreSQL); `--keep` keeps the databases for the next run.

PostgreSQL comes from NURTURE_TEST_POSTGRES_URL (default: the local `test` database); the
benchmark works in a schema of its own and drops it at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, func, select, text
from sqlalchemy.exc import DBAPIError

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nurture import eventstore, segments  # noqa: E402
from nurture.clock import FixedClock  # noqa: E402
from nurture.db import sessions  # noqa: E402
from nurture.models import Contact, Engaged, Event  # noqa: E402
from nurture.runtime import open_runtime  # noqa: E402
from nurture.seed import copy_project  # noqa: E402

NOW = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
POSTGRES = os.environ.get(
    "NURTURE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
EXTRA = {
    "recently-engaged": (
        "Recently engaged",
        "engagement >= 20 and did('page_visited', within='7d') and fit >= 20",
    ),
    "clicked-the-guide": ("Clicked the guide", "clicked('discovery/hidden-cost-of-churn')"),
}

# Series of n from 1: a recursive CTE on SQLite, generate_series on PostgreSQL.
_SERIES = {
    "sqlite": "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < :count) ",
    "postgresql": "WITH s(n) AS (SELECT CAST(generate_series(1, :count) AS bigint)) ",
}


def _minutes_ago(dialect: str, minutes: str) -> str:
    """The instant NOW minus `minutes` (an SQL expression), as the column stores it."""
    if dialect == "sqlite":
        return f"strftime('%Y-%m-%d %H:%M:%S.000000', :now, '-' || ({minutes}) || ' minutes')"
    return f"(CAST(:now AS timestamptz) - ({minutes}) * interval '1 minute')"


def _event_numbers(contacts: int, events: int) -> str:
    """Rows (n, c): event n (1 to `events`) of contact c = (n * 104729) % contacts + 1.

    When `events` is a multiple of `contacts` (and 104729, a prime, does not divide it), the
    same rows come in contact order (each contact's n are n0, n0 + contacts, ...; n0 from
    the inverse of 104729), so the table and its indexes are written in order rather than
    at random: the same data, built several times faster."""
    spread = "SELECT n, (n * 104729) % :contacts + 1 AS c FROM s"
    if events % contacts or contacts % 104729 == 0:
        return spread
    inverse = pow(104729, -1, contacts)
    per = events // contacts
    first = f"(((m / {per}) * {inverse}) % :contacts)"  # n0 - 1 of contact m / per + 1
    return (
        f"SELECT (CASE WHEN {first} = 0 THEN :contacts ELSE {first} END)"
        f" + (m % {per}) * :contacts AS n, m / {per} + 1 AS c FROM (SELECT n - 1 AS m FROM s) AS q"
    )


def build(database: Engine, contacts: int, events: int) -> None:
    dialect = database.dialect.name
    series = _SERIES[dialect]
    now = NOW.replace(tzinfo=None).isoformat(sep=" ") if dialect == "sqlite" else NOW
    pick = {
        "sector": "CASE n % 6 WHEN 0 THEN 'saas' WHEN 1 THEN 'retail' WHEN 2 THEN 'fintech' "
        "WHEN 3 THEN 'software' WHEN 4 THEN NULL ELSE 'industry' END",
        "seniority": "CASE n % 5 WHEN 0 THEN 'vp' WHEN 1 THEN 'director' WHEN 2 THEN 'staff' "
        "WHEN 3 THEN NULL ELSE 'c_level' END",
        "stage": "CASE n % 10 WHEN 0 THEN 'mql' WHEN 1 THEN 'sql' WHEN 2 THEN 'contact' "
        "WHEN 3 THEN 'customer' ELSE 'lead' END",
    }
    empty = "'{}'"
    statements = [
        (
            series + "INSERT INTO contacts (id, email, sector, company_size, seniority, country,"
            " custom, stage, stage_since, fit, engagement, engagement_at, paused, created_at)"
            f" SELECT n, 'p' || n || '@co' || (n % 40000) || '.example', {pick['sector']},"
            f" (n * 37) % 3000, {pick['seniority']}, 'FR', {empty}, {pick['stage']},"
            f" {_minutes_ago(dialect, '(n * 7) % 129600')}, (n * 13) % 80 - 20,"
            f" (n * 17) % 120, {_minutes_ago(dialect, '(n * 11) % 43200')}, false,"
            f" {_minutes_ago(dialect, '129600')} FROM s",
            contacts,
        ),
        (
            series + "INSERT INTO enrollments (id, workflow, contact_id, status, positions,"
            f" places, entered_at) SELECT n, 'guide-nurture', n, 'active', {empty}, {empty},"
            f" {_minutes_ago(dialect, '43200')} FROM s",
            contacts,
        ),
        (
            series + "INSERT INTO messages (id, enrollment_id, contact_id, workflow, step_key,"
            " content_id, phase, stage_at_send, subject, rfc_message_id, status, created_at,"
            " sent_at) SELECT n, n, n, 'guide-nurture', 'discovery/hidden-cost-of-churn',"
            " 'discovery/hidden-cost-of-churn', 'discovery', 'lead', 's', '<m' || n || '@x>',"
            f" 'sent', {_minutes_ago(dialect, 'n % 43200')}, {_minutes_ago(dialect, 'n % 43200')}"
            " FROM s",
            contacts,
        ),
        (
            series + "INSERT INTO events (contact_id, kind, occurred_at, recorded_at,"
            " properties, message_id, machine) SELECT c, kind,"
            f" {_minutes_ago(dialect, '(n * 7919) % 129600')}, :now, {empty},"
            " CASE WHEN kind = 'page_visited' THEN NULL ELSE c END,"
            " CASE WHEN kind <> 'page_visited' AND n % 10 = 0 THEN 'privacy proxy' END"
            " FROM (SELECT n, c, CASE (n / 3) % 10"
            " WHEN 0 THEN 'email_opened' WHEN 1 THEN 'email_opened' WHEN 2 THEN 'email_opened'"
            " WHEN 3 THEN 'email_clicked' WHEN 4 THEN 'email_clicked'"
            f" ELSE 'page_visited' END AS kind FROM ({_event_numbers(contacts, events)}) AS t)"
            " AS e",
            events,
        ),
    ]
    indexes = list(Event.__table__.indexes)  # type: ignore[attr-defined]
    if dialect == "sqlite":  # a throwaway build: no journal, no syncing, a large cache
        with database.connect() as connection:
            connection.exec_driver_sql("PRAGMA journal_mode = OFF")
    for statement, count in statements:
        started = time.perf_counter()
        events_table = "INTO events " in statement
        with database.begin() as connection:
            if dialect == "sqlite":
                connection.exec_driver_sql("PRAGMA synchronous = OFF")
                connection.exec_driver_sql("PRAGMA cache_size = -1000000")
            if dialect == "postgresql":  # no per-row foreign-key triggers while building
                connection.exec_driver_sql("SET LOCAL session_replication_role = replica")
            if events_table:  # faster built without them, then indexed once
                for index in indexes:
                    index.drop(connection)
            connection.execute(text(statement), {"count": count, "now": now, "contacts": contacts})
            if events_table:
                for index in indexes:
                    index.create(connection)
        print(
            f"  built {statement.split('INSERT INTO ')[1].split()[0]}: "
            f"{time.perf_counter() - started:.0f}s",
            flush=True,
        )
    started = time.perf_counter()
    with database.begin() as connection:  # the summary of the events, as 0019 fills it
        if dialect == "sqlite":
            connection.exec_driver_sql("PRAGMA synchronous = OFF")
            connection.exec_driver_sql("PRAGMA cache_size = -1000000")
        if dialect == "postgresql":
            connection.exec_driver_sql("SET LOCAL session_replication_role = replica")
        summary = list(Engaged.__table__.indexes)  # type: ignore[attr-defined]
        for index in summary:
            index.drop(connection)
        rows = eventstore.rebuild(connection)
        for index in summary:
            index.create(connection)
    print(
        f"  built engagement_summary ({rows} rows): {time.perf_counter() - started:.0f}s",
        flush=True,
    )
    with database.connect() as connection:
        if dialect == "postgresql":
            connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                "VACUUM ANALYZE"
            )
        else:
            connection.exec_driver_sql("ANALYZE")
            connection.exec_driver_sql("PRAGMA journal_mode = WAL")


def measure(root: Path, url: str, runs: int) -> None:
    rt = open_runtime(root, clock=FixedClock(NOW), database=url)
    project = rt.project
    everything = dict(project.segments)
    for name, (title, condition) in EXTRA.items():
        everything[name] = segments.Segment(id=name, name=title, when=condition)
    for name, segment in everything.items():
        counts, pages, cpu = [], [], []
        for _ in range(runs):
            with sessions(rt.database)() as session:
                found = segments.audience(
                    session, project.settings, segment, project.content_ids(), NOW
                )
                started, used = time.perf_counter(), time.process_time()
                total = segments.count(session, found)
                counts.append(time.perf_counter() - started)
                cpu.append(time.process_time() - used)
                started = time.perf_counter()
                first = segments.page(session, found, 1)
                pages.append(time.perf_counter() - started)
        # On SQLite the query runs in this process: its CPU time is the work, whatever
        # else the machine runs (on PostgreSQL the work is the server's).
        work = f"  (count CPU here {_spread(cpu)})" if rt.database.dialect.name == "sqlite" else ""
        print(
            f"  {name:<24} {total:>8} people  count {_spread(counts)}  "
            f"first page ({len(first)}) {_spread(pages)}{work}",
            flush=True,
        )
    rt.database.dispose()


def explain(root: Path, url: str, name: str) -> None:
    """The plan of segment `name`'s count: EXPLAIN QUERY PLAN on SQLite, EXPLAIN ANALYZE
    on PostgreSQL (which runs it)."""
    rt = open_runtime(root, clock=FixedClock(NOW), database=url)
    project = rt.project
    segment = project.segments.get(name)
    if segment is None:
        title, condition = EXTRA[name]
        segment = segments.Segment(id=name, name=title, when=condition)
    dialect = rt.database.dialect.name
    prefix = "EXPLAIN QUERY PLAN " if dialect == "sqlite" else "EXPLAIN (ANALYZE, BUFFERS) "

    def explained(_c: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> Any:
        return prefix + statement, parameters  # the count's own statement and parameters

    with sessions(rt.database)() as session:
        found = segments.audience(session, project.settings, segment, project.content_ids(), NOW)
        print(f"  {name}: {segment.when}", flush=True)
        connection = session.connection()
        event.listen(connection, "before_cursor_execute", explained, retval=True)
        rows = connection.execute(select(func.count()).select_from(Contact).where(found.clause))
        for row in rows:
            print("   ", row[-1] if dialect == "sqlite" else row[0], flush=True)
        event.remove(connection, "before_cursor_execute", explained)
    rt.database.dispose()


def _spread(times: list[float]) -> str:
    return (
        f"min {min(times) * 1000:.0f} / median {statistics.median(times) * 1000:.0f} / "
        f"max {max(times) * 1000:.0f} ms"
    )


def _built(url: str) -> bool:
    """Whether a kept database already holds a finished build."""
    database = create_engine(url)
    try:
        with database.connect() as connection:
            connection.exec_driver_sql("SELECT count(*) FROM nurture_bench_built")
            return True
    except DBAPIError:
        return False
    finally:
        database.dispose()


def run(root: Path, url: str, args: argparse.Namespace) -> None:
    if not _built(url):
        open_runtime(root, clock=FixedClock(NOW), database=url).database.dispose()
        database = create_engine(url)
        build(database, args.contacts, args.events)
        with database.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE nurture_bench_built (at TEXT)")
        database.dispose()
    else:
        print("  (kept database, built before)", flush=True)
        # Brought to the newest migration (0019 fills the engagement summary from the
        # events), then, on PostgreSQL, vacuumed as autovacuum would (this server runs
        # without it), so that index-only scans read the new tables' indexes alone.
        open_runtime(root, clock=FixedClock(NOW), database=url).database.dispose()
        database = create_engine(url)
        if database.dialect.name == "postgresql":
            with database.connect() as connection:
                connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                    "VACUUM ANALYZE"
                )
        database.dispose()
    if args.explain:
        explain(root, url, args.explain)
    else:
        measure(root, url, args.runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", choices=["sqlite", "postgresql"])
    parser.add_argument(
        "--explain",
        metavar="SEGMENT",
        help="print the plan of this segment's count (EXPLAIN QUERY PLAN on SQLite, "
        "EXPLAIN ANALYZE on PostgreSQL) instead of timing",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the databases (a file in the temporary directory, a PostgreSQL schema) "
        "and reuse them on the next run with the same sizes",
    )
    args = parser.parse_args()
    print(f"{args.contacts} contacts, {args.events} events, {args.runs} runs each")
    name = f"nurture_bench_segments_{args.contacts}_{args.events}"
    with tempfile.TemporaryDirectory() as tmp:
        root = copy_project(REPO, Path(tmp) / "project")
        if args.only != "postgresql":
            folder = Path(tempfile.gettempdir()) if args.keep else Path(tmp)
            print("SQLite:", flush=True)
            run(root, f"sqlite:///{folder / (name + '.db')}", args)
        if args.only != "sqlite":
            admin = create_engine(POSTGRES, isolation_level="AUTOCOMMIT")
            schema = name if args.keep else f"bench_{uuid.uuid4().hex[:8]}"
            with admin.connect() as connection:
                connection.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            try:
                base = admin.url.render_as_string(hide_password=False)
                print("PostgreSQL:", flush=True)
                run(root, f"{base}?options=-csearch_path%3D{schema}", args)
            finally:
                if not args.keep:
                    with admin.connect() as connection:
                        connection.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
                admin.dispose()


if __name__ == "__main__":
    main()
