"""Dashboard users: created from the command line, passwords hashed (werkzeug's scrypt)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from nurture.contacts import normalize_email
from nurture.models import User

MIN_PASSWORD = 12
#: Compared against when the address is unknown, so a wrong address costs the same time.
_DUMMY = generate_password_hash("not a password of anyone")


def create_user(session: Session, email: str, password: str, now: datetime) -> User:
    address = normalize_email(email)
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"password: at least {MIN_PASSWORD} characters")
    if session.scalar(select(User.id).where(User.email == address)) is not None:
        raise ValueError(f"email: a user {address} exists already")
    user = User(email=address, password_hash=generate_password_hash(password), created_at=now)
    session.add(user)
    session.flush()
    return user


def authenticate(session: Session, email: str, password: str, now: datetime) -> User | None:
    """The user these credentials belong to, or None (in the same time either way)."""
    try:
        address = normalize_email(email)
    except ValueError:
        address = ""
    user = session.scalar(select(User).where(User.email == address)) if address else None
    if not check_password_hash(user.password_hash if user else _DUMMY, password) or user is None:
        return None
    user.last_login_at = now
    return user
