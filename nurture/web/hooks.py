"""Provider webhooks: bounces, complaints and unsubscribes from SendGrid, Mailgun, Postmark
and Amazon SES. Each is off (404) until its secret is set; a request whose secret or
signature does not check out changes nothing; each provider event applies once."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from nurture import environment, metrics, providers
from nurture.db import write_transaction
from nurture.feedback import apply_provider_feedback
from nurture.runtime import Runtime

bp = Blueprint("hooks", __name__, url_prefix="/hooks")
FETCH = "nurture.fetch"


def fetch_url(url: str) -> bytes:
    """Amazon's certificates and subscription confirmations: the one outbound call."""
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
        return body


def _runtime() -> Runtime:
    runtime: Runtime = current_app.extensions["nurture"]
    return runtime


def _secret(name: str) -> str | None:
    value = environment.read(environment.webhook_variable(name))
    return value or getattr(_runtime().project.settings.webhooks, name)


def _error(status: int, message: str) -> tuple[Response, int]:
    return jsonify(error=message), status


def _apply(provider: str, items: list[providers.Feedback]) -> tuple[Response, int]:
    runtime = _runtime()
    now = runtime.clock.now()
    applied = 0
    kinds = []
    with write_transaction(runtime.database) as session:
        for item in items:
            if apply_provider_feedback(session, runtime.project, provider, item, now):
                applied += 1
                kinds.append(item.kind)
    metrics.count_feedback(provider, kinds)
    return jsonify(applied=applied, replayed=len(items) - applied), 200


@bp.after_request
def _count(response: Response) -> Response:
    metrics.count_webhook(
        (request.endpoint or "hooks.unknown").split(".")[-1], response.status_code
    )
    return response


def _guarded(provider: str, secret_name: str, read: Callable[[str], Any]) -> tuple[Response, int]:
    secret = _secret(secret_name)
    if not secret:
        return _error(404, f"the {provider} webhook is not enabled: set webhooks.{secret_name}")
    try:
        return _apply(provider, read(secret))
    except providers.Unauthorized as exc:
        return _error(401, str(exc))
    except (providers.BadRequest, ValueError) as exc:
        return _error(400, str(exc))


@bp.post("/sendgrid")
def sendgrid() -> tuple[Response, int]:
    body = request.get_data()
    signature = request.headers.get(providers.SENDGRID_SIGNATURE, "")
    timestamp = request.headers.get(providers.SENDGRID_TIMESTAMP, "")
    return _guarded(
        "sendgrid",
        "sendgrid_public_key",
        lambda key: providers.sendgrid(body, signature, timestamp, key),
    )


@bp.post("/mailgun")
def mailgun() -> tuple[Response, int]:
    body = request.get_data()
    return _guarded(
        "mailgun",
        "mailgun_signing_key",
        lambda key: providers.mailgun(body, key, _runtime().clock.now()),
    )


@bp.post("/postmark")
def postmark() -> tuple[Response, int]:
    body = request.get_data()
    authorization = request.headers.get("Authorization", "")
    return _guarded(
        "postmark",
        "postmark_credentials",
        lambda credentials: providers.postmark(body, authorization, credentials),
    )


@bp.post("/ses")
def ses() -> tuple[Response, int]:
    body = request.get_data()
    fetch: Callable[[str], bytes] = current_app.extensions.get(FETCH, fetch_url)

    def read(topic: str) -> list[providers.Feedback]:
        result = providers.ses(body, topic, fetch)
        if result.confirm_url:
            fetch(result.confirm_url)  # confirms the subscription with Amazon
        return result.feedback

    return _guarded("ses", "ses_topic_arn", read)
