"""One logging set-up for every command: a level, plain text or JSON lines, nothing secret.

`setup` is called once by the `nurture` command (and by `nurture.wsgi`). Every line goes to
stderr through two filters: `RedactingFilter` (URL passwords, nurture.redact) and
`AddressFilter` (an email address keeps its domain only: `***@example.com`), so neither a
secret nor a person's address is ever written in clear. With `NURTURE_LOG_FORMAT=json` each
line is one JSON object; the ids a log call passes with `extra=` (`contact_id`,
`message_id`, ...) become fields of it. APScheduler's per-run chatter ("Running job ...")
is only shown at DEBUG.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from nurture import environment
from nurture.redact import RedactingFilter

FORMAT_ENV = environment.LOG_FORMAT
LEVEL_ENV = environment.LOG_LEVEL
LEVELS = ("debug", "info", "warning", "error")
#: Fields a log call may pass with `extra=`; copied into each JSON line.
ID_FIELDS = ("contact_id", "message_id", "enrollment_id", "handoff_id", "event_id", "job")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: Loggers whose INFO is per-run noise (job runs, migration context), kept to DEBUG.
CHATTY = ("apscheduler", "alembic")
_ADDRESS = re.compile(r"[^\s<>()\[\],;:\"'@]+@((?:[\w-]+\.)+[\w-]{2,})", re.UNICODE)


def mask_addresses(text: str) -> str:
    """`text` with every email address's local part masked (the domain kept)."""
    return _ADDRESS.sub(r"***@\1", text)


class AddressFilter(logging.Filter):
    """Masks email addresses in the final message and in a traceback's text."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = mask_addresses(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            text = record.exc_text or logging.Formatter().formatException(record.exc_info)
            record.exc_text = mask_addresses(text)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, message, the ids."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in ID_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["error"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def setup(level: str = "warning", fmt: str | None = None, stream: TextIO | None = None) -> None:
    """Install the one handler of the root logger (replacing any earlier one)."""
    fmt = (fmt or environment.read(FORMAT_ENV) or "text").lower()
    if fmt not in ("text", "json"):
        raise ValueError(f"{FORMAT_ENV}: {fmt!r} is not text or json")
    number = logging.getLevelNamesMapping()[level.upper()]
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RedactingFilter())  # no URL password in any log line
    handler.addFilter(AddressFilter())  # no person's address either
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(number)
    chatty = logging.DEBUG if number <= logging.DEBUG else logging.WARNING
    for name in CHATTY:
        logging.getLogger(name).setLevel(chatty)
