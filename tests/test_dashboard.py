"""The dashboard through the Flask test client: login, CSRF, every page, numbers that match
the database, hostile input, and the actions on a contact."""

from __future__ import annotations

import http.cookiejar
import json
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import waitress
from flask import Flask
from flask.sessions import SecureCookieSessionInterface
from flask.testing import FlaskClient
from sqlalchemy import func, select

from nurture.clock import FixedClock
from nurture.db import sessions
from nurture.models import Contact, Suppression
from nurture.runtime import Runtime
from nurture.users import create_user
from nurture.web import create_app
from tests.helpers import PROFILE, add_contact, contact, event
from tests.smtp_server import free_port

PASSWORD = "correct horse battery staple"
PAGES = ["/", "/contacts", "/contacts/1", "/workflows", "/content", "/queue", "/settings"]


@pytest.fixture
def client(runtime: Runtime) -> FlaskClient:
    with sessions(runtime.database).begin() as session:
        create_user(session, "ops@keel.example", PASSWORD, runtime.clock.now())
    add_contact(runtime, "ana@acme.example", **PROFILE, company="Acme")
    add_contact(runtime, "bo@beta.example", stage=None, first_name="Bo")
    event(runtime, "ana@acme.example", "meeting_booked")
    return create_app(runtime).test_client()


def csrf(client: FlaskClient, path: str) -> str:
    page = client.get(path).get_data(as_text=True)
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, page[:500]
    return match.group(1)


def log_in(client: FlaskClient) -> None:
    reply = client.post(
        "/login",
        data={
            "email": "ops@keel.example",
            "password": PASSWORD,
            "csrf_token": csrf(client, "/login"),
        },
    )
    assert reply.status_code == 302


def test_every_page_needs_a_login(client: FlaskClient) -> None:
    for path in PAGES:
        reply = client.get(path)
        assert reply.status_code == 302 and reply.headers["Location"].startswith("/login?next=")
    assert client.post("/contacts/1/action", data={"action": "pause"}).status_code in (302, 400)


def test_a_wrong_password_is_refused_and_next_never_leaves_the_site(client: FlaskClient) -> None:
    token = csrf(client, "/login")
    wrong = client.post(
        "/login", data={"email": "ops@keel.example", "password": "nope", "csrf_token": token}
    )
    assert wrong.status_code == 401 and "Wrong email or password" in wrong.get_data(as_text=True)
    unknown = client.post(
        "/login", data={"email": "who@x.example", "password": PASSWORD, "csrf_token": token}
    )
    assert unknown.status_code == 401
    away = client.post(
        "/login?next=https://evil.example/",
        data={"email": "ops@keel.example", "password": PASSWORD, "csrf_token": token},
    )
    assert away.headers["Location"] == "/"


def test_forms_without_a_csrf_token_are_refused(client: FlaskClient) -> None:
    no_token = client.post("/login", data={"email": "ops@keel.example", "password": PASSWORD})
    assert no_token.status_code == 400
    log_in(client)
    action = client.post("/contacts/1/action", data={"action": "pause"})
    assert action.status_code == 400
    assert contact_paused(client) is False


def contact_paused(client: FlaskClient) -> bool:
    runtime: Runtime = client.application.extensions["nurture"]
    return contact(runtime, "ana@acme.example").paused


def test_a_forged_session_cookie_is_refused(client: FlaskClient) -> None:
    client.set_cookie("nurture_session", "eyJ1c2VyIjoib3BzQGtlZWwuZXhhbXBsZSJ9.forged.signature")
    assert client.get("/").status_code == 302
    elsewhere = Flask("elsewhere")
    elsewhere.secret_key = "another key entirely, forty characters long"
    serializer = SecureCookieSessionInterface().get_signing_serializer(elsewhere)
    assert serializer is not None
    client.set_cookie("nurture_session", serializer.dumps({"user": "ops@keel.example"}))
    assert client.get("/").status_code == 302  # well-formed, signed with another key
    log_in(client)
    assert client.get("/").status_code == 200
    client.post("/logout", data={"csrf_token": csrf(client, "/")})
    assert client.get("/").status_code == 302


