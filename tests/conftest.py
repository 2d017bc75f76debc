"""Fixtures: a copy of the example project, a real SQLite file, and PostgreSQL when reachable.

The databases the fixtures hand out are already at the newest migration: the migrations run
once per session (per xdist worker) into a template, a SQLite file copied per test and, on
PostgreSQL, the statements they sent replayed into each test's fresh schema. The tests of the
migrations themselves take `empty_database_url` and run them from scratch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event, text

import nurture.project
from nurture.clock import FixedClock
from nurture.content import Piece
from nurture.db import close, make_engine, upgrade
from nurture.handoffs import SECRET_ENV
from nurture.runtime import Runtime, open_runtime
from tests.helpers import configure_handoff
from tests.receiver import Receiver

REPO = Path(__file__).resolve().parents[1]
POSTGRES_ENV = "NURTURE_TEST_POSTGRES_URL"
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
#: A Monday, 09:00 in Paris.
MONDAY_MORNING = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


#: Slow tiers by folder or file: the default run leaves them out (see addopts in pyproject).
_TIERS = {"e2e": "browser", "test_scale.py": "chaos"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for part in item.path.parts[-2:]:
            if part in _TIERS:
                item.add_marker(_TIERS[part])


def _piece_cache(load: Callable[..., Piece]) -> Callable[..., Piece]:
    """`load_piece` (reading, compiling and checking one MJML file: most of a project load)
    remembered by everything it reads: the file's path under `content/` and its text, the
    name it reports, the sample variables and, when it has an `<mj-include>`, every file under
    `content/` (the partials). Each test copies the project into a folder of its own, so
    without this every test compiled the same files again. Only loads that succeed are kept;
    each call returns a fresh Piece at the caller's path (templates and front matter are never
    changed after the load)."""
    loaded: dict[str, Piece] = {}

    def cached(path: Path, content_root: Path, display: str, variables: Mapping[str, Any]) -> Piece:
        raw = path.read_bytes()
        digest = hashlib.sha256()
        for part in (str(path.relative_to(content_root)), display):
            digest.update(part.encode() + b"\0")
        digest.update(json.dumps(variables, sort_keys=True, default=repr).encode() + b"\0")
        digest.update(raw + b"\0")
        if b"mj-include" in raw:
            for file in sorted(content_root.rglob("*")):
                if file.is_file():
                    digest.update(str(file.relative_to(content_root)).encode() + b"\0")
                    digest.update(file.read_bytes() + b"\0")
        key = digest.hexdigest()
        if key not in loaded:
            loaded[key] = load(path, content_root, display, variables)
        return dataclasses.replace(loaded[key], path=path, translations={})

    return cached


nurture.project.load_piece = _piece_cache(nurture.project.load_piece)  # type: ignore[attr-defined]


def copy_example(root: Path) -> Path:
    """This repository's example project, copied into `root`."""
    root.mkdir()
    shutil.copy(REPO / "nurture.yaml", root / "nurture.yaml")
    shutil.copytree(REPO / "workflows", root / "workflows")
    shutil.copytree(REPO / "content", root / "content")
    return root


@pytest.fixture
def example_dir(tmp_path: Path) -> Path:
    """The example project as it is in the repository, its 10% holdout included."""
    return copy_example(tmp_path / "example")


@pytest.fixture
def project_dir(tmp_path: Path) -> Path:
    """A fresh copy of this repository's example project, without its holdout."""
    root = copy_example(tmp_path / "project")
    # The tests written for everyone-is-emailed keep it so: the example's holdout is
    # exercised by tests/test_holdouts.py (`example_dir`, the files as they are).
    guide = root / "workflows" / "guide-nurture.yaml"
    guide.write_text(guide.read_text(encoding="utf-8").replace("\nholdout: 10%\n", "\n"))
    return root


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(MONDAY_MORNING)


def _postgres_admin() -> Engine | None:
    url = os.environ.get(POSTGRES_ENV, DEFAULT_POSTGRES)
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text("select 1"))
    except Exception as exc:
        engine.dispose()
        if os.environ.get("CI"):
            raise RuntimeError(
                f"CI is set but PostgreSQL is not reachable at {url}: {exc}"
            ) from exc
        return None
    return engine


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[Engine | None]:
    engine = _postgres_admin()
    yield engine
    if engine is not None:
        engine.dispose()


def _schema_url(admin: Engine, schema: str) -> str:
    base = admin.url.render_as_string(hide_password=False)
    return f"{base}?options=-csearch_path%3D{schema}"


