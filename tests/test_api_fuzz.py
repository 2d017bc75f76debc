"""The API fuzzed from its own OpenAPI description (schemathesis), on SQLite and PostgreSQL:
no input gives a 5xx, and every answer matches what the description promises (status codes,
content types, bodies); every check runs, positive_data_acceptance included: whatever the
description allows is accepted, whatever it forbids is refused."""

from __future__ import annotations

import shutil
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import schemathesis
import waitress
from flask import Flask
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.config import SchemathesisConfig
from sqlalchemy import Engine, text

from nurture.apikeys import create_key
from nurture.clock import FixedClock
from nurture.core.eventtime import EARLIEST
from nurture.db import sessions
from nurture.project import load_project
from nurture.runtime import open_runtime
from nurture.web import create_app
from nurture.web.api import OWN_ROUTE
from nurture.web.schemas import openapi
from tests.conftest import MONDAY_MORNING
from tests.helpers import PROFILE, add_contact
from tests.smtp_server import free_port

# The description the app serves is built by this same function; a test below checks so.
_settings = load_project(Path(__file__).resolve().parents[1]).settings
DESCRIPTION = openapi(
    "Keel nurture API",
    "fuzz",
    kinds=sorted(_settings.event_kinds - set(OWN_ROUTE)),
    stages=_settings.stage_names,
    custom_fields=_settings.custom_fields,
)
# The quick run skips schemathesis' coverage phase: its boundary cases include two batches
# of 1,000 events for one person, which take a minute on a loaded machine. The `fuzz` run
# below has it, with more examples.
schema = schemathesis.openapi.from_dict(
    DESCRIPTION,
    config=SchemathesisConfig.from_dict({"phases": {"coverage": {"enabled": False}}}),
)
full_schema = schemathesis.openapi.from_dict(DESCRIPTION)


def _times() -> st.SearchStrategy[str]:
    """An event's `time` as the description says it: RFC 3339 with an offset, from 1970 to
    now. JSON Schema has no words for "not in the future" (the description says it in
    prose), so the fuzzer is told here; every other rule of the description is its own."""
    offsets = st.integers(-12 * 60, 14 * 60).map(lambda m: timedelta(minutes=m))
    instants = st.datetimes(
        min_value=EARLIEST.replace(tzinfo=None) + timedelta(days=1),
        max_value=MONDAY_MORNING.replace(tzinfo=None),
    )

    def render(instant: datetime, offset: timedelta) -> str:
        local = instant.replace(tzinfo=UTC).astimezone(timezone(offset))
        return local.isoformat()

    return st.builds(render, instants, offsets)


schemathesis.openapi.format("date-time", _times())


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def served(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_admin: Engine | None,
) -> Iterator[tuple[Flask, str, str]]:
    """The app on a real HTTP server (waitress) on loopback, and an API key; its database a
    SQLite file, then a fresh PostgreSQL schema."""
    root = Path(__file__).resolve().parents[1]
    project = tmp_path_factory.mktemp("fuzz") / "project"
    shutil.copytree(
        root,
        project,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "outbox", "*.db*", "instance", "__pycache__"
        ),
    )
    database = f"sqlite:///{project / 'fuzz.db'}"
    pg_schema = None
    if request.param == "postgres":
        if postgres_admin is None:
            pytest.skip("PostgreSQL not reachable; skipped outside CI")
        pg_schema = f"t_{uuid.uuid4().hex[:12]}"
        with postgres_admin.connect() as connection:
            connection.execute(text(f"create schema {pg_schema}"))
        base = postgres_admin.url.render_as_string(hide_password=False)
        database = f"{base}?options=-csearch_path%3D{pg_schema}"
    runtime = open_runtime(project, clock=FixedClock(MONDAY_MORNING), database=database)
    add_contact(runtime, "ana@acme.example", **PROFILE)
    with sessions(runtime.database).begin() as session:
        key = create_key(session, "fuzz", runtime.clock.now())[1]
    app = create_app(runtime)
    port = free_port()
    server = waitress.create_server(app, host="127.0.0.1", port=port, threads=4)
    threading.Thread(target=server.run, daemon=True).start()
    yield app, key, f"http://127.0.0.1:{port}"
    server.close()
    runtime.database.dispose()
    if pg_schema is not None and postgres_admin is not None:
        with postgres_admin.connect() as connection:
            connection.execute(text(f"drop schema {pg_schema} cascade"))


def test_the_fuzzed_description_is_the_served_one(served: tuple[Flask, str, str]) -> None:
    app, _, _ = served
    live = app.test_client().get("/api/v1/openapi.json").json
    assert live is not None
    assert live["paths"] == DESCRIPTION["paths"]
    assert live["components"] == DESCRIPTION["components"]


def _check(case: schemathesis.Case, served: tuple[Flask, str, str]) -> None:
    _, key, base_url = served
    # Every check, positive_data_acceptance and negative_data_rejection included. A batch of
    # 1,000 events for one person takes seconds on a loaded machine: a generous timeout.
    case.call_and_validate(
        base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=120
    )


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_makes_the_api_fail(
    case: schemathesis.Case, served: tuple[Flask, str, str]
) -> None:
    _check(case, served)


@pytest.mark.fuzz
@full_schema.parametrize()
@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_makes_the_api_fail_at_the_boundaries(
    case: schemathesis.Case, served: tuple[Flask, str, str], request: pytest.FixtureRequest
) -> None:
    """The coverage phase too: each limit, each limit + 1, every enum value, every type."""
    if "fuzz" not in (request.config.option.markexpr or ""):
        pytest.skip("minutes per database: run with -m fuzz")
    _check(case, served)
