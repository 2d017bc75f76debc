"""Segments: files checked like workflows, and SQL counts equal to the Python evaluator's."""

from __future__ import annotations

import csv
import io
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete
from sqlalchemy.orm import Session

from nurture import eventstore, expressions, segments
from nurture.contacts import condition_variables
from nurture.core.engagement import functions
from nurture.db import sessions
from nurture.models import Contact, Engaged, Enrollment, Event, Message
from nurture.problems import ProjectError
from nurture.project import load_project
from nurture.runtime import Runtime
from tests.helpers import write

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def with_segments(project_dir: Path) -> None:
    """The example project with its segments (the shared fixture leaves them out: tests
    that replace nurture.yaml would find segments reading lists they no longer have)."""
    shutil.copytree(REPO / "segments", project_dir / "segments")


NOW = datetime.fromisoformat("2026-03-02T08:00:00+00:00")
CONTENT = ["evaluation/case-study-northwind", "discovery/hidden-cost-of-churn"]
KINDS = ["email_clicked", "email_opened", "webinar_attended", "page_visited"]

_number = st.sampled_from([-5, 0, 10, 20, 34.5, 35, 50, 100])
_days = st.sampled_from([0, 1, 2, 2.5, 7, 30])
_op = st.sampled_from(["==", "!=", "<", "<=", ">", ">="])
_atoms = st.one_of(
    st.builds(lambda o, n: f"fit {o} {n}", _op, _number),
    st.builds(lambda o, n: f"engagement {o} {n}", _op, _number),
    st.builds(lambda o, n: f"{n} {o} engagement", _op, _number),
    st.builds(lambda o, n: f"days_in_stage {o} {n}", _op, _days),
    st.builds(lambda o, n: f"contact.company_size {o} {n}", _op, _number),
    st.builds(lambda o, n: f"contact.csm_team_size {o} {n}", _op, _number),
    st.builds(lambda o, s: f"contact.sector {o} '{s}'", _op, st.sampled_from(["saas", "m", ""])),
    st.sampled_from(
        [
            "contact.sector in target_sectors",
            "contact.sector not in ['saas', 'retail']",
            "contact.email_domain in free_webmail",
            "stage in ['lead', 'mql']",
            "stage == 'sql'",
            "contact.sector is none",
            "contact.sector is not none",
            "contact.sector == none",
            "contact.company_size",
            "contact.sector",
            "contact.csm_team_size",
            "10 <= fit < 50",
            "contact.company_size and 50 <= contact.company_size <= 2000",
            "clicked()",
            "opened()",
            "true",
            "contact['seniority'] == 'vp'",
        ]
    ),
    st.builds(lambda c: f"clicked('{c}')", st.sampled_from(CONTENT)),
    st.builds(lambda c: f"opened('{c}')", st.sampled_from(CONTENT)),
    st.builds(lambda c: f"received('{c}')", st.sampled_from(CONTENT)),
    st.builds(
        lambda k, w: f"did('{k}')" if w is None else f"did('{k}', within='{w}')",
        st.sampled_from(KINDS),
        st.sampled_from([None, "1d", "7d", "30d"]),
    ),
)
conditions = st.recursive(
    _atoms,
    lambda inner: st.one_of(
        st.builds(lambda a, b: f"({a}) and ({b})", inner, inner),
        st.builds(lambda a, b: f"({a}) or ({b})", inner, inner),
        st.builds(lambda a: f"not ({a})", inner),
    ),
    max_leaves=5,
)

