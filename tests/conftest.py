"""Fixtures: a copy of the example project, a real SQLite file, and PostgreSQL when reachable."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from nurture.clock import FixedClock
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


@pytest.fixture
def project_dir(tmp_path: Path) -> Path:
    """A fresh copy of this repository's example project."""
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(REPO / "nurture.yaml", root / "nurture.yaml")
    shutil.copytree(REPO / "workflows", root / "workflows")
    shutil.copytree(REPO / "content", root / "content")
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


@pytest.fixture
def postgres_url(postgres_admin: Engine | None) -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards."""
    if postgres_admin is None:
        pytest.skip(f"PostgreSQL not reachable (set {POSTGRES_ENV}); skipped outside CI")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with postgres_admin.connect() as connection:
        connection.execute(text(f"create schema {schema}"))
    base = postgres_admin.url.render_as_string(hide_password=False)
    yield f"{base}?options=-csearch_path%3D{schema}"
    with postgres_admin.connect() as connection:
        connection.execute(text(f"drop schema {schema} cascade"))


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using this runs twice: on a real SQLite file and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'nurture.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def runtime(project_dir: Path, clock: FixedClock, database_url: str) -> Iterator[Runtime]:
    rt = open_runtime(project_dir, clock=clock, database=database_url)
    yield rt
    rt.database.dispose()


@pytest.fixture
def sqlite_runtime(project_dir: Path, clock: FixedClock, tmp_path: Path) -> Iterator[Runtime]:
    rt = open_runtime(project_dir, clock=clock, database=f"sqlite:///{tmp_path / 'nurture.db'}")
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
