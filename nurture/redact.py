"""Secrets never shown: the one helper for everything printed, logged or rendered.

Two rules. A value stored under a secret-sounding name (secret, password, token, key,
credentials, signing, ...) is replaced whole; a URL's password (`smtp://user:PASSWORD@host`,
`postgresql://user:PASSWORD@host/db`) is replaced wherever it appears in a text.
Pure: no I/O.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any

MASK = "***"
#: Parts of a name (split on `_`, `-`, `.` and case changes) that mark its value secret.
SECRET_PARTS = frozenset(
    {
        "secret",
        "secrets",
        "password",
        "passwords",
        "passwd",
        "pass",
        "pwd",
        "token",
        "tokens",
        "key",
        "keys",
        "apikey",
        "credential",
        "credentials",
        "signing",
        "private",
        "auth",
        "authorization",
        "cookie",
        "dsn",
    }
)
_PARTS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
#: scheme://user:PASSWORD@host: up to the last '@' before a blank or a quote, so a password
#: holding an unencoded '@' is masked whole.
_URL_PASSWORD = re.compile(r"""(?i)\b([a-z][a-z0-9+.-]*://[^\s/@:'"<>]*:)[^\s'"<>]*@""")


def is_secret_name(name: str) -> bool:
    """Whether a setting, field or variable called `name` holds a secret."""
    return any(part.lower() in SECRET_PARTS for part in _PARTS.findall(name))


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every URL password masked, and each of `secrets` (known secret values)."""
    out = _URL_PASSWORD.sub(rf"\1{MASK}@", text)
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        out = out.replace(secret, MASK)
    return out


def redact(value: Any) -> Any:
    """A copy of plain data (mappings, lists, strings) with secrets masked: the value of any
    secret-named key, and URL passwords in every string."""
    if isinstance(value, Mapping):
        return {
            key: (MASK if value[key] is not None else None)
            if isinstance(key, str) and is_secret_name(key)
            else redact(value[key])
            for key in value
        }
    if isinstance(value, list | tuple):
        return [redact(item) for item in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


class RedactingFilter(logging.Filter):
    """A logging filter that masks URL passwords in every record's final message."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact_text(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
        return True
