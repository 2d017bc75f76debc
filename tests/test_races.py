"""Requests for one person that arrive at the same instant, through the real WSGI server
(waitress, 16 threads) and on PostgreSQL as on SQLite: every answer is a 2xx, and the
tables hold exactly what the same requests sent one by one leave behind."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import requests
import waitress
from sqlalchemy import func, select

from nurture.apikeys import create_key
from nurture.db import sessions, write_transaction
from nurture.feedback import apply_provider_feedback
from nurture.imports import ImportReport, import_csv
from nurture.models import (
    Consent,
    Contact,
    Engaged,
    Enrollment,
    Event,
    Notice,
    ProviderEvent,
    ScoreChange,
    StageMove,
    Suppression,
)
from nurture.providers import Feedback
from nurture.runtime import Runtime
from nurture.web import create_app
from tests.helpers import add_contact
from tests.smtp_server import free_port

RACERS = 16


class Served:
    def __init__(self, url: str, key: str) -> None:
        self.url, self.key = url, key

    def api(self, path: str, body: dict[str, Any]) -> requests.Response:
        return requests.post(
            f"{self.url}/api/v1{path}",
            json=body,
            headers={"Authorization": f"Bearer {self.key}"},
            timeout=120,
        )

    def form(self, name: str, data: dict[str, str]) -> requests.Response:
        return requests.post(f"{self.url}/f/{name}", data=data, allow_redirects=False, timeout=120)


@pytest.fixture
def served(runtime: Runtime) -> Iterator[Served]:
    with sessions(runtime.database).begin() as session:
        key = create_key(session, "races", runtime.clock.now())[1]
    port = free_port()
    # poll(), not select(): closing the server while the loop waits is then no error.
    server = waitress.create_server(
        create_app(runtime), host="127.0.0.1", port=port, threads=RACERS, asyncore_use_poll=True
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield Served(f"http://127.0.0.1:{port}", key)
    server.close()
    thread.join(timeout=30)


def at_once(calls: list[Callable[[], requests.Response]]) -> list[requests.Response]:
    """Run every call in its own thread, all released together by a barrier."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], requests.Response]) -> requests.Response:
        barrier.wait(timeout=60)
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def tally(runtime: Runtime, address: str) -> dict[str, Any]:
    """What the tables hold for one address."""
    with sessions(runtime.database)() as session:
        ids = list(session.scalars(select(Contact.id).where(Contact.email == address)))

        def count(model: Any) -> int:
            query = select(func.count()).select_from(model).where(model.contact_id.in_(ids))
            return session.scalar(query) or 0

        return {
            "contacts": len(ids),
            "events": count(Event),
            "score_changes": count(ScoreChange),
            "stage_moves": count(StageMove),
            "enrollments": count(Enrollment),
            "consents": count(Consent),
            "notices": count(Notice),
            "stage": session.scalar(select(Contact.stage).where(Contact.id.in_(ids))),
            "summary": sorted(
                session.execute(
                    select(
                        Engaged.kind,
                        Engaged.content_id,
                        Engaged.first_at,
                        Engaged.last_at,
                        Engaged.events,
                    ).where(Engaged.contact_id.in_(ids))
                )
            ),
        }


def statuses(replies: list[requests.Response]) -> list[int]:
    return [r.status_code for r in replies]


def mixed_events(address: str) -> list[dict[str, Any]]:
    """16 distinct events: points, a stage move to lead, two workflows entered."""
    kinds = [
        ("page_visited", {"url": "https://keel.example/pricing"}),
        ("webinar_registered", {"webinar": "w1"}),
        ("form_submitted", {"form": "guide"}),
        ("content_downloaded", {"asset": "playbook"}),
    ]
    return [
        {"email": address, "kind": kinds[i % 4][0], "properties": kinds[i % 4][1]}
        for i in range(RACERS)
    ]


def test_sixteen_events_for_one_new_address_are_all_kept(runtime: Runtime, served: Served) -> None:
    for body in mixed_events("one-by-one@acme.example"):
        assert served.api("/events", body).status_code == 200
    replies = at_once(
        [partial(served.api, "/events", body) for body in mixed_events("racer@acme.example")]
    )
    assert statuses(replies) == [200] * RACERS, [r.text for r in replies if r.status_code != 200]
    assert not any(e["duplicate"] for r in replies for e in r.json()["events"])
    expected = tally(runtime, "one-by-one@acme.example")
    assert expected["contacts"] == 1 and expected["events"] == RACERS
    assert expected["enrollments"] == 2 and expected["stage"] == "lead"
    assert tally(runtime, "racer@acme.example") == expected


def test_sixteen_copies_of_one_client_event_id_make_one_event(
    runtime: Runtime, served: Served
) -> None:
    body = {"email": "racer@acme.example", "kind": "webinar_registered", "id": "reg-1"}
    replies = at_once([lambda: served.api("/events", body) for _ in range(RACERS)])
    assert statuses(replies) == [200] * RACERS, [r.text for r in replies if r.status_code != 200]
    answers = [r.json()["events"][0] for r in replies]
    assert sorted(a["duplicate"] for a in answers) == [False] + [True] * (RACERS - 1)
    assert len({a["id"] for a in answers}) == 1 and answers[0]["id"] is not None
    counts = tally(runtime, "racer@acme.example")
    assert (counts["contacts"], counts["events"], counts["enrollments"]) == (1, 1, 2)
    assert counts["stage_moves"] == 2  # created, then lead


