"""Email providers' webhooks: verify who sent them, and read what they say.

Pure apart from fetching Amazon SNS signing certificates (done through a function the
caller passes in). Every reader returns `Feedback` items: which address, what happened
(hard_bounced, soft_bounced, complained, unsubscribed), and the provider's id for the event,
which makes each one apply once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from nurture.vocabulary import BuiltinEvent

KINDS = (
    BuiltinEvent.HARD_BOUNCED,
    BuiltinEvent.SOFT_BOUNCED,
    BuiltinEvent.COMPLAINED,
    BuiltinEvent.UNSUBSCRIBED,
)
MAILGUN_MAX_AGE = timedelta(minutes=15)
_SNS_HOST = re.compile(r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")


class BadRequest(ValueError):
    """The body is not what the provider sends: 400, nothing applied."""


class Unauthorized(ValueError):
    """Missing or wrong secret or signature: 401/403, nothing applied."""


@dataclass(frozen=True)
class Feedback:
    event_id: str
    email: str
    kind: str
    detail: str = ""


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the body is not JSON") from None


SENDGRID_SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
SENDGRID_TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"


def sendgrid(body: bytes, signature: str, timestamp: str, public_key: str) -> list[Feedback]:
    """SendGrid's Signed Event Webhook: ECDSA over timestamp + body."""
    if not signature or not timestamp:
        raise Unauthorized("signature headers missing")
    try:
        key = serialization.load_der_public_key(base64.b64decode(public_key))
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise Unauthorized("sendgrid_public_key is not an elliptic-curve key")
        key.verify(
            base64.b64decode(signature), timestamp.encode() + body, ec.ECDSA(hashes.SHA256())
        )
    except (InvalidSignature, ValueError):
        raise Unauthorized("signature does not verify") from None
    events = _json(body)
    if not isinstance(events, list):
        raise BadRequest("SendGrid posts a JSON array of events")
    found = []
    for index, event in enumerate(events):
        if not isinstance(event, dict) or not isinstance(event.get("email"), str):
            raise BadRequest(f"event [{index}] has no email")
        name, event_id = event.get("event"), str(event.get("sg_event_id") or "")
        if not event_id:
            raise BadRequest(f"event [{index}] has no sg_event_id")
        kind = {
            "bounce": "soft_bounced" if event.get("type") == "blocked" else "hard_bounced",
            "dropped": "hard_bounced" if "bounce" in str(event.get("reason", "")).lower() else None,
            "spamreport": "complained",
            "unsubscribe": "unsubscribed",
            "group_unsubscribe": "unsubscribed",
        }.get(str(name))
        if kind:
            found.append(Feedback(event_id, event["email"], kind, str(event.get("reason", name))))
    return found


def mailgun(body: bytes, signing_key: str, now: datetime) -> list[Feedback]:
    """Mailgun: HMAC-SHA256 of timestamp + token with the webhook signing key."""
    data = _json(body)
    if not isinstance(data, dict):
        raise BadRequest("Mailgun posts a JSON object")
    signature = data.get("signature")
    if not isinstance(signature, dict) or not all(
        isinstance(signature.get(k), str) for k in ("timestamp", "token", "signature")
    ):
        raise Unauthorized("signature missing")
    expected = hmac.new(
        signing_key.encode(), (signature["timestamp"] + signature["token"]).encode(), hashlib.sha256
    ).hexdigest()
    if not hmac.compare_digest(expected, signature["signature"]):
        raise Unauthorized("signature does not verify")
    try:
        sent = datetime.fromtimestamp(int(signature["timestamp"]), now.tzinfo)
    except ValueError:
        raise Unauthorized("bad timestamp") from None
    if abs(now - sent) > MAILGUN_MAX_AGE:
        raise Unauthorized("timestamp too old: a replay?")
    event = data.get("event-data")
    if not isinstance(event, dict) or not isinstance(event.get("recipient"), str):
        raise BadRequest("event-data.recipient missing")
    name = event.get("event")
    kind = {
        "failed": "hard_bounced" if event.get("severity") == "permanent" else "soft_bounced",
        "complained": "complained",
        "unsubscribed": "unsubscribed",
    }.get(str(name))
    event_id = str(event.get("id") or "")
    if not event_id:
        raise BadRequest("event-data.id missing")
    reason = str((event.get("delivery-status") or {}).get("description") or name)
    return [Feedback(event_id, event["recipient"], kind, reason)] if kind else []


