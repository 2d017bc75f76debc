"""Engine and session set-up: SQLite (WAL, BEGIN IMMEDIATE for writers) or PostgreSQL."""

from __future__ import annotations

import threading
import weakref
from collections import namedtuple
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    ColumnElement,
    Engine,
    Result,
    any_,
    bindparam,
    create_engine,
    event,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import QueryableAttribute, Session, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"
_IMMEDIATE = "nurture_immediate"


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for `url`; on SQLite: WAL, a busy timeout, and writers that lock up front."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite"):
        kwargs.setdefault("connect_args", {"timeout": 60, "check_same_thread": False})
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy emit BEGIN itself, so a writer can ask for BEGIN IMMEDIATE.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin(connection: Any) -> None:
    immediate = connection.get_execution_options().get(_IMMEDIATE, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def among(
    engine: Engine, column: ColumnElement[Any] | QueryableAttribute[Any], values: Iterable[Any]
) -> ColumnElement[bool]:
    """`column IN values`, for the long lists of a batch (its people's ids, addresses).

    PostgreSQL: `column = ANY(:values)`, the list bound as one array. An IN list binds one
    parameter per value, so its statement is as long as the list: SQLAlchemy renders every
    placeholder and psycopg parses the whole text again at each execution (too long for
    its cache), then the server parses and plans it again; the array's statement is short
    and always the same, so each of them does it once. SQLite: an IN list (no arrays)."""
    listed = list(values)
    if is_sqlite(engine):
        return column.in_(listed)
    return column == any_(bindparam(None, listed, type_=ARRAY(column.type)))


#: A row read field by field: a SQLAlchemy Row, or one of `records`' named tuples.
Record: TypeAlias = Any


def records(result: Result[Any]) -> list[Record]:
    """The rows of `result` as named tuples, for a batch whose rows are read field by field.

    A Row's attribute goes through SQLAlchemy's key map (about nine times the cost of its
    index); a named tuple's is a slot of the tuple. The dispatcher reads some thirty fields
    of each claimed enrollment and contact per email. Read-only, like the Row, with `_fields`
    (nurture/contacts.py `profile` reads by position) and `_asdict()`."""
    make = _record(tuple(result.keys()))._make
    return [make(row) for row in result]


@cache
def _record(fields: tuple[str, ...]) -> Any:
    return namedtuple("Record", fields)


def close(engine: Engine) -> None:
    """After a clean stop: on SQLite, copy the write-ahead log into the database file and
    empty it, so the last connection closing removes it (nothing but the file is left);
    then close every pooled connection."""
    if is_sqlite(engine):
        with engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()


def lock_for_transaction(session: Session, *keys: str) -> None:
    """Serialize writers on each of `keys` until this transaction ends, taken one after the
    other in the order given (sort them: two orders of the same keys could deadlock).

    PostgreSQL: transaction-scoped advisory locks on the keys' hashes, all in one statement.
    SQLite needs none: its write transaction (`BEGIN IMMEDIATE`) already admits one writer
    at a time.
    """
    if session.get_bind().dialect.name != "postgresql" or not keys:
        return
    if len(keys) == 1:
        session.execute(select(func.pg_advisory_xact_lock(func.hashtext(keys[0]))))
        return
    session.execute(_LOCK_IN_ORDER, {"keys": list(keys)})


#: One advisory lock per key, in the keys' order (a sorted subquery feeds the aggregate).
_LOCK_IN_ORDER = text(
    "SELECT count(pg_advisory_xact_lock(hashtext(k))) FROM "
    "(SELECT k FROM unnest(CAST(:keys AS text[])) WITH ORDINALITY AS given(k, n) ORDER BY n)"
    " AS ordered"
)


def sessions(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Session]:
    """A session whose transaction holds the write lock from its first statement.

    SQLite: BEGIN IMMEDIATE, so a read-then-write (a cap check then a reservation) cannot
    interleave with another writer; the writers of one process queue on a lock first, since
    SQLite's own busy wait sleeps in steps and lets a queue of writers idle. PostgreSQL: an
    ordinary transaction; callers lock rows.
    """
    if not is_sqlite(engine):
        with Session(bind=engine, expire_on_commit=False) as session, session.begin():
            yield session
        return
    with _writer_lock(engine), engine.connect() as connection:
        connection = connection.execution_options(**{_IMMEDIATE: True})
        with Session(bind=connection, expire_on_commit=False) as session, session.begin():
            yield session


_WRITER_LOCKS: weakref.WeakKeyDictionary[Engine, threading.Lock] = weakref.WeakKeyDictionary()


_LOCKS_LOCK = threading.Lock()


#: PostgreSQL's "run it again" errors: serialization failure, deadlock detected.
_RETRYABLE = frozenset({"40001", "40P01"})
T = TypeVar("T")


def write_retrying(engine: Engine, work: Callable[[Session], T], attempts: int = 10) -> T:
    """`work(session)` in a `write_transaction`, run again from the start when PostgreSQL
    ends the transaction as a deadlock or a serialization failure: what concurrent requests
    that lock rows in different orders get (a batch holding a known person's account and
    creating a new person of it, against a request creating that same person). `work` must
    change nothing but the database, so that a run can be redone."""
    for attempt in range(1, attempts + 1):
        try:
            with write_transaction(engine) as session:
                return work(session)
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) not in _RETRYABLE or attempt == attempts:
                raise
    raise AssertionError("unreachable")


def _writer_lock(engine: Engine) -> threading.Lock:
    with _LOCKS_LOCK:
        return _WRITER_LOCKS.setdefault(engine, threading.Lock())


def alembic_config(engine: Engine | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if engine is not None:
        config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision` with the Alembic migrations."""
    command.upgrade(alembic_config(engine), revision)


def claim_due(
    session: Session, model: Any, status: str, now: datetime, lease: timedelta, limit: int
) -> list[Any]:
    """Rows of `model` in `status` whose `next_attempt_at` has come, pushed `lease` ahead so
    no other worker takes them while this one works (a dead worker's rows come back)."""
    rows = list(
        session.scalars(
            select(model)
            .where(model.status == status, model.next_attempt_at <= now)
            .order_by(model.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    for row in rows:
        row.next_attempt_at = now + lease
    return rows


def release_claimed(database: Engine, model: Any, ids: list[int], at: datetime) -> None:
    """Give back rows taken by `claim_due` and not worked on (a stop came): due at `at`."""
    if ids:
        with write_transaction(database) as session:
            session.execute(update(model).where(model.id.in_(ids)).values(next_attempt_at=at))
