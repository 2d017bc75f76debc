"""No secret is ever shown: not by `nurture run` or `nurture worker` (real processes), not on
the dashboard's Settings page, not in an error message, not in a log line."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from nurture.cli import main
from nurture.clock import FixedClock
from nurture.db import sessions
from nurture.redact import RedactingFilter, is_secret_name, redact, redact_text
from nurture.runtime import open_runtime
from nurture.users import create_user
from nurture.web import create_app
from tests.smtp_server import free_port

DB_PASSWORD = "Db-Pa55word-7781"
SMTP_PASSWORD = "Smtp-Pa55-4412"
HANDOFF_SECRET = "Handoff-Secret-9931"
CRM_PASSWORD = "Crm-Pa55-6620"
MAILGUN_KEY = "Mailgun-Key-5521"
POSTMARK_PASSWORD = "Postmark-Pa55-8812"
SIGNING_KEY = "Signing-Key-0123456789-abcdefghijklmnopq"
SECRETS = [
    DB_PASSWORD,
    SMTP_PASSWORD,
    HANDOFF_SECRET,
    CRM_PASSWORD,
    MAILGUN_KEY,
    POSTMARK_PASSWORD,
    SIGNING_KEY,
]
PASSWORD = "correct horse battery staple"


def with_secrets(project_dir: Path, port: int) -> None:
    """Every kind of secret nurture.yaml can hold: a hand-off webhook secret and a URL with
    a password, provider keys, an SMTP URL with a password."""
    settings = project_dir / "nurture.yaml"
    text = settings.read_text().replace(
        "  # webhook_url: https://crm.keel-retention.example/hooks/nurture\n",
        f"  webhook_url: https://nurture:{CRM_PASSWORD}@crm.keel-retention.example/hooks\n"
        f"  webhook_secret: {HANDOFF_SECRET}\n",
    )
    assert HANDOFF_SECRET in text
    settings.write_text(
        text + f"\nlisten: 127.0.0.1:{port}\n"
        "webhooks:\n"
        f"  mailgun_signing_key: {MAILGUN_KEY}\n"
        f"  postmark_credentials: 'hooks:{POSTMARK_PASSWORD}'\n"
    )


def secret_env(smtp_url: str | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "NURTURE_SECRET_KEY": SIGNING_KEY}
    env["NURTURE_SMTP_URL"] = smtp_url or f"smtp://mailer:{SMTP_PASSWORD}@127.0.0.1:{free_port()}"
    return env


def with_password(url: str) -> str:
    """The PostgreSQL test URL with a password in it (trust authentication ignores it)."""
    scheme, rest = url.split("://", 1)
    user, host = rest.split("@", 1)
    return f"{scheme}://{user.split(':')[0]}:{DB_PASSWORD}@{host}"


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret} shown in:\n{text}"


def start_and_stop(project_dir: Path, database: str, *command: str) -> str:
    """The output of a real `nurture ... COMMAND` from start-up to SIGTERM."""
    cli = [sys.executable, "-m", "nurture.cli", "--project", str(project_dir), "-v"]
    process = subprocess.Popen(
        [*cli, "--db", database, *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=secret_env(),
    )
    assert process.stdout is not None
    lines = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("nurture "):  # the start-up line
            break
    process.send_signal(signal.SIGTERM)
    rest, _ = process.communicate(timeout=60)
    output = "".join(lines) + rest
    assert "database" in output, output
    return output


@pytest.mark.parametrize("command", ["run", "worker"])
def test_run_and_worker_never_print_a_secret(
    project_dir: Path, postgres_url: str, command: str
) -> None:
    with_secrets(project_dir, free_port())
    output = start_and_stop(project_dir, with_password(postgres_url), command)
    assert "***" in output, "the database URL is shown, its password masked"
    assert_no_secret(output)


def test_db_upgrade_never_prints_the_password(project_dir: Path, postgres_url: str) -> None:
    result = CliRunner().invoke(
        main, ["--project", str(project_dir), "--db", with_password(postgres_url), "db", "upgrade"]
    )
    assert result.exit_code == 0, result.output
    assert "database up to date: postgresql" in result.output
    assert_no_secret(result.output)


def test_a_bad_smtp_url_is_named_without_its_password(project_dir: Path) -> None:
    with_secrets(project_dir, free_port())
    result = subprocess.run(
        [sys.executable, "-m", "nurture.cli", "--project", str(project_dir), "tick"],
        capture_output=True,
        text=True,
        timeout=120,
        env=secret_env(f"smtq://mailer:{SMTP_PASSWORD}@mail.example:587"),
    )
    assert result.returncode == 1
    assert "NURTURE_SMTP_URL" in result.stderr and "smtp://" in result.stderr
    assert "Traceback" not in result.stderr
    assert_no_secret(result.stdout + result.stderr)


def test_the_settings_page_masks_every_secret(
    project_dir: Path, clock: FixedClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with_secrets(project_dir, free_port())
    monkeypatch.setenv("NURTURE_SECRET_KEY", SIGNING_KEY)
    runtime = open_runtime(project_dir, clock=clock, database=str(tmp_path / "n.db"))
    with sessions(runtime.database).begin() as session:
        create_user(session, "ops@keel.example", PASSWORD, clock.now())
    client = create_app(runtime).test_client()
    login = client.get("/login").get_data(as_text=True)
    token = login.split('name="csrf_token" value="')[1].split('"')[0]
    client.post(
        "/login", data={"email": "ops@keel.example", "password": PASSWORD, "csrf_token": token}
    )
    page = client.get("/settings")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "webhook_secret" in html and "crm.keel-retention.example" in html
    assert_no_secret(html)
    runtime.database.dispose()


def test_log_lines_mask_url_passwords(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("nurture.test_secrets")
    caplog.handler.addFilter(RedactingFilter())
    try:
        logger.warning("connecting to %s", f"smtps://mailer:{SMTP_PASSWORD}@mail.example:465")
        try:
            raise OSError(f"refused: postgresql://app:{DB_PASSWORD}@db.example/nurture")
        except OSError:
            logger.exception("round failed")
    finally:
        caplog.handler.filters.clear()
    assert "smtps://mailer:***@mail.example:465" in caplog.text
    assert_no_secret(caplog.text)


def test_the_redaction_rules() -> None:
    for name in ("webhook_secret", "mailgun_signing_key", "postmark_credentials", "api_token"):
        assert is_secret_name(name), name
    for name in ("keywords", "stages", "smtp_url", "monkey", "base_url"):
        assert not is_secret_name(name), name
    assert redact({"a": {"webhook_secret": "x", "n": [f"smtp://u:{SMTP_PASSWORD}@h"]}}) == {
        "a": {"webhook_secret": "***", "n": ["smtp://u:***@h"]}
    }
    assert redact_text(f"smtp://u:p@{SMTP_PASSWORD}@h:25") == "smtp://u:***@h:25"
    assert redact_text("no secret https://h/a@b") == "no secret https://h/a@b"
