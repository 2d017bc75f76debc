"""Editing a live workflow: a population in flight, an edit of its files, the real engine
(reloading between two ticks) on a SQLite file with a fixed clock; nobody gets a piece twice,
nobody is dropped silently, everyone is due, waiting with a reason, or ended with one."""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update

from nurture.audit import stranded
from nurture.clock import FixedClock
from nurture.core.versions import HELD, Kind, StepInfo, carry
from nurture.db import sessions
from nurture.models import FAILED, Contact, Enrollment, Message, WorkflowVersion
from nurture.runtime import Runtime, open_runtime
from nurture.workflows import Step
from tests.conftest import MONDAY_MORNING
from tests.helpers import PROFILE, add_contact

CAPS = (
    "caps: {per_day: 3, per_week: 8, min_gap: 1h, quiet_hours: null,"
    " weekdays: [mon, tue, wed, thu, fri, sat, sun]}\n"
)
A, B, C = (
    "discovery/hidden-cost-of-churn",
    "discovery/activation-metrics",
    "discovery/onboarding-checklist",
)
E1, E2 = "evaluation/case-study-northwind", "evaluation/build-vs-buy"


def workflow(
    discovery: Sequence[tuple[str, str]],
    evaluation: Sequence[tuple[str, str]] = (),
    *,
    extra: str = "",
) -> str:
    lines = [
        "name: Edits",
        "enter:",
        "  stages: [lead, mql, sql]",
        CAPS.rstrip(),
        extra.rstrip(),
        "tracks:",
    ]
    for phase, steps in (("discovery", discovery), ("evaluation", evaluation)):
        if steps:
            lines.append(f"  {phase}:")
            lines.extend(f"    - {{content: {c}, wait: {w}}}" for c, w in steps)
    return "\n".join(line for line in lines if line) + "\n"


BASE = [(A, "0d"), (B, "1d"), (C, "1d")]


@pytest.fixture
def rt(project_dir: Path, database_url: str) -> Iterator[Runtime]:
    """The edit tests run on a SQLite file and on PostgreSQL (`database_url`)."""
    (project_dir / "workflows" / "webinar-follow-up.yaml").unlink()
    (project_dir / "workflows" / "guide-nurture.yaml").unlink()
    write_workflow(project_dir, "edits", workflow(BASE, [(E1, "1d"), (E2, "1d")]))
    runtime = open_runtime(project_dir, clock=FixedClock(MONDAY_MORNING), database=database_url)
    yield runtime
    runtime.database.dispose()


def write_workflow(root: Path, name: str, text: str) -> None:
    (root / "workflows" / f"{name}.yaml").write_text(text, encoding="utf-8")


def run(rt: Runtime, hours: float, step: float = 6) -> None:
    assert isinstance(rt.clock, FixedClock)
    for _ in range(int(hours / step)):
        rt.dispatcher.tick()
        rt.project = rt.dispatcher.project
        rt.clock.advance(timedelta(hours=step))


def restart(rt: Runtime) -> Runtime:
    """The engine stopped and started again on the same files, database and clock."""
    rt.database.dispose()
    return open_runtime(rt.project.root, clock=rt.clock, database=str(rt.database.url))


def population(rt: Runtime, count: int = 6) -> None:
    """People entering 12 hours apart: after a while they stand at every place of the track."""
    for i in range(count):
        add_contact(rt, f"p{i}@company{i}.example", **PROFILE)
        run(rt, 12)


def received(rt: Runtime) -> dict[str, list[str]]:
    with sessions(rt.database)() as session:
        got: dict[str, list[str]] = {}
        for email, content in session.execute(
            select(Contact.email, Message.content_id)
            .join(Contact, Contact.id == Message.contact_id)
            .order_by(Message.sent_at, Message.id)
        ):
            got.setdefault(email, []).append(rt.project.canonical(content))
        return got


def check(rt: Runtime) -> dict[str, list[str]]:
    """The invariants, from the database: no piece twice, every enrollment has a state reason."""
    got = received(rt)
    for email, pieces in got.items():
        assert len(pieces) == len(set(pieces)), f"{email} got a piece twice: {pieces}"
    with sessions(rt.database)() as session:
        assert stranded(session) == []
        for row in session.scalars(select(Enrollment)):
            assert row.status in ("active", "waiting", "paused", "completed", "exited")
    return got


