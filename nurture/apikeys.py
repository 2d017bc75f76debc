"""API keys: random, shown once, stored as their SHA-256, sent as a bearer token."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from nurture.errors import InvalidValue
from nurture.models import ApiKey

PREFIX = "nk_"


def _digest(key: str) -> str:
    # Keys carry 256 random bits: a fast hash is enough, a slow one would only cost requests.
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(session: Session, name: str, now: datetime) -> tuple[ApiKey, str]:
    """A new key named `name`; the returned string is the only copy of the key."""
    if not name.strip():
        raise InvalidValue("name", "say who or what uses the key")
    key = PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(name=name.strip(), prefix=key[:10], key_hash=_digest(key), created_at=now)
    session.add(row)
    session.flush()
    return row, key


def find_key(session: Session, key: str) -> ApiKey | None:
    """The live key `key` is, or None."""
    if not key.startswith(PREFIX):
        return None
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == _digest(key)))
    return row if row is not None and row.revoked_at is None else None


def revoke_key(session: Session, prefix: str, now: datetime) -> int:
    """Revoke the live keys whose shown prefix is `prefix`; how many."""
    rows = list(
        session.scalars(select(ApiKey).where(ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None)))
    )
    for row in rows:
        row.revoked_at = now
    return len(rows)
