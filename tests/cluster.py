"""Worker processes (`nurture worker`) on one database, sharing a simulated clock file: the
harness of the scale-out tests and of bench/scale.py."""

from __future__ import annotations

import os
import random
import select as io_select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, func, select

from nurture.core.decisions import ACTIVE
from nurture.models import QUEUED, SENDING, Enrollment, Message

WORKER = "from nurture.cli import main; main()"


def peak_rss_mb(pid: int) -> float:
    """A live process's peak resident memory (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Cluster:
    project: Path
    database_url: str
    clock_file: Path
    size: int
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    kills: int = 0
    peaks: list[float] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def set_time(self, instant: datetime) -> None:
        temporary = self.clock_file.with_suffix(".tmp")
        temporary.write_text(instant.isoformat())
        os.replace(temporary, self.clock_file)  # workers never read half a time

    def _spawn(self) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-c", WORKER, "--project", str(self.project)]
        command += ["--db", self.database_url, "worker", "--dry-run"]
        command += ["--clock-file", str(self.clock_file)]
        # Its one line of output, once the project is loaded, says it is up (`wait_up`).
        return subprocess.Popen(command, stdout=subprocess.PIPE)

    @staticmethod
    def wait_up(worker: subprocess.Popen[bytes], stop: threading.Event) -> None:
        """Until `worker` has started (printed its first line), died, or `stop` is set.

        Start-up (imports, the project, the database) takes about 2 s on an idle machine
        and over 30 s on a loaded one: a pace of kills set in seconds would, on a loaded
        machine, kill every worker before it does anything (`nurture worker` then never
        makes progress and the run times out: "8500 enrollments due")."""
        assert worker.stdout is not None
        while not stop.is_set() and worker.poll() is None:
            ready, _, _ = io_select.select([worker.stdout], [], [], 0.1)
            if ready:
                worker.stdout.readline()
                return

    def start(self, count: int | None = None) -> None:
        self.workers = [self._spawn() for _ in range(count or self.size)]

    def kill_one(self, rng: random.Random) -> subprocess.Popen[bytes]:
        """SIGKILL a random worker, wherever it is, and start a new one in its place (which
        is returned)."""
        with self._lock:
            index = rng.randrange(len(self.workers))
            victim = self.workers[index]
            self.peaks.append(peak_rss_mb(victim.pid))
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            self.kills += 1
            self.workers[index] = self._spawn()
            return self.workers[index]

    def stop(self) -> None:
        for worker in self.workers:
            self.peaks.append(peak_rss_mb(worker.pid))
            worker.send_signal(signal.SIGTERM)
        for worker in self.workers:
            worker.wait(timeout=60)
        self.workers = []

    def wait_idle(self, database: Engine, now: datetime, timeout: float = 300) -> None:
        """Until nothing is due at `now`, nothing waits in the outbox, and nothing reserved
        at `now` is still being handed over (the clock jumps an hour next, which a live
        worker's lease would not survive). A worker killed between reserving and sending
        leaves its messages `queued` or `sending` until their lease runs out, at a later step:
        once workers have been killed, those are waited for two seconds at most.

        Fails when nothing has moved for `timeout` seconds (progress, not time, is waited on:
        a loaded machine is slow, not stuck)."""
        deadline = time.monotonic() + timeout
        settled = time.monotonic() + 2
        seen: tuple[int, int, int] | None = None
        while True:
            with database.connect() as connection:
                due = connection.scalar(
                    select(func.count())
                    .select_from(Enrollment)
                    .where(Enrollment.status == ACTIVE, Enrollment.due_at <= now)
                )
                queued = connection.scalar(
                    select(func.count()).select_from(Message).where(Message.status == QUEUED)
                )
                sending = connection.scalar(
                    select(func.count())
                    .select_from(Message)
                    .where(Message.status == SENDING, Message.created_at >= now)
                )
            in_flight = (queued or sending) and (self.kills == 0 or time.monotonic() < settled)
            if not due and not in_flight:
                return
            if (due or 0, queued or 0, sending or 0) != seen:
                seen = (due or 0, queued or 0, sending or 0)
                deadline = time.monotonic() + timeout
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"at {now}: nothing moved for {timeout:.0f}s: {due} enrollments due, "
                    f"{queued} queued"
                )
            with self._lock:  # not one the chaos thread is replacing
                for worker in self.workers:
                    if worker.poll() is not None:
                        raise AssertionError(f"worker {worker.pid} died: {worker.returncode}")
            time.sleep(0.02)

    def run(
        self,
        database: Engine,
        start: datetime,
        days: int,
        step: timedelta = timedelta(hours=1),
        chaos: random.Random | None = None,
    ) -> datetime:
        """Move the shared clock from `start` by `step` for `days`, each step once the
        workers are idle; with `chaos`, kill workers at random moments meanwhile."""
        now = start
        self.set_time(now)
        self.start()
        stop = threading.Event()
        killer = None
        if chaos is not None:

            def kill_at_random() -> None:
                # At a random moment, but only once the workers are up and the one started
                # in the last one's place too: at least `size - 1` workers work at any time.
                for worker in list(self.workers):
                    self.wait_up(worker, stop)
                while not stop.wait(chaos.uniform(0.05, 1.5)):
                    self.wait_up(self.kill_one(chaos), stop)

            killer = threading.Thread(target=kill_at_random, daemon=True)
            killer.start()
        try:
            end = start + timedelta(days=days)
            while now < end:
                self.wait_idle(database, now)
                now += step
                self.set_time(now)
            stop.set()
            if killer is not None:
                killer.join()
            self.wait_idle(database, now)
        finally:
            stop.set()
            if killer is not None:
                killer.join()  # it may be starting a worker in a dead one's place
            self.stop()
        return now
