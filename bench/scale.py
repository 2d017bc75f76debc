"""Scale-out: emails per second with 1, 2 and 4 `nurture worker` processes on PostgreSQL,
and with one on SQLite, a million contacts enrolled and due; each worker's peak memory.

    python bench/scale.py [--contacts 1000000] [--seconds 30] [--workers 1,2,4]
                          [--rate-batches 200]

PostgreSQL comes from NURTURE_TEST_POSTGRES_URL (default: the local `test` database); the
benchmark works in a schema of its own and drops it at the end. The workers run for real
(`nurture worker --dry-run`: planned, paced, rendered and recorded, handed to no transport)
on a shared clock file set to a Monday 09:00 in Paris, where every contact lives, so each
is due and allowed. Throughput is the messages recorded between two counts taken
`--seconds` apart, after a warm-up; beside it, each worker's CPU time per email over the
same window (utime + stime from /proc: steadier than wall time on a shared machine).
Peak memory is each worker's VmHWM. The aim printed: one PostgreSQL worker within 1.3x of
one SQLite process's time per email.

How long a worker takes to exit on SIGTERM is timed twice: at the end of each throughput
run (in the middle of a backlog: the batch in hand is finished), and once with nothing due
and the clock moved a month on, while the decay job is rewriting every contact's score
(the worker is signalled once its first decayed batch is committed).

The sender rate cap: `--rate-batches` batches through `Dispatcher.tick()` in-process on
SQLite, with a cap of one per minute so high that it never holds anyone, and the CPU time
of each tenth of the run: flat when the tick stays linear (each batch reads the sender's
sends of the last hour, which grow with the run).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, create_engine, func, select, text

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nurture.clock import FixedClock  # noqa: E402
from nurture.db import make_engine  # noqa: E402
from nurture.models import Message, ScoreChange  # noqa: E402
from nurture.runtime import open_runtime  # noqa: E402
from nurture.seed import copy_project, seed_leads  # noqa: E402
from nurture.transport import NullTransport  # noqa: E402
from tests.cluster import Cluster, peak_rss_mb  # noqa: E402

NOW = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # Monday 09:00 in Paris
POSTGRES = os.environ.get(
    "NURTURE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
RESET = [
    "DELETE FROM messages",
    "DELETE FROM deferrals",
    "DELETE FROM journey_steps",
    "DELETE FROM score_changes",
    "UPDATE enrollments SET status = 'active', positions = '{}', due_at = :now,"
    " last_sent_at = NULL, hold_reason = NULL",
    "UPDATE contacts SET engagement = 10, engagement_at = :now",
]
_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """A live process's CPU time so far (user + system), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def reset(database: Engine) -> None:
    with database.begin() as connection:
        for statement in RESET:
            connection.execute(text(statement), {"now": NOW.replace(tzinfo=None)})
    if database.dialect.name == "postgresql":
        with database.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                "VACUUM ANALYZE"
            )


def stop(cluster: Cluster) -> list[float]:
    """SIGTERM every worker at once; the seconds until each exited."""
    started = time.perf_counter()
    for worker in cluster.workers:
        worker.send_signal(signal.SIGTERM)
    took = []
    for worker in cluster.workers:
        worker.wait()
        took.append(time.perf_counter() - started)
    cluster.workers = []
    return took


@dataclass
class Run:
    name: str
    workers: int
    rate: float
    cpu_per_email: float
    peaks: list[float]
    stops: list[float]


def measure(root: Path, url: str, name: str, workers: int, seconds: float) -> Run:
    database = make_engine(url)
    reset(database)
    cluster = Cluster(root, url, root / f"clock-{workers}", size=workers)
    cluster.set_time(NOW)
    cluster.start()

    def sent() -> int:
        with database.connect() as connection:
            return int(connection.scalar(select(func.count()).select_from(Message)) or 0)

    time.sleep(5)  # start-up and warm-up
    pids = [worker.pid for worker in cluster.workers]
    cpu = [cpu_seconds(pid) for pid in pids]
    first, started = sent(), time.perf_counter()
    time.sleep(seconds)
    last, elapsed = sent(), time.perf_counter() - started
    cpu = [cpu_seconds(pid) - before for pid, before in zip(pids, cpu, strict=True)]
    peaks = [peak_rss_mb(pid) for pid in pids]
    stops = stop(cluster)
    database.dispose()
    emails = max(last - first, 1)
    return Run(name, workers, emails / elapsed, sum(cpu) / emails * 1e6, peaks, stops)


