from datetime import timedelta

import pytest

from nurture import expressions
from nurture.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3d", timedelta(days=3)),
        ("20h", timedelta(hours=20)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("90m", timedelta(minutes=90)),
        ("2w", timedelta(weeks=2)),
        ("0d", timedelta(0)),
        (4, timedelta(days=4)),
    ],
)
def test_durations_parse(text: str | int, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "3", "three days", "3 days", "-1d", "1y", "d3"])
def test_bad_durations_say_what_to_write(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_duration_round_trip() -> None:
    assert format_duration(timedelta(days=1, hours=12, minutes=5)) == "1d12h5m"
    assert parse_duration(format_duration(timedelta(hours=20))) == timedelta(hours=20)


def test_conditions_evaluate_safely() -> None:
    variables = {"fit": 35, "engagement": 41.5, "contact": {"sector": "saas", "company_size": None}}
    assert expressions.evaluate("engagement >= 40 and fit >= 30", variables)
    assert not expressions.evaluate("engagement >= 50", variables)
    assert expressions.evaluate("contact.sector in ['saas', 'fintech']", variables)


def test_condition_on_a_missing_value_does_not_hold() -> None:
    variables = {"contact": {"company_size": None}}
    assert not expressions.evaluate("contact.company_size >= 50", variables)


def test_conditions_cannot_reach_python_internals() -> None:
    variables = {"contact": {"sector": "saas"}}
    assert not expressions.evaluate("contact.__class__.__mro__", variables)
    assert not expressions.evaluate("contact.sector.__class__.__subclasses__()", variables)


@pytest.mark.parametrize(
    "source", ["engagement >=", "fit >= 30 and", "(fit", "fit >= 1 }} {{ x", ""]
)
def test_conditions_that_do_not_parse_are_refused(source: str) -> None:
    with pytest.raises(expressions.ExpressionError):
        expressions.check_condition(source, expressions.BASE_NAMES)


def test_unknown_names_are_refused_with_the_known_ones() -> None:
    with pytest.raises(
        expressions.ExpressionError, match=r"unknown name engagment.*known: contact"
    ):
        expressions.check_condition("engagment >= 40", expressions.BASE_NAMES)


def test_durations_in_words() -> None:
    from nurture.core.words import duration

    assert [
        duration(timedelta(**kw))
        for kw in ({"days": 3}, {"days": 2, "hours": 4}, {"days": 1}, {"minutes": 90}, {"days": 14})
    ] == ["3 days", "2 days 4 hours", "1 day", "1 hour 30 minutes", "2 weeks"]
    assert duration(timedelta(days=10)) == "10 days" and duration(timedelta(0)) == "0 seconds"