def enrollments(rt: Runtime) -> list[Enrollment]:
    with sessions(rt.database)() as session:
        return list(session.scalars(select(Enrollment).order_by(Enrollment.id)))


@pytest.mark.parametrize("restarted", [False, True])
def test_removing_a_step_sends_the_next_one_that_remains(rt: Runtime, restarted: bool) -> None:
    population(rt)
    before = check(rt)
    assert any(p == [A, B] for p in before.values())  # someone got A and B, not C yet
    write_workflow(rt.project.root, "edits", workflow([(A, "0d"), (C, "1d")], [(E1, "1d")]))
    if restarted:
        rt = restart(rt)
    run(rt, 24 * 4)
    after = check(rt)
    for email, pieces in after.items():
        assert pieces[-1] == C and C in pieces, (email, pieces)
        assert pieces[: len(before[email])] == before[email]
    with sessions(rt.database)() as session:
        numbers = session.scalars(select(WorkflowVersion.number)).all()
    assert sorted(numbers) == [1, 2]


def test_reordered_steps_are_found_by_id(rt: Runtime) -> None:
    population(rt)
    before = check(rt)
    write_workflow(rt.project.root, "edits", workflow([(A, "0d"), (C, "1d"), (B, "1d")]))
    rt = restart(rt)  # taken up at a restart as well as while running
    run(rt, 24 * 4)
    after = check(rt)
    for email, pieces in after.items():
        assert sorted(pieces) == sorted([A, B, C]), (email, before[email], pieces)


def test_a_renamed_piece_is_not_sent_again(rt: Runtime) -> None:
    population(rt)
    before = check(rt)
    rename_piece(rt.project.root, B, "discovery/activation-guide")
    renamed = [(A, "0d"), ("discovery/activation-guide", "1d"), (C, "1d")]
    write_workflow(rt.project.root, "edits", workflow(renamed))
    run(rt, 24 * 4)
    after = check(rt)
    for email, pieces in after.items():
        assert len(pieces) == 3, (email, before[email], pieces)
        assert sorted(pieces) == sorted([A, "discovery/activation-guide", C])


def rename_piece(root: Path, old: str, new: str) -> None:
    """`content/<old>.mjml` becomes `content/<new>.mjml`, saying `renamed_from: [old]`."""
    content = root / "content"
    text = (content / f"{old}.mjml").read_text()
    for path in content.glob(f"{old}*.mjml"):
        path.unlink()
    (content / f"{new}.mjml").write_text(
        text.replace("---\n", f"---\nrenamed_from: [{old}]\n", 1), encoding="utf-8"
    )


@pytest.mark.parametrize("renamed", [False, True])
def test_a_piece_with_a_message_row_is_never_inserted_again(rt: Runtime, renamed: bool) -> None:
    """The outbox keeps one row per person and piece, whatever its status: B's sends failed,
    B is moved after C (and renamed), and nobody gets a second row for B under any name
    (before: a renamed B went out again; a plain B broke the batch on the unique key)."""
    population(rt)
    with sessions(rt.database)() as session:
        session.execute(update(Message).where(Message.content_id == B).values(status=FAILED))
        session.commit()
        failed = set(session.scalars(select(Message.contact_id).where(Message.status == FAILED)))
    assert failed
    guide = "discovery/activation-guide"
    if renamed:
        rename_piece(rt.project.root, B, guide)
    write_workflow(
        rt.project.root, "edits", workflow([(A, "0d"), (C, "1d"), (guide if renamed else B, "1d")])
    )
    run(rt, 24 * 4)
    with sessions(rt.database)() as session:
        rows = session.execute(select(Message.contact_id, Message.content_id)).all()
    pieces = Counter((contact, rt.project.canonical(content)) for contact, content in rows)
    assert [key for key, n in pieces.items() if n > 1] == []
    got = {contact for contact, content in rows if content == C}
    assert failed <= got  # they went on with the rest of the track


def test_a_renamed_workflow_file_keeps_its_people(rt: Runtime) -> None:
    population(rt)
    before = check(rt)
    (rt.project.root / "workflows" / "edits.yaml").unlink()
    write_workflow(rt.project.root, "journey", workflow(BASE, extra="renamed_from: edits"))
    run(rt, 24 * 4)
    after = check(rt)
    assert {e.workflow for e in enrollments(rt)} == {"journey"}
    for email, pieces in after.items():
        assert sorted(pieces) == sorted([A, B, C]), (email, before[email], pieces)


