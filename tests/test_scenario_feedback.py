"""One person from a CSV import to sales, through the real HTTP API: the stages move at the
right events, every email comes from the phase of the stage it was sent in, decision content
goes on after the meeting (an SQL) until sales accepts, and the hand-off webhook reaches the CRM
once, signed."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import waitress
from click.testing import CliRunner
from sqlalchemy import select

from nurture.apikeys import create_key
from nurture.cli import main
from nurture.clock import FixedClock
from nurture.db import sessions
from nurture.handoffs import verify
from nurture.jobs import run_periodic
from nurture.models import Enrollment, Message, StageMove
from nurture.runtime import Runtime
from nurture.web import create_app
from tests.conftest import HANDOFF_SECRET
from tests.helpers import outbox, parse_eml, write
from tests.receiver import Receiver
from tests.smtp_server import free_port


@pytest.fixture
def rt(crm_runtime: Runtime) -> Runtime:
    return crm_runtime


class Api:
    """Ana's side of the real HTTP API, each call a minute after the last tick."""

    def __init__(self, rt: Runtime, port: int, key: str) -> None:
        self.rt, self.port, self.key = rt, port, key

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        assert isinstance(self.rt.clock, FixedClock)
        self.rt.clock.advance(timedelta(minutes=1))  # not the instant of the last tick
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/api/v1{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.key}"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200
            result: dict[str, Any] = json.loads(response.read())
            return result

    def __call__(self, kind: str, **properties: Any) -> dict[str, Any]:
        body = {"email": "ana@acme.example", "kind": kind, "properties": properties}
        return self.post("/events", body)


@pytest.fixture
def api(rt: Runtime) -> Iterator[Api]:
    port = free_port()
    server = waitress.create_server(create_app(rt), host="127.0.0.1", port=port, threads=2)
    threading.Thread(target=server.run, daemon=True).start()
    with sessions(rt.database).begin() as session:
        key = create_key(session, "website", rt.clock.now())[1]
    yield Api(rt, port, key)
    server.close()


def days(rt: Runtime, count: int) -> None:
    """Let `count` days go by, the engine ticking every hour."""
    assert isinstance(rt.clock, FixedClock)
    for _ in range(count * 24):
        rt.clock.advance(timedelta(hours=1))
        rt.dispatcher.tick()
        run_periodic(rt, rt.clock.now())


def stage_of(reply: dict[str, Any]) -> str:
    return str(reply["events"][0]["stage"])


def test_from_import_to_sales(
    rt: Runtime, api: Api, crm: Receiver, project_dir: Path, database_url: str
) -> None:
    csv = write(
        project_dir,
        "salon.csv",
        "email,first_name,company,sector,company_size,seniority,timezone\n"
        "ana@acme.example,Ana,Acme,saas,300,vp,Europe/Paris\n",
    )
    imported = CliRunner().invoke(
        main,
        [
            "--project",
            str(project_dir),
            "--db",
            database_url,
            "import",
            str(csv),
            "--source",
            "salon-2026",
        ],
    )
    assert imported.exit_code == 0 and "1 created" in imported.output
    days(rt, 1)
    assert [m.phase for m in rt_messages(rt)] == []  # a contact: no nurture before interest

    assert stage_of(api("content_downloaded", asset="churn-guide")) == "lead"
    days(rt, 2)
    assert stage_of(api("page_visited", url="https://keel-retention.example/pricing")) == "lead"
    # 10 decayed over two days (9.55) + 15 + 10 = 34.55: just under the MQL line of 35.
    assert stage_of(api("webinar_registered", webinar="retention-2026")) == "lead"
    days(rt, 4)
    assert stage_of(api("webinar_attended", webinar="retention-2026")) == "mql"
    days(rt, 4)
    assert stage_of(api("meeting_booked")) == "sql"
    days(rt, 4)
    accepted = api.post("/contacts/ana@acme.example/sales", {"outcome": "accepted"})
    assert accepted["stage"] == "sql" and accepted["events"][0]["kind"] == "sales_accepted"
    accepted_at = rt.clock.now()
    days(rt, 10)

    with sessions(rt.database)() as session:
        moves = [
            (m.to_stage, m.reason, m.at)
            for m in session.scalars(select(StageMove).order_by(StageMove.id))
        ]
    # Half-life 30 days: 10 for two days, plus 25, for four days, plus 20.
    engagement = (10 * 0.5 ** (2 / 30) + 25) * 0.5 ** (4 / 30) + 20
    assert [(to, why) for to, why, _ in moves] == [
        ("contact", "created"),
        ("lead", "event content_downloaded"),
        ("mql", f"rule fit >= 30 and engagement >= 35 (fit 55, engagement {engagement:.1f})"),
        ("sql", "event meeting_booked"),
    ]
    sent = rt_messages(rt)
    phase_of = {"lead": "discovery", "mql": "evaluation", "sql": "decision"}
    for message in sent:
        stage = [to for to, _, at in moves if at <= message.sent_at][-1]
        assert message.phase == phase_of[stage], (message.content_id, stage)
        assert message.stage_at_send == stage
    phases = [m.phase for m in sent]
    assert "discovery" in phases and "evaluation" in phases
    sql_at = moves[-1][2]
    # A meeting makes an SQL, not a goal: decision content goes on until sales accepts,
    # and sales accepting (the workflows' goal) ends it while some was still to come.
    after_sql = [m.content_id for m in sent if m.sent_at >= sql_at]
    assert "decision/demo-invitation" in after_sql, after_sql
    assert all(m.sent_at < accepted_at for m in sent)
    assert "decision/pilot-offer" not in [m.content_id for m in sent]
    with sessions(rt.database)() as session:
        ends = {(e.workflow, e.status, e.end_reason) for e in session.scalars(select(Enrollment))}
    assert ends == {
        ("guide-nurture", "completed", "goal: sales_accepted"),
        ("webinar-follow-up", "completed", "goal: sales_accepted"),
    }
    assert all(m.status == "sent" for m in sent)

    [hit] = crm.received
    payload = json.loads(hit.body)
    assert payload["contact"]["email"] == "ana@acme.example" and payload["stage"] == "sql"
    signed_at = int(hit.headers["X-Nurture-Signature"].split(",")[0].removeprefix("t="))
    from datetime import UTC, datetime

    assert verify(
        HANDOFF_SECRET,
        hit.headers["X-Nurture-Signature"],
        hit.body,
        datetime.fromtimestamp(signed_at, UTC),
    )
    notes = [parse_eml(p) for p in outbox(rt) if "notice" in p.name]
    assert [n["To"] for n in notes] == ["sales@keel-retention.example"]


def rt_messages(rt: Runtime) -> list[Message]:
    with sessions(rt.database)() as session:
        return list(session.scalars(select(Message).order_by(Message.sent_at, Message.id)))
