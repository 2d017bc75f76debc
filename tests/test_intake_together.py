"""Event requests that arrive together share a commit (intake.record_together): each gets
what it would have got alone, in order of arrival, and one request's fault fails it only."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from nurture.db import _writer_lock, write_transaction
from nurture.intake import _QUEUES, Incoming, Recorded, record_events, record_together
from tests.helpers import wait_until
from tests.test_intake import events, fresh, state


def _grouped(rt: Any, requests: list[list[Incoming]]) -> list[list[Recorded] | Exception]:
    """Run `requests` in threads so that all but the first wait together: the first leads
    and waits for the write lock the test holds; the others queue behind it in order."""
    now = rt.clock.now()
    results: list[list[Recorded] | Exception] = [[] for _ in requests]

    def send(n: int) -> None:
        try:
            results[n] = record_together(rt.database, rt.project, requests[n], now)
        except Exception as exc:  # what the request's caller would get
            results[n] = exc

    lock = _writer_lock(rt.database)
    threads = [threading.Thread(target=send, args=(n,)) for n in range(len(requests))]
    with lock:  # the leader's transaction cannot start yet
        threads[0].start()
        wait_until(lambda: rt.database in _QUEUES and _QUEUES[rt.database].led, "a leader")
        for n, thread in enumerate(threads[1:], 1):
            thread.start()  # in order: each queues behind the one before
            wait_until(lambda n=n: len(_QUEUES[rt.database].waiting) == n, f"request {n} queued")
    for thread in threads:
        thread.join()
    return results


def test_requests_together_equal_requests_one_after_the_other(
    project_dir: Path, tmp_path: Path
) -> None:
    together = fresh(project_dir, tmp_path, "together.db")
    alone = fresh(project_dir, tmp_path, "alone.db")
    items = events(7, 40)
    requests = [items[n : n + 4] for n in range(0, len(items), 4)]
    grouped = _grouped(together, requests)
    expected = []
    for request in requests:
        with write_transaction(alone.database) as session:
            expected.append(record_events(session, alone.project, request, alone.clock.now()))
    assert state(together) == state(alone)
    assert [[(r.duplicate, r.stage) for r in g] for g in grouped if isinstance(g, list)] == [
        [(r.duplicate, r.stage) for r in e] for e in expected
    ]
    assert not _QUEUES[together.database].waiting and not _QUEUES[together.database].led


def test_a_fault_fails_its_own_request_only(project_dir: Path, tmp_path: Path) -> None:
    together = fresh(project_dir, tmp_path, "fault.db")
    good = [Incoming("ana@acme.example", "page_visited", None, {"url": "/pricing"}, "a1")]
    bad = [Incoming("bo@beta.example", "page_visited", None, {"url": object()}, "b1")]
    later = [Incoming("cy@gmail.com", "page_visited", None, {"url": "/demo"}, "c1")]
    first, faulty, last = _grouped(together, [good, bad, later])
    assert isinstance(faulty, Exception)
    assert isinstance(first, list) and isinstance(last, list)
    assert [r.duplicate for r in first + last] == [False, False]
    stored = {e[2] for e in state(together)["events"]}
    assert stored == {"a1", "c1"}
