"""gunicorn settings for nurture's web part: `gunicorn -c deploy/gunicorn.conf.py nurture.wsgi:app`.

Metrics with several worker processes: set PROMETHEUS_MULTIPROC_DIR to an empty folder
writable by the service (nurture-web.service uses its RuntimeDirectory, /run/nurture-web);
each process writes its counters there, and /metrics, whichever process answers, reports
their sum. The folder is emptied when gunicorn starts, and a dead worker's live gauges are
dropped.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

bind = os.environ.get("NURTURE_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("NURTURE_WEB_WORKERS", "4"))
threads = int(os.environ.get("NURTURE_WEB_THREADS", "4"))
worker_class = "gthread"
timeout = 60
graceful_timeout = 30
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
accesslog = "-"
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(b)s %(M)sms'  # no query strings: tokens
errorlog = "-"


def on_starting(server: Any) -> None:
    """Start from an empty metrics folder: old processes' files would add to the sums."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        for stale in Path(folder).glob("*.db"):
            stale.unlink()


def child_exit(server: Any, worker: Any) -> None:
    """A worker process ended: its live gauges no longer count."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
