"""SMTP delivery: the engine against a bare smtplib loop, to a local aiosmtpd.

    python bench/smtp.py [--emails 2000]

A separate aiosmtpd process (Sink handler) listens on loopback. In the same run:
- bare: prebuilt messages sent by one smtplib connection in a loop;
- engine, pool 1 and pool 4: the dispatcher plans, paces, renders, records and delivers
  the same number of first emails through its SMTP transport.
It prints emails per second for each and the ratios. Aim: engine >= 0.8x the bare loop
with one connection, and faster than it with a pool of 4.
"""

from __future__ import annotations

import argparse
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nurture.clock import FixedClock  # noqa: E402
from nurture.content import sample_variables  # noqa: E402
from nurture.runtime import open_runtime  # noqa: E402
from nurture.seed import seed_leads  # noqa: E402
from nurture.transport import MimeBuilder, Outgoing  # noqa: E402

NOW = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # Monday 09:00 in Paris


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(port: int) -> None:
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("aiosmtpd did not start")


def project(tmp: Path, port: int, pool: int) -> Path:
    root = tmp / f"project-{pool}"
    root.mkdir()
    shutil.copytree(REPO / "workflows", root / "workflows")
    shutil.copytree(REPO / "content", root / "content")
    settings = (REPO / "nurture.yaml").read_text().replace("  account_per_day: 2", "")
    (root / "nurture.yaml").write_text(
        settings + f"\ndelivery:\n  smtp_url: smtp://127.0.0.1:{port}?tls=none\n  pool: {pool}\n"
    )
    return root


def engine_rate(root: Path, count: int) -> float:
    """Emails per second of one tick over `count` leads due at once. They are enrolled as
    the dispatch benchmarks enroll them (nurture.seed, one time zone): through the entry
    rules a tenth of them would be the workflow's holdout and get nothing."""
    rt = open_runtime(root, clock=FixedClock(NOW))
    seed_leads(rt.database, count, NOW, accounts=count, zones=["Europe/Paris"])
    started = time.perf_counter()
    report = rt.dispatcher.tick()
    elapsed = time.perf_counter() - started
    assert report.sent == count, report
    rt.database.dispose()
    return count / elapsed


def bare_rate(root: Path, port: int, count: int) -> float:
    rt = open_runtime(root, clock=FixedClock(NOW))
    builder = MimeBuilder(rt.project.settings.sender)
    piece = rt.project.content["discovery/hidden-cost-of-churn"]
    variables = sample_variables([], rt.project.settings.sender.model_dump())
    prebuilt = []
    for i in range(count):
        variables["contact"]["first_name"] = f"P{i}"
        rendered = piece.render(variables)
        outgoing = Outgoing(
            f"k{i}",
            f"p{i}@c{i}.example",
            None,
            rendered.subject,
            rendered.html,
            rendered.text,
            "https://x.example/u/t",
            NOW,
        )
        prebuilt.append((outgoing.to, builder.to_bytes(outgoing)))
    connection = smtplib.SMTP("127.0.0.1", port)
    started = time.perf_counter()
    for to, data in prebuilt:
        connection.sendmail("hello@keel-retention.example", [to], data)
    elapsed = time.perf_counter() - started
    connection.quit()
    rt.database.dispose()
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--emails", type=int, default=2000)
    args = parser.parse_args()
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aiosmtpd",
            "-n",
            "-c",
            "aiosmtpd.handlers.Sink",
            "-l",
            f"127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(port)
        with tempfile.TemporaryDirectory() as tmp:
            bare = bare_rate(project(Path(tmp), port, 1), port, args.emails)
            one = engine_rate(Path(tmp) / "project-1", args.emails)
            four = engine_rate(project(Path(tmp), port, 4), args.emails)
    finally:
        server.terminate()
        server.wait(10)
    print(f"emails:                 {args.emails} to a local aiosmtpd (separate process)")
    print(f"bare smtplib loop:      {bare:,.0f} emails/s (prebuilt, one connection)")
    print(f"engine, pool 1:         {one:,.0f} emails/s (plan, pace, render, record, deliver)")
    print(f"engine, pool 4:         {four:,.0f} emails/s")
    print(f"ratio pool 1 / bare:    {one / bare:.2f} (aim >= 0.8)")
    print(f"ratio pool 4 / bare:    {four / bare:.2f} (aim > 1)")


if __name__ == "__main__":
    main()
