"""The web side: a Flask app factory; blueprints for the links in emails, provider webhooks,
the API, lead-capture forms, and the dashboard (login required, CSRF on every form)."""

from __future__ import annotations

from datetime import timedelta

from flask import Flask, Response, jsonify, request
from flask_wtf.csrf import CSRFProtect
from werkzeug.exceptions import HTTPException

from nurture.runtime import Runtime


def create_app(runtime: Runtime) -> Flask:
    """The whole web part of one project runtime."""
    from nurture.web import api, auth, dashboard, forms, hooks, public

    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=runtime.links.secret,
        MAX_CONTENT_LENGTH=1024 * 1024,
        SESSION_COOKIE_SECURE=runtime.project.settings.base_url.startswith("https://"),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_NAME="nurture_session",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
        WTF_CSRF_TIME_LIMIT=12 * 3600,
    )
    csrf = CSRFProtect(app)
    # Signed tokens in links, provider signatures and API keys authenticate these, not a
    # browser session; a mail client's one-click unsubscribe POST carries no cookie at all.
    for exempt in (public.bp, hooks.bp, api.bp, forms.bp):
        csrf.exempt(exempt)
    app.extensions["nurture"] = runtime
    app.register_blueprint(public.bp)
    app.register_blueprint(hooks.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(forms.bp)
    app.register_blueprint(auth.bp)
    app.register_blueprint(dashboard.bp)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response | HTTPException:
        """JSON under /api/ (an unknown route, a wrong method); the usual page elsewhere."""
        if request.path.startswith("/api/"):
            return api.http_error(exc)
        return exc

    @app.get("/healthz")
    def health() -> Response:
        return jsonify(status="ok")

    return app