_minutes = st.integers(min_value=-600, max_value=200_000)
people = st.lists(
    st.fixed_dictionaries(
        {
            "sector": st.sampled_from([None, "saas", "retail", "fintech", "", "m"]),
            "company_size": st.sampled_from([None, 0, 10, 50, 500, 5000]),
            "seniority": st.sampled_from([None, "vp", "staff"]),
            "domain": st.sampled_from(["gmail.com", "acme.example"]),
            "custom": st.sampled_from([{}, {"csm_team_size": 0}, {"csm_team_size": 12}]),
            "stage": st.sampled_from(["contact", "lead", "mql", "sql", "customer"]),
            "fit": _number,
            "engagement": st.sampled_from([0, 0.04, 20, 35, 50, 120]),
            "engaged_minutes_ago": _minutes,
            "stage_minutes_ago": st.sampled_from([-60, 0, 1439, 1440, 1441, 3600, 10080, 50000]),
            "events": st.lists(
                st.tuples(
                    st.sampled_from(KINDS),
                    _minutes,
                    st.sampled_from([None, "scanner"]),
                    st.sampled_from([None, *CONTENT]),
                ),
                max_size=4,
            ),
            "sent": st.lists(
                st.tuples(st.sampled_from(CONTENT), st.sampled_from(["sent", "failed"])),
                max_size=2,
                unique_by=lambda s: s[0],
            ),
        }
    ),
    max_size=12,
)


def _populate(session: Session, population: list[dict[str, Any]]) -> None:
    for table in (Engaged, Event, Message, Enrollment, Contact):
        session.execute(delete(table))
    for number, person in enumerate(population):
        contact = Contact(
            email=f"p{number}@{person['domain']}",
            sector=person["sector"],
            company_size=person["company_size"],
            seniority=person["seniority"],
            custom=person["custom"],
            stage=person["stage"],
            stage_since=NOW - timedelta(minutes=person["stage_minutes_ago"]),
            fit=person["fit"],
            engagement=person["engagement"],
            engagement_at=NOW - timedelta(minutes=person["engaged_minutes_ago"]),
            created_at=NOW,
        )
        session.add(contact)
        session.flush()
        enrollment = Enrollment(
            workflow="guide-nurture", contact_id=contact.id, status="active", entered_at=NOW
        )
        session.add(enrollment)
        session.flush()
        sent: dict[str, Message] = {}
        for content, status in person["sent"]:
            sent[content] = Message(
                enrollment_id=enrollment.id,
                contact_id=contact.id,
                workflow="guide-nurture",
                step_key=content,
                content_id=content,
                phase="evaluation",
                stage_at_send=contact.stage,
                subject="s",
                rfc_message_id=f"<{contact.id}.{content}@t>",
                status=status,
                created_at=NOW,
                sent_at=NOW,
            )
            session.add(sent[content])
        session.flush()
        rows = []
        for kind, ago, machine, content in person["events"]:
            message = sent.get(content) if content else None
            rows.append(
                {
                    "contact_id": contact.id,
                    "kind": kind,
                    "occurred_at": NOW - timedelta(minutes=ago),
                    "recorded_at": NOW,
                    "properties": {},
                    "client_event_id": None,
                    "machine": machine,
                    "message_id": message.id if message else None,
                }
            )
        # through the events' one write path, which keeps the engagement summary
        eventstore.store(session.connection(), rows)
    session.flush()


def _python_members(session: Session, rt: Runtime, condition: str) -> set[int]:
    """The brute force: every contact through the evaluator, with the engine's own read of
    what they did (machines left out) and of what they received."""
    contacts = {c.id: c for c in session.query(Contact)}
    history = rt.dispatcher.history(session, NOW, contacts, lock=False)  # type: ignore[arg-type]
    rt.dispatcher._engagement(session, list(contacts), history)
    settings_ = rt.project.settings
    found = set()
    for contact_id, contact in contacts.items():
        did = history.engagement[contact_id]
        variables = {
            **condition_variables(contact, settings_, NOW),
            **functions(did, history.received[contact_id], NOW),
        }
        if expressions.evaluate(condition, variables):
            found.add(contact_id)
    return found


def _sql_members(session: Session, rt: Runtime, condition: str) -> tuple[set[int], int]:
    content = {piece: "" for piece in rt.project.content}
    segment = segments.Segment.model_validate(
        {"name": "t", "when": condition},
        context={
            "settings": rt.project.settings,
            "content": content,
            "content_ids": rt.project.content_ids(),
        },
    )
    audience = segments.audience(
        session, rt.project.settings, segment, rt.project.content_ids(), NOW
    )
    return set(segments.contact_ids(session, audience, limit=10_000)), segments.count(
        session, audience
    )


