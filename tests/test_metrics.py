"""Prometheus metrics: counters follow the engine, gauges equal SQL counts, several processes
report one sum, the web endpoint is off until its token is set."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text

from nurture import metrics
from nurture.clock import FixedClock, as_utc
from nurture.runtime import Runtime, open_runtime
from nurture.transport import DeliveryUnknown, Outgoing, Rejected
from nurture.web import create_app
from tests.conftest import MONDAY_MORNING
from tests.helpers import PROFILE, add_contact, with_transport
from tests.smtp_server import free_port

WORKER = "from nurture.cli import main; main()"


class ScriptedTransport:
    """`nobody*` refused (hard bounce), `maybe*` unanswered after the body, others taken."""

    def send(self, outgoing: Outgoing) -> None:
        if outgoing.to.startswith("nobody"):
            raise Rejected(550, "5.1.1 no such user")
        if outgoing.to.startswith("maybe"):
            raise DeliveryUnknown("no answer to the final dot")


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def sql_gauges(url: str, now: datetime) -> dict[str, float]:
    """The same figures, counted in plain SQL."""
    database = create_engine(url)

    def at(instant: datetime) -> object:  # SQLite keeps naive UTC text, as SQLAlchemy writes it
        if url.startswith("sqlite"):
            return instant.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        return instant

    try:
        with database.connect() as connection:
            due = "FROM enrollments WHERE status = 'active' AND due_at <= :at"
            count = connection.execute(text(f"SELECT count(*) {due}"), {"at": at(now)}).scalar()
            oldest = connection.execute(text(f"SELECT min(due_at) {due}"), {"at": at(now)}).scalar()
            overdue = connection.execute(
                text(f"SELECT count(*) {due}"), {"at": at(now - timedelta(minutes=5))}
            ).scalar()
            unknown = connection.execute(
                text("SELECT count(*) FROM messages WHERE status = 'unknown'")
            ).scalar()
    finally:
        database.dispose()
    if isinstance(oldest, str):  # SQLite
        oldest = datetime.fromisoformat(oldest)
    age = (now - as_utc(oldest)).total_seconds() if oldest else 0.0
    return {
        "nurture_enrollments_due": float(count or 0),
        "nurture_enrollments_overdue": float(overdue or 0),
        "nurture_oldest_due_seconds": age,
        "unknown": float(unknown or 0),
    }


def test_metrics_follow_the_engine_and_gauges_equal_sql(
    runtime: Runtime, clock: FixedClock, database_url: str
) -> None:
    dispatcher = with_transport(runtime, ScriptedTransport())
    for address in ("ana@acme.example", "nobody@umbrella.example", "maybe@initech.example"):
        add_contact(runtime, address, **PROFILE)
    # Monday 09:00 in Paris is midnight in Los Angeles: held by quiet hours.
    add_contact(runtime, "sam@globex.example", **{**PROFILE, "timezone": "America/Los_Angeles"})
    before = metrics.registry(runtime.database, clock)
    was = {
        status: value(before, "nurture_emails_total", transport="scripted", status=status)
        for status in ("sent", "failed", "unknown")
    }
    quiet = value(before, "nurture_deferrals_total", rule="quiet_hours")
    batches = value(before, "nurture_dispatch_batch_seconds_count")
    registry = metrics.registry(runtime.database, clock)
    assert value(registry, "nurture_enrollments_due") == 4
    assert sql_gauges(database_url, clock.now())["nurture_enrollments_due"] == 4

    report = dispatcher.tick()
    assert (report.sent, report.failed, report.unknown, report.deferred) == (1, 1, 1, 1)
    registry = metrics.registry(runtime.database, clock)
    for status in ("sent", "failed", "unknown"):
        now_value = value(registry, "nurture_emails_total", transport="scripted", status=status)
        assert now_value - was[status] == 1, status
    assert value(registry, "nurture_deferrals_total", rule="quiet_hours") - quiet == 1
    assert value(registry, "nurture_dispatch_batch_seconds_count") > batches
    assert value(registry, "nurture_messages", status="unknown") == 1

    # Hours later nobody worked: Sam is due, and overdue; the gauges are the SQL counts.
    clock.advance(timedelta(hours=20))
    registry = metrics.registry(runtime.database, clock)
    expected = sql_gauges(database_url, clock.now())
    assert expected["nurture_enrollments_overdue"] >= 1
    for name in ("nurture_enrollments_due", "nurture_enrollments_overdue"):
        assert value(registry, name) == expected[name], name
    assert value(registry, "nurture_oldest_due_seconds") == pytest.approx(
        expected["nurture_oldest_due_seconds"]
    )
    assert value(registry, "nurture_messages", status="unknown") == expected["unknown"]


def test_the_web_endpoint_is_off_without_a_token_and_guarded_with_one(
    sqlite_runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = create_app(sqlite_runtime).test_client()
    monkeypatch.delenv(metrics.TOKEN_ENV, raising=False)
    assert client.get("/metrics").status_code == 404
    monkeypatch.setenv(metrics.TOKEN_ENV, "t" * 32)
    assert client.get("/metrics").status_code == 401
    wrong = client.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    good = client.get("/metrics", headers={"Authorization": f"Bearer {'t' * 32}"})
    assert good.status_code == 200
    names = {family.name for family in text_string_to_metric_families(good.get_data(True))}
    assert {"nurture_emails", "nurture_enrollments_due", "nurture_login_failures"} <= names


def test_web_counters_events_logins_and_provider_webhooks(
    sqlite_runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nurture.apikeys import create_key
    from nurture.db import sessions

    with sessions(sqlite_runtime.database).begin() as session:
        _, key = create_key(session, "site", sqlite_runtime.clock.now())
    app = create_app(sqlite_runtime)
    app.config["WTF_CSRF_ENABLED"] = False  # the form's token is not what is tested here
    client = app.test_client()
    monkeypatch.delenv("NURTURE_POSTMARK_CREDENTIALS", raising=False)
    before = metrics.registry()
    accepted = value(before, "nurture_api_events_accepted_total", kind="page_visited")
    rejected = value(before, "nurture_api_events_rejected_total", status="422")
    unauthorized = value(before, "nurture_api_events_rejected_total", status="401")
    logins = value(before, "nurture_login_failures_total", reason="wrong_password")
    disabled = value(
        before, "nurture_webhook_deliveries_total", provider="postmark", result="disabled"
    )

    auth = {"Authorization": f"Bearer {key}"}
    good = {"email": "ana@acme.example", "kind": "page_visited", "properties": {"url": "/x"}}
    assert client.post("/api/v1/events", json=good, headers=auth).status_code == 200
    bad = {"email": "ana@acme.example", "kind": "no_such_kind"}
    assert client.post("/api/v1/events", json=bad, headers=auth).status_code == 422
    assert client.post("/api/v1/events", json=good).status_code == 401
    client.post("/login", data={"email": "x@acme.example", "password": "wrong"})
    assert client.post("/hooks/postmark", data=b"{}").status_code == 404

    after = metrics.registry()
    assert value(after, "nurture_api_events_accepted_total", kind="page_visited") - accepted == 1
    assert value(after, "nurture_api_events_rejected_total", status="422") - rejected == 1
    assert value(after, "nurture_api_events_rejected_total", status="401") - unauthorized == 1
    assert value(after, "nurture_login_failures_total", reason="wrong_password") - logins == 1
    webhook = value(
        after, "nurture_webhook_deliveries_total", provider="postmark", result="disabled"
    )
    assert webhook - disabled == 1


def test_readyz_says_whether_the_database_is_migrated(project_dir: Path, tmp_path: Path) -> None:
    ready = open_runtime(project_dir, database=f"sqlite:///{tmp_path / 'ok.db'}")
    assert create_app(ready).test_client().get("/readyz").status_code == 200
    empty = open_runtime(project_dir, database=f"sqlite:///{tmp_path / 'no.db'}", migrate=False)
    reply = create_app(empty).test_client().get("/readyz")
    assert reply.status_code == 503
    assert "nurture db upgrade" in reply.get_json()["reason"]
    ready.database.dispose()
    empty.database.dispose()


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        body = reply.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


@pytest.fixture
def workers(
    project_dir: Path, tmp_path: Path, database_url: str
) -> Iterator[tuple[list[int], Runtime, Path]]:
    clock_file = tmp_path / "clock"
    clock_file.write_text(MONDAY_MORNING.isoformat())
    rt = open_runtime(project_dir, clock=FixedClock(MONDAY_MORNING), database=database_url)
    for number in range(30):
        add_contact(rt, f"person{number}@company{number}.example", **PROFILE)
    shared = tmp_path / "prometheus"
    shared.mkdir()
    env = {**os.environ, metrics.MULTIPROC_ENV: str(shared)}
    ports = [free_port(), free_port()]
    processes = [
        subprocess.Popen(
            [
                *(sys.executable, "-c", WORKER, "--project", str(project_dir)),
                *("--db", database_url, "worker", "--dry-run"),
                *("--clock-file", str(clock_file), "--metrics", f"127.0.0.1:{port}"),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        for port in ports
    ]
    try:
        yield ports, rt, shared
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=60)
        rt.database.dispose()


def test_two_worker_processes_report_the_same_sums(
    workers: tuple[list[int], Runtime, Path], database_url: str
) -> None:
    ports, _, shared = workers
    deadline = time.monotonic() + 120
    sent = ("nurture_emails_total", (("status", "sent"), ("transport", "null")))
    while True:
        try:
            first, second = scrape(ports[0]), scrape(ports[1])
        except (urllib.error.URLError, OSError):
            first = second = {}
        if first.get(sent) == 30 and first == second:
            break
        assert time.monotonic() < deadline, (first.get(sent), second.get(sent))
        time.sleep(0.2)
    assert len(list(shared.glob("counter_*.db"))) == 2  # one file per process, summed
    expected = sql_gauges(database_url, MONDAY_MORNING)
    assert first[("nurture_enrollments_due", ())] == expected["nurture_enrollments_due"] == 0
    assert first[("nurture_messages", (("status", "unknown"),))] == expected["unknown"] == 0


def test_provider_feedback_counts_complaints_once(
    sqlite_runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    import base64
    import json

    from tests.test_webhooks import POSTMARK_BOUNCE

    monkeypatch.setenv("NURTURE_POSTMARK_CREDENTIALS", "nurture:hook-secret")
    client = create_app(sqlite_runtime).test_client()
    auth = {"Authorization": "Basic " + base64.b64encode(b"nurture:hook-secret").decode()}
    wrong = {"Authorization": "Basic " + base64.b64encode(b"nurture:nope").decode()}
    before = metrics.registry()
    labels = {"provider": "postmark", "kind": "complained"}
    complaints = value(before, "nurture_provider_feedback_total", **labels)
    applied = value(
        before, "nurture_webhook_deliveries_total", provider="postmark", result="applied"
    )
    refused = value(
        before, "nurture_webhook_deliveries_total", provider="postmark", result="unauthorized"
    )
    body = json.dumps({**POSTMARK_BOUNCE, "RecordType": "SpamComplaint"}).encode()
    for _ in range(2):  # the provider retries: applied once, counted once
        assert client.post("/hooks/postmark", data=body, headers=auth).status_code == 200
    assert client.post("/hooks/postmark", data=body, headers=wrong).status_code == 401
    after = metrics.registry()
    assert value(after, "nurture_provider_feedback_total", **labels) - complaints == 1
    webhook = "nurture_webhook_deliveries_total"
    assert value(after, webhook, provider="postmark", result="applied") - applied == 2
    assert value(after, webhook, provider="postmark", result="unauthorized") - refused == 1
