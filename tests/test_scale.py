"""Scale-out on PostgreSQL: four `nurture worker` processes share 50,000 contacts over 30
simulated days, then again with workers killed (SIGKILL) at random moments. From the
records: no duplicate, no cap broken, every due step done."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from nurture.audit import load_records, violations
from nurture.clock import FixedClock
from nurture.core.decisions import ACTIVE
from nurture.db import sessions
from nurture.models import Enrollment, Message
from nurture.runtime import open_runtime
from nurture.seed import seed_leads
from tests.cluster import Cluster

START = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)  # a Monday
STEPS = 3  # the guide nurture's discovery track: three emails each, in these 30 days


def check(project: Path, url: str, contacts: int, end: datetime) -> dict[str, int]:
    rt = open_runtime(project, clock=FixedClock(end), database=url)
    settings = rt.project.settings
    with sessions(rt.database)() as session:
        twice = session.execute(
            text(
                "SELECT contact_id, content_id FROM messages GROUP BY contact_id, content_id "
                "HAVING count(*) > 1 UNION ALL SELECT enrollment_id, step_key FROM messages "
                "GROUP BY enrollment_id, step_key HAVING count(*) > 1"
            )
        ).all()
        assert twice == [], f"sent twice: {twice[:5]}"
        sent, moves, suppressed = load_records(session, settings)
        broken = violations(sent, moves, suppressed, settings, settings.caps.policy())
        assert broken == [], broken[:10]
        due = session.scalar(
            select(func.count())
            .select_from(Enrollment)
            .where(Enrollment.status == ACTIVE, Enrollment.due_at <= end)
        )
        assert due == 0
        counts = dict(
            session.execute(select(Message.status, func.count()).group_by(Message.status)).all()
        )
    rt.database.dispose()
    assert set(counts) <= {"sent", "unknown"}, counts  # unknown: killed mid-send, never re-sent
    assert sum(counts.values()) == STEPS * contacts, counts
    return counts


def cluster(project_dir: Path, url: str, tmp_path: Path, contacts: int) -> Cluster:
    rt = open_runtime(project_dir, clock=FixedClock(START), database=url)
    seed_leads(rt.database, contacts, START, accounts=contacts // 4)
    rt.database.dispose()
    return Cluster(project_dir, url, tmp_path / "clock", size=4)


def test_four_workers_share_fifty_thousand_contacts_for_thirty_days(
    project_dir: Path, postgres_url: str, tmp_path: Path
) -> None:
    contacts = 50_000
    workers = cluster(project_dir, postgres_url, tmp_path, contacts)
    database = open_runtime(project_dir, clock=FixedClock(START), database=postgres_url).database
    end = workers.run(database, START, days=30)
    database.dispose()
    counts = check(project_dir, postgres_url, contacts, end)
    assert counts == {"sent": STEPS * contacts}
    print(
        f"\n4 workers, {contacts} contacts, 30 days: {counts}; peak RSS per worker "
        f"{max(workers.peaks):.0f} MB"
    )


def test_workers_killed_at_random_moments_lose_and_repeat_nothing(
    project_dir: Path, postgres_url: str, tmp_path: Path
) -> None:
    contacts = 10_000
    workers = cluster(project_dir, postgres_url, tmp_path, contacts)
    database = open_runtime(project_dir, clock=FixedClock(START), database=postgres_url).database
    end = workers.run(database, START, days=30, chaos=random.Random(7))
    database.dispose()
    counts = check(project_dir, postgres_url, contacts, end)
    print(f"\n{workers.kills} workers killed with SIGKILL and restarted; messages {counts}")
    assert workers.kills >= 10


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
