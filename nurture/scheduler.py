"""APScheduler wiring: a few periodic jobs per process, never one job per contact."""

from __future__ import annotations

import logging
import threading
from datetime import UTC
from functools import partial
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.exc import OperationalError

from nurture import jobs
from nurture.runtime import Runtime

log = logging.getLogger(__name__)


def scheduled(job: jobs.Periodic[Any], runtime: Runtime) -> None:
    """What the scheduler runs every `job.every`: the job at the runtime's `now`, logged;
    nothing once the process is asked to stop."""
    if runtime.dispatcher.stopping.is_set():
        return
    with jobs.turn(job, runtime.database) as mine:
        if not mine:
            return
        done = job.run(runtime, runtime.clock.now())
    job.log(done)


def _job(name: str) -> jobs.Periodic[Any]:
    return next(job for job in jobs.JOBS if job.name == name)


dispatch_job = partial(scheduled, _job("dispatch"))
reconcile_job = partial(scheduled, _job("reconcile"))
fit_rules_job = partial(scheduled, _job("fit-rules"))


def drain(runtime: Runtime, stop: threading.Event, idle: float = 0.05) -> None:
    """Simulation mode: every job back to back at whatever instant the clock says, resting
    `idle` seconds when a round found nothing to do, until `stop` is set."""
    while not stop.is_set():
        try:
            reconcile_job(runtime)
            report = runtime.dispatcher.tick()
            done = jobs.run_periodic(runtime, runtime.clock.now())
        except OperationalError as exc:  # a lost connection, a deadlock: the next round retries
            log.warning("round failed, retrying: %s", exc)
            stop.wait(idle)
            continue
        if not (report.sent or report.deferred or report.failed or any(done.values())):
            stop.wait(idle)


def build_scheduler(runtime: Runtime) -> BackgroundScheduler:
    """Every job of `jobs.JOBS` (the dispatch tick every `tick_seconds`...); a run still
    going makes the next one wait."""
    woken = runtime.dispatcher.wake_waiting()
    if woken:
        log.info("start-up: %d waiting enrollments planned again", woken)
    scheduler = BackgroundScheduler(timezone=UTC)
    for job in jobs.JOBS:
        scheduler.add_job(
            partial(scheduled, job),
            IntervalTrigger(
                seconds=job.every(runtime.project.settings).total_seconds(), timezone=UTC
            ),
            args=[runtime],
            id=job.name,
            max_instances=1,
            coalesce=True,
            next_run_time=runtime.clock.now(),
        )
    return scheduler
