"""The periodic jobs besides the dispatch tick, each a function of the runtime and `now`.

Jobs that must run once in a whole cluster (decay, stale recycling) take a PostgreSQL
advisory lock; on SQLite one process runs everything. A process asked to stop
(`Dispatcher.stop()`, on SIGTERM) starts no other job, and the jobs that work in chunks
(decay, fit rescoring, stale recycling, outgoing deliveries) end after the chunk in hand:
each chunk is its own transaction, and what is left is taken up at the next run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar, cast

from sqlalchemy import Engine as Database
from sqlalchemy import Table, bindparam, insert, select, text, update

from nurture import lift, sendhours
from nurture.config import Settings
from nurture.core.scoring import NEGLIGIBLE, decay_label, decayed
from nurture.db import is_sqlite, write_transaction
from nurture.engine import Report as TickReport
from nurture.feedback import recycle_stale
from nurture.handoffs import deliver_handoffs
from nurture.journeys import deliver_webhooks
from nurture.models import Contact, ScoreChange
from nurture.notices import deliver_notices
from nurture.promotion import promote_winners
from nurture.reports import refresh_history
from nurture.rescore import Rescored, rescore_if_changed
from nurture.runtime import Runtime

#: The stored engagement is rewritten when decay has taken at least this much off it;
#: readers always compute the exact current value from (engagement, engagement_at).
DECAY_STEP = 0.5
#: The lock of a fit rescore (nurture/rescore.py): one process in the cluster does it.
RESCORE_LOCK = "fit-rescore"

log = logging.getLogger("nurture.scheduler")
R = TypeVar("R")


@contextmanager
def cluster_once(database: Database, name: str) -> Iterator[bool]:
    """True for the one process in the cluster that holds the lock named `name`.

    PostgreSQL's advisory locks are the whole database's: the key is the schema's and the
    job's, so that installations in two schemas of one database (the tests' schemas, run in
    parallel) never take each other's jobs."""
    if is_sqlite(database):
        yield True
        return
    key = {"k": f"nurture.job.{name}"}
    with database.connect() as connection:
        held = bool(connection.scalar(_TRY_JOB_LOCK, key))
        try:
            yield held
        finally:
            if held:
                connection.execute(_JOB_UNLOCK, key)
                connection.commit()


_TRY_JOB_LOCK = text("SELECT pg_try_advisory_lock(hashtext(current_schema()), hashtext(:k))")
_JOB_UNLOCK = text("SELECT pg_advisory_unlock(hashtext(current_schema()), hashtext(:k))")


_contacts = cast(Table, Contact.__table__)
_DECAYED = (
    update(_contacts)
    .where(_contacts.c.id == bindparam("b_id"))
    .values(engagement=bindparam("engagement"), engagement_at=bindparam("engagement_at"))
)


def decay_scores(runtime: Runtime, now: datetime, batch: int = 1000) -> int:
    """Write decayed engagement back to the contacts, with a ledger line each; how many.

    Streams the contacts in id order, `batch` at a time, each batch its own transaction
    (three columns read and two statements written per batch, without the ORM), until done
    or the process is asked to stop. On PostgreSQL the rows read are locked, skipping those
    another transaction holds (an event being recorded, a batch being dispatched): no
    update is lost, nobody waits, and a skipped contact is rewritten at the next run
    (readers compute the current value from (engagement, engagement_at) meanwhile).
    """
    rules = runtime.project.settings.scoring.engagement
    if rules.half_life is None and rules.decay is None:
        return 0
    label = decay_label(rules)
    stop = runtime.dispatcher.stopping
    changed, last_id = 0, 0
    while not stop.is_set():
        with write_transaction(runtime.database) as session:
            chunk = (
                select(_contacts.c.id, _contacts.c.engagement, _contacts.c.engagement_at)
                .where(_contacts.c.id > last_id, _contacts.c.engagement != 0)
                .order_by(_contacts.c.id)
                .limit(batch)
            )
            if not is_sqlite(runtime.database):
                chunk = chunk.with_for_update(skip_locked=True)
            connection = session.connection()
            rows = connection.execute(chunk).all()
            values, lines = [], []
            for contact_id, engagement, engagement_at in rows:
                value, anchor = decayed(engagement, engagement_at, now, rules)
                lost = engagement - value
                if abs(lost) < DECAY_STEP and abs(value) >= NEGLIGIBLE:
                    continue
                values.append({"b_id": contact_id, "engagement": value, "engagement_at": anchor})
                lines.append(
                    {
                        "contact_id": contact_id,
                        "at": now,
                        "axis": "engagement",
                        "points": -lost,
                        "value_after": value,
                        "rule": label,
                    }
                )
            if values:
                connection.execute(_DECAYED, values)
                connection.execute(insert(ScoreChange), lines)
                changed += len(values)
        if len(rows) < batch:
            break
        last_id = rows[-1].id
    return changed


