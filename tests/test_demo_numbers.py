"""Every number the demo shows equals a count made by hand in SQL on the demo database.

A small demo database is built the way `nurture demo` builds it (the simulator, the clock at
the simulation's end); then the funnel, ever reached, conversions, sends, opens, clicks, sends
per day, per workflow step and per subject, as reports.py, stats.py and `nurture stats`
give them, are checked one by one against plain SQL written here.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from nurture.cli import main
from nurture.db import make_engine
from nurture.project import load_project
from nurture.reports import funnel_history, overview, workflow_stats
from nurture.simulate import START, simulate
from nurture.stats import content_stats

DAYS = 21
CONTACTS = 80


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, Engine]]:
    root = tmp_path_factory.mktemp("demo")
    repo = Path(__file__).resolve().parents[1]
    project = root / "project"
    project.mkdir()
    for name in ("nurture.yaml", "workflows", "content"):
        source = repo / name
        if source.is_dir():
            shutil.copytree(source, project / name)
        else:
            (project / name).write_bytes(source.read_bytes())
    database = root / "demo.db"
    simulate(project, days=DAYS, contacts=CONTACTS, seed=1, database=str(database))
    engine = make_engine(f"sqlite:///{database}")
    yield project, database, engine
    engine.dispose()


def at(instant: datetime) -> str:
    """A UTC instant as the SQLite database stores it."""
    return instant.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def rows(engine: Engine, sql: str, **params: Any) -> list[Any]:
    with engine.connect() as connection:
        return list(connection.execute(text(sql), params).all())


def one(engine: Engine, sql: str, **params: Any) -> int:
    return int(rows(engine, sql, **params)[0][0])


NOW = START + timedelta(days=DAYS)


def test_funnel_ever_reached_and_conversions(demo: tuple[Path, Path, Engine]) -> None:
    project, _, engine = demo
    settings = load_project(project).settings
    names = [s.name for s in settings.stages]
    with Session(engine) as session:
        history = funnel_history(session, settings, NOW)
        shown = overview(session, settings, NOW, history)
    people = dict(rows(engine, "SELECT stage, count(*) FROM contacts GROUP BY stage"))
    assert sum(people.values()) == CONTACTS
    assert [step.stage for step in shown.funnel] == names
    for index, step in enumerate(shown.funnel):
        assert step.people == people.get(step.stage, 0), step
        later = ", ".join(f"'{name}'" for name in names[index:])
        reached = one(
            engine,
            f"SELECT count(DISTINCT contact_id) FROM stage_moves WHERE to_stage IN ({later})",
        )
        assert step.reached == reached, step
        assert step.reached <= CONTACTS
    for step, following in zip(shown.funnel, shown.funnel[1:], strict=False):
        expected = following.reached / step.reached if step.reached else None
        assert step.conversion == expected, step
    assert shown.funnel[1].reached > 0, "some people got past the first stage"
    assert shown.disqualified == people.get("disqualified", 0)
    for label, cost, leads, per_lead in shown.cost_per_lead:
        source = next(k for k, v in settings.sources.items() if (v.label or k) == label)
        stages = ", ".join(f"'{name}'" for name in names)
        assert leads == one(
            engine,
            f"SELECT count(*) FROM contacts WHERE source = :s AND stage IN ({stages})",
            s=source,
        )
        assert per_lead == (cost / leads if leads else None)
    assert sum(leads for _, _, leads, _ in shown.cost_per_lead) > 0


def test_sends_opens_clicks_and_days_of_a_living_project(demo: tuple[Path, Path, Engine]) -> None:
    project, _, engine = demo
    settings = load_project(project).settings
    with Session(engine) as session:
        history = funnel_history(session, settings, NOW)
        shown = overview(session, settings, NOW, history)
    day, week, month = (at(NOW - timedelta(days=n)) for n in (1, 7, 30))
    sent = "SELECT count(*) FROM messages WHERE status = 'sent' AND sent_at >= :since"
    assert shown.sent_today == one(engine, sent, since=day) > 0
    assert shown.sent_week == one(engine, sent, since=week) > 0
    assert shown.delivered_month == one(engine, sent, since=month)
    real = (
        "SELECT count(*) FROM events WHERE kind = :kind AND machine IS NULL "
        "AND occurred_at >= :since"
    )
    assert shown.opens_week == one(engine, real, kind="email_opened", since=week) > 0
    assert shown.clicks_week == one(engine, real, kind="email_clicked", since=week) > 0
    deferred = rows(engine, "SELECT rules FROM deferrals WHERE at >= :since", since=week)
    by_rule: dict[str, int] = {}
    for (rules,) in deferred:
        for rule in rules.split(","):
            by_rule[rule.strip()] = by_rule.get(rule.strip(), 0) + 1
    assert shown.deferred_week == by_rule
    start = (NOW - timedelta(days=13)).replace(hour=0, minute=0, second=0, microsecond=0)
    per_day = dict(
        rows(
            engine,
            "SELECT date(sent_at), count(*) FROM messages WHERE status = 'sent' "
            "AND sent_at >= :start GROUP BY date(sent_at)",
            start=at(start),
        )
    )
    assert len(shown.sends_per_day) == 14
    assert shown.sends_per_day == [(d, per_day.get(d, 0)) for d, _ in shown.sends_per_day]
    last_week = [n for _, n in shown.sends_per_day[-7:]]
    assert sum(1 for n in last_week if n) >= 5, f"the last week is alive: {last_week}"
    moves = dict(
        rows(
            engine,
            "SELECT date(at), count(*) FROM stage_moves WHERE at >= :start GROUP BY date(at)",
            start=at(start),
        )
    )
    assert shown.moves_per_day == [(d, moves.get(d, 0)) for d, _ in shown.moves_per_day]
    assert sum(n for _, n in shown.moves_per_day[-7:]) > 0


ENGAGED = """
    SELECT m.{key}, count(DISTINCT e.message_id) FROM events e
    JOIN messages m ON m.id = e.message_id
    WHERE e.kind = :kind AND e.machine IS NULL GROUP BY m.{key}