def test_the_overview_numbers_match_the_database(client: FlaskClient, runtime: Runtime) -> None:
    log_in(client)
    page = client.get("/").get_data(as_text=True)
    with sessions(runtime.database)() as session:
        per_stage = dict(
            session.execute(select(Contact.stage, func.count()).group_by(Contact.stage)).all()
        )
    for stage in ("lead", "mql", "sql"):
        row = re.search(rf'<tr data-stage="{stage}">.*?<td class="people">(\d+)</td>', page, re.S)
        assert row and int(row.group(1)) == per_stage.get(stage, 0), stage
    assert per_stage["sql"] == 1
    assert 'data-test="sent-today">0<' in page
    assert "<svg" in page and "cdn" not in page.lower() and "<script" not in page
    assert 'aria-label="Stage moves per day"' in page and 'aria-label="Funnel"' in page


def test_contacts_search_filters_and_survives_hostile_input(client: FlaskClient) -> None:
    log_in(client)
    found = client.get("/contacts?q=acme").get_data(as_text=True)
    assert "ana@acme.example" in found and "bo@beta.example" not in found
    fits = client.get("/contacts?fit=50&fit_max=60").get_data(as_text=True)
    assert "ana@acme.example" in fits and "bo@beta.example" not in fits  # fit 55 and 0
    low = client.get("/contacts?fit_max=10").get_data(as_text=True)
    assert "bo@beta.example" in low and "ana@acme.example" not in low
    by_stage = client.get("/contacts?stage=sql").get_data(as_text=True)
    assert "ana@acme.example" in by_stage and "bo@beta.example" not in by_stage
    for hostile in [
        "' OR 1=1 --",
        "<script>alert(1)</script>",
        "%",
        "_",
        "\\",
        "ana'; DROP TABLE contacts; --",
    ]:
        reply = client.get(
            "/contacts", query_string={"q": hostile, "fit": "nan' OR 1", "page": "-3"}
        )
        assert reply.status_code == 200
        text = reply.get_data(as_text=True)
        assert "<script>alert(1)</script>" not in text
        assert "0 contacts" in text
    assert "2 contacts" in client.get("/contacts").get_data(as_text=True)


def test_unknown_contact_ids_are_404(client: FlaskClient) -> None:
    log_in(client)
    assert client.get("/contacts/999").status_code == 404
    token = csrf(client, "/contacts/1")
    assert (
        client.post(
            "/contacts/999/action", data={"action": "pause", "csrf_token": token}
        ).status_code
        == 404
    )


def test_pause_resume_do_not_contact_and_stage_moves_show_in_the_timeline(
    client: FlaskClient, runtime: Runtime
) -> None:
    log_in(client)
    ana = contact(runtime, "ana@acme.example")
    path = f"/contacts/{ana.id}"
    page = client.get(path).get_data(as_text=True)
    assert "meeting_booked" in page and "event meeting_booked" in page
    assert "guide-nurture" in page  # the plan, in explain's words
    assert 'aria-label="fit over time"' in page and 'aria-label="engagement over time"' in page
    client.post(f"{path}/action", data={"action": "pause", "csrf_token": csrf(client, path)})
    page = client.get(path).get_data(as_text=True)
    assert contact(runtime, "ana@acme.example").paused
    assert re.search(r'<tr class="event">.*?paused.*?by=dashboard: ops@keel.example', page, re.S)
    assert "Resume" in page
    assert isinstance(runtime.clock, FixedClock)
    runtime.clock.advance(timedelta(minutes=1))
    client.post(f"{path}/action", data={"action": "resume", "csrf_token": csrf(client, path)})
    assert not contact(runtime, "ana@acme.example").paused
    refused = client.post(
        f"{path}/action",
        data={"action": "stage", "stage": "mql", "reason": " ", "csrf_token": csrf(client, path)},
    )
    assert refused.status_code == 422
    client.post(
        f"{path}/action",
        data={
            "action": "stage",
            "stage": "mql",
            "reason": "no budget",
            "csrf_token": csrf(client, path),
        },
    )
    assert contact(runtime, "ana@acme.example").stage == "mql"
    assert "no budget (dashboard: ops@keel.example)" in client.get(path).get_data(as_text=True)
    client.post(
        f"{path}/action", data={"action": "do_not_contact", "csrf_token": csrf(client, path)}
    )
    with sessions(runtime.database)() as session:
        assert (
            session.scalar(
                select(Suppression.reason).where(Suppression.email == "ana@acme.example")
            )
            == "do_not_contact"
        )
    assert "Suppressed: do_not_contact" in client.get(path).get_data(as_text=True)


