"""Dashboard users: created from the command line, passwords hashed (werkzeug's scrypt);
their sessions (revocable on the server) and the login throttle's record of attempts."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from nurture.contacts import normalize_email
from nurture.core.throttle import Throttle
from nurture.db import lock_for_transaction
from nurture.errors import InvalidValue
from nurture.models import DashboardSession, LoginAttempt, User

MIN_PASSWORD = 12
#: A session ends this long after its login, whatever happens.
SESSION_LIFETIME = timedelta(hours=12)
#: `last_seen_at` is written at most this often (not on every page view).
SEEN_EVERY = timedelta(minutes=1)
THROTTLE = Throttle()
#: Compared against when the address is unknown, so a wrong address costs the same time.
_DUMMY = generate_password_hash("not a password of anyone")


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise InvalidValue("password", f"at least {MIN_PASSWORD} characters")


def create_user(session: Session, email: str, password: str, now: datetime) -> User:
    address = normalize_email(email)
    _check_password(password)
    if session.scalar(select(User.id).where(User.email == address)) is not None:
        raise InvalidValue("email", f"a user {address} exists already")
    user = User(email=address, password_hash=generate_password_hash(password), created_at=now)
    session.add(user)
    session.flush()
    return user


def find_user(session: Session, email: str) -> User:
    """The user with this address; ValueError naming the email otherwise."""
    address = normalize_email(email)
    user = session.scalar(select(User).where(User.email == address))
    if user is None:
        raise InvalidValue("email", f"no user {address}")
    return user


def set_password(session: Session, email: str, password: str, now: datetime) -> int:
    """Change a user's password and end all their sessions; how many were ended."""
    user = find_user(session, email)
    _check_password(password)
    user.password_hash = generate_password_hash(password)
    return end_sessions(session, now, user_id=user.id)


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


# Sessions ------------------------------------------------------------------------------


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(session: Session, user: User, now: datetime) -> str:
    """A new session for `user`; the random token goes into the signed cookie, its hash here."""
    token = secrets.token_urlsafe(32)
    session.add(
        DashboardSession(
            user_id=user.id, token_hash=_digest(token), created_at=now, last_seen_at=now
        )
    )
    session.flush()
    return token


@dataclass(frozen=True)
class LiveSession:
    email: str
    #: Whether `last_seen_at` is older than SEEN_EVERY (then `touch_session` notes the visit).
    stale: bool


def session_user(session: Session, token: str, now: datetime) -> LiveSession | None:
    """Whose live session `token` is, or None (unknown, revoked, or older than
    SESSION_LIFETIME). Reads only."""
    row = session.execute(
        select(DashboardSession, User.email)
        .join(User, User.id == DashboardSession.user_id)
        .where(DashboardSession.token_hash == _digest(token))
    ).first()
    if row is None:
        return None
    live, email = row
    if live.revoked_at is not None or now >= live.created_at + SESSION_LIFETIME:
        return None
    return LiveSession(str(email), now - live.last_seen_at >= SEEN_EVERY)


def touch_session(session: Session, token: str, now: datetime) -> None:
    session.execute(
        update(DashboardSession)
        .where(DashboardSession.token_hash == _digest(token))
        .values(last_seen_at=now)
    )


def end_session(session: Session, token: str, now: datetime) -> None:
    session.execute(
        update(DashboardSession)
        .where(DashboardSession.token_hash == _digest(token), DashboardSession.revoked_at.is_(None))
        .values(revoked_at=now)
    )


def end_sessions(session: Session, now: datetime, *, user_id: int | None = None) -> int:
    """Revoke every live session (of one user, or of everybody); how many."""
    query = update(DashboardSession).where(DashboardSession.revoked_at.is_(None))
    if user_id is not None:
        query = query.where(DashboardSession.user_id == user_id)
    return int(session.execute(query.values(revoked_at=now)).rowcount)  # type: ignore[attr-defined]


# The login throttle ----------------------------------------------------------------------


def account_key(email: str) -> str:
    """The account a login form names (the normalized address; the raw text if invalid)."""
    try:
        return normalize_email(email)
    except ValueError:
        return email.strip().lower()[:320]


def _failures(session: Session, column: str, value: str, now: datetime) -> list[datetime]:
    field = getattr(LoginAttempt, column)
    since = session.scalar(
        select(func.max(LoginAttempt.at)).where(field == value, LoginAttempt.succeeded)
    )
    start = now - THROTTLE.lookback
    if since is not None and since > start:
        start = since
    return list(
        session.scalars(
            select(LoginAttempt.at).where(
                field == value, LoginAttempt.at > start, LoginAttempt.succeeded.is_(False)
            )
        )
    )


def login_wait(session: Session, email: str, address: str, now: datetime) -> timedelta:
    """How long a login for this account from this address must still wait (zero: none).

    Call it in the transaction that then records the attempt: on PostgreSQL it takes a
    transaction-scoped advisory lock on the account, so parallel attempts on one account
    are checked one after the other and none slips past the limit (SQLite's write
    transaction serializes them already)."""
    account = account_key(email)
    lock_for_transaction(session, f"login:{account}")
    return THROTTLE.login_wait(
        _failures(session, "email", account, now),
        _failures(session, "address", address[:64], now),
        now,
    )


def record_attempt(
    session: Session, email: str, address: str, now: datetime, *, succeeded: bool
) -> None:
    """Keep one checked attempt (and forget those older than the throttle looks back)."""
    session.execute(delete(LoginAttempt).where(LoginAttempt.at < now - THROTTLE.lookback))
    session.add(
        LoginAttempt(email=account_key(email), address=address[:64], at=now, succeeded=succeeded)
    )
