"""Logs: one set-up for every command, JSON lines on request, no address or secret in clear."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import create_engine, text

from nurture.logs import setup
from tests.smtp_server import SmtpServer

PASSWORD = "hunter2-Sup3r-s3cret"
SECRET = "handoff-shared-secret-0123456789"
PEOPLE = ("nobody.refused@example.org", "ana.lopez@example.org")
THIRD = "third.one@example.org"


def nurture(project: Path, url: str, *args: str, env: dict[str, str]) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-m", "nurture.cli", "--project", str(project), "--db", url, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stderr.splitlines()


def environment(smtp: SmtpServer) -> dict[str, str]:
    return {
        **os.environ,
        "NURTURE_LOG_FORMAT": "json",
        "NURTURE_LOG_LEVEL": "info",
        # a password in the SMTP URL: the server offers no AUTH, so the logs talk about it
        "NURTURE_SMTP_URL": f"smtp://ops:{PASSWORD}@127.0.0.1:{smtp.controller.port}",
        "NURTURE_HANDOFF_SECRET": SECRET,
    }


def check(lines: list[str]) -> list[dict[str, object]]:
    """Every line one JSON object; no address, password or secret anywhere."""
    assert lines
    parsed = []
    for line in lines:
        record = json.loads(line)
        assert isinstance(record, dict), line
        assert {"time", "level", "logger", "message"} <= record.keys(), line
        parsed.append(record)
        for forbidden in (*PEOPLE, THIRD, PASSWORD, SECRET, "nobody.refused", "ana.lopez"):
            assert forbidden not in line, line
    return parsed


def fast_retries(project: Path) -> None:
    """Quick retries, and caps that let a send through at any hour of any day: these commands
    run on the wall clock, and the example's quiet hours and weekdays would hold the sends."""
    settings = project / "nurture.yaml"
    text_ = settings.read_text()
    for old, new in (
        ('quiet_hours: "19:00-08:30"', "quiet_hours: null"),
        (
            "  weekdays: [mon, tue, wed, thu, fri]\n",
            "  weekdays: [mon, tue, wed, thu, fri, sat, sun]\n",
        ),
    ):
        assert old in text_, old
        text_ = text_.replace(old, new)
    settings.write_text(text_ + "\ndelivery:\n  retries: 1\n  retry_backoff: 0s\n")


def test_json_logs_of_tick_and_worker_hold_ids_and_no_address_or_secret(
    project_dir: Path, tmp_path: Path
) -> None:
    fast_retries(project_dir)
    url = f"sqlite:///{tmp_path / 'logs.db'}"
    with SmtpServer() as smtp:
        env = environment(smtp)
        lines = []
        for person in PEOPLE:
            lines += nurture(project_dir, url, "contact", "add", person, "--stage", "lead", env=env)
        records = check(lines + nurture(project_dir, url, "tick", env=env))
        assert any("contact_id" in r for r in records), records  # the stage moves
        assert any("message_id" in r and r["level"] == "warning" for r in records), records

        # A worker: the scheduler's per-run chatter stays at DEBUG, out of an INFO log.
        nurture(project_dir, url, "contact", "add", THIRD, "--stage", "lead", env=env)
        database = create_engine(url)
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "nurture.cli",
                "--project",
                str(project_dir),
                "--db",
                url,
                "worker",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 90
            count = "SELECT count(*) FROM messages"
            while True:  # a new snapshot each time
                with database.connect() as connection:
                    if connection.execute(text(count)).scalar() == 3:  # the worker's one
                        break
                assert time.monotonic() < deadline, "the worker did not dispatch"
                time.sleep(0.1)
        finally:
            worker.send_signal(signal.SIGTERM)
            _, err = worker.communicate(timeout=60)
            database.dispose()
    records = check(err.splitlines())
    assert not any("Running job" in str(r["message"]) for r in records), records


def test_text_and_json_lines_mask_addresses_and_passwords() -> None:
    for fmt in ("text", "json"):
        stream = io.StringIO()
        setup("info", fmt, stream)
        log = logging.getLogger("nurture.test")
        try:
            raise ValueError(f"550 <{PEOPLE[0]}>: no such user")
        except ValueError:
            log.exception(
                "sending to %s over smtp://ops:%s@mail.example failed",
                PEOPLE[1],
                PASSWORD,
                extra={"contact_id": 7},
            )
        logging.getLogger("apscheduler.executors.default").info("Running job x")
        out = stream.getvalue()
        assert "***@example.org" in out and "Running job" not in out
        for forbidden in (*PEOPLE, PASSWORD):
            assert forbidden not in out
        if fmt == "json":
            (line,) = out.splitlines()
            assert json.loads(line)["contact_id"] == 7
    setup("warning", "text")


def test_a_wrong_log_format_is_named() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "nurture.cli", "validate"],
        env={**os.environ, "NURTURE_LOG_FORMAT": "xml"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "NURTURE_LOG_FORMAT" in done.stderr
