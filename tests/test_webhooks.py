"""Provider webhooks with the providers' documented sample payloads, signed for real."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from nurture.clock import FixedClock
from nurture.db import sessions
from nurture.models import Event, ProviderEvent, Suppression
from nurture.runtime import Runtime, open_runtime
from nurture.web import create_app
from nurture.web.hooks import FETCH
from tests.helpers import add_contact

TOPIC = "arn:aws:sns:us-east-1:123456789012:ses-feedback"
SENDGRID_SAMPLE = [
    {
        "email": "example@test.com",
        "timestamp": 1513299569,
        "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
        "event": "bounce",
        "category": "cat facts",
        "sg_event_id": "6g4ZI7SA-xmRDv57GoPIPw==",
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
        "reason": "500 unknown recipient",
        "status": "5.0.0",
        "type": "bounce",
    },
    {
        "email": "spam@test.com",
        "timestamp": 1513299569,
        "event": "spamreport",
        "sg_event_id": "37nvH5QBz858KGVYCM4uOA==",
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001",
    },
    {
        "email": "leave@test.com",
        "timestamp": 1513299569,
        "event": "unsubscribe",
        "sg_event_id": "zmzJhfJgAfUSOW80yEbPyw==",
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001",
    },
    {
        "email": "happy@test.com",
        "timestamp": 1513299569,
        "event": "delivered",
        "sg_event_id": "rWVYmVk90MjZJ9iohOBa3w==",
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001",
    },
]
MAILGUN_EVENT = {
    "event": "failed",
    "id": "G9Bn5sl1TC6nu79C8C0bwg",
    "timestamp": 1529006854.329574,
    "log-level": "error",
    "severity": "permanent",
    "reason": "suppress-bounce",
    "recipient": "alice@example.com",
    "delivery-status": {
        "code": 605,
        "description": "Not delivering to previously bounced address",
        "message": "",
    },
}
POSTMARK_BOUNCE = {
    "RecordType": "Bounce",
    "MessageStream": "outbound",
    "ID": 4323372036854775807,
    "Type": "HardBounce",
    "TypeCode": 1,
    "Name": "Hard bounce",
    "Tag": "Test",
    "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
    "Metadata": {},
    "ServerID": 23,
    "Description": "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
    "Details": "Test bounce details",
    "Email": "john@example.com",
    "From": "sender@example.com",
    "BouncedAt": "2019-11-05T16:33:54.9070259Z",
    "DumpAvailable": True,
    "Inactive": True,
    "CanActivate": True,
    "Subject": "Test subject",
}
SES_BOUNCE = {
    "notificationType": "Bounce",
    "bounce": {
        "bounceType": "Permanent",
        "bounceSubType": "General",
        "bouncedRecipients": [
            {
                "emailAddress": "recipient@example.com",
                "action": "failed",
                "status": "5.1.1",
                "diagnosticCode": "smtp; 550 5.1.1 user unknown",
            }
        ],
        "timestamp": "2016-01-27T14:59:38.237Z",
        "feedbackId": "00000138111222aa-33322211-cccc-cccc-cccc-ddddaaaa0680-000000",
    },
    "mail": {
        "timestamp": "2016-01-27T14:59:38.237Z",
        "source": "john@example.com",
        "messageId": "00000138111222aa-33322211-cccc-cccc-cccc-ddddaaaa0680-000000",
        "destination": ["recipient@example.com"],
    },
}


class Keys:
    def __init__(self) -> None:
        self.sendgrid = ec.generate_private_key(ec.SECP256R1())
        self.mailgun = "key-" + uuid.uuid4().hex
        self.postmark = "nurture:" + uuid.uuid4().hex
        self.sns = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
        now = datetime.now(UTC)
        self.sns_cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.sns.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30))
            .sign(self.sns, hashes.SHA256())
        ).public_bytes(serialization.Encoding.PEM)
        self.cert_url = (
            f"https://sns.us-east-1.amazonaws.com/SimpleNotificationService-{uuid.uuid4().hex}.pem"
        )


@pytest.fixture
def keys() -> Keys:
    return Keys()


@pytest.fixture
def fetched() -> list[str]:
    return []


@pytest.fixture
def app(
    project_dir: Path, clock: FixedClock, database_url: str, keys: Keys, fetched: list[str]
) -> Flask:
    public = base64.b64encode(
        keys.sendgrid.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).decode()
    settings = project_dir / "nurture.yaml"
    settings.write_text(
        settings.read_text() + f"\nwebhooks:\n  sendgrid_public_key: {public}\n"
        f"  mailgun_signing_key: {keys.mailgun}\n  postmark_credentials: {keys.postmark}\n"
        f"  ses_topic_arn: {TOPIC}\n"
    )
    runtime = open_runtime(project_dir, clock=clock, database=database_url)
    for address in (
        "example@test.com",
        "alice@example.com",
        "john@example.com",
        "recipient@example.com",
    ):
        add_contact(runtime, address)
    app = create_app(runtime)

    def fetch(url: str) -> bytes:
        fetched.append(url)
        if url == keys.cert_url:
            return keys.sns_cert
        return b"<ConfirmSubscriptionResponse/>"

    app.extensions[FETCH] = fetch
    return app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def runtime_of(app: Flask) -> Runtime:
    runtime: Runtime = app.extensions["nurture"]
    return runtime


def suppressions(app: Flask) -> dict[str, str]:
    with sessions(runtime_of(app).database)() as session:
        return {s.email: s.reason for s in session.scalars(select(Suppression))}


def applied(app: Flask) -> int:
    with sessions(runtime_of(app).database)() as session:
        return session.scalar(select(func.count()).select_from(ProviderEvent)) or 0


def sendgrid_post(
    client: FlaskClient,
    keys: Keys,
    body: bytes,
    timestamp: str = "1700000000",
    signature: str | None = None,
) -> object:
    if signature is None:
        signature = base64.b64encode(
            keys.sendgrid.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        ).decode()
    return client.post(
        "/hooks/sendgrid",
        data=body,
        headers={
            "X-Twilio-Email-Event-Webhook-Signature": signature,
            "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
            "Content-Type": "application/json",
        },
    )


def test_sendgrid(app: Flask, client: FlaskClient, keys: Keys) -> None:
    body = json.dumps(SENDGRID_SAMPLE).encode()
    response = sendgrid_post(client, keys, body)
    assert response.status_code == 200 and response.get_json() == {"applied": 3, "replayed": 0}  # type: ignore[attr-defined]
    assert suppressions(app) == {
        "example@test.com": "hard_bounced",
        "spam@test.com": "complained",
        "leave@test.com": "unsubscribed",
    }
    replay = sendgrid_post(client, keys, body)
    assert replay.get_json() == {"applied": 0, "replayed": 3}  # type: ignore[attr-defined]
    assert applied(app) == 3


def test_sendgrid_refuses_bad_signatures_and_bodies(
    app: Flask, client: FlaskClient, keys: Keys
) -> None:
    body = json.dumps(SENDGRID_SAMPLE).encode()
    other = ec.generate_private_key(ec.SECP256R1())
    forged = base64.b64encode(other.sign(b"1700000000" + body, ec.ECDSA(hashes.SHA256()))).decode()
    assert sendgrid_post(client, keys, body, signature=forged).status_code == 401  # type: ignore[attr-defined]
    assert sendgrid_post(client, keys, body, signature="").status_code == 401  # type: ignore[attr-defined]
    tampered = body.replace(b"example@test.com", b"victim@test.com")
    good_for_original = base64.b64encode(
        keys.sendgrid.sign(b"1700000000" + body, ec.ECDSA(hashes.SHA256()))
    ).decode()
    assert sendgrid_post(client, keys, tampered, signature=good_for_original).status_code == 401  # type: ignore[attr-defined]
    response = sendgrid_post(client, keys, b'{"not": "a list"}')
    assert response.status_code == 400 and "array" in response.get_json()["error"]  # type: ignore[attr-defined]
    assert sendgrid_post(client, keys, b"<xml/>").status_code == 400  # type: ignore[attr-defined]
    assert suppressions(app) == {} and applied(app) == 0


def mailgun_body(
    keys: Keys, now: datetime, event: dict[str, object], key: str | None = None
) -> bytes:
    timestamp, token = str(int(now.timestamp())), uuid.uuid4().hex
    signature = hmac.new(
        (key or keys.mailgun).encode(), (timestamp + token).encode(), hashlib.sha256
    ).hexdigest()
    return json.dumps(
        {
            "signature": {"timestamp": timestamp, "token": token, "signature": signature},
            "event-data": event,
        }
    ).encode()


def test_mailgun(app: Flask, client: FlaskClient, keys: Keys, clock: FixedClock) -> None:
    body = mailgun_body(keys, clock.now(), MAILGUN_EVENT)
    assert client.post("/hooks/mailgun", data=body).get_json() == {"applied": 1, "replayed": 0}
    assert suppressions(app) == {"alice@example.com": "hard_bounced"}
    assert client.post("/hooks/mailgun", data=body).get_json() == {"applied": 0, "replayed": 1}


def test_mailgun_soft_bounces_suppress_after_the_limit(
    app: Flask, client: FlaskClient, keys: Keys, clock: FixedClock
) -> None:
    for attempt in range(3):
        event = {
            **MAILGUN_EVENT,
            "severity": "temporary",
            "id": f"soft-{attempt}",
            "recipient": "john@example.com",
        }
        assert (
            client.post("/hooks/mailgun", data=mailgun_body(keys, clock.now(), event)).status_code
            == 200
        )
        assert ("john@example.com" in suppressions(app)) == (attempt == 2)
    assert suppressions(app)["john@example.com"] == "soft_bounced"
    with sessions(runtime_of(app).database)() as session:
        assert session.scalar(select(func.count()).where(Event.kind == "soft_bounced")) == 3


def test_mailgun_refuses_forgeries_and_replays_of_old_signatures(
    app: Flask, client: FlaskClient, keys: Keys, clock: FixedClock
) -> None:
    forged = mailgun_body(keys, clock.now(), MAILGUN_EVENT, key="key-wrong")
    assert client.post("/hooks/mailgun", data=forged).status_code == 401
    stale = mailgun_body(keys, clock.now() - timedelta(hours=2), MAILGUN_EVENT)
    assert client.post("/hooks/mailgun", data=stale).status_code == 401
    assert client.post("/hooks/mailgun", data=b"{}").status_code == 401
    broken = mailgun_body(keys, clock.now(), {"event": "failed"})
    assert client.post("/hooks/mailgun", data=broken).status_code == 400
    assert client.post("/hooks/mailgun", data=b"not json").status_code == 400
    assert suppressions(app) == {} and applied(app) == 0


def test_postmark(app: Flask, client: FlaskClient, keys: Keys) -> None:
    auth = {"Authorization": "Basic " + base64.b64encode(keys.postmark.encode()).decode()}
    body = json.dumps(POSTMARK_BOUNCE).encode()
    assert client.post("/hooks/postmark", data=body, headers=auth).get_json() == {
        "applied": 1,
        "replayed": 0,
    }
    complaint = {**POSTMARK_BOUNCE, "RecordType": "SpamComplaint", "Email": "recipient@example.com"}
    client.post("/hooks/postmark", data=json.dumps(complaint).encode(), headers=auth)
    assert suppressions(app) == {
        "john@example.com": "hard_bounced",
        "recipient@example.com": "complained",
    }
    assert client.post("/hooks/postmark", data=body, headers=auth).get_json() == {
        "applied": 0,
        "replayed": 1,
    }
    wrong = {"Authorization": "Basic " + base64.b64encode(b"nurture:guess").decode()}
    other = json.dumps({**POSTMARK_BOUNCE, "ID": 1, "Email": "alice@example.com"}).encode()
    assert client.post("/hooks/postmark", data=other, headers=wrong).status_code == 401
    assert client.post("/hooks/postmark", data=other).status_code == 401
    assert client.post("/hooks/postmark", data=b'{"ID": 5}', headers=auth).status_code == 400
    assert "alice@example.com" not in suppressions(app)


def sns(keys: Keys, kind: str, fields: dict[str, str], version: str = "1") -> bytes:
    envelope = {
        "Type": kind,
        "MessageId": str(uuid.uuid4()),
        "TopicArn": TOPIC,
        "Timestamp": "2026-03-02T08:00:00.000Z",
        "SignatureVersion": version,
        "SigningCertURL": keys.cert_url,
        **fields,
    }
    order = (
        ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
        if kind == "Notification"
        else ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
    )
    canonical = "".join(f"{k}\n{envelope[k]}\n" for k in order if k in envelope).encode()
    digest = hashes.SHA256() if version == "2" else hashes.SHA1()
    envelope["Signature"] = base64.b64encode(
        keys.sns.sign(canonical, padding.PKCS1v15(), digest)
    ).decode()
    return json.dumps(envelope).encode()


def test_ses_notifications(app: Flask, client: FlaskClient, keys: Keys) -> None:
    body = sns(keys, "Notification", {"Message": json.dumps(SES_BOUNCE)})
    assert client.post("/hooks/ses", data=body).get_json() == {"applied": 1, "replayed": 0}
    complaint = {
        "notificationType": "Complaint",
        "complaint": {"complainedRecipients": [{"emailAddress": "john@example.com"}]},
        "mail": SES_BOUNCE["mail"],
    }
    body2 = sns(keys, "Notification", {"Message": json.dumps(complaint)}, version="2")
    assert client.post("/hooks/ses", data=body2).status_code == 200
    assert suppressions(app) == {
        "recipient@example.com": "hard_bounced",
        "john@example.com": "complained",
    }
    assert client.post("/hooks/ses", data=body).get_json() == {"applied": 0, "replayed": 1}


def test_ses_subscription_confirmation(
    app: Flask, client: FlaskClient, keys: Keys, fetched: list[str]
) -> None:
    url = "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=x&Token=abc"
    body = sns(
        keys,
        "SubscriptionConfirmation",
        {"Message": "You have chosen to subscribe", "Token": "abc", "SubscribeURL": url},
    )
    assert client.post("/hooks/ses", data=body).status_code == 200
    assert fetched == [keys.cert_url, url]


@pytest.mark.parametrize(
    "mutate",
    [
        lambda e: e.update(TopicArn="arn:aws:sns:us-east-1:999:someone-else"),
        lambda e: e.update(SigningCertURL="https://evil.example.com/cert.pem"),
        lambda e: e.update(
            Message=e["Message"].replace("recipient@example.com", "victim@example.com")
        ),
        lambda e: e.update(Signature=base64.b64encode(b"0" * 256).decode()),
    ],
)
def test_ses_refuses_what_amazon_did_not_sign(
    app: Flask, client: FlaskClient, keys: Keys, mutate: Callable[[dict[str, str]], None]
) -> None:
    envelope = json.loads(sns(keys, "Notification", {"Message": json.dumps(SES_BOUNCE)}))
    changed = copy.deepcopy(envelope)
    mutate(changed)
    assert client.post("/hooks/ses", data=json.dumps(changed).encode()).status_code == 401
    assert suppressions(app) == {} and applied(app) == 0


def test_a_webhook_without_its_secret_is_off(
    project_dir: Path, clock: FixedClock, tmp_path: Path
) -> None:
    runtime = open_runtime(project_dir, clock=clock, database=f"sqlite:///{tmp_path / 'off.db'}")
    client = create_app(runtime).test_client()
    for name in ("sendgrid", "mailgun", "postmark", "ses"):
        response = client.post(f"/hooks/{name}", data=b"[]")
        assert response.status_code == 404 and "not enabled" in response.get_json()["error"]
