"""The store's column types: what they write is what SQLAlchemy's own processors write."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import cast

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import DateTime, Table, create_engine, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

from nurture.contacts import profile
from nurture.db import records
from nurture.models import Base, Contact, UTCDateTime
from nurture.project import load_project

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


def test_records_read_as_the_rows_they_are_made_of(tmp_path: Path, project_dir: Path) -> None:
    """`records` (the dispatcher's claimed rows): the same fields, values and types as the
    Rows, read by name and by position, and a contact's profile is the same from either."""
    engine = create_engine(f"sqlite:///{tmp_path / 'r.db'}")
    Base.metadata.create_all(engine)
    settings = load_project(project_dir).settings
    at = datetime(2026, 3, 2, 8, 30, tzinfo=UTC)
    with Session(engine) as session:
        session.add(
            Contact(
                email="ada@example.com",
                first_name="Ada",
                stage="lead",
                stage_since=at,
                engagement_at=at,
                created_at=at,
                timezone="Europe/Paris",
                custom={"plan": "pro"},
            )
        )
        session.commit()
    query = select(*cast(Table, Contact.__table__).columns)
    with engine.connect() as connection:
        rows = connection.execute(query).all()
        made = records(connection.execute(query))
    assert len(made) == len(rows) == 1
    row, record = rows[0], made[0]
    assert record._fields == row._fields
    assert tuple(record) == tuple(row)
    assert record.stage_since == row.stage_since == at
    assert record.custom == {"plan": "pro"}
    assert profile(record, settings) == profile(row, settings)
    with pytest.raises(AttributeError):
        record.email = "other@example.com"  # type: ignore[misc]
    engine.dispose()