def postmark(body: bytes, authorization: str, credentials: str) -> list[Feedback]:
    """Postmark: basic auth set on the webhook URL; one record per request."""
    expected = "Basic " + base64.b64encode(credentials.encode()).decode()
    if not hmac.compare_digest(authorization.encode(), expected.encode()):
        raise Unauthorized("credentials do not match")
    data = _json(body)
    if not isinstance(data, dict) or "RecordType" not in data:
        raise BadRequest("RecordType missing")
    record, email = data["RecordType"], data.get("Email") or data.get("Recipient")
    if not isinstance(email, str):
        raise BadRequest("Email missing")
    event_id = str(data.get("ID") or data.get("MessageID") or "")
    if not event_id:
        raise BadRequest("ID missing")
    if record == "Bounce":
        hard = data.get("Type") in ("HardBounce", "BadEmailAddress", "ManuallyDeactivated")
        kind = "hard_bounced" if hard else "soft_bounced"
        return [Feedback(f"bounce-{event_id}", email, kind, str(data.get("Description", "")))]
    if record == "SpamComplaint":
        return [Feedback(f"complaint-{event_id}", email, "complained")]
    if record == "SubscriptionChange" and data.get("SuppressSending"):
        return [
            Feedback(
                f"change-{event_id}", email, "unsubscribed", str(data.get("SuppressionReason"))
            )
        ]
    return []


@dataclass(frozen=True)
class SnsResult:
    feedback: list[Feedback]
    confirm_url: str | None = None


def ses(body: bytes, topic_arn: str, fetch: Callable[[str], bytes]) -> SnsResult:
    """Amazon SES through SNS: the envelope's signature is checked with Amazon's certificate."""
    envelope = _json(body)
    if not isinstance(envelope, dict) or envelope.get("TopicArn") != topic_arn:
        raise Unauthorized("not from the configured SNS topic")
    kind = envelope.get("Type")
    fields = {
        "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
        "SubscriptionConfirmation": (
            "Message",
            "MessageId",
            "SubscribeURL",
            "Timestamp",
            "Token",
            "TopicArn",
            "Type",
        ),
    }.get(str(kind))
    if fields is None:
        raise BadRequest(f"unknown SNS message type {kind!r}")
    _verify_sns(envelope, fields, fetch)
    if kind == "SubscriptionConfirmation":
        url = str(envelope.get("SubscribeURL", ""))
        if not _SNS_HOST.match(urlsplit(url).hostname or "") or not url.startswith("https://"):
            raise BadRequest("SubscribeURL is not Amazon SNS")
        return SnsResult([], url)
    message = _json(str(envelope.get("Message", "")).encode())
    if not isinstance(message, dict):
        raise BadRequest("Message is not a JSON object")
    notification = message.get("notificationType") or message.get("eventType")
    event_id = str(envelope.get("MessageId"))
    found = []
    if notification == "Bounce":
        bounce = message.get("bounce") or {}
        kind_of = "hard_bounced" if bounce.get("bounceType") == "Permanent" else "soft_bounced"
        for recipient in bounce.get("bouncedRecipients") or []:
            email = recipient.get("emailAddress")
            if isinstance(email, str):
                found.append(
                    Feedback(
                        f"{event_id}:{email}",
                        email,
                        kind_of,
                        str(recipient.get("diagnosticCode", "")),
                    )
                )
    elif notification == "Complaint":
        for recipient in (message.get("complaint") or {}).get("complainedRecipients") or []:
            email = recipient.get("emailAddress")
            if isinstance(email, str):
                found.append(Feedback(f"{event_id}:{email}", email, "complained"))
    return SnsResult(found)


_certificates: dict[str, rsa.RSAPublicKey] = {}


def _verify_sns(
    envelope: Mapping[str, Any], fields: tuple[str, ...], fetch: Callable[[str], bytes]
) -> None:
    url = str(envelope.get("SigningCertURL", ""))
    parts = urlsplit(url)
    if (
        parts.scheme != "https"
        or not _SNS_HOST.match(parts.hostname or "")
        or not url.endswith(".pem")
    ):
        raise Unauthorized("SigningCertURL is not Amazon SNS")
    if url not in _certificates:
        certificate = x509.load_pem_x509_certificate(fetch(url))
        key = certificate.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise Unauthorized("unexpected certificate key")
        _certificates[url] = key
    canonical = "".join(
        f"{name}\n{envelope[name]}\n" for name in fields if envelope.get(name) is not None
    ).encode()
    digest = hashes.SHA256() if str(envelope.get("SignatureVersion")) == "2" else hashes.SHA1()
    try:
        _certificates[url].verify(
            base64.b64decode(str(envelope.get("Signature", ""))),
            canonical,
            padding.PKCS1v15(),
            digest,
        )
    except (InvalidSignature, ValueError):
        raise Unauthorized("SNS signature does not verify") from None
