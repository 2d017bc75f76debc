"""The dashboard in a real browser: `nurture demo` serving a simulated project, driven by
Playwright in Debian's Chromium (installed by .ci/run). Screenshots of every page go to
tests/e2e/artifacts/ (or $NURTURE_ARTIFACTS).

axe-core (tests/e2e/axe.min.js, vendored from the npm package `axe-core`, MPL-2.0, its
licence header kept) checks every dashboard page and the public pages at 1280 and 375 px."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select, update

from nurture.keys import secret_key
from nurture.models import Consent, Contact, Message, Suppression
from nurture.tracking import Links
from tests.smtp_server import free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("NURTURE_ARTIFACTS", Path(__file__).parent / "artifacts"))
AXE = Path(__file__).parent / "axe.min.js"
#: Violations of these impacts fail the test (axe-core's two highest).
BLOCKING = ("serious", "critical")
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        raise RuntimeError("CI is set but Chromium is missing: .ci/run installs Debian's chromium")
    pytest.skip(
        "Chromium not installed (apt-get install chromium); skipped outside CI",
        allow_module_level=True,
    )

sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str, Path]]:
    root = Path(__file__).resolve().parents[2]
    project = tmp_path_factory.mktemp("demo") / "project"
    project.mkdir()
    shutil.copy(root / "nurture.yaml", project)
    for folder in ("workflows", "content", "segments"):
        shutil.copytree(root / folder, project / folder)
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from nurture.cli import main; main()",
            "--project",
            str(project),
            "demo",
            "--days",
            "30",
            "--contacts",
            "150",
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert server.stdout is not None
    login = None
    deadline = time.monotonic() + 300
    while login is None and time.monotonic() < deadline:
        line = server.stdout.readline()
        if not line and server.poll() is not None:
            raise AssertionError("nurture demo stopped")
        login = re.search(r"dashboard: (\S+)\s+login: (\S+) / (\S+)", line)
    assert login is not None
    yield login.group(1), login.group(2), login.group(3), project / "instance" / "demo.db"
    server.terminate()
    server.wait()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def page(demo: tuple[str, str, str, Path], browser: Any) -> Iterator[Any]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    yield context.new_page()
    context.close()


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_a_marketer_logs_in_reads_the_funnel_finds_a_contact_and_pauses_it(
    demo: tuple[str, str, str, Path], page: Any
) -> None:
    url, email, password, database = demo
    p = page
    dialogs: list[str] = []

    def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    p.on("dialog", on_dialog)
    p.goto(url)
    assert "/login" in p.url
    shot(p, "01-login")
    p.fill("input[name=email]", email)
    p.fill("input[name=password]", "wrong password, surely")
    p.click("button:has-text('Log in')")
    assert p.locator("[role=alert]").inner_text() == "Wrong email or password."
    p.fill("input[name=email]", email)
    p.fill("input[name=password]", password)
    p.click("button:has-text('Log in')")
    p.wait_for_selector("table[data-test=funnel]")
    shot(p, "02-overview")

    engine = create_engine(f"sqlite:///{database}")
    with engine.connect() as connection:
        per_stage = dict(
            connection.execute(select(Contact.stage, func.count()).group_by(Contact.stage)).all()
        )
        # Someone the Pause button can pause: a lead, not paused, not suppressed (a suppressed
        # contact shows "Suppressed" rather than "Paused").
        someone = connection.execute(
            select(Contact.email, Contact.first_name)
            .where(
                Contact.stage == "lead",
                Contact.paused.is_(False),
                Contact.email.not_in(select(Suppression.email)),
            )
            .order_by(Contact.id)
            .limit(1)
        ).one()
    engine.dispose()
    for stage in ("lead", "mql", "sql"):
        shown = p.locator(f"tr[data-stage={stage}] td.people").inner_text()
        assert int(shown) == per_stage.get(stage, 0), stage

    p.click("header >> text=Contacts")
    p.fill("input[name=q]", "<script>alert('x')</script>' OR 1=1 --")
    p.click("button:has-text('Search')")
    assert p.locator("[data-test=total]").inner_text() == "0 contacts"
    assert p.locator("input[name=q]").input_value().startswith("<script>")  # shown as text
    assert dialogs == []  # the script in the search did not run
    p.fill("input[name=q]", someone.email)
    p.click("button:has-text('Search')")
    shot(p, "03-contacts")
    p.click(f"text={someone.email}")
    p.wait_for_selector("[data-test=timeline]")
    shot(p, "04-contact")
    p.click("button:has-text('Pause')")
    p.wait_for_selector("text=Resume")
    assert "Paused" in p.locator("[data-test=state]").inner_text()
    first_row = p.locator("[data-test=timeline] tr").nth(1).inner_text()
    assert "paused" in first_row and email in first_row
    shot(p, "05-contact-paused")
    for name in ("Workflows", "Content", "Queue", "Settings"):
        p.click(f"header >> text={name}")
        p.wait_for_load_state()
        shot(p, f"06-{name.lower()}")
    p.click("button:has-text('Log out')")
    p.goto(url)
    assert "/login" in p.url


def _log_in(p: Any, url: str, email: str, password: str) -> None:
    p.goto(url)
    p.fill("input[name=email]", email)
    p.fill("input[name=password]", password)
    p.click("button:has-text('Log in')")
    p.wait_for_selector("table[data-test=funnel]")


def _public_pages(url: str, project: Path, database: Path, p: Any) -> dict[str, str]:
    """An unsubscribe page and a form confirmation page, each for an English and a French
    contact: links signed with the demo project's own secret, as its emails carry them."""
    links = Links(secret_key(project / "instance"), url)
    engine = create_engine(f"sqlite:///{database}")
    with engine.begin() as connection:
        rows = connection.execute(
            select(Message.rfc_message_id, Contact.id, Contact.email)
            .join(Contact, Contact.id == Message.contact_id)
            .where(Message.status == "sent")
            .order_by(Message.id)
            .limit(50)
        ).all()
        english = rows[0]
        french = next(row for row in rows if row.id != english.id)
        connection.execute(update(Contact).where(Contact.id == french.id).values(language="fr"))
    pages = {}
    for name, row in (("unsubscribe-en", english), ("unsubscribe-fr", french)):
        key = row.rfc_message_id.strip("<>").split("@")[0]
        pages[name] = links.unsubscribe_url(key)
    for address in ("new.reader@example.com", french.email):
        answer = p.request.post(
            f"{url}f/newsletter",
            form={"email": address, "first_name": "Ana", "consent": "yes"},
            max_redirects=0,
        )
        assert answer.status == 303, answer.text()
    with engine.connect() as connection:
        for name, address in (
            ("confirm-en", "new.reader@example.com"),
            ("confirm-fr", french.email),
        ):
            consent = connection.execute(
                select(Consent.id)
                .join(Contact, Contact.id == Consent.contact_id)
                .where(Contact.email == address, Consent.confirmed_at.is_(None))
                .order_by(Consent.id.desc())
            ).scalar_one()
            pages[name] = links.confirm_url(consent)
    engine.dispose()
    return pages