"""


def test_every_open_and_click_belongs_to_its_email(demo: tuple[Path, Path, Engine]) -> None:
    _, _, engine = demo
    unlinked = one(
        engine,
        "SELECT count(*) FROM events WHERE kind IN ('email_opened', 'email_clicked') "
        "AND message_id IS NULL",
    )
    assert unlinked == 0
    assert one(engine, "SELECT count(*) FROM events WHERE kind = 'email_opened'") > 0


def test_per_content_and_subject(demo: tuple[Path, Path, Engine]) -> None:
    project, database, engine = demo
    with Session(engine) as session:
        lines = content_stats(session)
    key = "content_id || '#' || coalesce(subject_variant, -1)"
    sent = dict(
        rows(engine, f"SELECT {key}, count(*) FROM messages WHERE status = 'sent' GROUP BY 1")
    )
    opened = dict(rows(engine, ENGAGED.format(key=key), kind="email_opened"))
    clicked = dict(rows(engine, ENGAGED.format(key=key), kind="email_clicked"))
    assert {f"{x.content_id}#{-1 if x.variant is None else x.variant}" for x in lines} == set(sent)
    for line in lines:
        name = f"{line.content_id}#{-1 if line.variant is None else line.variant}"
        assert (line.sent, line.opened, line.clicked) == (
            sent[name],
            opened.get(name, 0),
            clicked.get(name, 0),
        ), name
    assert sum(line.opened for line in lines) > 0 and sum(line.clicked for line in lines) > 0
    assert any(line.variant is not None for line in lines), "a subject test ran"
    # `nurture stats` prints the same numbers.
    result = CliRunner().invoke(main, ["--project", str(project), "--db", str(database), "stats"])
    assert result.exit_code == 0, result.output
    printed = {
        match[1]: (int(match[2]), int(match[3]), int(match[4]))
        for match in re.finditer(
            r"^(\S+(?: #\d+)?)\s+(\d+)\s+(\d+) \(\s*[\d.]+%\)\s+(\d+) \(\s*[\d.]+%\)$",
            result.stdout,
            re.MULTILINE,
        )
    }
    for line in lines:
        label = (
            line.content_id if line.variant is None else f"{line.content_id} #{line.variant + 1}"
        )
        assert printed[label] == (line.sent, line.opened, line.clicked), label


def test_per_workflow_step(demo: tuple[Path, Path, Engine]) -> None:
    project, _, engine = demo
    loaded = load_project(project)
    with Session(engine) as session:
        steps, _waiting = workflow_stats(session, loaded)
    key = "workflow || ' ' || step_key"  # per step: a piece may sit on two ways of a split
    sent = dict(
        rows(engine, f"SELECT {key}, count(*) FROM messages WHERE status = 'sent' GROUP BY 1")
    )
    opened = dict(rows(engine, ENGAGED.format(key=key), kind="email_opened"))
    clicked = dict(rows(engine, ENGAGED.format(key=key), kind="email_clicked"))
    unsubscribed = dict(rows(engine, ENGAGED.format(key=key), kind="unsubscribed"))
    for step in steps:
        name = f"{step.workflow} {step.step}"
        assert (step.sent, step.opened, step.clicked, step.unsubscribed) == (
            sent.get(name, 0),
            opened.get(name, 0),
            clicked.get(name, 0),
            unsubscribed.get(name, 0),
        ), name
    assert sum(step.sent for step in steps) == sum(sent.values())
    assert sum(step.opened for step in steps) > 0