def test_one_click_unsubscribe_still_needs_no_csrf_and_no_cookie(client: FlaskClient) -> None:
    assert client.post("/u/not-a-token", data={"List-Unsubscribe": "One-Click"}).status_code == 404


def test_workflows_content_queue_and_settings(client: FlaskClient, runtime: Runtime) -> None:
    from sqlalchemy import update

    from nurture.models import Message

    log_in(client)
    add_contact(runtime, "cy@gamma.example", **PROFILE)  # a lead: her first email goes now
    runtime.dispatcher.tick()
    with sessions(runtime.database)() as session:
        sent = session.scalars(select(Message)).all()
    assert sent, "the example sends cy her first email"
    page = client.get("/workflows").get_data(as_text=True)
    first = sent[0]
    row = re.search(
        rf"<tr><td>{first.phase}</td><td><a [^>]+>{first.content_id}</a></td>\s*<td>(\d+)</td>",
        page,
    )
    assert row and int(row.group(1)) == 1
    assert "people wait with their track used up" in page

    preview = client.get("/content", query_string={"piece": first.content_id}).get_data(
        as_text=True
    )
    assert "sandbox srcdoc=" in preview and "Subject:" in preview
    mine = client.get(
        "/content", query_string={"piece": first.content_id, "contact": "cy@gamma.example"}
    )
    assert mine.status_code == 200 and "Ana" in mine.get_data(as_text=True)
    assert client.get("/content", query_string={"contact": "nobody@x.example"}).status_code == 404
    assert client.get("/content", query_string={"piece": "no/such"}).status_code == 404

    with sessions(runtime.database).begin() as session:
        session.execute(update(Message).where(Message.id == first.id).values(status="unknown"))
    queue = client.get("/queue").get_data(as_text=True)
    assert "It went: mark sent" in queue and "Due in the next 24 hours" in queue
    token = csrf(client, "/queue")
    assert client.post(f"/queue/{first.id}", data={"outcome": "sent"}).status_code == 400
    assert (
        client.post(f"/queue/{first.id}", data={"outcome": "sent", "csrf_token": token}).status_code
        == 302
    )
    with sessions(runtime.database)() as session:
        assert session.get_one(Message, first.id).status == "sent"
    assert (
        client.post(f"/queue/{first.id}", data={"outcome": "sent", "csrf_token": token}).status_code
        == 404
    )

    settings = client.get("/settings").get_data(as_text=True)
    assert re.search(r'<th scope="row" data-key="per_week">Emails a week</th><td>3</td>', settings)
    assert "<td>fit &gt;= 30 and engagement &gt;= 35</td>" in settings


# The login throttle and revocable sessions, through the real WSGI server ------------------