def stop_during_decay(root: Path, url: str) -> float:
    """Seconds from SIGTERM to exit of a worker in the middle of the decay job."""
    database = make_engine(url)
    reset(database)
    with database.begin() as connection:
        connection.execute(text("UPDATE enrollments SET status = 'ended'"))
    cluster = Cluster(root, url, root / "clock-decay", size=1)
    cluster.set_time(NOW + timedelta(days=30))  # every score has lost half: all rewritten
    cluster.start()

    def decayed() -> int:
        with database.connect() as connection:
            return int(connection.scalar(select(func.count()).select_from(ScoreChange)) or 0)

    while not decayed():
        if cluster.workers[0].poll() is not None:
            raise SystemExit("the worker died before decaying anything")
        time.sleep(0.05)
    (took,) = stop(cluster)
    database.dispose()
    return took


def rate_capped_tick(root: Path, batches: int) -> list[float]:
    """CPU seconds per tenth of `batches` batches sent under a sender rate cap that holds
    nobody, on SQLite in this process (a clock moving a second per batch)."""
    folder = root.parent / "rate"
    copy_project(REPO, folder)
    settings = folder / "nurture.yaml"
    text_ = settings.read_text()
    assert "\ncaps:\n" in text_, "the example project has a caps: block"
    settings.write_text(text_.replace("\ncaps:\n", "\ncaps:\n  rate_per_hour: 100000000\n", 1))
    clock = FixedClock(NOW)
    rt = open_runtime(folder, clock=clock, transport=NullTransport())
    size = rt.dispatcher.batch_size
    total = size * (batches + 1)  # one batch to warm up (compiled statements, templates)
    seed_leads(rt.database, total, NOW, accounts=total, zones=["Europe/Paris"])
    rt.dispatcher.dispatch_batch(clock.now())
    clock.advance(timedelta(seconds=1))
    tenth = max(batches // 10, 1)
    spent: list[float] = []
    for done in range(batches):
        if done % tenth == 0:
            spent.append(0.0)
        started = time.process_time()
        report = rt.dispatcher.dispatch_batch(clock.now())
        spent[-1] += time.process_time() - started
        assert report.sent == size, report
        clock.advance(timedelta(seconds=1))
    rt.database.dispose()
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--rate-batches", type=int, default=200)
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(POSTGRES, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    postgres = f"{admin.url.render_as_string(hide_password=False)}?options=-csearch_path%3D{schema}"
    rows: list[Run] = []
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
                rows.append(
                    measure(
                        root, postgres, f"PostgreSQL, {workers} worker(s)", workers, args.seconds
                    )
                )
                print(f"{rows[-1].name}: {rows[-1].rate:,.0f} emails/s", flush=True)
            rows.append(measure(root, sqlite, "SQLite, 1 process", 1, args.seconds))
            decay_stop = stop_during_decay(root, postgres)
            rate_cpu = rate_capped_tick(root, args.rate_batches) if args.rate_batches else []
    finally:
        with admin.connect() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()
    print(f"\ncontacts enrolled and due: {args.contacts:,}; cores: {os.cpu_count()}")
    for run in rows:
        print(
            f"{run.name:<28} {run.rate:>8,.0f} emails/s  {run.cpu_per_email:>5,.0f} us CPU/email"
            f"   peak RSS per worker {', '.join(f'{p:.0f}' for p in run.peaks)} MB"
        )
    base = rows[0].rate
    for run in rows[1 : len(counts)]:
        print(f"scaling {run.workers} workers / 1: {run.rate / base:.2f}x (ideal {run.workers}x)")
    single = next(
        (run for run in rows if run.workers == 1 and run.name.startswith("Postgre")), None
    )
    if single is not None:
        lite = rows[-1]
        print(
            f"PostgreSQL / SQLite, one worker: {lite.rate / single.rate:.2f}x the time per email"
            f" (aim: <= 1.3), {single.cpu_per_email / lite.cpu_per_email:.2f}x the worker's CPU"
        )
    worst = max(p for run in rows for p in run.peaks)
    print(f"peak memory: {worst:.0f} MB at most per worker (aim: under 300 MB)")
    stops = [s for run in rows for s in run.stops]
    print(
        f"SIGTERM to exit: {max(stops):.1f} s at most mid-backlog, {decay_stop:.1f} s in the"
        " decay job (aim: a few seconds)"
    )
    if rate_cpu:
        tenths = ", ".join(
            f"{1000 * t / (args.rate_batches / len(rate_cpu)):.0f}" for t in rate_cpu
        )
        print(
            f"rate cap, {args.rate_batches} batches: CPU ms per batch in each tenth {tenths}"
            f" (last / first: {rate_cpu[-1] / rate_cpu[0]:.2f}x; linear: about 1)"
        )


if __name__ == "__main__":
    main()