def recycle_job(runtime: Runtime, now: datetime) -> int:
    total = 0
    while not runtime.dispatcher.stopping.is_set():
        with write_transaction(runtime.database) as session:
            count = recycle_stale(session, runtime.project, now)
        total += count
        if count == 0:
            break
    return total


def promote_job(runtime: Runtime, now: datetime) -> int:
    """Record the subject tests (`promote_winner: true`) that now call a winner; how many."""
    with write_transaction(runtime.database) as session:
        return len(promote_winners(session, runtime.project, now))


@dataclass(frozen=True)
class Outgoing:
    """What one delivery round of hand-offs, system notices and journey webhooks did."""

    handed_off: int
    handoff_failures: int
    notices: int
    webhooks: int
    webhook_failures: int


def deliver_outgoing(runtime: Runtime, now: datetime) -> Outgoing:
    """Hand-off webhooks, system notices and journey webhooks that are due."""
    stop = runtime.dispatcher.stopping
    handed_off, handoff_failures = deliver_handoffs(
        runtime.project, runtime.database, now, stop=stop
    )
    notices = deliver_notices(runtime.database, runtime.dispatcher.transport, now, stop=stop)
    webhooks, webhook_failures = deliver_webhooks(runtime.project, runtime.database, now, stop=stop)
    return Outgoing(handed_off, handoff_failures, notices, webhooks, webhook_failures)


def dispatch(runtime: Runtime, now: datetime) -> TickReport:
    """One dispatch tick (the dispatcher reads its own clock)."""
    report = runtime.dispatcher.tick()
    # The dispatcher takes up edited project files; the rest of the process follows it.
    runtime.project = runtime.dispatcher.project
    return report


def reconcile(runtime: Runtime, now: datetime) -> tuple[int, int]:
    """Messages left `sending` by a stop, and late answers: (unknown, delivered late)."""
    return runtime.dispatcher.reconcile()


def refresh_reports(runtime: Runtime, now: datetime) -> None:
    """Renew the dashboard's funnel history and the workflows' lifts, so no page view has to
    count them, and the project's best send hours (hourly), so no dispatcher's claim has to
    tally them."""
    settings = runtime.project.settings
    refresh_history(runtime.database, settings, now)
    lift.refresh_lifts(runtime.database, settings, lift.holdouts(runtime.project.workflows), now)
    sendhours.refresh_if_stale(runtime.database, settings.timezone, now)


def rescore(runtime: Runtime, now: datetime) -> Rescored | None:
    """At start and after a reload: rescore everyone if the fit rules changed."""
    return rescore_if_changed(
        runtime.project, runtime.database, now, stop=runtime.dispatcher.stopping
    )


def _log_dispatch(report: TickReport) -> None:
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


def _log_reconcile(found: tuple[int, int]) -> None:
    unknown, late = found
    if unknown or late:
        log.warning("reconcile: %d messages unknown after a stop, %d delivered late", unknown, late)


def _log_outgoing(done: Outgoing) -> None:
    if done.handed_off or done.handoff_failures or done.notices:
        log.info(
            "hand-offs: %d delivered, %d failed; notices: %d",
            done.handed_off,
            done.handoff_failures,
            done.notices,
        )
    if done.webhooks or done.webhook_failures:
        log.info("journey webhooks: %d delivered, %d failed", done.webhooks, done.webhook_failures)


