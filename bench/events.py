"""Events API throughput over real HTTP: single events and batches of 500, per second.

    python bench/events.py [--contacts 20000] [--seconds 8] [--clients 8] [--stored 0]

Serves the app with waitress (the WSGI server `nurture run` uses) in its own process on
loopback, on a fresh SQLite file with N leads enrolled in a workflow, and loads it from
separate client processes with keep-alive connections: first single events, then batches
of 500. Traffic looks like a website's: page views of 20 URLs (blog posts, and the pricing,
demo and careers pages that score and move people to MQL), each event with its own client
id. Only events answered with 2xx are counted, and the count is checked against the events
table afterwards: an accepted event is a committed event.

With `--stored N` the events table holds N earlier events (spread over the contacts, each
with a client id) before the load: the cost per event must not grow with the table.

It prints both rates, the cost per event of each, and the batched rate against the floor:
the same rows inserted into the events table with no HTTP, no scoring and no stage rules
(the share of the floor the engine reaches is the machine-independent figure).
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nurture import eventstore  # noqa: E402
from nurture.apikeys import create_key  # noqa: E402
from nurture.clock import FixedClock  # noqa: E402
from nurture.db import make_engine, write_transaction  # noqa: E402
from nurture.models import Event  # noqa: E402
from nurture.runtime import open_runtime  # noqa: E402
from nurture.seed import copy_project, lead, seed_leads  # noqa: E402
from nurture.transport import NullTransport  # noqa: E402

NOW = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
URLS = [f"https://keel.example/blog/post-{n}" for n in range(17)] + [
    "https://keel.example/pricing",
    "https://keel.example/demo",
    "https://keel.example/careers",
]
BATCH = 500


def setup(root: Path, count: int) -> str:
    """N leads (fit 55) enrolled in the guide nurture; returns an API key."""
    rt = open_runtime(root, clock=FixedClock(NOW), transport=NullTransport())
    seed_leads(rt.database, count, NOW)
    with write_transaction(rt.database) as session:
        key = create_key(session, "bench", NOW)[1]
    rt.database.dispose()
    return key


def fill(root: Path, stored: int, contacts: int) -> None:
    """`stored` earlier page views, a day before, straight into the events table."""
    engine = make_engine(f"sqlite:///{root / 'nurture.db'}")
    earlier = NOW.replace(day=1)
    for start in range(0, stored, 50_000):
        rows = [
            {
                "contact_id": 1 + n % contacts,
                "kind": "page_visited",
                "occurred_at": earlier,
                "recorded_at": earlier,
                "properties": {"url": URLS[n % len(URLS)]},
                "client_event_id": f"old-{n}",
            }
            for n in range(start, min(stored, start + 50_000))
        ]
        with write_transaction(engine) as session:  # as the pipeline stores them
            eventstore.store(session.connection(), rows)
    engine.dispose()


def serve(root: str, port: int) -> None:
    """The server process: the real app under waitress."""
    import waitress

    from nurture.web import create_app

    rt = open_runtime(Path(root), clock=FixedClock(NOW), transport=NullTransport())
    waitress.serve(create_app(rt), host="127.0.0.1", port=port, threads=8, _quiet=True)


def event(worker: int, n: int, contacts: int) -> dict[str, Any]:
    person = (worker * 7919 + n * 104729) % contacts + 1
    return {
        "email": lead(person, NOW, 4000)["email"],
        "kind": "page_visited",
        "properties": {"url": URLS[(worker + n) % len(URLS)]},
        "id": f"w{worker}-{n}",
    }


def client(args: tuple[int, int, str, int, float, int]) -> int:
    """One load process: post for `seconds`; return how many events were accepted."""
    worker, port, key, size, seconds, contacts = args
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    accepted, n = 0, 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        if size == 1:
            body: Any = event(worker, n, contacts)
            n += 1
        else:
            body = {"events": [event(worker, n + i, contacts) for i in range(size)]}
            n += size
        connection.request("POST", "/api/v1/events", json.dumps(body), headers)
        response = connection.getresponse()
        data = json.loads(response.read())
        if response.status != 200:
            raise SystemExit(f"{response.status}: {data}")
        accepted += data["accepted"]
    return accepted


def load(port: int, key: str, size: int, seconds: float, clients: int, contacts: int) -> float:
    offset = 1000 if size > 1 else 0  # other client ids than the first phase's
    jobs = [(offset + w, port, key, size, seconds, contacts) for w in range(clients)]
    started = time.perf_counter()
    with multiprocessing.Pool(clients) as pool:
        accepted = sum(pool.map(client, jobs))
    return accepted / (time.perf_counter() - started), accepted


def floor_rate(root: Path) -> float:
    """The same rows straight into the events table: no HTTP, no scoring, no stage rules."""
    engine = make_engine(f"sqlite:///{root / 'nurture.db'}")
    rows = [
        {
            "contact_id": 1 + n % 1000,
            "kind": "page_visited",
            "occurred_at": NOW,
            "recorded_at": NOW,
            "properties": {"url": URLS[n % len(URLS)]},
            "client_event_id": f"floor-{n}",
        }
        for n in range(20 * BATCH)
    ]
    started = time.perf_counter()
    for start in range(0, len(rows), BATCH):
        with write_transaction(engine) as session:
            session.execute(insert(Event), rows[start : start + BATCH])
    elapsed = time.perf_counter() - started
    engine.dispose()
    return len(rows) / elapsed


def wait_for(server: subprocess.Popen[bytes], port: int) -> None:
    """Until the server answers (its imports take seconds on a loaded machine)."""
    deadline = time.perf_counter() + 180
    while time.perf_counter() < deadline and server.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("the server did not start")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--contacts", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--stored", type=int, default=0, help="events stored before the load")
    parser.add_argument("--serve", nargs=2, metavar=("ROOT", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = copy_project(REPO, Path(tmp) / "project")
        key = setup(root, args.contacts)
        fill(root, args.stored, args.contacts)
        port = free_port()
        server = subprocess.Popen([sys.executable, __file__, "--serve", str(root), str(port)])
        try:
            wait_for(server, port)
            single, single_n = load(port, key, 1, args.seconds, args.clients, args.contacts)
            batched, batched_n = load(port, key, BATCH, args.seconds, args.clients, args.contacts)
        finally:
            server.terminate()
            server.wait()
        engine = make_engine(f"sqlite:///{root / 'nurture.db'}")
        with engine.connect() as connection:
            stored = connection.scalar(select(func.count()).select_from(Event))
        engine.dispose()
        accepted = args.stored + single_n + batched_n
        assert stored == accepted, f"{stored} stored, {accepted} accepted (with the earlier)"
        floor = floor_rate(root)
    print(f"contacts:              {args.contacts} leads, {args.clients} client processes")
    print(f"single events:         {single:,.0f} events/s over HTTP ({single_n} accepted)")
    print(f"batches of {BATCH}:        {batched:,.0f} events/s over HTTP ({batched_n} accepted)")
    print(f"stored:                {stored} events: every accepted event is committed")
    print(
        f"cost per event:        {1e6 / single:,.0f} µs single, {1e6 / batched:,.0f} µs batched, "
        f"with {args.stored:,} events stored before"
    )
    print(f"floor:                 {floor:,.0f} events/s (bare inserts, no HTTP, no scoring)")
    print(
        f"ratio:                 batched at {batched / floor:.0%} of the floor; aims: "
        "1,000 single/s, 20,000 batched/s"
    )


if __name__ == "__main__":
    main()
