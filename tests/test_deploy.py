"""The production form: the web part from `nurture.wsgi` under a WSGI server, the engine
in `nurture worker` processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from click.testing import CliRunner

from nurture.cli import main
from tests.smtp_server import free_port


def test_the_wsgi_app_serves_under_waitress(project_dir: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'prod.db'}"
    assert (
        CliRunner()
        .invoke(main, ["--project", str(project_dir), "--db", url, "db", "upgrade"])
        .exit_code
        == 0
    )
    port = free_port()
    env = {
        **os.environ,
        "NURTURE_PROJECT": str(project_dir),
        "NURTURE_DATABASE_URL": url,
        "NURTURE_SECRET_KEY": "k" * 40,
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "waitress", f"--listen=127.0.0.1:{port}", "nurture.wsgi:app"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as reply:
                    assert json.loads(reply.read()) == {"status": "ok"}
                    break
            except OSError:
                time.sleep(0.1)
        else:
            raise AssertionError("the WSGI app did not answer")
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/api/v1/openapi.json", timeout=5
        ) as reply:
            assert json.loads(reply.read())["openapi"].startswith("3.")
    finally:
        server.terminate()
        server.wait()


def test_a_worker_stops_cleanly_on_sigterm(project_dir: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    worker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from nurture.cli import main; main()",
            "--project",
            str(project_dir),
            "--db",
            url,
            "worker",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert worker.stdout is not None
    first = worker.stdout.readline().decode()
    assert first.startswith("nurture worker: database")
    worker.send_signal(signal.SIGTERM)
    rest = worker.communicate(timeout=60)[0].decode()
    assert worker.returncode == 0 and "stopped" in rest


def test_sigterm_finishes_the_batch_in_hand_not_the_backlog(
    project_dir: Path, tmp_path: Path
) -> None:
    from datetime import UTC, datetime

    from sqlalchemy import func, select

    from nurture.clock import FixedClock
    from nurture.models import Message
    from nurture.runtime import open_runtime
    from nurture.seed import seed_leads

    now = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # Monday 09:00 in Paris
    url = f"sqlite:///{tmp_path / 'backlog.db'}"
    rt = open_runtime(project_dir, clock=FixedClock(now), database=url)
    seed_leads(rt.database, 30_000, now, accounts=30_000, zones=["Europe/Paris"])
    clock = tmp_path / "clock"
    clock.write_text(now.isoformat())
    command = ["--project", str(project_dir), "--db", url, "worker", "--dry-run"]
    worker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from nurture.cli import main; main()",
            *command,
            "--clock-file",
            str(clock),
        ],
        stdout=subprocess.DEVNULL,
    )

    def sent() -> int:
        with rt.database.connect() as connection:
            return int(connection.scalar(select(func.count()).select_from(Message)) or 0)

    while sent() < 1000:
        time.sleep(0.05)
    worker.send_signal(signal.SIGTERM)
    started = time.monotonic()
    assert worker.wait(timeout=30) == 0
    assert time.monotonic() - started < 10
    assert sent() < 30_000 and sent() % 500 == 0  # whole batches, the backlog left for later
