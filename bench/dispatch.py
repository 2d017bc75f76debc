"""Dispatch throughput: emails planned, rendered and recorded per second, against a floor.

    python bench/dispatch.py [--contacts 100000] [--send-time]

Sets up N contacts due at once (bulk-inserted on a fresh SQLite file), then times the real
dispatcher with outbox writing switched off (a null transport). In the same run, on a copy of
the same database, it times two floors:

- the honest floor: a hand-written loop doing the same work as the engine without deciding
  anything (claim the due enrollments with their people, render the piece, sign its links,
  insert the indexed message row, update the enrollment, one commit per batch);
- the thin floor: one Jinja render of the same content plus one row insert per email into a
  table without indexes.

It prints the rates and the engine's ratio to each, the first being the figure to drive down
(aim: within 1.3x of the honest floor).

With --send-time, the workflow has `send_time: best` and each person 3 real opens (and a
machine's) at 09:xx Paris, so every email still goes now, after the engagement-hour reads.
"""

from __future__ import annotations

import argparse
import gc
import secrets
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    insert,
    select,
    update,
)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nurture import eventstore  # noqa: E402
from nurture.clock import FixedClock  # noqa: E402
from nurture.config import PROFILE_FIELDS  # noqa: E402
from nurture.contacts import profile  # noqa: E402
from nurture.content import render_email, sample_variables  # noqa: E402
from nurture.db import write_transaction  # noqa: E402
from nurture.models import (  # noqa: E402
    Contact,
    Enrollment,
    Message,
)
from nurture.runtime import freeze_loaded, open_runtime  # noqa: E402
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
                eventstore.store(session.connection(), rows)  # with the engagement summary
    rt.database.dispose()


def engine_rate(root: Path, count: int) -> float:
    rt = open_runtime(root, clock=FixedClock(NOW), transport=NullTransport())
    freeze_loaded()  # as `nurture run` and `nurture worker` do before their loop
    started = time.perf_counter()
    report = rt.dispatcher.tick()
    elapsed = time.perf_counter() - started
    assert report.sent == count, f"expected {count} sent, got {report}"
    rt.database.dispose()
    gc.unfreeze()
    return count / elapsed


def honest_rate(root: Path, count: int) -> float:
    """The engine's work without its deciding, written by hand: per batch, claim the due
    enrollments with their people, render the first piece, sign its links, insert the
    message rows (all of the outbox's indexes and unique keys), update the enrollments,
    commit."""
    rt = open_runtime(root, clock=FixedClock(NOW), transport=NullTransport())
    freeze_loaded()  # as `nurture run` and `nurture worker` do before their loop
    piece = rt.project.content["discovery/hidden-cost-of-churn"]
    sender = rt.project.settings.sender.model_dump()
    domain = rt.dispatcher.domain
    links = rt.links
    batch = rt.dispatcher.batch_size
    stored = [name for name in PROFILE_FIELDS if name != "email_domain"]
    people = [getattr(Contact, name) for name in ("id", *stored, "custom", "stage")]
    claim = (
        select(Enrollment.id.label("enrollment_id"), Enrollment.workflow, *people)
        .join(Contact, Contact.id == Enrollment.contact_id)
        .where(Enrollment.status == "active", Enrollment.due_at <= NOW)
        .order_by(Enrollment.due_at, Enrollment.id)
        .limit(batch)
    )
    table = Enrollment.__table__
    advance = (
        update(table)
        .where(table.c.id == bindparam("b_id"))
        .values(places=bindparam("places"), due_at=bindparam("due_at"), last_sent_at=NOW)
    )
    later = NOW + timedelta(days=3)  # the next step's wait
    sent = 0
    started = time.perf_counter()
    while True:
        with write_transaction(rt.database) as session:
            rows = session.execute(claim).all()
            if not rows:
                break
            messages, enrollments = [], []
            for row in rows:
                key = secrets.token_urlsafe(12)
                unsubscribe = links.unsubscribe_url(key)
                fields = profile(row, rt.project.settings)  # type: ignore[arg-type]
                rendered = render_email(piece, fields, sender, unsubscribe)
                links.track(rendered.html, key, unsubscribe)
                messages.append(
                    {
                        "enrollment_id": row.enrollment_id,
                        "contact_id": row.id,
                        "workflow": row.workflow,
                        "step_key": piece.id,
                        "content_id": piece.id,
                        "phase": piece.phase,
                        "stage_at_send": row.stage,
                        "subject": rendered.subject,
                        "subject_variant": None,
                        "rfc_message_id": f"<{key}@{domain}>",
                        "status": "sent",
                        "created_at": NOW,
                        "sent_at": NOW,
                    }
                )
                enrollments.append(
                    {"b_id": row.enrollment_id, "places": {"discovery": piece.id}, "due_at": later}
                )
            session.execute(insert(Message.__table__), messages)
            session.execute(advance, enrollments)
            sent += len(rows)
    elapsed = time.perf_counter() - started
    assert sent == count, f"expected {count} sent, got {sent}"
    rt.database.dispose()
    gc.unfreeze()
    return count / elapsed


def floor_rate(root: Path, count: int) -> float:
    """One render of the same piece per email and one row insert per email, batched alike."""
    rt = open_runtime(root, clock=FixedClock(NOW), transport=NullTransport())
    freeze_loaded()  # as `nurture run` and `nurture worker` do before their loop
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
    gc.unfreeze()
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--send-time", action="store_true", help="send_time: best on the workflow")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = copy_project(REPO, Path(tmp) / "project")
        setup(root, args.contacts, send_time=args.send_time)
        twin = Path(shutil.copytree(root, Path(tmp) / "twin"))
        engine = engine_rate(root, args.contacts)
        honest = honest_rate(twin, args.contacts)
        floor = floor_rate(root, args.contacts)
    print(f"contacts due:          {args.contacts}")
    print(f"engine:                {engine:,.0f} emails/s (planned, paced, rendered, recorded)")
    print(
        f"honest floor:          {honest:,.0f} emails/s (hand-written: claim, render, sign, "
        "insert the message, update the enrollment)"
    )
    print(f"thin floor:            {floor:,.0f} emails/s (one Jinja render + one row insert)")
    print(
        f"ratio:                 {honest / engine:.2f}x the honest floor's time per email "
        "(aim: <= 1.3)"
    )
    print(f"thin ratio:            {floor / engine:.1f}x the thin floor's time per email")


if __name__ == "__main__":
    main()
