"""Enrolling a segment: through the one enrollment function, paced by the caps, applied only
when asked; and the commands that show segments."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import func, select

from nurture import segments
from nurture.audiences import enroll
from nurture.cli import main
from nurture.clock import FixedClock
from nurture.db import sessions
from nurture.feedback import suppress
from nurture.models import Contact, Enrollment, Message
from nurture.runtime import Runtime, open_runtime
from tests.helpers import add_contact, write
from tests.test_segments import with_segments  # noqa: F401  (autouse: the example segments)

VIP = """\
name: Decision makers
enter:
  segment: target-decision-makers
tracks:
  discovery:
    - content: discovery/hidden-cost-of-churn
    - content: discovery/activation-metrics
      wait: 3d
  evaluation:
    - content: evaluation/build-vs-buy
"""


def _people(rt: Runtime) -> None:
    """Twelve decision makers of target companies (four share one account), three who are
    not, one suppressed, two at a goal-free stage with no nurture (contact)."""
    for n in range(12):
        domain = "shared.example" if n < 4 else f"co{n}.example"
        add_contact(rt, f"dm{n}@{domain}", "lead", sector="saas", seniority="vp", company_size=200)
    for n in range(3):
        add_contact(rt, f"ic{n}@other{n}.example", "lead", sector="saas", seniority="staff")
    for n in range(2):
        add_contact(
            rt, f"new{n}@fresh{n}.example", None, sector="saas", seniority="vp", company_size=90
        )
    with sessions(rt.database).begin() as session:
        suppress(session, "dm11@co11.example", "unsubscribed", "test", rt.clock.now())


def _members(rt: Runtime) -> int:
    with sessions(rt.database)() as session:
        found = segments.audience(
            session,
            rt.project.settings,
            rt.project.segments["target-decision-makers"],
            rt.project.content_ids(),
            rt.clock.now(),
        )
        return segments.count(session, found)


def _enrolled(rt: Runtime, workflow: str) -> set[int]:
    with sessions(rt.database)() as session:
        return set(
            session.scalars(select(Enrollment.contact_id).where(Enrollment.workflow == workflow))
        )


def test_backfill_enrolls_who_is_in_the_segment_paced_and_only_when_asked(
    project_dir: Path, clock: FixedClock, database_url: str
) -> None:
    rt = open_runtime(project_dir, clock=clock, database=database_url)
    _people(rt)
    rt.database.dispose()
    write(project_dir, "workflows/decision-makers.yaml", VIP)
    rt = open_runtime(project_dir, clock=clock, database=database_url)
    try:
        assert _members(rt) == 14  # 12 leads + 2 at stage contact, the suppressed one too
        now = clock.now()
        dry = enroll(rt.database, rt.project, "decision-makers", None, now, dry_run=True)
        assert (dry.members, len(dry.entered), dry.applied) == (14, 11, False)
        assert _enrolled(rt, "decision-makers") == set()  # a dry run changes nothing
        # Monday 09:00 in Paris: nine go today; the shared account's cap (2 a day) moves
        # two of its four people to Tuesday.
        assert [n for n, _, _ in dry.schedule.values()] == [9, 2]

        done = enroll(rt.database, rt.project, "decision-makers", None, now, dry_run=False)
        assert done.entered == dry.entered and done.applied
        with sessions(rt.database)() as session:
            emails = {i: e for i, e in session.execute(select(Contact.id, Contact.email))}
            assert session.scalar(
                select(func.count()).where(Enrollment.workflow == "decision-makers")
            ) == len(done.entered)
        entered = {emails[i] for i in _enrolled(rt, "decision-makers")}
        assert entered == {f"dm{n}@{'shared' if n < 4 else f'co{n}'}.example" for n in range(11)}

        again = enroll(rt.database, rt.project, "decision-makers", None, now, dry_run=False)
        assert again.entered == []  # already in it

        rt.dispatcher.tick()
        with sessions(rt.database)() as session:
            today = Counter(
                session.scalars(select(Message.contact_id).where(Message.sent_at >= now))
            )
            accounts = Counter(
                session.scalars(
                    select(Contact.account)
                    .join(Message, Message.contact_id == Contact.id)
                    .where(Message.sent_at >= now)
                )
            )
        assert today and max(today.values()) == 1  # nobody gets a burst, whatever workflow
        assert accounts["shared.example"] == 2  # the account cap holds
    finally:
        rt.database.dispose()


def test_a_workflow_entering_by_segment_takes_people_as_they_come_in(runtime: Runtime) -> None:
    write(runtime.project.root, "workflows/decision-makers.yaml", VIP)
    runtime.database.dispose()
    rt = open_runtime(
        runtime.project.root,
        clock=runtime.clock,
        database=runtime.database.url.render_as_string(hide_password=False),
    )
    try:
        added = add_contact(rt, "cfo@acme.example", "lead", sector="saas", seniority="vp")
        assert "decision-makers" not in added.enrolled  # no company size: not in it
        later = add_contact(rt, "cfo@acme.example", "lead", company_size=300)
        assert "decision-makers" in later.enrolled
    finally:
        rt.database.dispose()


def test_segment_commands(project_dir: Path, clock: FixedClock, tmp_path: Path) -> None:
    database = tmp_path / "cli.db"
    rt = open_runtime(project_dir, clock=clock, database=f"sqlite:///{database}")
    _people(rt)
    rt.database.dispose()
    write(project_dir, "workflows/decision-makers.yaml", VIP)
    base = ["--project", str(project_dir), "--db", str(database)]
    runner = CliRunner()
    listed = runner.invoke(main, [*base, "segment", "list"])
    assert listed.exit_code == 0, listed.output
    assert "target-decision-makers        14  Target decision makers" in listed.output
    counted = runner.invoke(main, [*base, "segment", "show", "target-decision-makers", "--count"])
    assert counted.output == "14\n"
    shown = runner.invoke(main, [*base, "segment", "show", "target-decision-makers"])
    assert "14 people; page 1 of 1" in shown.output
    assert shown.output.count("@") == 14
    out = tmp_path / "dm.csv"
    exported = runner.invoke(
        main, [*base, "segment", "export", "target-decision-makers", "-o", str(out)]
    )
    assert exported.output == f"wrote 14 people to {out}\n"
    assert len(out.read_text().splitlines()) == 15
    unknown = runner.invoke(main, [*base, "segment", "show", "target-decision-maker"])
    assert unknown.exit_code == 1
    assert "unknown segment 'target-decision-maker'; did you mean target-decision-makers?" in (
        unknown.output
    )
    dry = runner.invoke(main, [*base, "enroll", "decision-makers", "--dry-run"])
    assert "14 in the segment, 11 would enter, 3 left out" in dry.output, dry.output
    assert "dry run: nothing changed" in dry.output
    plan = runner.invoke(main, [*base, "plan"])
    assert (
        "backfill: decision-makers <- segment target-decision-makers: 14 in the segment, 11 would enter"
        in plan.output
    )
    assert (
        "apply with: nurture enroll decision-makers --segment target-decision-makers" in plan.output
    )
    done = runner.invoke(main, [*base, "enroll", "decision-makers"])
    assert "11 entered" in done.output
    again = runner.invoke(main, [*base, "plan"])
    assert "0 would enter" in again.output
    bad = runner.invoke(main, [*base, "enroll", "guide-nurture"])
    assert bad.exit_code == 1 and "does not enter by segment" in bad.output


def test_segment_contacts_api(runtime: Runtime) -> None:
    from nurture.apikeys import create_key
    from nurture.web import create_app

    for n in range(7):
        add_contact(
            runtime, f"dm{n}@co{n}.example", "lead", sector="saas", seniority="vp", company_size=80
        )
    add_contact(runtime, "ic@other.example", "lead", sector="saas", seniority="staff")
    with sessions(runtime.database).begin() as session:
        key = create_key(session, "crm", runtime.clock.now())[1]
    client = create_app(runtime).test_client()
    headers = {"Authorization": f"Bearer {key}"}
    path = "/api/v1/segments/target-decision-makers/contacts"
    assert client.get(path).status_code == 401
    first = client.get(f"{path}?per_page=5", headers=headers)
    assert first.status_code == 200
    assert (first.json["total"], first.json["pages"], len(first.json["contacts"])) == (7, 2, 5)
    second = client.get(f"{path}?per_page=5&page=2", headers=headers).json
    emails = [c["email"] for c in first.json["contacts"] + second["contacts"]]
    assert sorted(emails) == sorted(f"dm{n}@co{n}.example" for n in range(7))
    assert second["contacts"][0]["stage"] == "lead"
    with sessions(runtime.database)() as session:
        found = segments.audience(
            session,
            runtime.project.settings,
            runtime.project.segments["target-decision-makers"],
            runtime.project.content_ids(),
            runtime.clock.now(),
        )
        assert first.json["total"] == segments.count(session, found)
    unknown = client.get("/api/v1/segments/target-decision-maker/contacts", headers=headers)
    assert unknown.status_code == 404
    assert "did you mean target-decision-makers?" in unknown.json["message"]
    for bad in ("page=0", "page=x", "per_page=501", "page=-1", "page=1e3"):
        answer = client.get(f"{path}?{bad}", headers=headers)
        assert answer.status_code == 422, bad
        assert answer.json["errors"][0]["field"] == bad.split("=")[0]


def test_a_backfill_counts_and_schedules_only_the_people_it_emails_not_the_held_out(
    project_dir: Path, clock: FixedClock, database_url: str
) -> None:
    """With `holdout: 50%`, the held-out members are recorded as held out, and the backfill's
    entered list and first-email schedule hold only the others (found by review: they were
    counted as entered and given first emails they never get)."""
    rt = open_runtime(project_dir, clock=clock, database=database_url)
    _people(rt)
    rt.database.dispose()
    write(
        project_dir, "workflows/decision-makers.yaml", VIP.replace("enter:", "holdout: 50%\nenter:")
    )
    rt = open_runtime(project_dir, clock=clock, database=database_url)
    try:
        done = enroll(rt.database, rt.project, "decision-makers", None, clock.now(), dry_run=False)
        with sessions(rt.database)() as session:
            statuses = dict(
                session.execute(
                    select(Enrollment.contact_id, Enrollment.status).where(
                        Enrollment.workflow == "decision-makers"
                    )
                ).all()
            )
        held = {i for i, status in statuses.items() if status == "holdout"}
        assert held and len(statuses) == 11  # the 11 who may enter: some held out
        assert set(done.entered) == set(statuses) - held
        assert set(done.held_out) == held
        assert sum(n for n, _, _ in done.schedule.values()) == len(done.entered)
        assert done.left_out == done.members - 11 == 3  # suppressed, and two at stage contact
    finally:
        rt.database.dispose()
