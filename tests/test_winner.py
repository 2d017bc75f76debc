"""The winner rule of subject tests (nurture/core/winner.py) and how pages write times and
durations (nurture/web/filters.py): pure functions, no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from nurture.core.winner import MIN_SENDS, Arm, decide, two_proportion_p
from nurture.web.filters import human_duration, local_time


def test_no_winner_below_the_minimum_sends_however_wide_the_gap() -> None:
    verdict = decide([Arm(99, 60), Arm(120, 1)])
    assert (
        verdict.winner is None
        and "not enough sends" in verdict.reason
        and "#1 (99)" in verdict.reason
    )
    assert MIN_SENDS == 100


def test_a_clear_difference_wins_a_small_one_does_not() -> None:
    clear = decide([Arm(400, 20), Arm(400, 48)])
    assert clear.winner == 1 and "#2 wins" in clear.reason
    assert clear.p_values[0] < 0.05
    close = decide([Arm(400, 20), Arm(400, 28)])
    assert close.winner is None and "#2 leads" in close.reason and "not significant" in close.reason


def test_the_z_test_matches_a_hand_computation() -> None:
    # 20/400 vs 48/400: pooled 68/800; z = (0.12 - 0.05) / sqrt(.085 * .915 * 2/400) = 3.55
    assert two_proportion_p(Arm(400, 48), Arm(400, 20)) == pytest.approx(0.000386, rel=0.01)
    assert two_proportion_p(Arm(200, 0), Arm(200, 0)) == 1.0


def test_too_few_clicks_for_the_normal_approximation_call_no_winner() -> None:
    verdict = decide([Arm(150, 0), Arm(150, 4)])
    assert verdict.winner is None and "too few clicks" in verdict.reason


def test_three_subjects_need_the_bonferroni_corrected_level() -> None:
    # Against each other subject p is about 0.03: enough for two subjects, not for three.
    two = decide([Arm(500, 25), Arm(500, 42)])
    assert two.winner == 1 and 0.01 < two.p_values[0] < 0.05
    three = decide([Arm(500, 25), Arm(500, 42), Arm(500, 25)])
    assert three.winner is None and "needed under 0.025" in three.reason


def test_one_subject_is_no_test() -> None:
    assert decide([Arm(1000, 300)]).winner is None


def test_times_are_shown_in_the_viewers_zone_to_the_minute() -> None:
    at = datetime(2025, 3, 14, 8, 5, 59, 123456, tzinfo=UTC)
    assert local_time(at, "Europe/Paris") == "14 Mar 2025, 09:05"
    assert local_time(at.replace(month=7), "Europe/Paris") == "14 Jul 2025, 10:05"  # summer time
    assert local_time(at.isoformat(), "America/New_York") == "14 Mar 2025, 04:05"
    assert local_time(at.replace(tzinfo=None), "UTC") == "14 Mar 2025, 08:05"  # naive is UTC
    assert local_time(None, "UTC") == "—"


def test_durations_read_as_words() -> None:
    assert human_duration("30d") == "30 days"
    assert human_duration("1d12h") == "1 day 12 hours"
    assert human_duration("14d") == "2 weeks"
    assert human_duration("20h") == "20 hours"
    assert human_duration(timedelta(minutes=1)) == "1 minute"
    assert human_duration("19:00-08:30") == "19:00-08:30"  # not a duration: unchanged