def test_sixteen_events_for_one_known_contact_enroll_it_once(
    runtime: Runtime, served: Served
) -> None:
    add_contact(runtime, "racer@acme.example", stage=None)
    add_contact(runtime, "one-by-one@acme.example", stage=None)
    for body in mixed_events("one-by-one@acme.example"):
        assert served.api("/events", body).status_code == 200
    replies = at_once(
        [partial(served.api, "/events", body) for body in mixed_events("racer@acme.example")]
    )
    assert statuses(replies) == [200] * RACERS, [r.text for r in replies if r.status_code != 200]
    assert tally(runtime, "racer@acme.example") == tally(runtime, "one-by-one@acme.example")


def test_sixteen_creations_of_one_contact_make_one(runtime: Runtime, served: Served) -> None:
    body = {"email": "racer@acme.example", "fields": {"first_name": "Ana", "company": "Acme"}}
    replies = at_once([lambda: served.api("/contacts", body) for _ in range(RACERS)])
    assert sorted(statuses(replies)) == [200] * (RACERS - 1) + [201], [r.text for r in replies]
    counts = tally(runtime, "racer@acme.example")
    assert (counts["contacts"], counts["stage_moves"]) == (1, 1)


def test_sixteen_form_posts_for_one_new_address(runtime: Runtime, served: Served) -> None:
    data = {"email": "racer@acme.example", "first_name": "Ana", "company": "Acme"}
    data["consent"] = "yes"
    for _ in range(RACERS):
        reply = served.form("guide", {**data, "email": "one-by-one@acme.example"})
        assert reply.status_code == 303
    replies = at_once([lambda: served.form("guide", data) for _ in range(RACERS)])
    assert statuses(replies) == [303] * RACERS, [r.text for r in replies if r.status_code != 303]
    expected = tally(runtime, "one-by-one@acme.example")
    assert (expected["contacts"], expected["consents"], expected["events"]) == (1, 16, 16)
    assert tally(runtime, "racer@acme.example") == expected


def test_fifteen_double_opt_in_posts_at_once_send_one_confirmation(
    runtime: Runtime, served: Served
) -> None:
    data = {"email": "racer@acme.example", "first_name": "Ana", "consent": "on"}
    replies = at_once([lambda: served.form("newsletter", data) for _ in range(15)])
    assert statuses(replies) == [303] * 15, [r.text for r in replies if r.status_code != 303]
    counts = tally(runtime, "racer@acme.example")
    assert (counts["contacts"], counts["consents"], counts["notices"]) == (1, 1, 1)


def test_csv_imports_at_once_make_each_contact_once(runtime: Runtime, tmp_path: Path) -> None:
    rows = [f"person{i}@acme.example,Person {i}" for i in range(60)]
    paths = []
    for n in range(4):  # the same 60 people in four orders
        path = tmp_path / f"part{n}.csv"
        path.write_text("email,first_name\n" + "\n".join(rows[n * 15 :] + rows[: n * 15]) + "\n")
        paths.append(path)
    barrier = threading.Barrier(len(paths))

    def run(path: Path) -> ImportReport:
        barrier.wait(timeout=60)
        return import_csv(runtime.project, runtime.database, path, {}, runtime.clock.now())

    with ThreadPoolExecutor(len(paths)) as pool:
        reports = list(pool.map(run, paths))
    with sessions(runtime.database)() as session:
        contacts = session.scalar(select(func.count()).select_from(Contact))
        created = session.scalar(
            select(func.count()).select_from(StageMove).where(StageMove.reason == "created")
        )
    assert contacts == created == 60
    assert sum(r.created for r in reports) == 60
    assert sum(r.created + r.updated for r in reports) == 4 * 60


def test_sixteen_people_of_one_account_booking_at_once(runtime: Runtime, served: Served) -> None:
    """Each meeting holds the account's other people: rows locked in every order at once
    (PostgreSQL finds deadlocks; the transaction is run again, not answered with a 500)."""
    people = [f"person{i}@acme.example" for i in range(RACERS)]
    for address in people:
        add_contact(runtime, address, stage=None)
    replies = at_once(
        [
            partial(served.api, "/events", {"email": address, "kind": "meeting_booked"})
            for address in people
        ]
    )
    assert statuses(replies) == [200] * RACERS, [r.text for r in replies if r.status_code != 200]
    for address in people:
        counts = tally(runtime, address)
        assert (counts["events"], counts["stage"]) == (1, "sql")
    with sessions(runtime.database)() as session:
        held = session.scalars(select(Contact.held_until).where(Contact.email.in_(people)))
        assert all(until is not None for until in held)


def test_one_provider_event_delivered_sixteen_times_at_once_applies_once(
    runtime: Runtime,
) -> None:
    """A provider retrying a webhook while the first delivery is still in flight: one
    application, one suppression, the others are replays (and no unique-key error)."""
    add_contact(runtime, "known@acme.example", stage=None)
    barrier = threading.Barrier(RACERS)

    def deliver(address: str) -> bool:
        barrier.wait(timeout=60)
        with write_transaction(runtime.database) as session:
            item = Feedback(f"evt-{address}", address, "hard_bounced", "550 no such user")
            return apply_provider_feedback(session, runtime.project, "ses", item, now)

    now = runtime.clock.now()
    for address in ("known@acme.example", "stranger@acme.example"):
        with ThreadPoolExecutor(RACERS) as pool:
            applied = list(pool.map(deliver, [address] * RACERS))
        assert sorted(applied) == [False] * (RACERS - 1) + [True]
        barrier.reset()
    with sessions(runtime.database)() as session:
        assert session.scalar(select(func.count()).select_from(ProviderEvent)) == 2
        suppressed = sorted(session.scalars(select(Suppression.email)))
        assert suppressed == ["known@acme.example", "stranger@acme.example"]
    assert tally(runtime, "known@acme.example")["events"] == 1
