"""The web side: a Flask app factory; blueprints for the links in emails, provider webhooks,
the API, lead-capture forms, and the dashboard (login required, CSRF on every form)."""

from __future__ import annotations

from datetime import timedelta

from flask import Flask, Response, jsonify, render_template, request
from flask_wtf.csrf import CSRFProtect
from werkzeug.exceptions import HTTPException

from nurture import metrics
from nurture.health import readiness
from nurture.runtime import Runtime


def create_app(runtime: Runtime) -> Flask:
    """The whole web part of one project runtime."""
    from nurture.web import api, auth, dashboard, filters, forms, hooks, public

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

    filters.register(app)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response | tuple[str, int, list[tuple[str, str]]]:
        """JSON under /api/ (an unknown route, a wrong method); a page in the dashboard's
        style elsewhere (404, 405, 500...), keeping the error's headers (Allow on a 405)."""
        if request.path.startswith("/api/"):
            return api.http_error(exc)
        code = exc.code or 500
        headers = [(k, v) for k, v in exc.get_headers() if k.lower() != "content-type"]
        return render_template("http_error.html", code=code, error=exc), code, headers

    @app.get("/healthz")
    def health() -> Response:
        return jsonify(status="ok")

    @app.get("/readyz")
    def ready() -> tuple[Response, int]:
        """Readiness: the database answers and is migrated to head (else 503 and why)."""
        state = readiness(runtime.database)
        return jsonify(status="ok" if state.ok else "unavailable", reason=state.reason), (
            200 if state.ok else 503
        )

    @app.get("/metrics")
    def metrics_page() -> Response | tuple[Response, int]:
        """Prometheus metrics, off (404) until NURTURE_METRICS_TOKEN is set."""
        allowed = metrics.token_matches(request.headers.get("Authorization", ""))
        if allowed is None:
            return jsonify(error="metrics are off: set NURTURE_METRICS_TOKEN"), 404
        if not allowed:
            refused = jsonify(error="send Authorization: Bearer <NURTURE_METRICS_TOKEN>")
            refused.headers["WWW-Authenticate"] = 'Bearer realm="nurture-metrics"'
            return refused, 401
        body = metrics.exposition(runtime.database, runtime.clock)
        return Response(body, content_type=metrics.CONTENT_TYPE)

    return app