def test_sql_counts_equal_the_evaluator_on_random_populations(runtime: Runtime) -> None:
    """On SQLite and PostgreSQL: for random people (profile, typed custom fields, stages,
    decayed engagement, events by people and by machines, emails received) and random
    conditions, the SQL clause selects exactly whom the Python evaluator selects."""
    assert runtime.clock.now() == NOW

    @settings(
        max_examples=80,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(population=people, condition=conditions)
    def check(population: list[dict[str, Any]], condition: str) -> None:
        with sessions(runtime.database)() as session:
            _populate(session, population)
            expected = _python_members(session, runtime, condition)
            found, counted = _sql_members(session, runtime, condition)
            session.rollback()
        assert found == expected, condition
        assert counted == len(expected)

    check()


@pytest.mark.parametrize(
    ("condition", "named"),
    [
        ("contact.role|lower == 'ceo'", "the filter |lower"),
        ("fit + engagement > 50", "arithmetic (+)"),
        ("contact.sector < 5", "compares text with number"),
        ("'x' in contact.role", "a segment tests membership of a list"),
        ("contact.role.startswith('c')", "the method .startswith()"),
        ("days_in_stage > fit", "days_in_stage is compared with a number"),
    ],
)
def test_what_sql_cannot_count_is_refused_at_validate_time(
    project_dir: Path, condition: str, named: str
) -> None:
    write(project_dir, "segments/odd.yaml", f'name: Odd\nwhen: "{condition}"\n')
    with pytest.raises(ProjectError) as caught:
        load_project(project_dir)
    problem = str(caught.value)
    assert problem.startswith("segments/odd.yaml:2: when: cannot be counted in the database: ")
    assert named in problem


def test_segment_mistakes_name_file_line_and_field(project_dir: Path) -> None:
    write(project_dir, "segments/typo.yaml", "name: Typo\nwhen: \"contact.sectr == 'saas'\"\n")
    write(project_dir, "segments/ok.yaml", "name: Ok\nwhen: \"stage == 'mql'\"\n")
    workflow = project_dir / "workflows" / "webinar-follow-up.yaml"
    text = workflow.read_text()
    write(
        project_dir,
        "workflows/webinar-follow-up.yaml",
        text.replace("enter:", "enter:\n  segment: okk", 1),
    )
    with pytest.raises(ProjectError) as caught:
        load_project(project_dir)
    problems = [str(p) for p in caught.value.problems]
    assert any(
        p.startswith("segments/typo.yaml:2: when: ") and "did you mean contact.sector?" in p
        for p in problems
    ), problems
    assert any(
        p.startswith("workflows/webinar-follow-up.yaml:")
        and "enter.segment: unknown segment 'okk'; did you mean ok?" in p
        for p in problems
    ), problems


def test_example_segments_load(project_dir: Path) -> None:
    project = load_project(project_dir)
    assert set(project.segments) == {"engaged-evaluators", "target-decision-makers"}
    assert project.segments["engaged-evaluators"].name == "Engaged evaluators"


def test_export_writes_every_member_once(runtime: Runtime) -> None:
    with sessions(runtime.database)() as session:
        population = [
            {
                "sector": "saas" if n % 3 else "retail",
                "company_size": 100,
                "seniority": "vp",
                "domain": "acme.example",
                "custom": {"csm_team_size": n},
                "stage": "lead",
                "fit": 40,
                "engagement": 10,
                "engaged_minutes_ago": 0,
                "stage_minutes_ago": 0,
                "events": [],
                "sent": [],
            }
            for n in range(2500)
        ]
        _populate(session, population)
        segment = runtime.project.segments["target-decision-makers"]
        audience = segments.audience(
            session, runtime.project.settings, segment, runtime.project.content_ids(), NOW
        )
        out = io.StringIO()
        written = segments.export(session, audience, runtime.project.settings, out)
        rows = list(csv.DictReader(io.StringIO(out.getvalue())))
        assert written == len(rows) == segments.count(session, audience)
        assert written == sum(1 for n in range(2500) if n % 3)
        assert len({r["email"] for r in rows}) == written
        assert rows[0]["csm_team_size"] == "1" and rows[0]["stage"] == "lead"
        session.rollback()
