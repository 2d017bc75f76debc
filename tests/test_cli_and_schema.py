"""The command line, the migrations, and the rule that nothing reads the wall clock."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from click.testing import CliRunner
from sqlalchemy import text

from nurture.cli import main
from nurture.db import alembic_config, make_engine, upgrade
from nurture.models import Base
from tests.helpers import parse_eml, wait_until
from tests.smtp_server import free_port

REPO = Path(__file__).resolve().parents[1]


def nurture(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nurture.cli", "--project", str(project), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_migrations_match_the_models(empty_database_url: str) -> None:
    engine = make_engine(empty_database_url)
    upgrade(engine)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert diff == []


def test_the_fixture_databases_are_at_the_newest_migration(database_url: str) -> None:
    """`database_url` comes from a migrated template (a copied SQLite file, the migrations'
    statements replayed on PostgreSQL): the same schema and revision as running them."""
    engine = make_engine(database_url)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection)
        diff = compare_metadata(context, Base.metadata)
        revision = context.get_current_revision()
    engine.dispose()
    assert diff == []
    assert revision == ScriptDirectory.from_config(alembic_config()).get_current_head()


def test_nothing_reads_the_wall_clock() -> None:
    pattern = re.compile(
        r"datetime\.now\(|datetime\.utcnow\(|date\.today\(|time\.time\(|time\.monotonic\("
    )
    offenders = [
        f"{path.relative_to(REPO)}:{number}"
        for path in (REPO / "nurture").rglob("*.py")
        if path.name != "clock.py"
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if pattern.search(line)
    ]
    assert offenders == []


def test_contact_add_event_and_preview(project_dir: Path) -> None:
    runner = CliRunner()
    base = ["--project", str(project_dir)]
    added = runner.invoke(
        main,
        [
            *base,
            "contact",
            "add",
            "Ana@Acme.example",
            "first_name=Ana",
            "sector=saas",
            "company_size=300",
            "seniority=VP",
            "--stage",
            "lead",
        ],
    )
    assert added.exit_code == 0, added.output
    assert (
        "ana@acme.example: stage lead, fit 55" in added.output
        and "entered guide-nurture" in added.output
    )
    clicked = runner.invoke(
        main,
        [
            *base,
            "event",
            "ana@acme.example",
            "page_visited",
            "url=https://keel-retention.example/demo",
        ],
    )
    assert clicked.exit_code == 0, clicked.output
    assert "+25 engagement: Demo page" in clicked.output
    bad = runner.invoke(main, [*base, "event", "ana@acme.example", "page_vist"])
    assert bad.exit_code == 1 and "unknown event 'page_vist'" in bad.output
    bad = runner.invoke(main, [*base, "contact", "add", "bob@acme.example", "timezone=Mars/Base"])
    assert bad.exit_code == 1 and "timezone: 'Mars/Base' is not an IANA time zone" in bad.output
    bad = runner.invoke(main, [*base, "contact", "add", "not-an-email"])
    assert bad.exit_code == 1 and "not a valid email address" in bad.output
    shown = runner.invoke(
        main,
        [*base, "preview", "decision/demo-invitation", "--contact", "ana@acme.example", "--text"],
    )
    assert shown.exit_code == 0, shown.output
    assert "Subject: Ana, 30 minutes with your own data?" in shown.output
    assert "Hello Ana," in shown.output and "{{" not in shown.output
    html = project_dir / "preview.html"
    written = runner.invoke(main, [*base, "preview", "evaluation/build-vs-buy", "-o", str(html)])
    assert written.exit_code == 0 and html.read_text().startswith("<!doctype html>")
    unknown = runner.invoke(main, [*base, "preview", "evaluation/nope"])
    assert unknown.exit_code == 1 and "unknown content" in unknown.output


def test_run_sends_into_the_outbox_and_stops_cleanly(project_dir: Path) -> None:
    settings = project_dir / "nurture.yaml"
    text = settings.read_text().replace('quiet_hours: "19:00-08:30"', "quiet_hours: null")
    text = text.replace(
        "weekdays: [mon, tue, wed, thu, fri]", "weekdays: [mon, tue, wed, thu, fri, sat, sun]"
    )
    port = free_port()
    settings.write_text(
        text + f"\ntick_seconds: 0.5\nlisten: 127.0.0.1:{port}\nbase_url: http://127.0.0.1:{port}\n"
    )
    assert (
        nurture(project_dir, "contact", "add", "ana@acme.example", "--stage", "lead").returncode
        == 0
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "nurture.cli", "--project", str(project_dir), "run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        wait_until(
            lambda: bool(list((project_dir / "outbox").glob("*.eml"))),
            "the first email in the outbox",
            process=process,
        )
        (eml,) = list((project_dir / "outbox").glob("*.eml"))
        unsubscribe = parse_eml(eml)["List-Unsubscribe"].split("<")[1].split(">")[0]
        assert unsubscribe.startswith(f"http://127.0.0.1:{port}/u/")
        body = urllib.parse.urlencode({"List-Unsubscribe": "One-Click"}).encode()
        with urllib.request.urlopen(
            urllib.request.Request(unsubscribe, data=body), timeout=10
        ) as reply:
            assert reply.status == 200
        assert (
            "suppressed (unsubscribed)"
            in nurture(project_dir, "explain", "ana@acme.example").stdout.lower()
        )
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert "nurture running" in output and "stopped" in output
    assert (project_dir / "nurture.db").exists()
    assert not (project_dir / "nurture.db-wal").exists()  # checkpointed at the clean stop
    assert oct((project_dir / "instance" / "secret_key").stat().st_mode & 0o777) == "0o600"


def test_demo_prints_readable_numbers_and_stops_cleanly_on_sigterm(project_dir: Path) -> None:
    """`nurture demo`: the stages as words (no Python dict), each number a count in the demo
    database; SIGTERM stops it cleanly with exit code 0 and no WAL file left."""
    port = free_port()
    options = ["--days", "7", "--contacts", "10", "--port", str(port)]
    process = subprocess.Popen(
        [sys.executable, "-m", "nurture.cli", "--project", str(project_dir), "demo", *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("Ctrl-C stops"):
                break
    finally:
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=60)
    assert process.returncode == 0, (lines, rest)
    assert rest.strip().endswith("stopped")
    (summary,) = [line for line in lines if "stages: " in line]
    assert "{" not in summary
    shown = dict(part.rsplit(" ", 1) for part in summary.split("stages: ")[1].split(", "))
    database = project_dir / "instance" / "demo.db"
    assert not Path(f"{database}-wal").exists()
    engine = make_engine(f"sqlite:///{database}")
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT stage, count(*) FROM contacts GROUP BY 1"))
        stages = {stage: n for stage, n in rows}
        emails = connection.execute(text("SELECT count(*) FROM messages")).scalar_one()
    engine.dispose()
    assert {k: int(v) for k, v in shown.items() if int(v)} == stages
    assert summary.startswith(f"{emails} email")


def test_db_upgrade_command(project_dir: Path, tmp_path: Path) -> None:
    result = nurture(project_dir, "--db", str(tmp_path / "fresh.db"), "db", "upgrade")
    assert result.returncode == 0, result.stderr
    assert "database up to date" in result.stdout