@pytest.fixture(scope="session")
def _postgres_schemas(postgres_admin: Engine | None) -> Iterator[list[str]]:
    """The schemas this session made; dropped at its end, a few to a statement (a drop per
    test made each teardown wait on PostgreSQL; all in one statement would run out of locks)."""
    made: list[str] = []
    yield made
    if postgres_admin is not None:
        with postgres_admin.connect() as connection:
            for start in range(0, len(made), 8):
                connection.execute(
                    text(f"drop schema {', '.join(made[start : start + 8])} cascade")
                )


def _new_schema(admin: Engine, made: list[str]) -> str:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.execute(text(f"create schema {schema}"))
    made.append(schema)
    return schema


@pytest.fixture(scope="session")
def _postgres_migrations(
    postgres_admin: Engine | None, _postgres_schemas: list[str]
) -> list[tuple[str, Any]]:
    """Every statement but the reads that the migrations sent to a fresh schema, in order."""
    if postgres_admin is None:
        return []
    engine = make_engine(
        _schema_url(postgres_admin, _new_schema(postgres_admin, _postgres_schemas))
    )
    sent: list[tuple[str, Any]] = []

    @event.listens_for(engine, "before_cursor_execute")
    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if not statement.lstrip().upper().startswith(("SELECT", "WITH")):
            sent.append((statement, parameters))

    upgrade(engine)
    engine.dispose()
    return sent


@pytest.fixture
def empty_postgres_url(postgres_admin: Engine | None, _postgres_schemas: list[str]) -> str:
    """A PostgreSQL URL whose search_path is a fresh, empty schema (no migration run)."""
    if postgres_admin is None:
        pytest.skip(f"PostgreSQL not reachable (set {POSTGRES_ENV}); skipped outside CI")
    return _schema_url(postgres_admin, _new_schema(postgres_admin, _postgres_schemas))


@pytest.fixture
def postgres_url(
    postgres_admin: Engine | None,
    _postgres_schemas: list[str],
    _postgres_migrations: list[tuple[str, Any]],
) -> str:
    """A PostgreSQL URL whose search_path is a fresh schema at the newest migration (the
    session's migration replayed), dropped at the session's end."""
    if postgres_admin is None:
        pytest.skip(f"PostgreSQL not reachable (set {POSTGRES_ENV}); skipped outside CI")
    schema = _new_schema(postgres_admin, _postgres_schemas)
    # The admin engine commits each statement; the replay is one transaction of its own.
    with postgres_admin.connect() as admin:
        connection = admin.execution_options(isolation_level="READ COMMITTED")
        with connection.begin():
            connection.execute(text(f"set local search_path to {schema}"))
            for statement, parameters in _postgres_migrations:
                connection.exec_driver_sql(statement, parameters)
    return _schema_url(postgres_admin, schema)


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file the migrations brought to the newest revision, once per session."""
    path = tmp_path_factory.mktemp("template") / "nurture.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    close(engine)  # the write-ahead log folded into the file: the file is the whole database
    return path


def migrated_sqlite(template: Path, path: Path) -> str:
    """A copy of the migrated template at `path`, as a URL."""
    shutil.copyfile(template, path)
    return f"sqlite:///{path}"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using this runs twice: on a real SQLite file and on PostgreSQL, both already
    migrated to the newest revision."""
    if request.param == "sqlite":
        return migrated_sqlite(request.getfixturevalue("_sqlite_template"), tmp_path / "nurture.db")
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """`database_url` before any migration: for the tests of the migrations themselves."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.db'}"
    return str(request.getfixturevalue("empty_postgres_url"))


@pytest.fixture
def runtime(project_dir: Path, clock: FixedClock, database_url: str) -> Iterator[Runtime]:
    rt = open_runtime(project_dir, clock=clock, database=database_url)
    yield rt
    rt.database.dispose()


@pytest.fixture
def sqlite_runtime(
    project_dir: Path, clock: FixedClock, tmp_path: Path, _sqlite_template: Path
) -> Iterator[Runtime]:
    database = migrated_sqlite(_sqlite_template, tmp_path / "nurture.db")
    rt = open_runtime(project_dir, clock=clock, database=database)
    yield rt
    rt.database.dispose()


#: The hand-off webhook's secret in tests.
HANDOFF_SECRET = "test-handoff-secret"


@pytest.fixture
def crm() -> Iterator[Receiver]:
    """A CRM's webhook receiver on loopback."""
    with Receiver() as running:
        yield running


@pytest.fixture
def crm_runtime(
    project_dir: Path,
    clock: FixedClock,
    database_url: str,
    crm: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Runtime]:
    """The example project with its hand-off webhook pointed at `crm`."""
    monkeypatch.setenv(SECRET_ENV, HANDOFF_SECRET)
    configure_handoff(project_dir, crm.url)
    runtime = open_runtime(project_dir, clock=clock, database=database_url)
    yield runtime
    runtime.database.dispose()
