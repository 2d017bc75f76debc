"""The outside checker finds each kind of broken invariant (so a clean audit means something)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest

from nurture.audit import MoveRecord, SentRecord, violations
from nurture.config import Settings
from nurture.core.pacing import Policy
from nurture.project import load_project

T = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)  # Tuesday, 10:00 in Paris
POLICY = Policy(
    per_day=1,
    per_week=3,
    min_gap=timedelta(hours=20),
    quiet_start=time(20),
    quiet_end=time(8),
    weekdays=frozenset(range(5)),
    per_month=5,
    account_per_day=2,
)


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_project(Path(__file__).resolve().parents[1]).settings


def sent(
    email: str,
    content: str,
    at: datetime,
    phase: str = "discovery",
    stage: str = "lead",
    account: str | None = None,
) -> SentRecord:
    return SentRecord(email, "Europe/Paris", content, phase, stage, at, account)


def moved(email: str, to: str, at: datetime, reason: str = "event x") -> MoveRecord:
    return MoveRecord(email, None, to, reason, at)


def check(
    settings: Settings,
    records: list[SentRecord],
    moves: list[MoveRecord] | None = None,
    suppressed: dict[str, datetime] | None = None,
) -> list[str]:
    return violations(
        records,
        moves or [moved("a@x.example", "lead", T - timedelta(days=30))],
        suppressed or {},
        settings,
        POLICY,
    )


def test_clean_history_passes(settings: Settings) -> None:
    records = [sent("a@x.example", f"discovery/{i}", T + timedelta(days=i)) for i in range(3)]
    assert check(settings, records) == []


@pytest.mark.parametrize(
    ("records", "words"),
    [
        (
            [
                sent("a@x.example", "discovery/a", T),
                sent("a@x.example", "discovery/a", T + timedelta(days=1)),
            ],
            "sent twice",
        ),
        (
            [sent("a@x.example", "decision/a", T, phase="decision")],
            "decision content sent to a contact in stage lead",
        ),
        ([sent("a@x.example", "discovery/a", T.replace(hour=20))], "quiet hours"),
        ([sent("a@x.example", "discovery/a", T + timedelta(days=4))], "non-sending day"),
        (
            [
                sent("a@x.example", "discovery/a", T),
                sent("a@x.example", "discovery/b", T + timedelta(hours=9)),
            ],
            "more than 1",
        ),
        (
            [
                sent("a@x.example", "discovery/a", T),
                sent("a@x.example", "discovery/b", T + timedelta(hours=19)),
            ],
            "gap under",
        ),
        (
            [sent("a@x.example", f"discovery/{i}", T + timedelta(days=i)) for i in (0, 1, 2, 6)],
            "emails in 7 days",
        ),
        (
            [
                sent("a@x.example", f"discovery/{i}", T + timedelta(days=d))
                for i, d in enumerate((0, 1, 2, 7, 8, 9))
            ],
            "emails in 30 days",
        ),
        (
            [
                sent(f"{n}@x.example", "discovery/a", T + timedelta(minutes=n), account="x.example")
                for n in range(3)
            ],
            "x.example: 3 emails",
        ),
    ],
)
def test_each_broken_rule_is_found(
    settings: Settings, records: list[SentRecord], words: str
) -> None:
    moves = [moved(r.email, "lead", T - timedelta(days=30)) for r in records]
    found = check(settings, records, moves)
    assert any(words in line for line in found), found


def test_stage_mismatch_missing_reason_and_suppression(settings: Settings) -> None:
    records = [sent("a@x.example", "discovery/a", T)]
    moves = [
        moved("a@x.example", "lead", T - timedelta(days=3)),
        moved("a@x.example", "mql", T - timedelta(days=1), " "),
    ]
    found = check(settings, records, moves, {"a@x.example": T - timedelta(hours=1)})
    assert any("ledger says mql" in line for line in found)
    assert any("has no reason" in line for line in found)
    assert any("after suppression" in line for line in found)


def test_a_piece_sent_again_under_its_new_name_is_found(settings: Settings) -> None:
    """`renamed_from:` makes the old and the new id one piece: the audit maps the aliases."""
    records = [
        sent("a@x.example", "discovery/old-name", T),
        sent("a@x.example", "discovery/new-name", T + timedelta(days=1)),
    ]
    assert check(settings, records) == []  # without the aliases, two different pieces
    found = violations(
        records,
        [moved("a@x.example", "lead", T - timedelta(days=30))],
        {},
        settings,
        POLICY,
        aliases={"discovery/old-name": "discovery/new-name"},
    )
    assert found == [
        f"a@x.example: discovery/new-name at {(T + timedelta(days=1)).isoformat()}: "
        "content sent twice (earlier as discovery/old-name)"
    ]
