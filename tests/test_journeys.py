"""Journey steps: branches on what people did, waits for an event, splits, actions."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from nurture.audit import stranded
from nurture.clock import FixedClock
from nurture.core.engagement import Engagement, Occurred
from nurture.core.planner import Exhausted, Mark, Plan, Send, WaitUntil, choose_path, plan_next
from nurture.core.versions import Kind, carry, outline
from nurture.db import sessions
from nurture.explain import explain
from nurture.feedback import record_event
from nurture.handoffs import SECRET_ENV, verify
from nurture.journeys import deliver_webhooks
from nurture.models import Contact, Enrollment, JourneyStep, Message, Notice, StageMove
from nurture.problems import ProjectError
from nurture.project import load_project
from nurture.runtime import Runtime, open_runtime
from nurture.workflows import ActionStep, Split, Workflow
from tests.conftest import MONDAY_MORNING
from tests.helpers import PROFILE, add_contact, event
from tests.receiver import Receiver

T0 = datetime(2026, 6, 1, 9, tzinfo=UTC)
DAY = timedelta(days=1)
CASE = "evaluation/case-study-northwind"


def journey(evaluation: list[dict[str, Any]]) -> Workflow:
    return Workflow.model_validate(
        {
            "id": "wf",
            "name": "j",
            "enter": {"stages": ["lead"]},
            "tracks": {"evaluation": evaluation},
        }
    )


BRANCH = journey(
    [
        {"content": CASE},
        {
            "id": "clicked-case",
            "wait": "2d",
            "if": f"clicked('{CASE}')",
            "then": [{"content": "evaluation/build-vs-buy"}],
            "else": [{"content": "evaluation/retention-playbook-webinar"}],
        },
        {"content": "evaluation/after", "wait": "3d"},
    ]
)
WAIT = journey(
    [
        {
            "id": "attended",
            "wait_until": {"event": "webinar_attended", "timeout": "3d"},
            "then": [{"content": CASE}],
            "else": [{"content": "evaluation/replay"}],
        },
        {"content": "evaluation/build-vs-buy", "wait": "2d"},
    ]
)


def plan(
    workflow: Workflow,
    places: dict[str, str],
    received: set[str],
    now: datetime,
    engagement: Engagement | None = None,
    since: datetime = T0,
    who: str = "7",
) -> Plan:
    return plan_next(
        workflow,
        "evaluation",
        places,
        received,
        since=since,
        now=now,
        variables={"engagement": 0},
        engagement=engagement,
        who=who,
    )


def test_branch_waits_then_takes_then_on_a_real_click_and_keeps_its_way() -> None:
    places = {"evaluation": CASE}
    early = plan(BRANCH, places, {CASE}, T0 + DAY)
    assert isinstance(early, WaitUntil) and early.until == T0 + 2 * DAY
    clicked = Engagement(clicked=frozenset({CASE}))
    result = plan(BRANCH, places, {CASE}, T0 + 2 * DAY, clicked)
    assert isinstance(result, Send) and result.step.content == "evaluation/build-vs-buy"
    assert result.before["evaluation"] == "clicked-case#then"
    assert [(m.step, m.way) for m in result.marks] == [("clicked-case", "then")]
    # after the branch, the step after it: never the other way
    after = plan(BRANCH, result.places, {CASE, "evaluation/build-vs-buy"}, T0 + 9 * DAY)
    assert isinstance(after, Send) and after.step.content == "evaluation/after"


def test_branch_without_a_click_takes_else() -> None:
    result = plan(BRANCH, {"evaluation": CASE}, {CASE}, T0 + 2 * DAY, Engagement())
    assert (
        isinstance(result, Send) and result.step.content == "evaluation/retention-playbook-webinar"
    )


def test_a_way_taken_is_kept_whatever_happens_later() -> None:
    places = {"evaluation": "clicked-case#else"}
    clicked = Engagement(clicked=frozenset({CASE}))
    result = plan(BRANCH, places, {CASE}, T0 + 2 * DAY, clicked)
    assert (
        isinstance(result, Send) and result.step.content == "evaluation/retention-playbook-webinar"
    )


def test_did_within_counts_real_events_in_the_window() -> None:
    workflow = journey(
        [
            {
                "id": "recent",
                "if": "did('webinar_attended', within='7d')",
                "then": [{"content": CASE}],
                "else": [{"content": "evaluation/replay"}],
            }
        ]
    )
    recent = Engagement(last={"webinar_attended": T0 - 2 * DAY})
    old = Engagement(last={"webinar_attended": T0 - 9 * DAY})
    assert plan(workflow, {}, set(), T0, recent).step.content == CASE  # type: ignore[union-attr]
    assert plan(workflow, {}, set(), T0, old).step.content == "evaluation/replay"  # type: ignore[union-attr]


def test_wait_until_starts_waits_and_stores_its_start() -> None:
    result = plan(WAIT, {}, set(), T0)
    assert isinstance(result, WaitUntil) and result.event == "webinar_attended"
    assert result.until == T0 + 3 * DAY
    assert result.places == {"evaluation": "attended", "since:evaluation": T0.isoformat()}
    assert [(m.step, m.way) for m in result.marks] == [("attended", "waiting")]


def test_wait_until_takes_then_when_the_event_comes() -> None:
    places = {"evaluation": "attended", "since:evaluation": T0.isoformat()}
    came = Engagement(
        last={"webinar_attended": T0 + DAY},
        events=(Occurred("webinar_attended", T0 + DAY),),
    )
    result = plan(WAIT, places, set(), T0 + DAY, came)
    assert isinstance(result, Send) and result.step.content == CASE
    assert result.before["evaluation"] == "attended#then"
    # an event from before the wait started does not count
    before = Engagement(last={"webinar_attended": T0 - DAY})
    waiting = plan(WAIT, places, set(), T0 + DAY, before)
    assert isinstance(waiting, WaitUntil) and waiting.until == T0 + 3 * DAY


def test_wait_until_takes_else_after_the_timeout_and_later_waits_count_from_it() -> None:
    places = {"evaluation": "attended", "since:evaluation": T0.isoformat()}
    result = plan(WAIT, places, set(), T0 + 3 * DAY)
    assert isinstance(result, Send) and result.step.content == "evaluation/replay"
    assert result.before["evaluation"] == "attended#else"
    nxt = plan(WAIT, result.places, {"evaluation/replay"}, T0 + 3 * DAY, since=T0 - 10 * DAY)
    assert isinstance(nxt, WaitUntil) and nxt.until == T0 + 5 * DAY


def test_wait_until_where_filters_the_events() -> None:
    workflow = journey(
        [
            {
                "id": "attended",
                "wait_until": {
                    "event": "webinar_attended",
                    "where": "event.minutes >= 20",
                    "timeout": "3d",
                },
                "then": [{"content": CASE}],
                "else": [{"content": "evaluation/replay"}],
            }
        ]
    )
    places = {"evaluation": "attended", "since:evaluation": T0.isoformat()}
    short = Engagement(
        last={"webinar_attended": T0 + DAY},
        events=(Occurred("webinar_attended", T0 + DAY, {"minutes": 5}),),
    )
    assert isinstance(plan(workflow, places, set(), T0 + DAY, short), WaitUntil)
    long = Engagement(
        last={"webinar_attended": T0 + DAY},
        events=(Occurred("webinar_attended", T0 + DAY, {"minutes": 45}),),
    )
    assert plan(workflow, places, set(), T0 + DAY, long).step.content == CASE  # type: ignore[union-attr]


SPLIT = journey(
    [
        {
            "id": "ab",
            "split": [
                {"id": "short", "weight": 3, "steps": [{"content": CASE}]},
                {"id": "long", "weight": 1, "steps": [{"content": "evaluation/build-vs-buy"}]},
            ],
        },
        {"content": "evaluation/after", "wait": "1d"},
    ]
)


def test_split_is_stable_and_follows_the_weights() -> None:
    step = SPLIT.tracks["evaluation"][0]
    assert isinstance(step, Split)
    paths = Counter(choose_path(step, str(n), "wf") for n in range(4000))
    assert 0.71 < paths["short"] / 4000 < 0.79
    for n in range(50):
        first = plan(SPLIT, {}, set(), T0, who=str(n))
        assert isinstance(first, Send)
        way = choose_path(step, str(n), "wf")
        assert first.before["evaluation"] == f"ab#{way}"
        assert plan(SPLIT, {}, set(), T0, who=str(n)) == first


def test_action_is_a_mark_done_once_on_the_way() -> None:
    workflow = journey(
        [
            {"content": CASE},
            {"id": "tell-owner", "action": {"kind": "notify", "to": "owner", "subject": "Hot"}},
            {"content": "evaluation/build-vs-buy", "wait": "1d"},
        ]
    )
    result = plan(workflow, {"evaluation": CASE}, {CASE}, T0)
    assert isinstance(result, WaitUntil)
    assert [(m.step, m.way) for m in result.marks] == [("tell-owner", "notify")]
    again = plan(workflow, result.places, {CASE}, T0 + DAY)
    assert isinstance(again, Send) and again.marks == ()


def test_exhausted_after_a_branch() -> None:
    result = plan(BRANCH, {"evaluation": "evaluation/after"}, {CASE}, T0 + 30 * DAY)
    assert isinstance(result, Exhausted)


def test_carry_keeps_a_place_inside_a_branch_and_moves_one_in_a_removed_branch() -> None:
    old = outline(BRANCH)
    places = {"evaluation": "evaluation/build-vs-buy"}
    same = carry(old, old, places, phase="evaluation", received={CASE}, workflow="wf")
    assert same.places == places and same.kind is Kind.CONTINUE
    flat = journey([{"content": CASE}, {"content": "evaluation/after", "wait": "3d"}])
    moved = carry(old, outline(flat), places, phase="evaluation", received={CASE}, workflow="wf")
    assert moved.places == {"evaluation": CASE}
    result = plan(flat, moved.places, {CASE, "evaluation/build-vs-buy"}, T0 + 9 * DAY)
    assert isinstance(result, Send) and result.step.content == "evaluation/after"
    waiting = {"evaluation": "attended", "since:evaluation": T0.isoformat()}
    kept = carry(
        outline(WAIT), outline(WAIT), waiting, phase="evaluation", received=set(), workflow="wf"
    )
    assert kept.places == waiting


# --- the engine, on a SQLite file with a fixed clock ------------------------------------

A, B, C = (
    "discovery/hidden-cost-of-churn",
    "discovery/activation-metrics",
    "discovery/onboarding-checklist",
)
HEAD = (
    "name: Journey\n"
    "enter: {stages: [lead]}\n"
    "caps: {per_day: 5, per_week: 8, min_gap: 1m, quiet_hours: null,"
    " weekdays: [mon, tue, wed, thu, fri, sat, sun]}\n"
    "tracks:\n"
    "  discovery:\n"
    f"    - content: {A}\n"
)
WAIT_FILE = HEAD + (
    "    - id: attended\n"
    "      wait_until: {event: webinar_attended, timeout: 3d}\n"
    f"      then: [{{content: {B}}}]\n"
    f"      else: [{{content: {C}}}]\n"
)
BRANCH_FILE = HEAD + (
    "    - id: clicked-first\n"
    "      wait: 2d\n"
    f"      if: \"clicked('{A}')\"\n"
    f"      then: [{{content: {B}}}]\n"
    f"      else: [{{content: {C}}}]\n"
)


@pytest.fixture
def journey_rt(project_dir: Path, tmp_path: Path) -> Iterator[Callable[[str], Runtime]]:
    opened: list[Runtime] = []

    def start(text: str) -> Runtime:
        for name in ("webinar-follow-up", "guide-nurture"):
            (project_dir / "workflows" / f"{name}.yaml").unlink(missing_ok=True)
        (project_dir / "workflows" / "journey.yaml").write_text(text, encoding="utf-8")
        runtime = open_runtime(
            project_dir,
            clock=FixedClock(MONDAY_MORNING),
            database=f"sqlite:///{tmp_path / 'j.db'}",
        )
        opened.append(runtime)
        return runtime

    yield start
    for runtime in opened:
        runtime.database.dispose()


def _tick(rt: Runtime, hours: float = 0) -> None:
    assert isinstance(rt.clock, FixedClock)
    rt.clock.advance(timedelta(hours=hours))
    rt.dispatcher.tick()


def _got(rt: Runtime, address: str) -> list[str]:
    with sessions(rt.database)() as session:
        return list(
            session.scalars(
                select(Message.step_key)
                .join(Contact, Contact.id == Message.contact_id)
                .where(Contact.email == address)
                .order_by(Message.sent_at, Message.id)
            )
        )


def _enrollment(rt: Runtime, address: str) -> Enrollment:
    with sessions(rt.database)() as session:
        found = session.scalar(
            select(Enrollment)
            .join(Contact, Contact.id == Enrollment.contact_id)
            .where(Contact.email == address)
        )
        assert found is not None
        return found


def _invariants(rt: Runtime) -> None:
    with sessions(rt.database)() as session:
        assert stranded(session) == []
        pieces = session.execute(select(Message.contact_id, Message.content_id)).all()
        assert len(pieces) == len(set(pieces))


def test_wait_until_the_event_wakes_the_person_at_once(
    journey_rt: Callable[[str], Runtime],
) -> None:
    rt = journey_rt(WAIT_FILE)
    add_contact(rt, "ana@acme.example", **PROFILE)
    _tick(rt)
    assert _got(rt, "ana@acme.example") == [A]
    waiting = _enrollment(rt, "ana@acme.example")
    assert waiting.places["discovery"] == "attended"
    assert waiting.due_at == (MONDAY_MORNING + 3 * DAY)
    assert (waiting.hold_reason or "").startswith("waits for webinar_attended until")
    said = "\n".join(explain(rt, "ana@acme.example"))
    assert "waits for webinar_attended until" in said and "the event wakes them" in said
    _tick(rt, 30)
    assert _got(rt, "ana@acme.example") == [A]
    event(rt, "ana@acme.example", "webinar_attended")
    assert _enrollment(rt, "ana@acme.example").due_at == rt.clock.now()
    _tick(rt)
    assert _got(rt, "ana@acme.example") == [A, B]
    assert _enrollment(rt, "ana@acme.example").places["discovery"] == B
    _tick(rt, 24 * 5)
    assert _got(rt, "ana@acme.example") == [A, B]
    _invariants(rt)


def test_wait_until_takes_else_when_the_timeout_runs_out(
    journey_rt: Callable[[str], Runtime],
) -> None:
    rt = journey_rt(WAIT_FILE)
    add_contact(rt, "ben@acme.example", **PROFILE)
    _tick(rt)
    event(rt, "ben@acme.example", "webinar_attended", machine="scanner")  # not a person
    for _ in range(12):
        _tick(rt, 6)
    assert _got(rt, "ben@acme.example") == [A, C]
    assert _enrollment(rt, "ben@acme.example").places["discovery"] == C
    _invariants(rt)


def test_a_branch_follows_real_clicks_never_a_machine_click(
    journey_rt: Callable[[str], Runtime],
) -> None:
    rt = journey_rt(BRANCH_FILE)
    for who in ("real", "machine", "none"):
        add_contact(rt, f"{who}@acme.example", **PROFILE)
    _tick(rt)
    with sessions(rt.database)() as session:
        ids = dict(
            session.execute(
                select(Contact.email, Message.id).join(Contact, Contact.id == Message.contact_id)
            ).all()
        )
    with sessions(rt.database).begin() as session:
        for who, extra in (("real", {}), ("machine", {"machine": "link scanner"})):
            record_event(
                session,
                rt.project,
                f"{who}@acme.example",
                "email_clicked",
                rt.clock.now(),
                properties={"message_id": ids[f"{who}@acme.example"], **extra},
                message_id=ids[f"{who}@acme.example"],
            )
    for _ in range(16):
        _tick(rt, 6)
    assert _got(rt, "real@acme.example") == [A, B]
    assert _got(rt, "machine@acme.example") == [A, C]
    assert _got(rt, "none@acme.example") == [A, C]
    assert _enrollment(rt, "real@acme.example").places["discovery"] == B
    _invariants(rt)


def test_split_paths_are_recorded_per_person_in_the_step_keys(
    journey_rt: Callable[[str], Runtime],
) -> None:
    rt = journey_rt(
        HEAD
        + "    - id: ab\n"
        + "      split:\n"
        + f"        - {{id: short, weight: 1, steps: [{{id: short-b, content: {B}}}]}}\n"
        + f"        - {{id: long, weight: 1, steps: [{{id: long-c, content: {C}}}]}}\n"
    )
    for n in range(40):
        add_contact(rt, f"p{n}@company{n}.example", **PROFILE)
    for _ in range(4):
        _tick(rt, 6)
    paths: Counter[str] = Counter()
    for n in range(40):
        got = _got(rt, f"p{n}@company{n}.example")
        assert len(got) == 2 and got[0] == A and got[1] in ("short-b", "long-c")
        paths[got[1]] += 1
    assert 10 <= paths["short-b"] <= 30
    _invariants(rt)


def test_each_action_is_done_once_per_enrollment_step(
    journey_rt: Callable[[str], Runtime],
) -> None:
    rt = journey_rt(
        HEAD
        + "    - id: tell-team\n"
        + "      action: {kind: notify, to: team@acme.example, subject: Read the guide}\n"
        + "    - id: mark-read\n"
        + "      action: {kind: set, field: company, value: Acme Reading}\n"
        + "    - id: to-mql\n"
        + "      action: {kind: move_stage, to: mql, reason: read the first guide}\n"
        + f"    - {{content: {B}, wait: 1d}}\n"
    )
    add_contact(rt, "ana@acme.example", **PROFILE)
    _tick(rt)
    for _ in range(8):
        _tick(rt, 6)
        rt.dispatcher.wake_waiting()
    with sessions(rt.database)() as session:
        notes = session.scalars(select(Notice).where(Notice.kind == "journey")).all()
        assert [(n.to, n.subject) for n in notes] == [("team@acme.example", "Read the guide")]
        steps = session.execute(
            select(JourneyStep.step_key, JourneyStep.way, JourneyStep.detail).order_by(
                JourneyStep.id
            )
        ).all()
        assert [(s, w) for s, w, _ in steps] == [
            ("tell-team", "notify"),
            ("mark-read", "set"),
            ("to-mql", "move_stage"),
        ]
        person = session.scalars(select(Contact)).one()
        assert person.stage == "mql" and person.company == "Acme Reading"
        moves = session.scalars(select(StageMove.reason)).all()
        assert moves.count("read the first guide") == 1
    # the same step recorded again (a second dispatcher racing, say) does nothing more
    with sessions(rt.database).begin() as session:
        row: Any = session.execute(
            select(Enrollment.id, Enrollment.workflow, Enrollment.entered_at)
        ).one()
        person_row = session.execute(select(*Contact.__table__.columns)).one()
        action = rt.project.workflows["journey"].tracks["discovery"][1]
        assert isinstance(action, ActionStep)
        rt.dispatcher._journey_step(
            session, row, person_row, Mark("tell-team", "notify", rt.clock.now(), action)
        )
    with sessions(rt.database)() as session:
        assert len(session.scalars(select(Notice).where(Notice.kind == "journey")).all()) == 1
    _invariants(rt)


def test_validate_names_file_and_line_of_each_journey_mistake(project_dir: Path) -> None:
    (project_dir / "workflows" / "journey.yaml").write_text(
        HEAD
        + "    - id: w\n"  # 7
        + "      wait_until: {event: webinar_atended, timeout: 3d}\n"  # 8
        + f"      then: [{{content: {B}}}]\n"
        + "    - id: b\n"  # 10
        + "      if: \"did('nope', within='7d') or clicked('discovery/nothing')\"\n"  # 11
        + f"      then: [{{content: {C}}}]\n"
        + "    - id: always\n"  # 13
        + "      if: 'true'\n"  # 14
        + "      else: [{id: b, content: discovery/onboarding-checklist}]\n"  # 15
        + "    - id: empty\n"  # 16
        + "      if: engagement > 3\n",
        encoding="utf-8",
    )
    with pytest.raises(ProjectError) as caught:
        load_project(project_dir)
    found = {(p.path, p.line, p.message) for p in caught.value.problems if "journey" in str(p.path)}
    text = "\n".join(f"{p}:{line}: {m}" for p, line, m in sorted(found, key=str))
    assert any(line == 8 and "unknown event 'webinar_atended'" in m for _, line, m in found), text
    # the first problem of a step hides nothing of another step
    assert any(line == 11 and "did('nope')" in m for _, line, m in found), text


def test_validate_names_file_and_line_of_structure_mistakes(project_dir: Path) -> None:
    (project_dir / "workflows" / "journey.yaml").write_text(
        HEAD
        + "    - id: always\n"  # 7
        + "      if: 'true'\n"  # 8
        + f"      else: [{{id: {A}, content: {C}}}]\n"  # 9
        + "    - id: empty\n"  # 10
        + "      if: engagement > 3\n",  # 11
        encoding="utf-8",
    )
    with pytest.raises(ProjectError) as caught:
        load_project(project_dir)
    found = [(p.line, p.message) for p in caught.value.problems if "journey" in str(p.path)]
    assert any(line == 8 and "always True: its else is unreachable" in m for line, m in found)
    assert any(line == 9 and f"step id {A!r} is already the id" in m for line, m in found)
    assert any(line == 10 and "no way out" in m for line, m in found), found


REENTER = (
    "name: Journey\n"
    "enter: {stages: [lead], events: [webinar_registered]}\n"
    "goals: {events: [replied]}\n"
    "caps: {per_day: 5, per_week: 8, min_gap: 1m, quiet_hours: null,"
    " weekdays: [mon, tue, wed, thu, fri, sat, sun]}\n"
    "{reenter}"
    "tracks:\n"
    "  discovery:\n"
    f"    - content: {A}\n"
    "    - id: note\n"
    "      action: {kind: notify, to: team@acme.example, subject: Entered}\n"
    f"    - {{content: {B}, wait: 1d}}\n"
)


@pytest.mark.parametrize(
    ("reenter", "days", "again"),
    [
        ("", 1, False),
        ("reenter: always\n", 1, True),
        ("reenter: after 7d\n", 1, False),
        ("reenter: after 7d\n", 8, True),
    ],
)
def test_reenter_rules(
    journey_rt: Callable[[str], Runtime], reenter: str, days: int, again: bool
) -> None:
    rt = journey_rt(REENTER.replace("{reenter}", reenter))
    add_contact(rt, "ana@acme.example", **PROFILE)
    _tick(rt)
    event(rt, "ana@acme.example", "replied")  # the goal: she leaves
    _tick(rt)
    assert _enrollment(rt, "ana@acme.example").status == "completed"
    _tick(rt, 24 * days)
    outcome = event(rt, "ana@acme.example", "webinar_registered")  # meets the entry again
    assert outcome.enrolled == (["journey"] if again else [])
    for _ in range(8):
        _tick(rt, 6)
    enrollment = _enrollment(rt, "ana@acme.example")
    assert enrollment.status == ("waiting" if again else "completed")
    with sessions(rt.database)() as session:
        notes = session.scalars(select(Notice).where(Notice.kind == "journey")).all()
        assert len(notes) == (2 if again else 1)  # the action again on the new entry
    # nobody gets a piece twice, re-entered or not: B comes once, A never again
    assert _got(rt, "ana@acme.example") == ([A, B] if again else [A])
    _invariants(rt)


def test_a_webhook_action_is_posted_signed_once_and_retried(
    journey_rt: Callable[[str], Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, "s3cret-for-the-test")
    with Receiver(failures=1) as receiver:
        rt = journey_rt(
            HEAD
            + "    - id: tell-crm\n"
            + f"      action: {{kind: webhook, url: '{receiver.url}'}}\n"
            + f"    - {{content: {B}, wait: 1d}}\n"
        )
        add_contact(rt, "ana@acme.example", **PROFILE)
        _tick(rt)
        for _ in range(4):
            _tick(rt, 6)
            rt.dispatcher.wake_waiting()
        assert deliver_webhooks(rt.project, rt.database, rt.clock.now()) == (0, 1)  # a 503
        assert deliver_webhooks(rt.project, rt.database, rt.clock.now()) == (0, 0)  # not yet
        _tick(rt, 1)
        assert deliver_webhooks(rt.project, rt.database, rt.clock.now()) == (1, 0)
        _tick(rt, 1)
        assert deliver_webhooks(rt.project, rt.database, rt.clock.now()) == (0, 0)
    assert len(receiver.received) == 2
    first, second = receiver.received
    assert first.headers["X-Nurture-Delivery"] == second.headers["X-Nurture-Delivery"]
    assert verify(
        "s3cret-for-the-test",
        second.headers["X-Nurture-Signature"],
        second.body,
        rt.clock.now() - timedelta(hours=1),
    )
    body = json.loads(second.body)
    assert body["step"] == "tell-crm" and body["contact"]["email"] == "ana@acme.example"
    with sessions(rt.database)() as session:
        step = session.scalars(select(JourneyStep).where(JourneyStep.step_key == "tell-crm")).one()
        assert (step.status, step.attempts) == ("delivered", 2)
    _invariants(rt)
