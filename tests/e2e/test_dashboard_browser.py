"""The dashboard in a real browser: `nurture demo` serving a simulated project, driven by
Playwright in Debian's Chromium (installed by .ci/run). Screenshots of every page go to
tests/e2e/artifacts/ (or $NURTURE_ARTIFACTS)."""

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
from sqlalchemy import create_engine, func, select

from nurture.models import Contact
from tests.smtp_server import free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("NURTURE_ARTIFACTS", Path(__file__).parent / "artifacts"))
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
    for folder in ("workflows", "content"):
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
def page(demo: tuple[str, str, str, Path]) -> Iterator[Any]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        yield context.new_page()
        browser.close()


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_a_marketer_logs_in_reads_the_funnel_finds_a_contact_and_pauses_it(
    demo: tuple[str, str, str, Path], page: Any
) -> None:
    url, email, password, database = demo
    p = page
    dialogs: list[str] = []
    p.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
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
        someone = connection.execute(
            select(Contact.email, Contact.first_name).where(Contact.stage == "lead").limit(1)
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
