"""The web side: a Flask app factory; blueprints for the public links in emails."""

from __future__ import annotations

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from nurture.runtime import Runtime


def create_app(runtime: Runtime) -> Flask:
    """The app serving tracking and unsubscribe links for one project runtime."""
    from nurture.web import api, forms, hooks, public

    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=runtime.links.secret,
        MAX_CONTENT_LENGTH=1024 * 1024,
        SESSION_COOKIE_SECURE=runtime.project.settings.base_url.startswith("https://"),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
    )
    app.extensions["nurture"] = runtime
    app.register_blueprint(public.bp)
    app.register_blueprint(hooks.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(forms.bp)

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
