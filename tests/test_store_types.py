"""The store's column types: what they write is what SQLAlchemy's own processors write."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import DateTime
from sqlalchemy.dialects import sqlite

from nurture.models import UTCDateTime

_SQLITE = sqlite.dialect()


def _generic(value: datetime) -> str:
    """process_bind_param, then SQLite's DATETIME processor: the path the fast one replaces."""
    naive = UTCDateTime().process_bind_param(value, _SQLITE)
    processor = DateTime().dialect_impl(_SQLITE).bind_processor(_SQLITE)
    assert processor is not None
    return str(processor(naive))


@given(
    st.datetimes(
        min_value=datetime(1, 1, 2),  # noqa: DTZ001 - hypothesis bounds are naive
        max_value=datetime(9999, 12, 30),  # noqa: DTZ001
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))]),
    )
)
def test_the_sqlite_text_of_an_instant_is_sqlalchemys(value: datetime) -> None:
    fast = UTCDateTime().dialect_impl(_SQLITE).bind_processor(_SQLITE)
    assert fast is not None
    assert fast(value) == _generic(value)
    assert fast(value) == _generic(value)  # the instant kept from the last call


def test_a_naive_datetime_is_refused_and_none_stays_none() -> None:
    fast = UTCDateTime().dialect_impl(_SQLITE).bind_processor(_SQLITE)
    assert fast is not None
    assert fast(None) is None
    with pytest.raises(ValueError, match="naive datetime"):
        fast(datetime(2026, 3, 2, 8, 0))  # noqa: DTZ001 - the naive one refused


def test_message_keys_are_16_url_safe_characters_and_never_repeat() -> None:
    from nurture.engine import _MessageKeys

    keys = _MessageKeys()
    drawn = [keys.draw() for _ in range(5000)]  # across many refills
    assert len(set(drawn)) == len(drawn)
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{16}", key) for key in drawn)
