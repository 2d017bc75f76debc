"""Subject-test winners: the rule on known counts, and `promote_winner: true` end to end
(called, recorded with when and why, then every later email gets the winner)."""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from nurture.cli import main
from nurture.clock import FixedClock
from nurture.core.winner import Arm, decide, two_proportion_p
from nurture.db import sessions
from nurture.feedback import record_event
from nurture.jobs import run_periodic
from nurture.models import Contact, Message, SubjectWinner
from nurture.problems import ProjectError
from nurture.project import load_project
from nurture.runtime import Runtime, open_runtime
from nurture.scheduler import build_scheduler
from tests.conftest import MONDAY_MORNING
from tests.helpers import PROFILE, add_contact

PIECE = "evaluation/case-study-northwind"


def test_the_z_test_matches_statsmodels_on_known_counts() -> None:
    stats = pytest.importorskip("statsmodels.stats.proportion")
    draw = random.Random(5)
    for _ in range(100):
        a = Arm(draw.randint(100, 5000), 0)
        b = Arm(draw.randint(100, 5000), 0)
        a = Arm(a.sent, draw.randint(1, a.sent - 1))
        b = Arm(b.sent, draw.randint(1, b.sent - 1))
        _, expected = stats.proportions_ztest([a.clicked, b.clicked], [a.sent, b.sent])
        assert two_proportion_p(a, b) == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(
    ("arms", "winner", "says"),
    [
        # 5.0% vs 8.0% of 1,000: z = 2.72, p = 0.0065 -> #2 wins
        ([(1000, 50), (1000, 80)], 1, "#2 wins"),
        # 5.0% vs 6.0% of 1,000: p = 0.33 -> not significant
        ([(1000, 50), (1000, 60)], None, "not significant"),
        # three subjects: #3 beats #1 at p = 0.0065 but #2 only at p = 0.042 > 0.025
        ([(1000, 50), (1000, 57), (1000, 80)], None, "needed under 0.025"),
        ([(99, 50), (1000, 10)], None, "not enough sends yet"),
    ],
)
def test_the_winner_rule_on_known_counts(
    arms: list[tuple[int, int]], winner: int | None, says: str
) -> None:
    verdict = decide([Arm(sent, clicked) for sent, clicked in arms])
    assert verdict.winner == winner
    assert says in verdict.reason


def test_the_p_values_of_the_known_counts() -> None:
    """By hand: pooled p, se = sqrt(p (1 - p) (1/n1 + 1/n2)), z = (p2 - p1) / se."""
    # p = 0.065, se = 0.011025, z = 2.7211
    assert two_proportion_p(Arm(1000, 50), Arm(1000, 80)) == pytest.approx(0.00651, abs=5e-5)
    # p = 0.055, se = 0.010196, z = 0.9808
    assert two_proportion_p(Arm(1000, 50), Arm(1000, 60)) == pytest.approx(0.3267, abs=5e-4)
    # p = 0.0685, se = 0.011297, z = 2.0360
    assert two_proportion_p(Arm(1000, 57), Arm(1000, 80)) == pytest.approx(0.0418, abs=5e-4)


def promoting(root: Path) -> None:
    path = root / "content" / "evaluation" / "case-study-northwind.mjml"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("tags: [case-study]", "promote_winner: true\ntags: [case-study]"))


def test_promote_winner_needs_a_subject_test(project_dir: Path) -> None:
    path = project_dir / "content" / "discovery" / "hidden-cost-of-churn.mjml"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("---\n", "---\npromote_winner: true\n", 1), encoding="utf-8")
    with pytest.raises(ProjectError) as caught:
        load_project(project_dir)
    assert "promote_winner needs a subject test" in str(caught.value)
    assert "discovery/hidden-cost-of-churn.mjml:" in str(caught.value)


