"""APScheduler wiring: a few periodic jobs per process, never one job per contact."""

from __future__ import annotations

import logging
from datetime import UTC

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from nurture.runtime import Runtime

log = logging.getLogger(__name__)


def dispatch_job(runtime: Runtime) -> None:
    report = runtime.dispatcher.tick()
    if report.sent or report.deferred or report.failed:
        log.info(
            "dispatch: %d sent, %d deferred, %d failed, %d waiting, %d ended",
            report.sent,
            report.deferred,
            report.failed,
            report.waiting,
            report.ended,
        )


def reconcile_job(runtime: Runtime) -> None:
    unknown, late = runtime.dispatcher.reconcile()
    if unknown or late:
        log.warning("reconcile: %d messages unknown after a stop, %d delivered late", unknown, late)


def build_scheduler(runtime: Runtime) -> BackgroundScheduler:
    """The dispatch tick, every `tick_seconds`; a run still going makes the next one wait."""
    woken = runtime.dispatcher.wake_waiting()
    if woken:
        log.info("start-up: %d waiting enrollments planned again", woken)
    scheduler = BackgroundScheduler(timezone=UTC)
    scheduler.add_job(
        dispatch_job,
        IntervalTrigger(seconds=runtime.project.settings.tick_seconds, timezone=UTC),
        args=[runtime],
        id="dispatch",
        max_instances=1,
        coalesce=True,
        next_run_time=runtime.clock.now(),
    )
    scheduler.add_job(
        reconcile_job,
        IntervalTrigger(seconds=60, timezone=UTC),
        args=[runtime],
        id="reconcile",
        max_instances=1,
        coalesce=True,
        next_run_time=runtime.clock.now(),
    )
    return scheduler
