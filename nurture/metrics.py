"""Prometheus metrics: counters incremented where each thing happens, gauges read from the
database at scrape time.

Counters and the batch-time histogram live in this module (one set per process). With
`PROMETHEUS_MULTIPROC_DIR` set (gunicorn with several workers, or several `nurture worker`
processes on one machine) prometheus_client writes them to files in that folder, and any
process's `/metrics` reports the sum over all of them. The gauges (due and overdue
enrollments, the oldest due age, messages not settled) are counted in the database at each
scrape: they are the same whichever process answers, and equal a SQL count.

The web process serves `/metrics` when `NURTURE_METRICS_TOKEN` is set (sent as
`Authorization: Bearer <token>`; 404 otherwise); a worker serves it on its own address with
`nurture worker --metrics 127.0.0.1:9108`.
"""

from __future__ import annotations

import hmac
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import timedelta
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import start_http_server
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import Engine as Database
from sqlalchemy import func, select

from nurture import environment
from nurture.clock import Clock, as_utc
from nurture.core.decisions import ACTIVE
from nurture.models import QUEUED, SENDING, UNKNOWN, Enrollment, Message
from nurture.vocabulary import MessageStatus

TOKEN_ENV = environment.METRICS_TOKEN
MULTIPROC_ENV = environment.PROMETHEUS_MULTIPROC_DIR
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Due for longer than this is overdue: the workers are not keeping up (or are down).
OVERDUE = timedelta(minutes=5)
F = TypeVar("F", bound=Callable[..., Any])

_OWN = CollectorRegistry(auto_describe=True)
EMAILS = Counter(
    "nurture_emails",
    "Emails handed to a transport, by how it ended (sent, failed, unknown).",
    ["transport", "status"],
    registry=_OWN,
)
DEFERRALS = Counter(
    "nurture_deferrals",
    "Sends held back, by the pacing rule that held them.",
    ["rule"],
    registry=_OWN,
)
BATCH_SECONDS = Histogram(
    "nurture_dispatch_batch_seconds",
    "Time to claim, plan, render and deliver one dispatch batch.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
    registry=_OWN,
)
EVENTS_ACCEPTED = Counter(
    "nurture_api_events_accepted", "Events stored by the API, by kind.", ["kind"], registry=_OWN
)
EVENTS_REJECTED = Counter(
    "nurture_api_events_rejected",
    "Event requests refused by the API, by HTTP status.",
    ["status"],
    registry=_OWN,
)
HANDOFF_ATTEMPTS = Counter(
    "nurture_handoff_attempts", "Hand-off webhook POSTs to the CRM.", registry=_OWN
)
HANDOFF_FAILURES = Counter(
    "nurture_handoff_failures", "Hand-off webhook POSTs that did not get a 2xx.", registry=_OWN
)
WEBHOOKS = Counter(
    "nurture_webhook_deliveries",
    "Provider webhook requests (bounces, complaints), by provider and result.",
    ["provider", "result"],
    registry=_OWN,
)
FEEDBACK = Counter(
    "nurture_provider_feedback",
    "Provider events applied (replays left out), by provider and kind (complained, ...).",
    ["provider", "kind"],
    registry=_OWN,
)
LOGIN_FAILURES = Counter(
    "nurture_login_failures", "Refused dashboard logins, by reason.", ["reason"], registry=_OWN
)
_WEBHOOK_RESULTS = {200: "applied", 400: "bad_request", 401: "unauthorized", 404: "disabled"}


def transport_name(transport: object) -> str:
    """`smtp`, `outbox`, `null`: the transport's class name without `Transport`."""
    return type(transport).__name__.removesuffix("Transport").lower() or "unknown"


def count_deliveries(transport: object, done: Mapping[str, int]) -> None:
    """What one hand-over gave (status -> count), counted once it is committed."""
    name = transport_name(transport)
    for status in (MessageStatus.SENT, MessageStatus.FAILED, MessageStatus.UNKNOWN):
        if done.get(status):
            EMAILS.labels(name, status).inc(done[status])


def count_deferrals(deferrals: Iterable[Mapping[str, Any]]) -> None:
    """The deferral rows of a committed batch (their `rules`, comma-separated)."""
    for row in deferrals:
        for rule in str(row.get("rules") or "").split(","):
            if rule:
                DEFERRALS.labels(rule).inc()


def timed_batch(function: F) -> F:
    """Decorator: observe each call's duration in the dispatch batch histogram."""
    timed: F = BATCH_SECONDS.time()(function)
    return timed