class Browser:
    """A browser on the real server: cookies kept, redirects not followed."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.cookies = http.cookiejar.CookieJar()

        class Stay(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *_: object, **__: object) -> None:
                return None

        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.cookies), Stay()
        )

    def open(self, path: str, form: dict[str, str] | None = None) -> tuple[int, str, Any]:
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        try:
            with self.opener.open(self.base + path, data=data, timeout=30) as reply:
                return reply.status, reply.read().decode(), reply.headers
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(), error.headers

    def csrf(self, path: str = "/login") -> str:
        match = re.search(r'name="csrf_token" value="([^"]+)"', self.open(path)[1])
        assert match
        return match.group(1)

    def log_in(self, password: str = PASSWORD, email: str = "ops@keel.example") -> Any:
        form = {"email": email, "password": password, "csrf_token": self.csrf()}
        return self.open("/login", form)

    def session_cookie(self) -> str:
        value = next(c.value for c in self.cookies if c.name == "nurture_session")
        assert value
        return value

    def with_cookie(self, value: str) -> Browser:
        other = Browser(self.base)
        other.opener.addheaders = [("Cookie", f"nurture_session={value}")]
        return other


@pytest.fixture
def served(client: FlaskClient, runtime: Runtime) -> Iterator[str]:
    port = free_port()
    server = waitress.create_server(client.application, host="127.0.0.1", port=port, threads=10)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    server.close()
    thread.join(timeout=30)


def later(runtime: Runtime, **delta: float) -> None:
    runtime.clock.advance(timedelta(**delta))  # type: ignore[attr-defined]


def test_failed_logins_are_throttled_by_account(served: str, runtime: Runtime) -> None:
    browser = Browser(served)
    for _ in range(5):
        assert browser.log_in("not the password")[0] == 401
    status, page, headers = browser.log_in()  # the right one, during the lockout
    assert status == 429 and headers["Retry-After"] == "60"
    assert "Too many failed logins. Try again in 1 minute." in page
    assert browser.open("/")[0] == 302, "not logged in"
    later(runtime, seconds=30)
    status, page, headers = browser.log_in()
    assert status == 429 and headers["Retry-After"] == "30" and "30 seconds" in page
    later(runtime, seconds=31)
    assert browser.log_in("still not it")[0] == 401  # the 6th failure: 2 minutes now
    status, _, headers = browser.log_in()
    assert status == 429 and headers["Retry-After"] == "120"
    # Kept in the database: another process (a new app on the same database) refuses too.
    from nurture.runtime import open_runtime

    again = open_runtime(
        runtime.project.root,
        clock=runtime.clock,
        database=str(runtime.database.url.render_as_string(hide_password=False)),
    )
    try:
        other = create_app(again).test_client()
        form = {
            "email": "ops@keel.example",
            "password": PASSWORD,
            "csrf_token": csrf(other, "/login"),
        }
        assert other.post("/login", data=form).status_code == 429
    finally:
        again.database.dispose()
    later(runtime, seconds=121)
    assert browser.log_in()[0] == 302
    assert browser.open("/")[0] == 200
    assert browser.log_in("a slip")[0] == 401, "a success starts the count again"


def test_failed_logins_are_throttled_by_address(served: str, runtime: Runtime) -> None:
    browser = Browser(served)
    for n in range(20):
        assert browser.log_in("wrong password", email=f"guess{n}@keel.example")[0] == 401
    status, page, headers = browser.log_in()  # a fresh account, the right password
    assert status == 429 and headers["Retry-After"] == "60" and "Try again in 1 minute" in page
    later(runtime, minutes=1)
    assert browser.log_in()[0] == 302


def test_logout_ends_the_session_on_the_server(served: str, runtime: Runtime) -> None:
    browser = Browser(served)
    assert browser.log_in()[0] == 302
    copied = browser.with_cookie(browser.session_cookie())
    assert copied.open("/")[0] == 200, "a copy works while the session lives"
    assert browser.open("/logout", {"csrf_token": browser.csrf("/")})[0] == 302
    status, _, headers = copied.open("/")
    assert status == 302 and headers["Location"].startswith("/login")
    assert browser.open("/")[0] == 302


def test_sessions_end_after_12_hours_by_the_clock(served: str, runtime: Runtime) -> None:
    browser = Browser(served)
    assert browser.log_in()[0] == 302
    later(runtime, hours=11, minutes=59)
    assert browser.open("/")[0] == 200
    later(runtime, minutes=1)
    assert browser.open("/")[0] == 302


def test_a_password_change_and_sessions_end_revoke_sessions(served: str, runtime: Runtime) -> None:
    from click.testing import CliRunner

    from nurture.cli import main

    url = runtime.database.url.render_as_string(hide_password=False)
    cli = ["--project", str(runtime.project.root), "--db", url, "user"]
    first, second = Browser(served), Browser(served)
    assert first.log_in()[0] == 302 and second.log_in()[0] == 302
    new = "a brand new password, long"
    changed = CliRunner().invoke(main, [*cli, "password", "ops@keel.example", "--password", new])
    assert changed.exit_code == 0, changed.output
    assert "2 session(s) ended" in changed.output
    assert first.open("/")[0] == 302 and second.open("/")[0] == 302
    assert first.log_in()[0] == 401 and first.log_in(new)[0] == 302
    assert first.open("/")[0] == 200
    short = CliRunner().invoke(main, [*cli, "password", "ops@keel.example", "--password", "short"])
    assert short.exit_code != 0 and "password: at least 12 characters" in short.output
    nobody = CliRunner().invoke(main, [*cli, "sessions", "end", "who@keel.example"])
    assert nobody.exit_code != 0 and "no user who@keel.example" in nobody.output
    assert CliRunner().invoke(main, [*cli, "sessions", "end"]).exit_code == 2
    ended = CliRunner().invoke(main, [*cli, "sessions", "end", "ops@keel.example"])
    assert ended.exit_code == 0 and "1 session(s) ended" in ended.output
    assert first.open("/")[0] == 302
    assert second.log_in(new)[0] == 302
    assert CliRunner().invoke(main, [*cli, "sessions", "end", "--all"]).output == (
        "1 session(s) ended\n"
    )
    assert second.open("/")[0] == 302


def test_the_throttle_waits_double_from_one_minute_to_an_hour() -> None:
    from datetime import UTC, datetime

    from nurture.core.throttle import Throttle, in_words

    now = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    throttle = Throttle()
    waits = [
        throttle.wait([now - timedelta(seconds=n) for n in range(count)], 5, now)
        for count in range(4, 14)
    ]
    minutes = [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert waits == [timedelta(0)] + [timedelta(minutes=m) for m in minutes]
    assert throttle.login_wait([], [now] * 20, now) == timedelta(minutes=1)
    assert throttle.login_wait([now] * 5, [], now + timedelta(minutes=2)) == timedelta(0)
    assert [in_words(timedelta(seconds=s)) for s in (1, 30, 60, 61, 3600)] == [
        "1 second",
        "30 seconds",
        "1 minute",
        "2 minutes",
        "60 minutes",
    ]


def test_parallel_wrong_passwords_never_pass_the_limit(served: str, runtime: Runtime) -> None:
    """Ten wrong passwords at once on one account: five are checked, five wait."""
    from concurrent.futures import ThreadPoolExecutor

    browsers = [Browser(served) for _ in range(10)]
    forms = [
        {"email": "ops@keel.example", "password": f"wrong {n}", "csrf_token": b.csrf()}
        for n, b in enumerate(browsers)
    ]
    with ThreadPoolExecutor(10) as pool:
        codes = sorted(pool.map(lambda b, f: b.open("/login", f)[0], browsers, forms))
    assert codes == [401] * 5 + [429] * 5


# A dashboard for marketers ---------------------------------------------------------------


def test_times_in_the_projects_zone_and_custom_fields_on_the_contact_page(
    client: FlaskClient, runtime: Runtime
) -> None:
    from sqlalchemy import update

    log_in(client)
    with sessions(runtime.database).begin() as session:
        session.execute(
            update(Contact)
            .where(Contact.email == "ana@acme.example")
            .values(custom={"plan": "growth", "seats": 40})
        )
        ana = session.scalars(select(Contact).where(Contact.email == "ana@acme.example")).one()
        created = ana.created_at
    page = client.get(f"/contacts/{ana.id}").get_data(as_text=True)
    zone = runtime.project.settings.timezone
    local = created.astimezone(__import__("zoneinfo").ZoneInfo(zone))
    assert f"{local.day} {local:%b %Y}, {local:%H:%M}" in page
    assert f"When ({zone})" in page and "UTC" not in page
    assert re.search(r"\d{2}:\d{2}:\d{2}\.\d{6}", page) is None  # no microseconds anywhere
    shown = re.search(r'data-test="custom-fields">(.*?)</dl>', page, re.S)
    assert shown and "<dt>plan</dt><dd>growth</dd>" in shown.group(1)
    assert "<dt>seats</dt><dd>40</dd>" in shown.group(1)


def test_styled_error_pages_and_json_errors_under_the_api(client: FlaskClient) -> None:
    log_in(client)
    missing = client.get("/no/such/page")
    assert missing.status_code == 404 and missing.content_type.startswith("text/html")
    body = missing.get_data(as_text=True)
    assert "Page not found" in body and "<nav" in body and "Back to the overview" in body
    wrong = client.post("/contacts")
    assert wrong.status_code == 405 and "GET" in wrong.headers["Allow"]
    assert "Not allowed here" in wrong.get_data(as_text=True)
    api = client.get("/api/v1/no-such-thing")
    assert api.status_code == 404 and api.is_json


def test_the_settings_page_reads_as_tables(client: FlaskClient) -> None:
    """(Masking: tests/test_secrets.py reads this page with every kind of secret set.)"""
    log_in(client)
    page = client.get("/settings").get_data(as_text=True)
    assert "null" not in page and "<pre" not in page
    assert re.search(
        r'<th scope="row" data-key="webhook_url">Webhook URL</th><td><span class="muted">'
        r"not set</span>",
        page,
    )
    assert '<th scope="row" data-key="half_life">Half-life</th><td>30 days</td>' in page
    assert "<h2>Hand-off to sales</h2>" in page and "<td>2 weeks</td>" in page


def test_subject_tests_show_the_subjects_and_the_rule(client: FlaskClient) -> None:
    log_in(client)
    page = client.get(
        "/content", query_string={"piece": "evaluation/case-study-northwind"}
    ).get_data(as_text=True)
    assert "How Northwind cut churn by 23% in two quarters" in page
    assert "variant 0" not in page and "variant 1" not in page
    assert 'data-test="verdict"' in page and "not enough sends yet" in page.lower()
    assert "two-proportion z-test at 95% confidence" in page
    assert 'aria-label="Sent, opened and clicked per subject line' in page


@pytest.mark.parametrize(
    ("language", "button", "done"),
    [
        ("fr-FR", "Me désinscrire de tous ces emails", "Vous êtes désinscrit"),
        (None, "Unsubscribe from all these emails", "You are unsubscribed"),
    ],
)
def test_the_unsubscribe_page_speaks_the_contacts_language(
    runtime: Runtime, language: str | None, button: str, done: str
) -> None:
    from tests.helpers import outbox, parse_eml

    add_contact(
        runtime, "lea@acme.example", **PROFILE, **({"language": language} if language else {})
    )
    runtime.dispatcher.tick()
    link = parse_eml(outbox(runtime)[0])["List-Unsubscribe"].split("<")[1].split(">")[0]
    path = link.removeprefix("http://localhost:5000")
    client = create_app(runtime).test_client()
    page = client.get(path).get_data(as_text=True)
    assert f'<html lang="{(language or "en")[:2]}">' in page and button in page
    assert "<strong>lea@acme.example</strong>" in page
    after = client.post(path, data={"choice": "unsubscribe"}).get_data(as_text=True)
    assert done in after


# --- the workflow diagram: the numbers drawn are the database's -----------------------------

A, B, C = (
    "discovery/hidden-cost-of-churn",
    "discovery/activation-metrics",
    "discovery/onboarding-checklist",
)
JOURNEY = (
    "name: Journey\n"
    "enter: {stages: [lead]}\n"
    "caps: {per_day: 5, per_week: 8, min_gap: 1m, quiet_hours: null,"
    " weekdays: [mon, tue, wed, thu, fri, sat, sun]}\n"
    "tracks:\n"
    "  discovery:\n"
    f"    - content: {A}\n"
    "    - id: clicked-first\n"
    "      wait: 2d\n"
    f"      if: \"clicked('{A}')\"\n"
    f"      then: [{{id: got-b, content: {B}}}]\n"
    f"      else: [{{content: {C}}}]\n"
)


def _plain(rt: Runtime, sql: str) -> dict[Any, int]:
    from sqlalchemy import text

    with rt.database.connect() as connection:
        return {
            (row[0] if len(row) == 2 else tuple(row[:-1])): row[-1]
            for row in connection.execute(text(sql))
        }


def test_workflow_diagram_draws_the_database_numbers(project_dir: Any, tmp_path: Any) -> None:
    from nurture.feedback import record_event
    from nurture.models import Message
    from nurture.runtime import open_runtime
    from tests.conftest import MONDAY_MORNING

    for name in ("webinar-follow-up", "guide-nurture"):
        (project_dir / "workflows" / f"{name}.yaml").unlink()
    (project_dir / "workflows" / "journey.yaml").write_text(JOURNEY, encoding="utf-8")
    clock = FixedClock(MONDAY_MORNING)
    rt = open_runtime(project_dir, clock=clock, database=f"sqlite:///{tmp_path / 'd.db'}")
    try:
        with sessions(rt.database).begin() as session:
            create_user(session, "ops@keel.example", PASSWORD, clock.now())
        for who in ("real", "machine", "none"):
            add_contact(rt, f"{who}@acme.example", **PROFILE)
        rt.dispatcher.tick()
        with sessions(rt.database)() as session:
            ids = dict(
                session.execute(
                    select(Contact.email, Message.id).join(
                        Contact, Contact.id == Message.contact_id
                    )
                ).all()
            )
        with sessions(rt.database).begin() as session:
            for who, kind, extra in (
                ("real", "email_opened", {}),
                ("real", "email_clicked", {}),
                ("machine", "email_opened", {"machine": "privacy proxy"}),
                ("machine", "email_clicked", {"machine": "link scanner"}),
            ):
                record_event(
                    session,
                    rt.project,
                    f"{who}@acme.example",
                    kind,
                    clock.now(),
                    properties={"message_id": ids[f"{who}@acme.example"], **extra},
                    message_id=ids[f"{who}@acme.example"],
                )
        for _ in range(12):  # the branch comes due after 2 days: real takes then, others else
            clock.advance(timedelta(hours=6))
            rt.dispatcher.tick()
        add_contact(rt, "late@acme.example", **PROFILE)  # got A, waits at the branch
        rt.dispatcher.tick()

        client = create_app(rt).test_client()
        log_in(client)
        page = client.get("/workflows").get_data(as_text=True)

        sent = _plain(
            rt, "SELECT step_key, count(*) FROM messages WHERE status = 'sent' GROUP BY 1"
        )
        engaged = (
            "SELECT m.step_key, count(DISTINCT m.id) FROM messages m JOIN events e"
            " ON e.message_id = m.id WHERE e.kind = '{}' AND e.machine IS NULL GROUP BY 1"
        )
        opened = _plain(rt, engaged.format("email_opened"))
        clicked = _plain(rt, engaged.format("email_clicked"))
        took = _plain(rt, "SELECT step_key || '#' || way, count(*) FROM journey_steps GROUP BY 1")
        here = _plain(
            rt,
            "SELECT json_extract(places, '$.discovery'), count(*) FROM enrollments"
            " WHERE status IN ('active', 'waiting', 'paused') GROUP BY 1",
        )
        # the journey went both ways, and machines were left out
        assert took == {"clicked-first#then": 1, "clicked-first#else": 2}
        assert sent == {A: 4, "got-b": 1, C: 2} and opened == {A: 1} and clicked == {A: 1}
        assert here == {A: 1, "got-b": 1, C: 2}

        svg = re.search(r'<svg [^>]*data-phase="discovery".*?</svg>', page, re.S)
        assert svg and 'role="img"' in svg.group(0) and "<title>" in svg.group(0)
        drawn = {
            m.group(1): m.groupdict()
            for m in re.finditer(
                r'<g data-step="([^"]+)" data-here="(?P<here>\d+)"'
                r'(?: data-sent="(?P<sent>\d+)" data-opened="(?P<opened>\d+)"'
                r' data-clicked="(?P<clicked>\d+)")?',
                svg.group(0),
            )
        }
        assert set(drawn) == {A, "clicked-first", "got-b", C}
        for step, numbers in drawn.items():
            assert int(numbers["here"]) == here.get(step, 0), step
            if numbers["sent"] is not None:
                assert int(numbers["sent"]) == sent.get(step, 0), step
                assert int(numbers["opened"]) == opened.get(step, 0), step
                assert int(numbers["clicked"]) == clicked.get(step, 0), step
        assert drawn["clicked-first"]["sent"] is None  # a branch sends nothing
        ways = dict(re.findall(r'<g data-way="([^"]+)" data-took="(\d+)"', svg.group(0)))
        assert {k: int(v) for k, v in ways.items()} == took
        # the same numbers as text, for screen readers
        table = dict(re.findall(r'<td data-here-of="([^"]+)">(\d+)</td>', page))
        assert {k: int(v) for k, v in table.items() if int(v)} == here
        assert "then: 1 took it; else: 2 took it" in page

        # an edit: version 2 in the history, with what it did to the people in flight
        edited = JOURNEY.replace("wait: 2d", "wait: 36h")
        (project_dir / "workflows" / "journey.yaml").write_text(edited, encoding="utf-8")
        assert rt.dispatcher.refresh()
        history = client.get("/workflows").get_data(as_text=True)
        versions = _plain(
            rt, "SELECT number, digest, count(*) FROM workflow_versions GROUP BY 1, 2"
        )
        assert len(versions) == 2
        with rt.database.connect() as connection:
            from sqlalchemy import text

            summary = connection.execute(
                text("SELECT summary FROM workflow_versions WHERE number = 2")
            ).scalar_one()
        counts = json.loads(summary) if isinstance(summary, str) else summary
        assert sum(counts.values()) == 4  # everyone open was carried
        for number, digest in versions:
            assert f"<td>{number}</td>" in history and f"<code>{digest[:12]}</code>" in history
        words = (
            f"{counts.get('continue', 0)} continued, {counts.get('move', 0)} moved, "
            f"{counts.get('finish', 0)} finished, {counts.get('hold', 0)} held"
        )
        assert words in history

        # put back to the first text: a version of its own (3), shown as a revert
        (project_dir / "workflows" / "journey.yaml").write_text(JOURNEY, encoding="utf-8")
        assert rt.dispatcher.refresh()
        with rt.database.connect() as connection:
            rows = connection.execute(
                text("SELECT number, digest FROM workflow_versions ORDER BY number")
            ).all()
        assert [n for n, _ in rows] == [1, 2, 3] and rows[2][1] == rows[0][1] != rows[1][1]
        history = client.get("/workflows").get_data(as_text=True)
        assert '<span data-restores="1">the text of version 1 again</span>' in history
    finally:
        rt.database.dispose()
