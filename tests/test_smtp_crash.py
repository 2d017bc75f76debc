"""Kill the sending process at random moments; nobody gets an email twice, nothing is lost."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from nurture.clock import FixedClock
from nurture.runtime import open_runtime
from tests.conftest import MONDAY_MORNING
from tests.helpers import add_contact, messages
from tests.smtp_server import Recorder, SmtpServer


class SlowRecorder(Recorder):
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(0.02)  # a real server takes a while: kills land mid-conversation
        return await super().handle_DATA(server, session, envelope)


@pytest.mark.chaos
def test_sigkill_at_random_moments_never_duplicates_nor_loses(
    project_dir: Path, tmp_path: Path
) -> None:
    rng = random.Random(20261122)
    with SmtpServer() as smtp:
        smtp.recorder.__class__ = SlowRecorder
        settings = project_dir / "nurture.yaml"
        text = settings.read_text().replace('quiet_hours: "19:00-08:30"', "quiet_hours: null")
        text = text.replace(
            "weekdays: [mon, tue, wed, thu, fri]", "weekdays: [mon, tue, wed, thu, fri, sat, sun]"
        )
        text = text.replace("  account_per_day: 2", "")
        settings.write_text(
            text + f"\ndelivery:\n  smtp_url: {smtp.url}\n  pool: 1\n  lease: 1s\n"
            "  retry_backoff: 0s\nbatch_size: 50\n"
        )
        database = f"sqlite:///{tmp_path / 'crash.db'}"
        setup = open_runtime(project_dir, clock=FixedClock(MONDAY_MORNING), database=database)
        for i in range(600):
            add_contact(setup, f"p{i}@c{i}.example", first_name=f"P{i}", timezone="Europe/Paris")
        setup.database.dispose()
        command = [
            sys.executable,
            "-m",
            "nurture.cli",
            "--project",
            str(project_dir),
            "--db",
            database,
            "tick",
        ]
        kills = 0
        for _ in range(8):
            process = subprocess.Popen(
                command,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            time.sleep(rng.uniform(1.2, 3.0))
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                kills += 1
            process.wait(30)
        time.sleep(1.2)  # past the lease: what was mid-conversation is now unknown
        for _ in range(2):
            subprocess.run(command, check=True, capture_output=True, timeout=120)
        received = Counter(rcpt[0] for rcpt, _ in smtp.recorder.messages)
        print(f"\nSIGKILLs: {kills}; emails received: {sum(received.values())}")
    assert kills >= 3, "the kills must land while sending for this test to mean anything"
    assert received and max(received.values()) == 1, "somebody received an email twice"
    check = open_runtime(project_dir, clock=FixedClock(MONDAY_MORNING), database=database)
    rows = messages(check)
    statuses = Counter(m.status for m in rows)
    assert set(statuses) <= {"sent", "unknown"}, statuses
    assert len(rows) == 600, "every contact's first email is accounted for"
    by_address = {m.contact_id: m for m in rows}
    assert len(by_address) == 600
    sent_count = statuses["sent"]
    assert sent_count <= sum(received.values()) <= sent_count + statuses["unknown"]
    print(f"statuses: {dict(statuses)}")
    check.database.dispose()


def test_a_crash_backlog_of_queued_messages_drains_in_one_reconcile(
    project_dir: Path, database_url: str
) -> None:
    """Three batches reserved by a dispatcher that died before handing them over: the next
    reconcile delivers all of them (not one batch a minute), each once."""
    with SmtpServer() as smtp:
        settings = project_dir / "nurture.yaml"
        settings.write_text(
            settings.read_text().replace("  account_per_day: 2", "")
            + f"\ndelivery:\n  smtp_url: {smtp.url}\n  pool: 4\n  retry_backoff: 0s\n"
            "batch_size: 5\n"
        )
        clock = FixedClock(MONDAY_MORNING)
        rt = open_runtime(project_dir, clock=clock, database=database_url)
        for i in range(15):
            add_contact(rt, f"p{i}@c{i}.example", first_name=f"P{i}")
        for _ in range(3):  # reserved (committed `queued`), then the process died
            assert len(rt.dispatcher.reserve(clock.now()).outgoing) == 5
        assert Counter(m.status for m in messages(rt)) == {"queued": 15}
        clock.advance(timedelta(minutes=11))
        assert rt.dispatcher.reconcile() == (0, 15)
        assert Counter(m.status for m in messages(rt)) == {"sent": 15}
        received = smtp.recorder.received()
    assert len(received) == 15 and set(received.values()) == {1}
    rt.database.dispose()


def test_a_worker_retrying_notices_against_a_dead_server_stops_at_once_on_sigterm(
    project_dir: Path, tmp_path: Path
) -> None:
    from nurture.clock import SystemClock
    from nurture.db import sessions
    from nurture.models import Notice
    from nurture.notices import queue_notice
    from tests.smtp_server import free_port

    settings = project_dir / "nurture.yaml"
    settings.write_text(
        settings.read_text() + f"\ndelivery:\n  smtp_url: smtp://127.0.0.1:{free_port()}"
        "?tls=none&timeout=2\n  retries: 3\n  retry_backoff: 10s\n"
    )
    database = f"sqlite:///{tmp_path / 'stop.db'}"
    rt = open_runtime(project_dir, clock=SystemClock(), database=database)
    with sessions(rt.database).begin() as session:
        for i in range(20):
            queue_notice(session, "owner", f"o{i}@acme.example", "hello", "text", rt.clock.now())

    def claimed() -> bool:  # the worker has taken the notices and is trying the first
        with sessions(rt.database)() as session:
            return any(
                n.next_attempt_at is not None and n.next_attempt_at > rt.clock.now()
                for n in session.scalars(select(Notice))
            )

    command = ["--project", str(project_dir), "--db", database, "worker"]
    worker = subprocess.Popen(
        [sys.executable, "-m", "nurture.cli", *command],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not claimed():
            assert time.monotonic() < deadline and worker.poll() is None, "never started"
            time.sleep(0.05)
        time.sleep(0.5)  # into the first backoff wait
        worker.send_signal(signal.SIGTERM)
        started = time.monotonic()
        try:
            worker.wait(timeout=90)
        finally:
            took = time.monotonic() - started
            print(f"\nSIGTERM to exit with 20 notices for a dead server: {took:.1f}s")
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == 0 and took < 20
    with sessions(rt.database)() as session:
        notices = session.scalars(select(Notice)).all()
    assert {n.status for n in notices} == {"queued"}
    assert all(n.attempts == 0 for n in notices), "a stop in a retry's wait is no attempt"
    assert all(n.next_attempt_at is not None for n in notices)
    assert max(n.next_attempt_at for n in notices if n.next_attempt_at) <= rt.clock.now()
    rt.database.dispose()
