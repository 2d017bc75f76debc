"""The production form: the web part from `nurture.wsgi` under a WSGI server, the engine
in `nurture worker` processes."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from nurture.cli import main
from tests.helpers import wait_until
from tests.smtp_server import free_port


def test_the_wsgi_app_serves_under_waitress(project_dir: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'prod.db'}"
    assert (
        CliRunner()
        .invoke(main, ["--project", str(project_dir), "--db", url, "db", "upgrade"])
        .exit_code
        == 0
    )
    port = free_port()
    env = {
        **os.environ,
        "NURTURE_PROJECT": str(project_dir),
        "NURTURE_DATABASE_URL": url,
        "NURTURE_SECRET_KEY": "k" * 40,
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "waitress", f"--listen=127.0.0.1:{port}", "nurture.wsgi:app"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as reply:
                assert json.loads(reply.read()) == {"status": "ok"}
                return True
        except OSError:
            return False

    try:
        wait_until(healthy, "the WSGI app under waitress", process=server)
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/api/v1/openapi.json", timeout=5
        ) as reply:
            assert json.loads(reply.read())["openapi"].startswith("3.")
    finally:
        server.terminate()
        server.wait()


def test_a_worker_stops_cleanly_on_sigterm(project_dir: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    worker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from nurture.cli import main; main()",
            "--project",
            str(project_dir),
            "--db",
            url,
            "worker",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert worker.stdout is not None
    first = worker.stdout.readline().decode()
    assert first.startswith("nurture worker: database")
    worker.send_signal(signal.SIGTERM)
    rest = worker.communicate(timeout=60)[0].decode()
    assert worker.returncode == 0 and "stopped" in rest


def test_sigterm_finishes_the_batch_in_hand_not_the_backlog(
    project_dir: Path, tmp_path: Path
) -> None:
    from datetime import UTC, datetime

    from sqlalchemy import func, select

    from nurture.clock import FixedClock
    from nurture.models import Message
    from nurture.runtime import open_runtime
    from nurture.seed import seed_leads

    now = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # Monday 09:00 in Paris
    url = f"sqlite:///{tmp_path / 'backlog.db'}"
    rt = open_runtime(project_dir, clock=FixedClock(now), database=url)
    seed_leads(rt.database, 30_000, now, accounts=30_000, zones=["Europe/Paris"])
    clock = tmp_path / "clock"
    clock.write_text(now.isoformat())
    command = ["--project", str(project_dir), "--db", url, "worker", "--dry-run"]
    worker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from nurture.cli import main; main()",
            *command,
            "--clock-file",
            str(clock),
        ],
        stdout=subprocess.DEVNULL,
    )

    def sent() -> int:
        with rt.database.connect() as connection:
            return int(connection.scalar(select(func.count()).select_from(Message)) or 0)

    wait_until(lambda: sent() >= 1000, "the worker's first batches", process=worker)
    worker.send_signal(signal.SIGTERM)
    at_signal = sent()
    assert worker.wait(timeout=300) == 0  # a safety net; the bound is on work, not seconds
    # The batch in hand is finished and no other is taken: at most one batch's rows appear
    # after the signal (one reserved at that moment), however slow the machine is. How fast
    # a worker stops is measured by bench/scale.py, not here.
    assert sent() - at_signal <= 500, (at_signal, sent())
    assert sent() < 30_000 and sent() % 500 == 0  # whole batches, the backlog left for later


DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def test_the_systemd_units_verify(tmp_path: Path) -> None:
    """`systemd-analyze verify` on deploy/*.service, the venv's paths put in (verify checks
    that each ExecStart program exists); any complaint about our units fails."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    venv = str(Path(sys.executable).parent)
    units = []
    for unit in sorted(DEPLOY.glob("*.service")):
        text = unit.read_text().replace("/srv/nurture/.venv/bin", venv)
        name = unit.name.replace("@.service", "@01.service")
        (tmp_path / name).write_text(text)
        units.append(str(tmp_path / name))
    assert len(units) == 2
    for program in ("gunicorn", "nurture"):
        assert (Path(venv) / program).exists(), program
    done = subprocess.run(
        ["systemd-analyze", "verify", *units], capture_output=True, text=True, timeout=120
    )
    complaints = [line for line in done.stderr.splitlines() if str(tmp_path) in line]
    assert done.returncode == 0 and not complaints, done.stderr


def test_gunicorn_workers_report_one_sum_and_readyz(project_dir: Path, tmp_path: Path) -> None:
    """The deploy/ gunicorn config, 3 worker processes, PROMETHEUS_MULTIPROC_DIR: every scrape
    (whichever process answers it) shows all the requests counted by all of them."""
    url = f"sqlite:///{tmp_path / 'web.db'}"
    upgrade = CliRunner().invoke(
        main, ["--project", str(project_dir), "--db", url, "db", "upgrade"]
    )
    assert upgrade.exit_code == 0
    port = free_port()
    folder = tmp_path / "prometheus"
    (folder / "stale.db").parent.mkdir()
    (folder / "stale.db").write_bytes(b"left by an earlier run")
    token = "m" * 32
    env = {
        **os.environ,
        "NURTURE_PROJECT": str(project_dir),
        "NURTURE_DATABASE_URL": url,
        "NURTURE_SECRET_KEY": "k" * 40,
        "NURTURE_METRICS_TOKEN": token,
        "NURTURE_BIND": f"127.0.0.1:{port}",
        "NURTURE_WEB_WORKERS": "3",
        "PROMETHEUS_MULTIPROC_DIR": str(folder),
    }
    config = str(DEPLOY / "gunicorn.conf.py")
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", config, "nurture.wsgi:app"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"

    def get(path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        request = urllib.request.Request(base + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                return int(reply.status), bytes(reply.read())
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    try:
        answers: list[tuple[int, bytes]] = []

        def ready() -> bool:
            try:
                answers.append(get("/readyz"))
                return True
            except OSError:
                return False

        wait_until(ready, "gunicorn", process=server)
        status, body = answers[-1]
        assert status == 200 and json.loads(body)["status"] == "ok"
        assert not (folder / "stale.db").exists()
        assert get("/metrics")[0] == 401
        for _ in range(12):  # no API key: refused, and counted by whichever process answered
            assert get("/api/v1/contacts/x@example.org")[0] == 401
            request = urllib.request.Request(base + "/api/v1/events", data=b"{}", method="POST")
            with contextlib.suppress(urllib.error.HTTPError):
                urllib.request.urlopen(request, timeout=10)
        auth = {"Authorization": f"Bearer {token}"}
        for _ in range(6):
            status, body = get("/metrics", auth)
            assert status == 200
            samples = {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(body.decode())
                for s in family.samples
            }
            assert samples[("nurture_api_events_rejected_total", (("status", "401"),))] == 12
        assert len(list(folder.glob("counter_*.db"))) >= 2  # several processes wrote
    finally:
        server.terminate()
        server.wait(timeout=60)
