"""The send path's shortcuts give what the long way gives: tokens, locks, reads, variables."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from itsdangerous import Signer
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from nurture.clock import FixedClock
from nurture.contacts import LazyVariables, condition_variables, profile
from nurture.db import lock_for_transaction, sessions
from nurture.runtime import Runtime, open_runtime
from nurture.tracking import Links
from tests.helpers import PROFILE, add_contact, contact, messages

SECRET = "a-secret-for-the-test"
BASE = "https://mail.example.com"


def _plain(salt: str) -> Signer:
    return Signer(SECRET, salt=salt, digest_method=hashlib.sha256)


@pytest.mark.parametrize("key", ["k", "Qm9vbGVhbi1rZXk_-x", "-_0123456789abcd"])
def test_links_are_signed_exactly_as_itsdangerous_signs_them(key: str) -> None:
    links = Links(SECRET, BASE)
    assert links.unsubscribe_url(key) == (
        f"{BASE}/u/{_plain('nurture.unsubscribe').sign(key).decode()}"
    )
    assert links.open_url(key) == f"{BASE}/o/{_plain('nurture.open').sign(key).decode()}"
    url = links.click_url(key, "https://example.com/a?b=1&c=d")
    assert url.startswith(f"{BASE}/c/")
    assert _plain("nurture.click").unsign(url.removeprefix(f"{BASE}/c/"))
    assert links.click_target(url.removeprefix(f"{BASE}/c/")) == (
        key,
        "https://example.com/a?b=1&c=d",
    )


def test_tracked_html_signs_each_link_for_its_own_message() -> None:
    links = Links(SECRET, BASE)
    body = '<a href="https://example.com/x?a=1&amp;b=2">x</a><a href="https://u">u</a></body>'
    first = links.track(body, "one", "https://u")
    second = links.track(body, "two", "https://u")
    assert first != second
    for html, key in ((first, "one"), (second, "two")):
        token = html.split('href="')[1].split('"')[0].removeprefix(f"{BASE}/c/")
        assert links.click_target(token) == (key, "https://example.com/x?a=1&b=2")
        assert 'href="https://u"' in html  # the unsubscribe link stays as it is


@pytest.fixture
def counted(postgres_url: str) -> Iterator[tuple[Engine, list[str]]]:
    engine = create_engine(postgres_url)
    statements: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    yield engine, statements
    engine.dispose()


def test_advisory_locks_are_taken_in_one_statement(counted: tuple[Engine, list[str]]) -> None:
    engine, statements = counted
    keys = [*sorted(f"account:{n}.example" for n in range(50)), "sender-rate"]
    mine = text(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
        "AND pid = pg_backend_pid() AND granted"
    )
    with engine.connect() as connection:
        with Session(connection) as session, session.begin():
            before = len(statements)
            lock_for_transaction(session, *keys)
            assert len(statements) - before == 1
            held = session.scalar(mine)
            hashes = session.scalar(
                text("SELECT count(DISTINCT hashtext(k)) FROM unnest(CAST(:k AS text[])) AS k"),
                {"k": keys},
            )
        assert held == hashes == len(keys)
        assert connection.scalar(mine) == 0  # released when the transaction ended


def test_only_tracks_that_ask_what_people_did_read_it(runtime: Runtime) -> None:
    workflows = runtime.project.workflows
    guide, webinar = workflows["guide-nurture"], workflows["webinar-follow-up"]
    # A split and plain emails ask nothing; a clicked() branch and a wait_until do.
    assert not guide.reads_engagement("discovery")
    assert guide.reads_engagement("evaluation")
    assert not guide.reads_engagement("decision")
    assert webinar.reads_engagement("evaluation")
    assert not webinar.reads_engagement("discovery")
    assert not guide.reads_engagement(None)


def test_a_batch_of_discovery_leads_reads_no_events(runtime: Runtime) -> None:
    for n in range(3):
        add_contact(runtime, f"lead@company{n}.example", **PROFILE)
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(runtime.database, "before_cursor_execute", seen)
    try:
        report = runtime.dispatcher.tick()
    finally:
        event.remove(runtime.database, "before_cursor_execute", seen)
    assert report.sent == 3
    assert not [s for s in statements if "FROM events" in s]


def test_lazy_variables_are_the_condition_variables(runtime: Runtime) -> None:
    add_contact(runtime, "ana@acme.example", **PROFILE)
    person = contact(runtime, "ana@acme.example")
    settings = runtime.project.settings
    now = runtime.clock.now() + timedelta(days=3)
    fields = profile(person, settings)
    lazy = LazyVariables(person, settings, now, fields)
    assert lazy["contact"] is fields
    assert dict(lazy) == condition_variables(person, settings, now, fields=fields)
    assert {**lazy} == condition_variables(person, settings, now)


def test_the_sender_rate_reads_one_instant_per_email_of_its_window(
    project_dir: Path, clock: FixedClock, database_url: str
) -> None:
    path = project_dir / "nurture.yaml"
    path.write_text(path.read_text().replace("  account_per_day: 2", "  rate_per_minute: 5"))
    rt = open_runtime(project_dir, clock=clock, database=database_url)
    for i in range(12):
        add_contact(rt, f"p{i}@c{i}.example", **PROFILE)
    start = clock.now()
    assert rt.dispatcher.tick().sent == 5
    clock.advance(timedelta(seconds=30))
    assert rt.dispatcher.tick().sent == 0  # the minute is not over
    clock.advance(timedelta(seconds=31))
    assert rt.dispatcher.tick().sent == 5
    with sessions(rt.database)() as session:
        history = rt.dispatcher.history(session, clock.now(), {}, lock=False)
    # Only the last minute counts for a rate per minute: the first five are out of it.
    assert history.everyone == [clock.now()] * 5
    clock.advance(timedelta(minutes=1))
    assert rt.dispatcher.tick().sent == 2
    assert len(messages(rt)) == 12 and min(m.sent_at for m in messages(rt)) == start
    rt.database.dispose()