def test_a_step_appended_reaches_those_who_had_finished_without_a_restart(rt: Runtime) -> None:
    population(rt)
    run(rt, 24 * 3)
    before = check(rt)
    finished = [e for e in enrollments(rt) if e.status == "waiting"]
    assert finished and all(len(p) == 3 for p in before.values())
    write_workflow(
        rt.project.root, "edits", workflow([*BASE, (E2.replace("evaluation", "discovery"), "1d")])
    )
    # a piece of the wrong phase is a broken edit: the running version goes on
    run(rt, 12)
    assert check(rt) == before
    shutil.copy(
        rt.project.root / "content" / "discovery" / "activation-metrics.mjml",
        rt.project.root / "content" / "discovery" / "fresh-take.mjml",
    )
    write_workflow(rt.project.root, "edits", workflow([*BASE, ("discovery/fresh-take", "1d")]))
    run(rt, 24 * 3)
    after = check(rt)
    for email, pieces in after.items():
        assert pieces == [*before[email], "discovery/fresh-take"], email


def test_a_changed_wait_counts_from_the_last_email(rt: Runtime) -> None:
    write_workflow(rt.project.root, "edits", workflow([(A, "0d"), (B, "5d")]))
    rt = restart(rt)
    add_contact(rt, "ana@acme.example", **PROFILE)
    run(rt, 6, step=6)
    assert received(rt)["ana@acme.example"] == [A]
    write_workflow(rt.project.root, "edits", workflow([(A, "0d"), (B, "1d")]))
    rt = restart(rt)
    run(rt, 24, step=6)  # 30 hours after the first email: the new wait of 1 day has run out
    assert check(rt)["ana@acme.example"] == [A, B]


def test_removing_a_whole_track_holds_its_people_with_the_reason(rt: Runtime) -> None:
    population(rt)
    before = check(rt)
    write_workflow(rt.project.root, "edits", workflow([], [(E1, "1d"), (E2, "1d")]))
    run(rt, 24 * 2)
    after = check(rt)
    assert after == before  # nobody got evaluation content as a lead, nothing more
    reasons = {e.contact_id: (e.status, e.hold_reason) for e in enrollments(rt)}
    held = [r for r in reasons.values() if r[1] and r[1].startswith(HELD)]
    assert held, reasons
    assert all(status == "waiting" and reason for status, reason in reasons.values())


# --- the rules alone, on random tracks, populations and edits -----------------------------


def _steps(ids: list[str]) -> list[StepInfo]:
    return [StepInfo(i, f"discovery/{i}", timedelta(days=1)) for i in ids]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    old=st.lists(st.sampled_from("abcdefgh"), min_size=1, max_size=8, unique=True),
    new=st.lists(st.sampled_from("abcdefghij"), min_size=0, max_size=9, unique=True),
    at=st.integers(min_value=-1, max_value=7),
)
def test_carry_never_resends_and_always_says_why(old: list[str], new: list[str], at: int) -> None:
    at = min(at, len(old) - 1)
    got = {f"discovery/{i}" for i in old[: at + 1]}
    places = {"discovery": old[at]} if at >= 0 else {}
    result = carry(
        {"discovery": _steps(old)},
        {"discovery": _steps(new)} if new else {},
        places,
        phase="discovery",
        received=got,
        workflow="w",
    )
    assert result.reason
    if result.now is not None:
        assert f"discovery/{result.now}" not in got
        # a step they had not reached before, in the old order, still reaches them
    unreached_old = [i for i in old[at + 1 :] if i in new]
    if unreached_old:
        assert result.now is not None and result.kind in (Kind.CONTINUE, Kind.MOVE)
    if result.kind is Kind.FINISH:  # only who had a step to come: never who was done
        assert result.was is not None and result.now is None
    if not new:
        assert result.kind in (Kind.HOLD, Kind.FINISH, Kind.CONTINUE)
        assert (result.kind is Kind.HOLD) == bool(old[at + 1 :])


