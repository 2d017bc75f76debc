"""Subject-line tests: sends split between the subjects, and real engagement per subject."""

from __future__ import annotations

from datetime import timedelta

from click.testing import CliRunner
from sqlalchemy import select

from nurture.cli import main
from nurture.db import sessions
from nurture.feedback import record_event
from nurture.models import Contact, Message
from nurture.runtime import Runtime
from tests.helpers import PROFILE, add_contact, outbox, parse_eml


def test_sends_are_split_and_stats_count_people_not_machines(runtime: Runtime) -> None:
    piece = runtime.project.content["evaluation/case-study-northwind"]
    assert piece.variants == 2
    for i in range(120):
        add_contact(runtime, f"p{i}@c{i}.example", stage="mql", **PROFILE)
    runtime.clock.advance(timedelta(days=2))  # type: ignore[attr-defined]
    runtime.dispatcher.tick()
    with sessions(runtime.database)() as session:
        sent = session.execute(
            select(Message.id, Message.subject_variant, Message.subject, Contact.email)
            .join(Contact, Contact.id == Message.contact_id)
            .where(Message.content_id == piece.id)
        ).all()
    assert len(sent) == 120
    counts = {v: sum(1 for row in sent if row.subject_variant == v) for v in (0, 1)}
    assert counts[0] + counts[1] == 120 and min(counts.values()) >= 35, counts
    assert {row.subject for row in sent if row.subject_variant == 0} == {
        "How Northwind cut churn by 23% in two quarters"
    }
    assert {row.subject for row in sent if row.subject_variant == 1} == {
        "Ana, six CSMs saved 31 accounts. Here is how."
    }
    subjects = {parse_eml(path)["Subject"] for path in outbox(runtime)}
    assert len(subjects) == 2
    now = runtime.clock.now()
    variant_one = [row for row in sent if row.subject_variant == 1]
    with sessions(runtime.database).begin() as session:
        for row in variant_one[:10]:
            record_event(
                session,
                runtime.project,
                row.email,
                "email_clicked",
                now,
                properties={"message_id": row.id},
                message_id=row.id,
            )
            record_event(
                session,
                runtime.project,
                row.email,
                "email_opened",
                now,
                properties={"message_id": row.id},
                message_id=row.id,
            )
        for row in variant_one[10:15]:  # scanners: stored, flagged, not counted
            record_event(
                session,
                runtime.project,
                row.email,
                "email_clicked",
                now,
                properties={"message_id": row.id, "machine": "security scanner user agent"},
                message_id=row.id,
            )
    url = runtime.database.url.render_as_string(hide_password=False)
    result = CliRunner().invoke(
        main, ["--project", str(runtime.project.root), "--db", url, "stats"]
    )
    assert result.exit_code == 0, result.output
    line = next(
        line
        for line in result.output.splitlines()
        if line.startswith("evaluation/case-study-northwind #2 ")
    )
    fields = line.replace("(", " ").replace(")", " ").split()
    assert fields[2:5] == [str(counts[1]), "10", f"{10 / counts[1]:.1%}"]
    assert fields[5:7] == ["10", f"{10 / counts[1]:.1%}"]
    assert "evaluation/case-study-northwind #2: {{ contact.first_name" in result.output
