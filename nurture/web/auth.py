"""Login and logout for the dashboard; every dashboard route needs a logged-in user."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import Blueprint, current_app, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response as BaseResponse

from nurture.db import write_transaction
from nurture.runtime import Runtime
from nurture.users import authenticate

bp = Blueprint("auth", __name__)
F = TypeVar("F", bound=Callable[..., Any])


def _runtime() -> Runtime:
    runtime: Runtime = current_app.extensions["nurture"]
    return runtime


def login_required(view: F) -> F:
    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if session.get("user") is None:
            return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


@bp.route("/login", methods=["GET", "POST"])
def login() -> BaseResponse | tuple[str, int] | str:
    runtime = _runtime()
    target = request.args.get("next", "")
    if urlsplit(target).netloc or not target.startswith("/"):
        target = url_for("dashboard.overview_page")  # never off this site
    if request.method == "GET":
        return render_template("login.html", error=None, next=target)
    with write_transaction(runtime.database) as db:
        user = authenticate(
            db, request.form.get("email", ""), request.form.get("password", ""), runtime.clock.now()
        )
        email = user.email if user else None
    if email is None:
        return render_template("login.html", error="Wrong email or password.", next=target), 401
    session.clear()
    session["user"] = email
    return redirect(target)


@bp.post("/logout")
def logout() -> BaseResponse:
    session.clear()
    return redirect(url_for("auth.login"))
