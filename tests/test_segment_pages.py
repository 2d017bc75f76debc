"""The dashboard's Segments pages: login, the numbers against SQL counts, the export, and
the enrollment (a preview, then a CSRF-protected POST)."""

from __future__ import annotations

import csv
import io

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from nurture import segments
from nurture.db import sessions
from nurture.models import Enrollment
from nurture.runtime import Runtime, open_runtime
from nurture.users import create_user
from nurture.web import create_app
from tests.helpers import add_contact, write
from tests.test_audiences import VIP
from tests.test_dashboard import PASSWORD, csrf, log_in
from tests.test_segments import with_segments  # noqa: F401  (autouse: the example segments)

PAGES = [
    "/segments",
    "/segments/target-decision-makers",
    "/segments/target-decision-makers.csv",
]


@pytest.fixture
def client(runtime: Runtime) -> FlaskClient:
    with sessions(runtime.database).begin() as session:
        create_user(session, "ops@keel.example", PASSWORD, runtime.clock.now())
    for n in range(6):
        add_contact(
            runtime, f"dm{n}@co{n}.example", "lead", sector="saas", seniority="vp", company_size=80
        )
    add_contact(runtime, "ic@other.example", "lead", sector="saas", seniority="staff")
    write(runtime.project.root, "workflows/decision-makers.yaml", VIP)
    url = runtime.database.url.render_as_string(hide_password=False)
    rt = open_runtime(runtime.project.root, clock=runtime.clock, database=url)
    return create_app(rt).test_client()


def _count(client: FlaskClient) -> int:
    rt: Runtime = client.application.extensions["nurture"]
    with sessions(rt.database)() as session:
        found = segments.audience(
            session,
            rt.project.settings,
            rt.project.segments["target-decision-makers"],
            rt.project.content_ids(),
            rt.clock.now(),
        )
        return segments.count(session, found)


def _enrolled(client: FlaskClient) -> int:
    rt: Runtime = client.application.extensions["nurture"]
    with sessions(rt.database)() as session:
        return int(
            session.scalar(select(func.count()).where(Enrollment.workflow == "decision-makers"))
            or 0
        )


def test_segment_pages_need_a_login(client: FlaskClient) -> None:
    for path in PAGES:
        reply = client.get(path)
        assert reply.status_code == 302 and reply.headers["Location"].startswith("/login?next=")
    posted = client.post("/segments/target-decision-makers/enroll", data={"workflow": "x"})
    assert posted.status_code in (302, 400)
    assert _enrolled(client) == 0


def test_segment_pages_count_export_and_enroll(client: FlaskClient) -> None:
    log_in(client)
    listing = client.get("/segments").get_data(as_text=True)
    assert f'data-test="count-target-decision-makers">{_count(client)}<' in listing
    assert _count(client) == 6
    page = client.get("/segments/target-decision-makers").get_data(as_text=True)
    assert 'data-test="total">6<' in page
    assert page.count("@co") == 6 and "ic@other.example" not in page
    exported = client.get("/segments/target-decision-makers.csv")
    assert exported.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(exported.get_data(as_text=True))))
    assert len(rows) == 6
    assert client.get("/segments/nope").status_code == 404

    preview = client.get("/segments/target-decision-makers?workflow=decision-makers")
    text = preview.get_data(as_text=True)
    assert "6 in the segment: <strong>6 would enter</strong>" in text
    assert _enrolled(client) == 0  # the preview changes nothing
    refused = client.post(
        "/segments/target-decision-makers/enroll", data={"workflow": "decision-makers"}
    )
    assert refused.status_code == 400 and _enrolled(client) == 0  # no CSRF token
    token = csrf(client, "/segments/target-decision-makers?workflow=decision-makers")
    done = client.post(
        "/segments/target-decision-makers/enroll",
        data={"workflow": "decision-makers", "csrf_token": token},
    )
    assert done.status_code == 200
    assert "6 people entered decision-makers" in done.get_data(as_text=True)
    assert _enrolled(client) == 6
    again = client.get("/segments/target-decision-makers?workflow=decision-makers")
    assert "<strong>0 would enter</strong>" in again.get_data(as_text=True)
    unknown = client.post(
        "/segments/target-decision-makers/enroll", data={"workflow": "nope", "csrf_token": token}
    )
    assert unknown.status_code == 400
