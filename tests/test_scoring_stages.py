"""The pure deciding parts: fit, engagement, decay, stage rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from nurture.config import Disqualify, EngagementRule, FitRule, Settings
from nurture.project import load_project
from nurture.scoring import decayed, engagement_changes, fit_score
from nurture.stages import next_stage

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
    half_life = timedelta(days=30)
    assert decayed(80, T0, T0 + timedelta(days=30), half_life) == pytest.approx(40)
    assert decayed(80, T0, T0 + timedelta(days=60), half_life) == pytest.approx(20)
    assert decayed(80, T0, T0 + timedelta(days=15), half_life) == pytest.approx(80 / 2**0.5)
    assert decayed(80, T0, T0, half_life) == 80
    assert decayed(80, T0, T0 + timedelta(days=365), None) == 80


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
