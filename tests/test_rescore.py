"""A change of the fit rules rescores everyone: in chunks, each change in the ledger with the
rule change as its cause, the stage moves that follow with theirs; once in a cluster."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from nurture.cli import main
from nurture.db import make_engine, sessions
from nurture.jobs import RESCORE_LOCK, cluster_once, run_periodic
from nurture.models import Contact, ScoreChange, StageMove
from nurture.project import load_project
from nurture.rescore import rescore_if_changed
from nurture.runtime import Runtime
from nurture.scheduler import fit_rules_job
from tests.helpers import add_contact, event

SIZE_RULE = 'when: "contact.company_size and 50 <= contact.company_size <= 2000"\n      points: 15'
LEAD = {"sector": "retail", "company_size": 300, "seniority": "manager", "first_name": "Bo"}
CAUSE = "fit rules changed: ~ Company of 50 to 2,000 people"


def change_size_points(root: Path, points: int) -> None:
    path = root / "nurture.yaml"
    text = path.read_text()
    assert SIZE_RULE in text
    path.write_text(text.replace(SIZE_RULE, SIZE_RULE.replace("15", str(points))))


def fit_ledger(rt: Runtime, address: str) -> list[tuple[float, float, str]]:
    with sessions(rt.database)() as session:
        contact_id = session.scalar(select(Contact.id).where(Contact.email == address))
        return [
            (c.points, c.value_after, c.rule)
            for c in session.scalars(
                select(ScoreChange)
                .where(ScoreChange.contact_id == contact_id, ScoreChange.axis == "fit")
                .order_by(ScoreChange.id)
            )
        ]


def last_move(rt: Runtime, address: str) -> tuple[str | None, str, str]:
    with sessions(rt.database)() as session:
        contact_id = session.scalar(select(Contact.id).where(Contact.email == address))
        move = session.scalars(
            select(StageMove).where(StageMove.contact_id == contact_id).order_by(StageMove.id)
        ).all()[-1]
        return move.from_stage, move.to_stage, move.reason


def stage_and_fit(rt: Runtime, address: str) -> tuple[str, float]:
    with sessions(rt.database)() as session:
        found = session.scalar(select(Contact).where(Contact.email == address))
        assert found is not None
        return found.stage, found.fit


def people(rt: Runtime, count: int) -> None:
    for n in range(count):
        add_contact(rt, f"p{n}@retail{n}.example", **LEAD)
    add_contact(rt, "bo@beta.example", **LEAD)
    event(rt, "bo@beta.example", "webinar_attended")
    event(rt, "bo@beta.example", "form_submitted", form="guide")
    assert stage_and_fit(rt, "bo@beta.example") == ("lead", 15)  # fit 15: not an MQL yet


def test_a_changed_fit_rule_rescores_everyone_at_the_next_round(runtime: Runtime) -> None:
    fit_rules_job(runtime)  # start-up: the rules as they are, recorded
    people(runtime, 7)
    fit_rules_job(runtime)
    assert len(fit_ledger(runtime, "bo@beta.example")) == 1  # its creation only

    change_size_points(runtime.project.root, 30)
    runtime.project = load_project(runtime.project.root)  # what the engine's reload does
    runtime.clock.advance(timedelta(minutes=1))
    fit_rules_job(runtime)
    assert fit_ledger(runtime, "bo@beta.example")[-1] == (
        15,
        30,
        f"{CAUSE}: Company of 50 to 2,000 people (+30)",
    )
    assert stage_and_fit(runtime, "bo@beta.example") == ("mql", 30)
    from_stage, to_stage, reason = last_move(runtime, "bo@beta.example")
    assert (from_stage, to_stage) == ("lead", "mql") and reason.endswith(f"({CAUSE})")
    assert stage_and_fit(runtime, "p3@retail3.example") == ("lead", 30)  # no engagement
    # Done once: later rounds (the job, `nurture tick`) find nothing to do.
    assert run_periodic(runtime, runtime.clock.now())["rescored"] == 0
    fit_rules_job(runtime)
    assert len(fit_ledger(runtime, "bo@beta.example")) == 2


def test_the_rescore_goes_by_chunks_and_counts_what_it_did(runtime: Runtime) -> None:
    run_periodic(runtime, runtime.clock.now())
    people(runtime, 7)
    change_size_points(runtime.project.root, 30)
    runtime.project = load_project(runtime.project.root)
    chunks: list[int] = []
    done = rescore_if_changed(
        runtime.project, runtime.database, runtime.clock.now(), batch=3, progress=chunks.append
    )
    assert done is not None and done.cause == CAUSE
    assert (done.contacts, done.changed, done.moved) == (8, 8, 1)
    assert chunks == [3, 3, 2]
    assert rescore_if_changed(runtime.project, runtime.database, runtime.clock.now()) is None


def run(project: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["--project", str(project), *args])
    return result.exit_code, result.stdout, result.stderr


def test_nurture_rescore_with_a_progress_bar(project_dir: Path) -> None:
    for n in range(3):
        code, out, err = run(
            project_dir, "contact", "add", f"p{n}@retail{n}.example", "company_size=300"
        )
        assert code == 0, out + err
    code, out, err = run(project_dir, "rescore")
    assert code == 0 and "fit rules unchanged: nothing to rescore" in out, out + err
    change_size_points(project_dir, 25)
    code, out, err = run(project_dir, "rescore")
    assert code == 0, out + err
    assert f"{CAUSE}\n3 contacts rescored: 3 fits changed, 0 stage moves" in out
    assert "rescoring" in err  # the progress bar, on stderr
    code, out, err = run(project_dir, "rescore")
    assert "fit rules unchanged" in out
    code, out, err = run(project_dir, "rescore", "--all")
    assert "fit rules rescored by hand\n3 contacts rescored: 0 fits changed" in out


def test_one_process_of_a_cluster_rescores(runtime: Runtime) -> None:
    if runtime.database.dialect.name != "postgresql":
        pytest.skip("SQLite runs every job in one process")
    run_periodic(runtime, runtime.clock.now())
    people(runtime, 2)
    change_size_points(runtime.project.root, 30)
    runtime.project = load_project(runtime.project.root)
    with cluster_once(runtime.database, RESCORE_LOCK) as mine:
        assert mine  # another process, busy rescoring
        assert "rescored" not in run_periodic(runtime, runtime.clock.now())
        fit_rules_job(runtime)
        assert stage_and_fit(runtime, "bo@beta.example") == ("lead", 15)
        code, out, err = run(
            runtime.project.root,
            "--db",
            str(runtime.database.url.render_as_string(False)),
            "rescore",
        )
        assert code == 1 and "another process is rescoring now" in out + err
    assert run_periodic(runtime, runtime.clock.now())["rescored"] == 3
    assert stage_and_fit(runtime, "bo@beta.example") == ("mql", 30)


def test_a_job_lock_is_its_schemas(postgres_url: str, empty_postgres_url: str) -> None:
    """Two installations in two schemas of one PostgreSQL database (parallel test workers)
    each run their jobs: the advisory lock of a job is taken per schema."""
    one, other = make_engine(postgres_url), make_engine(empty_postgres_url)
    try:
        with cluster_once(one, RESCORE_LOCK) as mine:
            assert mine
            with cluster_once(other, RESCORE_LOCK) as theirs:
                assert theirs
            with cluster_once(one, RESCORE_LOCK) as again:
                assert not again  # the same schema: another process of that cluster
    finally:
        one.dispose()
        other.dispose()
