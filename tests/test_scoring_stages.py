"""The pure deciding parts: fit, engagement, decay, stage rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from nurture.config import Disqualify, Engagement, EngagementRule, FitRule, Settings, StepDecay
from nurture.core.scoring import decayed, engagement_changes, fit_score
from nurture.core.stages import next_stage
from nurture.project import load_project

T0 = datetime(2026, 5, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_project(Path(__file__).resolve().parents[1]).settings


def variables(settings: Settings, **overrides: Any) -> dict[str, Any]:
    contact = {
        "sector": None,
        "company_size": None,
        "seniority": None,
        "role": None,
        "email_domain": "acme.example",
    }
    contact.update(overrides.pop("contact", {}))
    return {
        **settings.lists,
        "contact": contact,
        "fit": 0,
        "engagement": 0,
        "stage": "lead",
        "event": None,
        **overrides,
    }


def test_fit_adds_matching_rules_with_their_labels(settings: Settings) -> None:
    fit, reasons = fit_score(
        settings.scoring.fit,
        variables(settings, contact={"sector": "saas", "company_size": 300, "seniority": "vp"}),
    )
    assert fit == 55
    assert reasons == [
        "Target sector (+20)",
        "Company of 50 to 2,000 people (+15)",
        "Decision maker (+20)",
    ]


def test_negative_fit(settings: Settings) -> None:
    fit, reasons = fit_score(
        settings.scoring.fit,
        variables(settings, contact={"email_domain": "gmail.com", "seniority": "student"}),
    )
    assert fit == -70
    assert "Free webmail address (-20)" in reasons and "Student (-50)" in reasons


def test_a_second_click_on_one_email_adds_nothing(settings: Settings) -> None:
    rules = settings.scoring.engagement.rules
    first = engagement_changes(rules, "email_clicked", {"message_id": 7}, variables(settings))
    assert [(c.points, c.object_key) for c in first] == [(5, "message_id=7")]
    again = engagement_changes(
        rules,
        "email_clicked",
        {"message_id": 7},
        variables(settings),
        scored_objects={(first[0].rule, "message_id=7")},
    )
    assert again == []
    other = engagement_changes(
        rules,
        "email_clicked",
        {"message_id": 8},
        variables(settings),
        scored_objects={(first[0].rule, "message_id=7")},
    )
    assert len(other) == 1


def test_daily_cap_on_a_rule(settings: Settings) -> None:
    rules = settings.scoring.engagement.rules
    capped = engagement_changes(
        rules,
        "email_clicked",
        {"message_id": 9},
        variables(settings),
        scored_today={"email_clicked": 3},
    )
    assert capped == []


def test_conditions_on_event_properties(settings: Settings) -> None:
    rules = settings.scoring.engagement.rules
    pricing = {"url": "https://keel-retention.example/pricing"}
    event = {"kind": "page_visited", **pricing}
    (change,) = engagement_changes(rules, "page_visited", pricing, variables(settings, event=event))
    assert (change.rule, change.points) == ("Pricing page", 15)
    careers = {"url": "https://keel-retention.example/careers"}
    (change,) = engagement_changes(
        rules,
        "page_visited",
        careers,
        variables(settings, event={"kind": "page_visited", **careers}),
    )
    assert change.points == -10
    assert (
        engagement_changes(
            rules, "page_visited", {"url": "/blog"}, variables(settings, event={"url": "/blog"})
        )
        == []
    )


def test_opens_score_nothing(settings: Settings) -> None:
    assert (
        engagement_changes(
            settings.scoring.engagement.rules, "email_opened", {}, variables(settings)
        )
        == []
    )


def test_decay_is_an_exact_half_life() -> None:
    rules = Engagement(half_life=timedelta(days=30))
    assert decayed(80, T0, T0 + timedelta(days=30), rules) == (
        pytest.approx(40),
        T0 + timedelta(days=30),
    )
    assert decayed(80, T0, T0 + timedelta(days=60), rules)[0] == pytest.approx(20)
    assert decayed(80, T0, T0 + timedelta(days=15), rules)[0] == pytest.approx(80 / 2**0.5)
    assert decayed(80, T0, T0, rules) == (80, T0)
    assert decayed(80, T0, T0 + timedelta(days=365), Engagement()) == (80, T0)
    # Rewriting the stored value part-way changes nothing: 30 days then 30 days is 60 days.
    middle, anchor = decayed(80, T0, T0 + timedelta(days=30), rules)
    assert decayed(middle, anchor, T0 + timedelta(days=60), rules)[0] == pytest.approx(20)
    # Near zero is zero, so decay ends.
    assert decayed(1, T0, T0 + timedelta(days=300), rules)[0] == 0.0


def test_step_decay_takes_its_percentage_at_each_period_boundary() -> None:
    rules = Engagement(decay=StepDecay(percent=25, every=timedelta(days=7)))
    monday = datetime(2026, 3, 2, tzinfo=UTC)  # a boundary: weekly periods end on Mondays
    assert monday.weekday() == 0
    friday = monday - timedelta(days=3)
    assert decayed(100, friday, monday - timedelta(seconds=1), rules) == (100, friday)
    assert decayed(100, friday, monday, rules) == (75, monday)
    assert decayed(100, friday, monday + timedelta(days=6), rules) == (75, monday)
    assert decayed(100, friday, monday + timedelta(days=7), rules) == (
        pytest.approx(56.25),
        monday + timedelta(days=7),
    )
    # Stored at the anchor and read later, it is what one read over the whole span gives.
    value, anchor = decayed(100, friday, monday + timedelta(days=1), rules)
    assert decayed(value, anchor, monday + timedelta(days=15), rules)[0] == pytest.approx(
        100 * 0.75**3
    )
    assert decayed(100, friday, monday + timedelta(days=15), rules)[0] == pytest.approx(
        100 * 0.75**3
    )
    # Negative engagement decays toward zero too.
    assert decayed(-40, friday, monday, rules)[0] == -30


def test_decay_settings_refuse_both_kinds_and_empty_periods() -> None:
    with pytest.raises(ValidationError, match="half_life or decay"):
        Engagement(
            half_life=timedelta(days=3), decay=StepDecay(percent=10, every=timedelta(days=7))
        )
    with pytest.raises(ValidationError, match="longer than zero"):
        StepDecay(percent=10, every=timedelta(0))
    with pytest.raises(ValidationError):
        StepDecay(percent=0, every=timedelta(days=1))


def test_rules_are_data_not_code() -> None:
    rule = EngagementRule(event="replied", points=15)
    assert rule.name == "replied"
    fit = FitRule(label="France", when="contact.country == 'FR'", points=5)
    assert fit_score([fit], {"contact": {"country": "FR"}}) == (5, ["France (+5)"])


# Stage rules


def test_an_event_moves_at_once(settings: Settings) -> None:
    move = next_stage(
        settings.stages, settings.disqualify, "contact", variables(settings), "newsletter_signup"
    )
    assert move is not None and (move.to_stage, move.reason) == ("lead", "event newsletter_signup")


def test_scores_move_a_lead_to_mql_with_the_rule_as_reason(settings: Settings) -> None:
    move = next_stage(
        settings.stages, settings.disqualify, "lead", variables(settings, fit=35, engagement=36)
    )
    assert move is not None and move.to_stage == "mql"
    assert move.reason == "rule fit >= 30 and engagement >= 35 (fit 35, engagement 36.0)"


def test_fit_alone_is_not_enough(settings: Settings) -> None:
    assert (
        next_stage(
            settings.stages, settings.disqualify, "lead", variables(settings, fit=90, engagement=5)
        )
        is None
    )


def test_a_meeting_makes_an_sql_from_any_lower_stage(settings: Settings) -> None:
    for stage in ("lead", "mql"):
        move = next_stage(
            settings.stages, settings.disqualify, stage, variables(settings), "meeting_booked"
        )
        assert move is not None and move.to_stage == "sql"


def test_the_highest_matching_stage_wins(settings: Settings) -> None:
    move = next_stage(
        settings.stages, settings.disqualify, "lead", variables(settings, fit=50, engagement=95)
    )
    assert move is not None and move.to_stage == "sql"


def test_moves_never_go_down_by_themselves(settings: Settings) -> None:
    assert (
        next_stage(
            settings.stages, settings.disqualify, "sql", variables(settings), "newsletter_signup"
        )
        is None
    )
    assert (
        next_stage(
            settings.stages,
            settings.disqualify,
            "customer",
            variables(settings, fit=50, engagement=99),
        )
        is None
    )


def test_disqualification_wins_and_is_final(settings: Settings) -> None:
    move = next_stage(
        settings.stages, settings.disqualify, "mql", variables(settings, fit=-45), "meeting_booked"
    )
    assert move is not None and move.to_stage == "disqualified" and "fit <= -40" in move.reason
    move = next_stage(
        settings.stages, settings.disqualify, "lead", variables(settings), "marked_competitor"
    )
    assert move is not None and move.to_stage == "disqualified"
    assert (
        next_stage(
            settings.stages,
            Disqualify(),
            "disqualified",
            variables(settings, fit=99, engagement=99),
            "meeting_booked",
        )
        is None
    )


def test_a_stage_set_by_hand_yields_only_to_a_threshold_crossed_again(settings: Settings) -> None:
    """Lowered by hand to lead with MQL scores: the score rule does not raise them while it
    already held before the event; it does when the event makes it hold (a crossing)."""
    above = variables(settings, fit=35, engagement=50)
    below = variables(settings, fit=35, engagement=20)
    rules = settings.stages, settings.disqualify, "lead"
    assert next_stage(*rules, above, by_hand=True) is None  # no event: nothing crossed
    assert next_stage(*rules, above, "replied", by_hand=True, before=above) is None
    crossed = next_stage(*rules, above, "replied", by_hand=True, before=below)
    assert crossed is not None and crossed.to_stage == "mql"
    # an event that enters a stage, and disqualification, move them as always
    meeting = next_stage(*rules, below, "meeting_booked", by_hand=True, before=below)
    assert meeting is not None and meeting.to_stage == "sql"
    competitor = next_stage(*rules, below, "marked_competitor", by_hand=True, before=below)
    assert competitor is not None and competitor.to_stage == "disqualified"