def count_events(kinds: Iterable[str]) -> None:
    for kind in kinds:
        EVENTS_ACCEPTED.labels(kind).inc()


def count_rejected(status: int) -> None:
    EVENTS_REJECTED.labels(str(status)).inc()


def count_handoff(ok: bool) -> None:
    HANDOFF_ATTEMPTS.inc()
    if not ok:
        HANDOFF_FAILURES.inc()


def count_webhook(provider: str, status: int) -> None:
    WEBHOOKS.labels(provider, _WEBHOOK_RESULTS.get(status, str(status))).inc()


def count_feedback(provider: str, kinds: Iterable[str]) -> None:
    for kind in kinds:
        FEEDBACK.labels(provider, kind).inc()


def count_login_failure(reason: str) -> None:
    LOGIN_FAILURES.labels(reason).inc()


class DatabaseGauges(Collector):
    """Gauges counted in the database at scrape time, with indexed queries only
    (ix_enrollments_due: status, due_at; ix_messages_unsettled)."""

    def __init__(self, database: Database, clock: Clock) -> None:
        self.database, self.clock = database, clock

    def collect(self) -> Iterator[Metric]:
        now = self.clock.now()
        due = (Enrollment.status == ACTIVE, Enrollment.due_at <= now)
        with self.database.connect() as connection:
            count, oldest = connection.execute(
                select(func.count(), func.min(Enrollment.due_at)).where(*due)
            ).one()
            overdue = connection.execute(
                select(func.count()).where(
                    Enrollment.status == ACTIVE, Enrollment.due_at <= now - OVERDUE
                )
            ).scalar_one()
            unsettled = dict(
                connection.execute(
                    select(Message.status, func.count())
                    .where(Message.status.in_([QUEUED, SENDING, UNKNOWN]))
                    .group_by(Message.status)
                ).all()
            )
        yield GaugeMetricFamily(
            "nurture_enrollments_due", "Active enrollments due now (the queue).", value=count
        )
        yield GaugeMetricFamily(
            "nurture_enrollments_overdue",
            f"Active enrollments due for more than {OVERDUE.total_seconds():g} seconds.",
            value=overdue,
        )
        age = (now - as_utc(oldest)).total_seconds() if oldest is not None else 0.0
        yield GaugeMetricFamily(
            "nurture_oldest_due_seconds", "How long the oldest due enrollment has waited.", age
        )
        messages = GaugeMetricFamily(
            "nurture_messages",
            "Messages not settled, by status (unknown: maybe delivered, a person decides).",
            labels=["status"],
        )
        for status in (QUEUED, SENDING, UNKNOWN):
            messages.add_metric([status], unsettled.get(status, 0))
        yield messages


class _Own(Collector):
    """This process's counters (no multiprocess folder)."""

    def collect(self) -> Iterator[Metric]:
        return iter(_OWN.collect())


def multiprocess_dir() -> str | None:
    return environment.read(MULTIPROC_ENV) or environment.read(MULTIPROC_ENV.lower()) or None


def registry(database: Database | None = None, clock: Clock | None = None) -> CollectorRegistry:
    """What a scrape reports: every process's counters when PROMETHEUS_MULTIPROC_DIR is set
    (this process's otherwise), and the database gauges."""
    found = CollectorRegistry(auto_describe=False)
    if multiprocess_dir():
        MultiProcessCollector(found)  # type: ignore[no-untyped-call]
    else:
        found.register(_Own())
    if database is not None and clock is not None:
        found.register(DatabaseGauges(database, clock))
    return found


def exposition(database: Database, clock: Clock) -> bytes:
    return generate_latest(registry(database, clock))


def token_matches(header: str) -> bool | None:
    """None: metrics are off (no NURTURE_METRICS_TOKEN); else whether `Authorization`
    carries the token (compared in constant time)."""
    token = environment.read(TOKEN_ENV)
    if not token:
        return None
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), token)


def parse_address(value: str) -> tuple[str, int]:
    """`127.0.0.1:9108` or `[::1]:9108` -> (host, port); ValueError naming the problem."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not host:port (e.g. 127.0.0.1:9108)")
    return host.strip("[]"), int(port)


def serve(address: str, database: Database, clock: Clock) -> threading.Thread:
    """A worker's own /metrics on `address` (a background thread)."""
    host, port = parse_address(address)
    _, thread = start_http_server(port, host, registry(database, clock))
    return thread