def _log_rescore(done: Rescored | None) -> None:
    if done is not None:
        log.info(
            "%s: %d contacts, %d fits changed, %d stage moves",
            done.cause,
            done.contacts,
            done.changed,
            done.moved,
        )


def _log_count(message: str, always: bool = False) -> Callable[[int], None]:
    def write(count: int) -> None:
        if count or always:
            log.info(message, count)

    return write


def _nothing(_: object) -> dict[str, int]:
    return {}


def _log_nothing(_: object) -> None:
    return None


@dataclass(frozen=True)
class Periodic(Generic[R]):
    """One periodic job. `nurture run` and `nurture worker` schedule every job of `JOBS`
    every `every` (nurture/scheduler.py); each round of `nurture tick`, of the worker's
    simulation mode and of the simulator runs, once and in this order, those `in_round`
    (`run_periodic`), which report `counts`."""

    #: The scheduler's job id.
    name: str
    every: Callable[[Settings], timedelta]
    run: Callable[[Runtime, datetime], R]
    #: What a round reports of the result (`nurture tick` prints the ones not zero).
    counts: Callable[[R], dict[str, int]] = _nothing
    #: What the scheduler logs of the result.
    log: Callable[[R], None] = _log_nothing
    #: Run by one process of the cluster at a time: the name of its advisory lock.
    lock: str | None = None
    in_round: bool = True


def _tick(settings: Settings) -> timedelta:
    return timedelta(seconds=settings.tick_seconds)


def _every(**length: float) -> Callable[[Settings], timedelta]:
    return lambda _: timedelta(**length)


#: Every periodic job; a round runs those `in_round` in this order.
JOBS: tuple[Periodic[Any], ...] = (
    Periodic("dispatch", _tick, dispatch, log=_log_dispatch, in_round=False),
    Periodic(
        "reconcile",
        _every(seconds=60),
        reconcile,
        log=_log_reconcile,
        lock="reconcile",
        in_round=False,
    ),
    Periodic(
        "fit-rules",
        _every(minutes=1),
        rescore,
        counts=lambda done: {"rescored": done.changed if done else 0},
        log=_log_rescore,
        lock=RESCORE_LOCK,
    ),
    Periodic(
        "decay",
        _every(hours=24),
        decay_scores,
        counts=lambda n: {"decayed": n},
        log=_log_count("decay: %d scores rewritten", always=True),
        lock="decay",
    ),
    Periodic(
        "recycle",
        _every(hours=1),
        recycle_job,
        counts=lambda n: {"recycled": n},
        log=_log_count("hand-offs: %d stale ones recycled"),
        lock="recycle",
    ),
    Periodic(
        "promote",
        _every(minutes=1),
        promote_job,
        counts=lambda n: {"promoted": n},
        log=_log_count("subject tests: %d winners promoted"),
        lock="promote",
    ),
    Periodic(
        "outgoing", _tick, deliver_outgoing, counts=lambda done: dict(vars(done)), log=_log_outgoing
    ),
    Periodic("reports", _every(minutes=5), refresh_reports, lock="reports", in_round=False),
)


@contextmanager
def turn(job: Periodic[Any], database: Database) -> Iterator[bool]:
    """True if this process runs `job` now: always, or if it holds the job's cluster lock."""
    if job.lock is None:
        yield True
        return
    with cluster_once(database, job.lock) as mine:
        yield mine


def run_periodic(runtime: Runtime, now: datetime) -> dict[str, int]:
    """One round of every periodic job `in_round` (what `nurture tick` and the simulator
    call): what each did, by name; a job another process holds is left out, and so are
    the jobs not started when the process is asked to stop."""
    done: dict[str, int] = {}
    for job in JOBS:
        if job.in_round and not runtime.dispatcher.stopping.is_set():
            with turn(job, runtime.database) as mine:
                if mine:
                    done.update(job.counts(job.run(runtime, now)))
    return done
