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
from pathlib import Path
from typing import Any

from nurture.clock import FixedClock
from nurture.runtime import open_runtime
from tests.conftest import MONDAY_MORNING
from tests.helpers import add_contact, messages
from tests.smtp_server import Recorder, SmtpServer


class SlowRecorder(Recorder):
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(0.02)  # a real server takes a while: kills land mid-conversation
        return await super().handle_DATA(server, session, envelope)


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
