"""Which step comes next: phase follows stage, nobody gets a piece twice, waits and conditions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from nurture.core.planner import Exhausted, Send, WaitUntil, plan_next
from nurture.workflows import Workflow

T0 = datetime(2026, 6, 1, 9, tzinfo=UTC)
WORKFLOW = Workflow.model_validate(
    {
        "id": "wf",
        "name": "test",
        "enter": {"stages": ["lead"]},
        "tracks": {
            "discovery": [
                {"content": "discovery/a", "wait": "0d"},
                {"content": "discovery/b", "wait": "2d"},
                {"content": "discovery/c", "wait": "3d", "when": "engagement >= 10"},
                {"content": "discovery/d", "wait": "1d"},
            ],
            "evaluation": [{"content": "evaluation/x", "wait": "1d"}],
            "decision": [{"content": "decision/z", "wait": "12h"}],
        },
    }
)


def plan(
    phase: str | None,
    places: dict[str, str],
    received: set[str],
    since: datetime,
    now: datetime,
    engagement: float = 0,
) -> Send | WaitUntil | Exhausted:
    return plan_next(
        WORKFLOW,
        phase,
        places,
        received,
        since=since,
        now=now,  # type: ignore[arg-type]
        variables={"engagement": engagement},
    )


def test_first_step_goes_at_once() -> None:
    result = plan("discovery", {}, set(), T0, T0)
    assert isinstance(result, Send)
    assert result.step.content == "discovery/a" and result.places == {"discovery": "discovery/a"}


def test_wait_counts_from_the_previous_email() -> None:
    result = plan(
        "discovery", {"discovery": "discovery/a"}, {"discovery/a"}, T0, T0 + timedelta(days=1)
    )
    assert isinstance(result, WaitUntil) and result.until == T0 + timedelta(days=2)
    result = plan(
        "discovery", {"discovery": "discovery/a"}, {"discovery/a"}, T0, T0 + timedelta(days=2)
    )
    assert isinstance(result, Send) and result.step.content == "discovery/b"


def test_content_already_received_elsewhere_is_passed_over() -> None:
    result = plan(
        "discovery",
        {"discovery": "discovery/a"},
        {"discovery/a", "discovery/b"},
        T0,
        T0 + timedelta(days=5),
        engagement=20,
    )
    assert isinstance(result, Send) and result.step.content == "discovery/c"
    assert result.places == {"discovery": "discovery/c"}


def test_a_step_whose_condition_fails_is_skipped() -> None:
    result = plan(
        "discovery",
        {"discovery": "discovery/b"},
        {"discovery/a", "discovery/b"},
        T0,
        T0 + timedelta(days=3),
    )
    assert isinstance(result, Send)
    assert result.step.content == "discovery/d" and result.skipped == ("discovery/c",)


def test_stage_change_switches_track_and_keeps_each_position() -> None:
    result = plan(
        "evaluation",
        {"discovery": "discovery/b"},
        {"discovery/a", "discovery/b"},
        T0,
        T0 + timedelta(days=1),
    )
    assert isinstance(result, Send) and result.step.content == "evaluation/x"
    assert result.places == {"discovery": "discovery/b", "evaluation": "evaluation/x"}


def test_used_up_track_waits() -> None:
    result = plan(
        "evaluation", {"evaluation": "evaluation/x"}, {"evaluation/x"}, T0, T0 + timedelta(days=9)
    )
    assert isinstance(result, Exhausted) and "all evaluation content of wf sent" in result.reason


def test_a_stage_without_phase_sends_nothing() -> None:
    result = plan(None, {}, set(), T0, T0 + timedelta(days=9))
    assert isinstance(result, Exhausted)


def test_never_content_of_another_phase() -> None:
    for phase in ("discovery", "evaluation", "decision"):
        now = T0
        received: set[str] = set()
        places: dict[str, str] = {}
        for _ in range(10):
            now += timedelta(days=4)
            result = plan(phase, places, received, T0, now, engagement=50)
            if not isinstance(result, Send):
                break
            assert result.step.content.startswith(phase + "/")
            received.add(result.step.content)
            places = result.places