def test_a_called_winner_goes_to_everyone_after(project_dir: Path, database_url: str) -> None:
    promoting(project_dir)
    clock = FixedClock(MONDAY_MORNING)
    rt = open_runtime(project_dir, clock=clock, database=database_url)
    try:
        _called_then_promoted(rt, clock)
    finally:
        rt.database.dispose()


def _sends(rt: Runtime) -> list[tuple[int, int | None, str, str]]:
    with sessions(rt.database)() as session:
        return [
            (row.id, row.subject_variant, row.subject, row.email)
            for row in session.execute(
                select(Message.id, Message.subject_variant, Message.subject, Contact.email)
                .join(Contact, Contact.id == Message.contact_id)
                .where(Message.content_id == PIECE)
                .order_by(Message.id)
            )
        ]


def _called_then_promoted(rt: Runtime, clock: FixedClock) -> None:
    for i in range(300):
        add_contact(rt, f"p{i}@c{i}.example", stage="mql", **PROFILE)
    clock.advance(timedelta(days=2))
    rt.dispatcher.tick()
    first = _sends(rt)
    assert len(first) == 300
    split = {v: [s for s in first if s[1] == v] for v in (0, 1)}
    assert min(len(split[0]), len(split[1])) >= 100, {v: len(s) for v, s in split.items()}
    # nothing called yet: the periodic job records nothing
    assert run_periodic(rt, clock.now())["promoted"] == 0
    now = clock.now()
    with sessions(rt.database).begin() as session:
        for variant, clicks in ((0, 5), (1, 40)):
            for message_id, _, _, email in split[variant][:clicks]:
                record_event(
                    session,
                    rt.project,
                    email,
                    "email_clicked",
                    now,
                    properties={"message_id": message_id},
                    message_id=message_id,
                )
    clock.advance(timedelta(hours=1))
    called_at = clock.now()
    scheduled = build_scheduler(rt).get_job("promote")  # what `run` and workers do each minute
    assert scheduled is not None
    scheduled.func(rt)
    assert run_periodic(rt, called_at)["promoted"] == 0  # recorded once
    with sessions(rt.database)() as session:
        (won,) = session.scalars(select(SubjectWinner)).all()
    assert (won.content_id, won.variant, won.decided_at) == (PIECE, 1, called_at)
    assert won.reason.startswith("#2 wins")
    # everyone after gets the winner
    for i in range(40):
        add_contact(rt, f"late{i}@d{i}.example", stage="mql", **PROFILE)
    clock.advance(timedelta(days=2))
    rt.dispatcher.tick()
    later = _sends(rt)[300:]
    assert len(later) == 40
    assert {variant for _, variant, _, _ in later} == {1}
    assert {subject for _, _, subject, _ in later} == {
        "Ana, six CSMs saved 31 accounts. Here is how."
    }
    # `nurture stats` and the content page say it
    url = rt.database.url.render_as_string(hide_password=False)
    result = CliRunner().invoke(main, ["--project", str(rt.project.root), "--db", url, "stats"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"{PIECE} #2: {{{{ contact.first_name or 'Hello' }}}}, six CSMs" in out
    assert f"  {len(split[1]) + 40} sent, 0 real opens, 40 real clicks (winner)" in out
    assert f"  {len(split[0])} sent, 0 real opens, 5 real clicks\n" in out
    assert "  verdict: #2 wins" in out
    assert f"  promoted: #2 to everyone since {called_at:%Y-%m-%d %H:%M} UTC" in out
    # and the content page
    from nurture.users import create_user
    from nurture.web import create_app
    from tests.test_dashboard import PASSWORD, log_in

    with sessions(rt.database).begin() as session:
        create_user(session, "ops@keel.example", PASSWORD, clock.now())
    client = create_app(rt).test_client()
    log_in(client)
    page = client.get("/content", query_string={"piece": PIECE}).get_data(as_text=True)
    assert 'data-test="promoted"' in page
    assert "Promoted: #2 goes to everyone since" in page
