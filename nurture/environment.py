"""The one place nurture reads its environment variables.

Every variable nurture reads is named here; the rest of the package asks `read(NAME)`.
Values that are secrets (`SECRETS`) are read, used and never printed or logged: messages
name the variable, never its value.

- `NURTURE_DATABASE_URL`: the database (else `database_url` in nurture.yaml, else SQLite
  in instance/).
- `NURTURE_SMTP_URL` (secret): smtp(s)://user:password@host:port (else delivery.smtp_url).
- `NURTURE_SECRET_KEY` (secret): signs links, 32+ characters (else made once per project).
- `NURTURE_HANDOFF_SECRET` (secret): signs hand-off webhooks (else handoff.webhook_secret).
- `NURTURE_METRICS_TOKEN` (secret): the bearer token of /metrics (unset: metrics are off).
- `NURTURE_SENDGRID_PUBLIC_KEY`, `NURTURE_MAILGUN_SIGNING_KEY`,
  `NURTURE_POSTMARK_CREDENTIALS`, `NURTURE_SES_TOPIC_ARN` (secrets): the email providers'
  webhook checks (else `webhooks:` in nurture.yaml).
- `NURTURE_LOG_LEVEL`: debug, info, warning or error; `NURTURE_LOG_FORMAT`: text or json.
- `NURTURE_PROJECT`: the project folder the WSGI app (nurture/wsgi.py) serves, `.` if unset.
- `PROMETHEUS_MULTIPROC_DIR`: prometheus_client's folder for several processes' counters.
"""

from __future__ import annotations

import os
from typing import overload

DATABASE_URL = "NURTURE_DATABASE_URL"
SMTP_URL = "NURTURE_SMTP_URL"
SECRET_KEY = "NURTURE_SECRET_KEY"
HANDOFF_SECRET = "NURTURE_HANDOFF_SECRET"
METRICS_TOKEN = "NURTURE_METRICS_TOKEN"
LOG_LEVEL = "NURTURE_LOG_LEVEL"
LOG_FORMAT = "NURTURE_LOG_FORMAT"
PROJECT = "NURTURE_PROJECT"
PROMETHEUS_MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
#: Webhook checks of the email providers, by their key under `webhooks:` in nurture.yaml.
WEBHOOK_KEYS = (
    "sendgrid_public_key",
    "mailgun_signing_key",
    "postmark_credentials",
    "ses_topic_arn",
)

#: The variables whose values are never printed.
SECRETS = frozenset(
    {SMTP_URL, SECRET_KEY, HANDOFF_SECRET, METRICS_TOKEN}
    | {f"NURTURE_{key.upper()}" for key in WEBHOOK_KEYS}
)


def webhook_variable(key: str) -> str:
    """The variable that overrides `webhooks.<key>` of nurture.yaml."""
    return f"NURTURE_{key.upper()}"


@overload
def read(name: str) -> str | None: ...
@overload
def read(name: str, default: str) -> str: ...
def read(name: str, default: str | None = None) -> str | None:
    """The value of the variable `name` (as `os.environ.get`)."""
    return os.environ.get(name, default)
