"""Login and logout for the dashboard; every dashboard route needs a logged-in user.

A login is a row in `dashboard_sessions`; the signed cookie holds only its random id, so
logging out (or a password change, or `nurture user sessions end`) ends it on the server
and a copy of the cookie opens nothing. Failed logins are throttled per account and per
client address (`nurture.core.throttle`), from the attempts kept in the database.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import Blueprint, current_app, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response as BaseResponse

from nurture import metrics
from nurture.core.throttle import in_words
from nurture.db import sessions, write_transaction
from nurture.runtime import Runtime
from nurture.users import (
    authenticate,
    end_session,
    login_wait,
    record_attempt,
    session_user,
    start_session,
    touch_session,
)

bp = Blueprint("auth", __name__)
F = TypeVar("F", bound=Callable[..., Any])


def _runtime() -> Runtime:
    runtime: Runtime = current_app.extensions["nurture"]
    return runtime


def _logged_in() -> bool:
    """Whether the cookie names a live session of the user it says (checked in the database)."""
    token = session.get("sid")
    if not isinstance(token, str):
        return False
    runtime = _runtime()
    now = runtime.clock.now()
    with sessions(runtime.database)() as db:
        live = session_user(db, token, now)
    if live is None or live.email != session.get("user"):
        return False
    if live.stale:
        with write_transaction(runtime.database) as db:
            touch_session(db, token, now)
    return True


def login_required(view: F) -> F:
    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if not _logged_in():
            session.clear()
            return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


@bp.route("/login", methods=["GET", "POST"])
def login() -> BaseResponse | tuple[str, int] | tuple[str, int, dict[str, str]] | str:
    runtime = _runtime()
    target = request.args.get("next", "")
    if urlsplit(target).netloc or not target.startswith("/"):
        target = url_for("dashboard.overview_page")  # never off this site
    if request.method == "GET":
        return render_template("login.html", error=None, next=target)
    email, password = request.form.get("email", ""), request.form.get("password", "")
    address = request.remote_addr or "unknown"
    now = runtime.clock.now()
    with write_transaction(runtime.database) as db:
        wait = login_wait(db, email, address, now)
        if wait:  # refused unchecked, even with the right password
            error = f"Too many failed logins. Try again in {in_words(wait)}."
            headers = {"Retry-After": str(math.ceil(wait.total_seconds()))}
            metrics.count_login_failure("throttled")
            return render_template("login.html", error=error, next=target), 429, headers
        user = authenticate(db, email, password, now)
        record_attempt(db, email, address, now, succeeded=user is not None)
        found = (user.email, start_session(db, user, now)) if user else None
    if found is None:
        metrics.count_login_failure("wrong_password")
        return render_template("login.html", error="Wrong email or password.", next=target), 401
    session.clear()
    session["user"], session["sid"] = found
    return redirect(target)


@bp.post("/logout")
def logout() -> BaseResponse:
    token = session.get("sid")
    if isinstance(token, str):
        runtime = _runtime()
        with write_transaction(runtime.database) as db:
            end_session(db, token, runtime.clock.now())
    session.clear()
    return redirect(url_for("auth.login"))