def _axe(p: Any) -> list[str]:
    """The serious and critical axe-core violations of the page, one line each."""
    p.add_script_tag(path=str(AXE))
    result = p.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [
        f"{v['impact']} {v['id']}: {v['help']} ({len(v['nodes'])}x, e.g. "
        f"{v['nodes'][0]['target']}: {v['nodes'][0].get('failureSummary', '')[:200]})"
        for v in result["violations"]
        if v["impact"] in BLOCKING
    ]


@pytest.mark.skipif(not AXE.exists(), reason="tests/e2e/axe.min.js (axe-core) is missing")
def test_every_page_passes_axe_and_fits_a_phone(
    demo: tuple[str, str, str, Path], browser: Any
) -> None:
    url, email, password, database = demo
    project = database.parent.parent
    engine = create_engine(f"sqlite:///{database}")
    with engine.connect() as connection:
        contact_id = connection.execute(select(func.min(Contact.id))).scalar_one()
        tested = connection.execute(
            select(Message.content_id).where(Message.subject_variant == 1).limit(1)
        ).scalar()
    engine.dispose()
    dashboard = {
        "overview": "",
        "contacts": "contacts",
        "contact": f"contacts/{contact_id}",
        "workflows": "workflows",
        "segments": "segments",
        "segment": "segments/target-decision-makers?workflow=guide-nurture",
        "content": f"content?piece={tested}" if tested else "content",
        "queue": "queue",
        "settings": "settings",
        "not-found": "no/such/page",
    }
    problems: dict[str, list[str]] = {}
    public: dict[str, str] = {}
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for width in (1280, 375):
        context = browser.new_context(viewport={"width": width, "height": 900})
        p = context.new_page()
        p.goto(url)
        found = {"login": _axe(p)}
        shot(p, f"axe-{width}-login")
        _log_in(p, url, email, password)
        public = public or _public_pages(url, project, database, p)
        for name, path in dashboard.items():
            answer = p.goto(url + path)
            assert answer is not None
            assert answer.status == (404 if name == "not-found" else 200), name
            found[name] = _axe(p)
            shot(p, f"axe-{width}-{name}")
            if name == "not-found" and not p.locator("header nav").count():
                found[name].append("the 404 page is not in the dashboard's style")
            if name in ("overview", "contact", "workflows") and width == 1280:
                p.screenshot(path=str(ARTIFACTS / f"readme-{name}.png"))
            if width == 375:  # nothing wider than the phone: tables scroll in their box
                wide = p.evaluate("document.documentElement.scrollWidth")
                if wide > width:
                    found[name].append(f"the page is {wide} px wide on a {width} px phone")
        for name, link in public.items():
            answer = p.goto(link)
            assert answer is not None and answer.status == 200, name
            found[name] = _axe(p)
            shot(p, f"axe-{width}-{name}")
            language = p.evaluate("document.documentElement.lang")
            if language != name[-2:]:
                found[name].append(f"the page is in {language!r}, the contact's is {name[-2:]!r}")
        problems |= {f"{width}px {name}": lines for name, lines in found.items() if lines}
        context.close()
    assert problems == {}, "\n".join(
        f"{page}: {line}" for page in problems for line in problems[page]
    )
