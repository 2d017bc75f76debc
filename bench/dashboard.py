"""Dashboard response times with a million contacts and ten million events, on SQLite.

    python bench/dashboard.py [--contacts 1000000] [--events 10000000] [--requests 7]

Builds the database with bulk inserts (contacts with their stage moves, one email each in
the last 30 days, and events over 90 days: page views, opens, clicks, a tenth of them a
machine's), lets the periodic job compute the funnel history once (and times it), then
asks the real app (Flask test client, logged in) for the overview and for contact searches,
several times each, and prints the median and the slowest. Aim: each median under 300 ms.
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nurture import eventstore  # noqa: E402
from nurture.clock import FixedClock  # noqa: E402
from nurture.db import write_transaction  # noqa: E402
from nurture.models import Message, StageMove  # noqa: E402
from nurture.reports import refresh_history  # noqa: E402
from nurture.runtime import open_runtime  # noqa: E402
from nurture.seed import copy_project, seed_leads  # noqa: E402
from nurture.users import create_user  # noqa: E402
from nurture.web import create_app  # noqa: E402

NOW = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
CHUNK = 50_000
KINDS = ["page_visited"] * 5 + ["email_opened"] * 3 + ["email_clicked"] * 2


def build(root: Path, database: Path, contacts: int, events: int) -> None:
    rt = open_runtime(root, clock=FixedClock(NOW), database=str(database))
    started = time.perf_counter()
    seed_leads(rt.database, contacts, NOW - timedelta(days=90))
    rng = random.Random(1)
    with write_transaction(rt.database) as session:
        for start in range(1, contacts + 1, CHUNK):
            ids = range(start, min(start + CHUNK, contacts + 1))
            moves = []
            for i in ids:
                created = NOW - timedelta(days=90, minutes=-i % 1440)
                moves.append(
                    {
                        "contact_id": i,
                        "at": created,
                        "from_stage": None,
                        "to_stage": "contact",
                        "reason": "created",
                    }
                )
                moves.append(
                    {
                        "contact_id": i,
                        "at": created + timedelta(hours=1),
                        "from_stage": "contact",
                        "to_stage": "lead",
                        "reason": "event content_downloaded",
                    }
                )
                if i % 10 == 0:
                    moves.append(
                        {
                            "contact_id": i,
                            "at": created + timedelta(days=20),
                            "from_stage": "lead",
                            "to_stage": "mql",
                            "reason": "rule fit >= 30 and engagement >= 35",
                        }
                    )
            session.execute(insert(StageMove), moves)
            session.execute(
                insert(Message),
                [
                    {
                        "enrollment_id": i,
                        "contact_id": i,
                        "workflow": "guide-nurture",
                        "step_key": "discovery/hidden-cost-of-churn",
                        "content_id": "discovery/hidden-cost-of-churn",
                        "phase": "discovery",
                        "stage_at_send": "lead",
                        "subject": "s",
                        "rfc_message_id": f"<m{i}@x>",
                        "status": "sent",
                        "created_at": NOW - timedelta(minutes=i % 43200),
                        "sent_at": NOW - timedelta(minutes=i % 43200),
                    }
                    for i in ids
                ],
            )
    print(f"contacts, moves, messages: {time.perf_counter() - started:.0f}s", flush=True)
    started = time.perf_counter()
    for start in range(0, events, CHUNK):
        rows = []
        for n in range(start, min(start + CHUNK, events)):
            kind = KINDS[n % len(KINDS)]
            machine = "privacy proxy" if kind != "page_visited" and n % 10 == 0 else None
            rows.append(
                {
                    "contact_id": rng.randint(1, contacts),
                    "kind": kind,
                    "occurred_at": NOW - timedelta(seconds=rng.randint(0, 90 * 86400)),
                    "recorded_at": NOW,
                    "properties": {"machine": machine} if machine else {},
                    "machine": machine,
                }
            )
        with write_transaction(rt.database) as session:
            eventstore.store(session.connection(), rows)  # with the engagement summary
    print(f"events: {time.perf_counter() - started:.0f}s", flush=True)
    with write_transaction(rt.database) as session:
        create_user(session, "bench@nurture.example", "a bench password, long enough", NOW)
    rt.database.dispose()


def timed(client: object, path: str, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        reply = client.get(path)  # type: ignore[attr-defined]
        times.append((time.perf_counter() - started) * 1000)
        assert reply.status_code == 200, (path, reply.status_code)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--requests", type=int, default=7)
    parser.add_argument(
        "--keep", type=Path, help="Build the database into this file, or reuse it if it exists."
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = copy_project(REPO, Path(tmp) / "project")
        database = args.keep or root / "nurture.db"
        if not database.exists():
            build(root, database, args.contacts, args.events)
        rt = open_runtime(root, clock=FixedClock(NOW), database=str(database))
        started = time.perf_counter()
        refresh_history(rt.database, rt.project.settings, NOW)
        history = time.perf_counter() - started
        app = create_app(rt)
        app.config["WTF_CSRF_ENABLED"] = False
        client = app.test_client()
        login = client.post(
            "/login",
            data={"email": "bench@nurture.example", "password": "a bench password, long enough"},
        )
        assert login.status_code == 302
        pages = {
            "overview": "/",
            "search by email": "/contacts?q=person123456",
            "search by name": "/contacts?q=name98765",
            "search, stage filter": "/contacts?q=name4&stage=mql",
            "contacts, no query": "/contacts",
        }
        results = {name: timed(client, path, args.requests) for name, path in pages.items()}
        found = re.search(
            r'data-test="total">(\d+)', client.get(pages["search by email"]).get_data(as_text=True)
        )
        rt.database.dispose()
    print(f"\ncontacts: {args.contacts:,}; events: {args.events:,}; SQLite")
    print(f"funnel history job: {history:.1f} s (every 5 minutes, cluster-once)")
    for name, times in results.items():
        median = statistics.median(times)
        print(
            f"{name:<22} median {median:6.0f} ms   slowest {max(times):6.0f} ms   "
            f"{'ok' if median < 300 else 'OVER'} (aim < 300 ms)"
        )
    print(f"search by email found {found.group(1) if found else '?'} contacts")


if __name__ == "__main__":
    main()