@pytest.mark.fuzz
def test_random_edits_through_the_engine(
    request: pytest.FixtureRequest, project_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Random reorders and removals applied mid-way to a population in flight, through the
    engine, invariants checked from the database after each edit (about 8 s an example)."""
    if "fuzz" not in (request.config.option.markexpr or ""):
        pytest.skip("several seconds an example: run with -m fuzz")

    @settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        edits=st.lists(st.permutations([A, B, C]).map(list), min_size=1, max_size=3),
        drop=st.sampled_from([None, A, B, C]),
        restarted=st.booleans(),
    )
    def edited(edits: list[list[str]], drop: str | None, restarted: bool) -> None:
        tmp = tmp_path_factory.mktemp("fuzz")
        root = tmp / "project"
        shutil.copytree(project_dir, root)
        (root / "workflows" / "webinar-follow-up.yaml").unlink()
        (root / "workflows" / "guide-nurture.yaml").unlink()
        write_workflow(root, "edits", workflow(BASE))
        runtime = open_runtime(
            root, clock=FixedClock(MONDAY_MORNING), database=f"sqlite:///{tmp / 'f.db'}"
        )
        try:
            population(runtime, 4)
            for order in edits:
                steps = [(c, "1d") for c in order if c != drop] or [(A, "0d")]
                write_workflow(root, "edits", workflow(steps))
                if restarted:
                    runtime = restart(runtime)
                run(runtime, 24)
                check(runtime)
            run(runtime, 24 * 4)
            kept = {c for c in (A, B, C) if c != drop}
            for email, pieces in check(runtime).items():
                assert kept <= set(pieces), (email, pieces)
        finally:
            runtime.database.dispose()

    edited()


def test_plan_shows_what_an_edit_will_do_and_changes_nothing(rt: Runtime, tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from nurture.cli import main

    population(rt)
    write_workflow(rt.project.root, "edits", workflow([(A, "0d"), (C, "2d")], [(E1, "1d")]))
    url = str(rt.database.url)
    result = CliRunner().invoke(
        main, ["--project", str(rt.project.root), "--db", url, "plan", "--json"]
    )
    assert result.exit_code == 0, result.output
    (entry,) = json.loads(result.output)
    assert entry["from_version"] == 1 and entry["changed"]
    assert entry["removed"] == [B, E2] and entry["waits"] == {
        C: {"from_seconds": 86400, "to_seconds": 172800}
    }
    groups = {(g["kind"], g["from"], g["to"]): g["count"] for g in entry["people"]}
    assert groups.get(("move", B, C), 0) >= 1, groups
    assert sum(groups.values()) == len(enrollments(rt))
    text = CliRunner().invoke(main, ["--project", str(rt.project.root), "--db", url, "plan"])
    assert "steps removed: discovery/activation-metrics" in text.output
    assert f"wait of {C}: 1 day -> 2 days (counted from each person's last email)" in text.output
    assert f"move: next step {C} instead of step {B}" in text.output
    with sessions(rt.database)() as session:
        assert session.scalars(select(WorkflowVersion.number)).all() == [1]


def plan(rt: Runtime, *options: str) -> Result:
    from click.testing import CliRunner

    from nurture.cli import main

    root, url = str(rt.project.root), str(rt.database.url)
    result = CliRunner().invoke(main, ["--project", root, "--db", url, "plan", *options])
    assert result.exit_code == 0, result.output
    return result


def test_a_file_put_back_is_a_version_change_planned_and_logged(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    """v1 -> v2 -> the text of v1 again: plan says so, the engine records version 3 (the
    digest of 1) and logs each change at INFO."""
    import logging

    from nurture.project import load_project
    from nurture.reload import edit_plan, format_plan

    population(rt)
    first = (rt.project.root / "workflows" / "edits.yaml").read_text()
    caplog.set_level(logging.INFO, logger="nurture.engine")
    write_workflow(rt.project.root, "edits", workflow([(A, "0d"), (C, "1d")], [(E1, "1d")]))
    run(rt, 12)
    assert "workflow edits: version 1 -> 2;" in caplog.text
    write_workflow(rt.project.root, "edits", first)
    # (the plan read as `nurture plan` does: the command sets up logging its own way)
    (entry,) = edit_plan(rt.database, load_project(rt.project.root))
    assert (entry["changed"], entry["from_version"], entry["restores"]) == (True, 2, 1)
    assert "edits: version 2 -> 3 (the text of version 1 again)" in format_plan([entry])
    run(rt, 12)
    assert "workflow edits: version 2 -> 3 (the text of version 1 again);" in caplog.text
    with sessions(rt.database)() as session:
        rows = session.execute(
            select(WorkflowVersion.number, WorkflowVersion.digest).order_by(WorkflowVersion.number)
        ).all()
        on = set(session.scalars(select(Enrollment.version).where(Enrollment.status != "exited")))
    assert [n for n, _ in rows] == [1, 2, 3] and rows[2][1] == rows[0][1] != rows[1][1]
    assert on == {rows[2][1]}
    assert "edits: unchanged (version 3)" in plan(rt).output


def test_plan_counts_only_people_the_edit_changes_in_the_order_they_meet_it(rt: Runtime) -> None:
    """C (the last step) removed and B given an id of its own: who got C is unaffected (not
    "finish"), who waits for C finishes, who waits for B continues with it under its new
    id; each count equals one done in SQL, listed continue, move, finish, hold."""
    import json

    population(rt)
    with sessions(rt.database)() as session:
        had = {
            piece: set(
                session.scalars(select(Message.contact_id).where(Message.content_id == piece))
            )
            for piece in (A, B, C)
        }
    assert had[C] and had[B] - had[C] and had[A] - had[B]
    text = workflow([(A, "0d"), (B, "1d")]).replace(
        f"{{content: {B},", f"{{id: second, content: {B},"
    )
    write_workflow(rt.project.root, "edits", text)
    (entry,) = json.loads(plan(rt, "--json").output)
    groups = {(g["kind"], g["from"], g["to"]): g["count"] for g in entry["people"]}
    assert groups == {
        ("continue", None, None): len(had[C]),
        ("move", B, "second"): len(had[A] - had[B]),
        ("finish", C, None): len(had[B] - had[C]),
    }
    assert [g["kind"] for g in entry["people"]] == ["continue", "move", "finish"]
    lines = plan(rt).output.splitlines()
    people = [line.strip() for line in lines if " people " in line or " person " in line]
    assert [p.split(": ")[0].split()[-1] for p in people] == ["unaffected", "move", "finish"]
    assert people[0].endswith(
        f"unaffected: {len(had[C])} had finished their track and still have nothing left"
    )
    assert f"move: next step second ({B}) instead of step {B}" in people[1]
    assert f"finish: nothing left for them instead of step {C}" in people[2]
    assert f"  steps added: second ({B})" in lines


# --- edits inside branches and splits: people stay in their own arm ----------------------

_Tree = st.deferred(
    lambda: st.lists(
        st.one_of(
            st.just("send"),
            st.tuples(st.just("if"), _Tree, _Tree),
            st.tuples(st.just("split"), st.lists(_Tree, min_size=2, max_size=3)),
        ),
        min_size=1,
        max_size=3,
    ),
)


def _build(shape: list[Any], counter: list[int]) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = []
    for item in shape:
        counter[0] += 1
        n = counter[0]
        if item == "send":
            steps.append({"id": f"s{n}", "content": f"discovery/s{n}"})
        elif item[0] == "if":
            then, else_ = _build(item[1], counter), _build(item[2], counter)
            steps.append({"id": f"b{n}", "if": "fit >= 0", "then": then, "else": else_})
        else:
            paths = [{"id": f"p{i}", "steps": _build(p, counter)} for i, p in enumerate(item[1])]
            steps.append({"id": f"x{n}", "split": paths})
    return steps


def _without(steps: list[dict[str, Any]], gone: str) -> list[dict[str, Any]]:
    """`steps` with step (or split path `<split>#<path>`) `gone` removed, at any depth."""
    kept = []
    for step in steps:
        if step["id"] == gone:
            continue
        step = dict(step)
        if "if" in step:
            step["then"], step["else"] = _without(step["then"], gone), _without(step["else"], gone)
        elif "split" in step:
            step["split"] = [
                {**p, "steps": _without(p["steps"], gone)}
                for p in step["split"]
                if f"{step['id']}#{p['id']}" != gone
            ]
        kept.append(step)
    return kept


def _journey(steps: list[dict[str, Any]]) -> Any:
    from nurture.workflows import Workflow

    return Workflow.model_validate(
        {"id": "w", "name": "w", "enter": {"stages": ["lead"]}, "tracks": {"discovery": steps}}
    )


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(shape=_Tree, data=st.data())
def test_a_removal_inside_a_branch_or_split_keeps_people_in_their_own_arm(
    shape: list[Any], data: st.DataObject
) -> None:
    """Random journeys of branches and splits, a person at a random place, a random step or
    split path removed: the planner on the new version meets next exactly the first thing
    that remains of their own arm, else what follows the branch or split (old order),
    never a step of another arm; and `carry` names that same step as their next one."""
    from nurture.core import planner
    from nurture.core.versions import outline

    steps = _build(shape, [0])
    old = _journey(steps)
    index = planner._index(old, "discovery")
    places = [s.key for s in old.flat("discovery") if isinstance(s, Step) or "#" in s.key]
    assume(places)
    pointer = data.draw(st.sampled_from(places))
    removable = [
        s.key
        for s in old.flat("discovery")
        if isinstance(s, Step) or ("#" in s.key and len(index.arms) and _splits_path(old, s.key))
    ]
    gone = data.draw(st.sampled_from(removable))
    left = _without(steps, gone)
    assume(left)
    new = _journey(left)
    remaining = {s.key for s in new.flat("discovery")}
    # what they meet next on the old tree, passing over what the edit removed
    node = planner._enter(index, pointer) if "#" in pointer else planner._after(index, pointer)
    while node is not None and node.key not in remaining:
        node = planner._after(index, node.key)
    carried = carry(
        outline(old),
        outline(new),
        {"discovery": pointer},
        phase="discovery",
        received=set(),
        workflow="w",
    )
    at = datetime(2026, 1, 5, tzinfo=UTC)

    def met(places: dict[str, str]) -> str | None:
        """The email the planner sends next from `places` on the new version."""
        plan = planner.plan_next(
            new, "discovery", places, set(), since=at, now=at, variables={"fit": 1}, who="p"
        )
        return plan.step.key if isinstance(plan, planner.Send) else None

    # a branch or split next: decided there, as the planner does for whoever reaches it
    expected = (
        None
        if node is None
        else node.key
        if isinstance(node, Step)
        else met({"discovery": node.key})
    )
    assert met(carried.places) == expected, (pointer, gone, carried.places, expected)
    if node is None or isinstance(node, Step):
        assert carried.now == expected, (pointer, gone, carried)


def _splits_path(workflow: Any, key: str) -> bool:
    """Whether arm `key` is a path of a split of more than two paths (one may go)."""
    from nurture.workflows import Split

    for step in workflow.flat("discovery"):
        if isinstance(step, Split) and key.startswith(f"{step.id}#"):
            return len(step.split) > 2
    return False


def _branching(then: Sequence[tuple[str, str]]) -> str:
    steps = ", ".join(f"{{content: {c}, wait: {w}}}" for c, w in then)
    return (
        workflow([]).replace("tracks:\n", "tracks:\n  discovery:\n").rstrip()
        + f'\n    - {{id: fork, if: "fit >= 0", then: [{steps}], else: [{{content: {C}}}]}}\n'
    )


def test_removing_a_step_of_a_branch_never_sends_the_other_way(rt: Runtime) -> None:
    """People in the `then` way of a branch, its next step removed: they finish the way
    (nothing follows the branch), never get the `else` way's email; `nurture plan` says the
    same before, on SQLite and PostgreSQL."""
    write_workflow(rt.project.root, "edits", _branching([(A, "0d"), (B, "2d")]))
    for i in range(4):
        add_contact(rt, f"p{i}@company{i}.example", **PROFILE)
    run(rt, 12)
    assert {e: sorted(p) for e, p in received(rt).items()} == {
        f"p{i}@company{i}.example": [A] for i in range(4)
    }
    write_workflow(rt.project.root, "edits", _branching([(A, "0d")]))
    import json

    (entry,) = json.loads(plan(rt, "--json").output)
    groups = {(g["kind"], g["from"], g["to"]): g["count"] for g in entry["people"]}
    assert groups == {("finish", B, None): 4}, groups
    assert f"4 people finish: nothing left for them instead of step {B}" in plan(rt).output
    run(rt, 24 * 4)
    for email, pieces in check(rt).items():
        assert pieces == [A], (email, pieces)
