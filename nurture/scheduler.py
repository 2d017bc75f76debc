"""APScheduler wiring: a few periodic jobs per process, never one job per contact."""

from __future__ import annotations

import logging
import threading
from datetime import UTC

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.exc import OperationalError

from nurture import jobs, lift, sendhours
from nurture.handoffs import deliver_handoffs
from nurture.journeys import deliver_webhooks
from nurture.notices import deliver_notices
from nurture.reports import refresh_history
from nurture.rescore import rescore_if_changed
from nurture.runtime import Runtime

log = logging.getLogger(__name__)


def dispatch_job(runtime: Runtime) -> None:
    report = runtime.dispatcher.tick()
    # The dispatcher takes up edited project files; the rest of the process follows it.
    runtime.project = runtime.dispatcher.project
    if report.sent or report.deferred or report.failed:
        log.info(
            "dispatch: %d sent, %d deferred, %d failed, %d due later, %d idle, %d ended",
            report.sent,
            report.deferred,
            report.failed,
            report.later,
            report.idle,
            report.ended,
        )


def reconcile_job(runtime: Runtime) -> None:
    with jobs.cluster_once(runtime.database, "reconcile") as mine:
        if not mine:
            return
        unknown, late = runtime.dispatcher.reconcile()
    if unknown or late:
        log.warning("reconcile: %d messages unknown after a stop, %d delivered late", unknown, late)


def outgoing_job(runtime: Runtime) -> None:
    """Hand-off webhooks and system notices that are due."""
    now = runtime.clock.now()
    stop = runtime.dispatcher.stopping
    delivered, failed = deliver_handoffs(runtime.project, runtime.database, now, stop=stop)
    notices = deliver_notices(runtime.database, runtime.dispatcher.transport, now, stop=stop)
    if delivered or failed or notices:
        log.info("hand-offs: %d delivered, %d failed; notices: %d", delivered, failed, notices)
    posted, missed = deliver_webhooks(runtime.project, runtime.database, now, stop=stop)
    if posted or missed:
        log.info("journey webhooks: %d delivered, %d failed", posted, missed)


def decay_job(runtime: Runtime) -> None:
    with jobs.cluster_once(runtime.database, "decay") as mine:
        if mine:
            log.info("decay: %d scores rewritten", jobs.decay_scores(runtime, runtime.clock.now()))


def fit_rules_job(runtime: Runtime) -> None:
    """At start and after a reload: rescore everyone if the fit rules changed."""
    with jobs.cluster_once(runtime.database, jobs.RESCORE_LOCK) as mine:
        if mine:
            done = rescore_if_changed(runtime.project, runtime.database, runtime.clock.now())
            if done is not None:
                log.info(
                    "%s: %d contacts, %d fits changed, %d stage moves",
                    done.cause,
                    done.contacts,
                    done.changed,
                    done.moved,
                )


def recycle_job(runtime: Runtime) -> None:
    with jobs.cluster_once(runtime.database, "recycle") as mine:
        if mine:
            count = jobs.recycle_job(runtime, runtime.clock.now())
            if count:
                log.info("hand-offs: %d stale ones recycled", count)


def promote_job(runtime: Runtime) -> None:
    with jobs.cluster_once(runtime.database, "promote") as mine:
        if mine:
            count = jobs.promote_job(runtime, runtime.clock.now())
            if count:
                log.info("subject tests: %d winners promoted", count)


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


def reports_job(runtime: Runtime) -> None:
    """Renew the dashboard's funnel history and the workflows' lifts, so no page view has to
    count them, and the project's best send hours (hourly), so no dispatcher's claim has to
    tally them."""
    with jobs.cluster_once(runtime.database, "reports") as mine:
        if mine:
            now, settings = runtime.clock.now(), runtime.project.settings
            refresh_history(runtime.database, settings, now)
            workflows = runtime.project.workflows
            lift.refresh_lifts(runtime.database, settings, lift.holdouts(workflows), now)
            sendhours.refresh_if_stale(runtime.database, settings.timezone, now)


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
    for job, every, name in (
        (outgoing_job, {"seconds": runtime.project.settings.tick_seconds}, "outgoing"),
        (recycle_job, {"hours": 1}, "recycle"),
        (reports_job, {"minutes": 5}, "reports"),
        (decay_job, {"hours": 24}, "decay"),
        (fit_rules_job, {"minutes": 1}, "fit-rules"),
        (promote_job, {"minutes": 1}, "promote"),
    ):
        scheduler.add_job(
            job,
            IntervalTrigger(**every, timezone=UTC),
            args=[runtime],
            id=name,
            max_instances=1,
            coalesce=True,
            next_run_time=runtime.clock.now(),
        )
    return scheduler
