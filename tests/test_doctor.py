"""`nurture doctor` against local zone data, a real SMTP server (STARTTLS, AUTH) on
loopback, a real SQLite database and a real web server: a good set-up passes, and each broken
record, server or setting is named with its fix."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import waitress
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from nurture.cli import main
from nurture.doctor import Check, Level, diagnose, exit_status, http_fetch
from nurture.runtime import open_runtime
from nurture.web import create_app
from tests.smtp_server import Recorder, free_port

DOMAIN = "keel-retention.example"
USER, PASSWORD = "keel", "correct horse battery"


class ZoneLookup(dict[tuple[str, str], list[str]]):
    """Local zone data: (name, type) -> records, as the real resolver gives them."""

    def __call__(self, name: str, rdtype: str) -> list[str]:
        return list(self.get((name.rstrip(".").lower(), rdtype), []))


def authenticate(*args: Any) -> AuthResult:
    data = args[-1]
    good = isinstance(data, LoginPassword) and (data.login, data.password) == (
        USER.encode(),
        PASSWORD.encode(),
    )
    return AuthResult(success=good, handled=False)  # handled=False: aiosmtpd answers 535


@dataclass
class Tls:
    server: ssl.SSLContext
    client: ssl.SSLContext


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    """A self-signed certificate for 127.0.0.1, trusted by the client context only."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert = folder / "cert.pem"
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    private = folder / "key.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, private)
    client = ssl.create_default_context(cafile=str(cert))
    return Tls(server, client)


@pytest.fixture
def smtp(tls: Tls) -> Iterator[int]:
    """aiosmtpd on loopback: STARTTLS required, then AUTH."""
    port = free_port()
    controller = Controller(
        Recorder(),
        hostname="127.0.0.1",
        port=port,
        tls_context=tls.server,
        require_starttls=True,
        authenticator=authenticate,
        auth_require_tls=True,
    )
    controller.start()
    yield port
    controller.stop()


@pytest.fixture
def plain_smtp() -> Iterator[int]:
    """aiosmtpd offering neither STARTTLS nor AUTH."""
    port = free_port()
    controller = Controller(Recorder(), hostname="127.0.0.1", port=port)
    controller.start()
    yield port
    controller.stop()


@pytest.fixture
def deployment(
    project_dir: Path, tmp_path: Path, smtp: int, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, str, ZoneLookup]:
    """A project signing with DKIM, sending through `smtp`, on a migrated SQLite database,
    and the zone data of a domain set up right."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (project_dir / "dkim.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    settings = project_dir / "nurture.yaml"
    settings.write_text(
        settings.read_text().replace(
            "base_url: http://localhost:5000", f"base_url: https://nurture.{DOMAIN}"
        )
        + f"\ndelivery:\n  dkim:\n    domain: {DOMAIN}\n    selector: nurture\n"
        "    private_key_file: dkim.pem\n"
    )
    monkeypatch.setenv("NURTURE_SMTP_URL", f"smtp://{USER}:{PASSWORD}@127.0.0.1:{smtp}")
    monkeypatch.setenv("NURTURE_SECRET_KEY", "s" * 40)
    url = f"sqlite:///{tmp_path / 'doctor.db'}"
    open_runtime(project_dir, database=url).database.dispose()  # migrated
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    zone = ZoneLookup(
        {
            (DOMAIN, "TXT"): ["v=spf1 include:_spf.relay.example -all", "google-site-verif=x"],
            ("_spf.relay.example", "TXT"): ["v=spf1 ip4:127.0.0.0/8 ip6:::1 -all"],
            (f"nurture._domainkey.{DOMAIN}", "TXT"): [
                f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}"
            ],
            (f"_dmarc.{DOMAIN}", "TXT"): [f"v=DMARC1; p=quarantine; rua=mailto:d@{DOMAIN}"],
            (DOMAIN, "MX"): [f"mx1.{DOMAIN}"],
        }
    )
    return project_dir, url, zone


def healthy(url: str) -> tuple[int, bytes]:
    assert url == f"https://nurture.{DOMAIN}/healthz"
    return 200, b'{"status": "ok"}'


def errors(checks: list[Check]) -> list[str]:
    return [str(c) for c in checks if c.level is Level.ERROR]


def test_a_good_deployment_passes(deployment: tuple[Path, str, ZoneLookup], tls: Tls) -> None:
    root, url, zone = deployment
    checks = diagnose(root, url, lookup=zone, fetch=healthy, tls=tls.client)
    assert [c.level for c in checks] == [Level.OK] * len(checks), "\n".join(map(str, checks))
    shown = "\n".join(map(str, checks))
    for what in ("configuration", "secret key", "database", "STARTTLS, AUTH accepted"):
        assert what in shown
    for what in ("SPF", "DKIM", "DMARC", "MX", "/healthz over https"):
        assert what in shown
    assert PASSWORD not in shown
    assert exit_status(checks) == 0


def _no_spf(zone: ZoneLookup) -> None:
    zone[(DOMAIN, "TXT")] = ["google-site-verif=x"]


def _plus_all(zone: ZoneLookup) -> None:
    zone[(DOMAIN, "TXT")] = ["v=spf1 a mx +all"]


def _two_spf(zone: ZoneLookup) -> None:
    zone[(DOMAIN, "TXT")] = ["v=spf1 -all", "v=spf1 include:_spf.relay.example -all"]


def _no_dkim(zone: ZoneLookup) -> None:
    del zone[(f"nurture._domainkey.{DOMAIN}", "TXT")]


def _other_dkim_key(zone: ZoneLookup) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    der = other.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    zone[(f"nurture._domainkey.{DOMAIN}", "TXT")] = [f"v=DKIM1; p={base64.b64encode(der).decode()}"]


def _revoked_dkim(zone: ZoneLookup) -> None:
    zone[(f"nurture._domainkey.{DOMAIN}", "TXT")] = ["v=DKIM1; p="]


def _no_dmarc(zone: ZoneLookup) -> None:
    del zone[(f"_dmarc.{DOMAIN}", "TXT")]


def _strict_dmarc_elsewhere(zone: ZoneLookup) -> None:
    zone[(f"_dmarc.{DOMAIN}", "TXT")] = ["v=DMARC1; p=reject"]
    zone[(f"nurture._domainkey.{DOMAIN}", "TXT")] = []


def _no_mx(zone: ZoneLookup) -> None:
    del zone[(DOMAIN, "MX")]


@pytest.mark.parametrize(
    ("breaks", "named"),
    [
        (_no_spf, "SPF: no v=spf1 TXT record at keel-retention.example"),
        (_plus_all, "SPF at keel-retention.example ends in +all"),
        (_two_spf, "SPF: 2 v=spf1 records"),
        (_no_dkim, "DKIM: no key at nurture._domainkey.keel-retention.example"),
        (_other_dkim_key, "DKIM: the key at nurture._domainkey.keel-retention.example is not"),
        (_revoked_dkim, "DKIM: the key at nurture._domainkey.keel-retention.example is revoked"),
        (_no_dmarc, "DMARC: no v=DMARC1 record at _dmarc.keel-retention.example"),
        (_no_mx, "no MX for keel-retention.example: replies bounce"),
    ],
)
def test_each_broken_record_is_named(
    deployment: tuple[Path, str, ZoneLookup], tls: Tls, breaks: Any, named: str
) -> None:
    root, url, zone = deployment
    breaks(zone)
    checks = diagnose(root, url, lookup=zone, fetch=healthy, tls=tls.client)
    found = errors(checks)
    assert len(found) == 1 and named in found[0], "\n".join(map(str, checks))
    assert ": " in found[0].split(named, 1)[1]  # and how to fix it
    assert exit_status(checks) == 1


def test_spf_not_covering_the_smtp_server_warns(
    deployment: tuple[Path, str, ZoneLookup], tls: Tls
) -> None:
    root, url, zone = deployment
    zone[("_spf.relay.example", "TXT")] = ["v=spf1 ip4:192.0.2.0/24 -all"]
    checks = diagnose(root, url, lookup=zone, fetch=healthy, tls=tls.client)
    (warning,) = [c for c in checks if c.level is Level.WARN]
    assert "does not cover the SMTP server 127.0.0.1" in str(warning)
    assert exit_status(checks) == 0  # warnings only


def test_dkim_from_another_domain_fails_alignment(
    deployment: tuple[Path, str, ZoneLookup], tls: Tls
) -> None:
    root, url, zone = deployment
    settings = root / "nurture.yaml"
    settings.write_text(settings.read_text().replace(f"domain: {DOMAIN}", "domain: relay.example"))
    zone[("nurture._domainkey.relay.example", "TXT")] = zone[
        (f"nurture._domainkey.{DOMAIN}", "TXT")
    ]
    found = errors(diagnose(root, url, lookup=zone, fetch=healthy, tls=tls.client))
    assert any("does not align" in line and "DMARC" in line for line in found), found


def test_smtp_wrong_password_and_missing_starttls(
    deployment: tuple[Path, str, ZoneLookup],
    tls: Tls,
    smtp: int,
    plain_smtp: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root, url, zone = deployment
    monkeypatch.setenv("NURTURE_SMTP_URL", f"smtp://{USER}:wrong-secret@127.0.0.1:{smtp}")
    found = errors(diagnose(root, url, lookup=zone, fetch=healthy, tls=tls.client))
    assert len(found) == 1 and "AUTH refused" in found[0] and "wrong-secret" not in found[0]
    monkeypatch.setenv("NURTURE_SMTP_URL", f"smtp://{USER}:{PASSWORD}@127.0.0.1:{plain_smtp}")
    found = errors(diagnose(root, url, lookup=zone, fetch=healthy, tls=tls.client))
    assert len(found) == 1 and "does not offer STARTTLS" in found[0]
    monkeypatch.setenv("NURTURE_SMTP_URL", f"smtp://{USER}:{PASSWORD}@127.0.0.1:{free_port()}")
    found = errors(diagnose(root, url, lookup=zone, fetch=healthy, tls=tls.client))
    assert len(found) == 1 and "connect failed" in found[0]
    # A certificate nobody vouches for: STARTTLS fails with the default trust store.
    monkeypatch.setenv("NURTURE_SMTP_URL", f"smtp://{USER}:{PASSWORD}@127.0.0.1:{smtp}")
    found = errors(diagnose(root, url, lookup=zone, fetch=healthy))
    assert len(found) == 1 and "STARTTLS failed" in found[0]


def test_database_secret_and_base_url(
    deployment: tuple[Path, str, ZoneLookup],
    tls: Tls,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root, url, zone = deployment
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    found = errors(diagnose(root, empty, lookup=zone, fetch=healthy, tls=tls.client))
    assert len(found) == 1 and "not migrated" in found[0] and "nurture db upgrade" in found[0]

    monkeypatch.setenv("NURTURE_SECRET_KEY", "short")
    found = errors(diagnose(root, url, lookup=zone, fetch=healthy, tls=tls.client))
    assert len(found) == 1 and "NURTURE_SECRET_KEY is under 32 characters" in found[0]
    monkeypatch.setenv("NURTURE_SECRET_KEY", "s" * 40)

    def down(url: str) -> tuple[int, bytes]:
        raise ConnectionRefusedError(111, "Connection refused")

    found = errors(diagnose(root, url, lookup=zone, fetch=down, tls=tls.client))
    assert len(found) == 1 and "/healthz does not answer" in found[0]


def test_an_http_base_url_served_for_real_warns(
    deployment: tuple[Path, str, ZoneLookup], tls: Tls
) -> None:
    root, url, zone = deployment
    port = free_port()
    settings = root / "nurture.yaml"
    settings.write_text(
        settings.read_text().replace(f"https://nurture.{DOMAIN}", f"http://127.0.0.1:{port}")
    )
    runtime = open_runtime(root, database=url)
    server = waitress.create_server(create_app(runtime), host="127.0.0.1", port=port)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        checks = diagnose(root, url, lookup=zone, fetch=http_fetch, tls=tls.client)
    finally:
        server.close()
        runtime.database.dispose()
    (warning,) = [c for c in checks if c.level is Level.WARN]
    assert "answers over http" in str(warning) and "TLS" in warning.fix
    assert exit_status(checks) == 0


def test_the_command_exits_1_on_a_broken_configuration(project_dir: Path) -> None:
    settings = project_dir / "nurture.yaml"
    settings.write_text(
        settings.read_text().replace("base_url: http://localhost:5000", "base_url: x")
    )
    result = CliRunner().invoke(main, ["--project", str(project_dir), "doctor"])
    assert result.exit_code == 1
    assert result.output.startswith("error configuration:") and "base_url" in result.output


def test_a_missing_dkim_key_file_is_a_configuration_error(
    deployment: tuple[Path, str, ZoneLookup], tls: Tls
) -> None:
    root, url, zone = deployment
    (root / "dkim.pem").unlink()
    checks = diagnose(root, url, lookup=zone, fetch=healthy, tls=tls.client)
    assert [c.level for c in checks] == [Level.ERROR]
    assert "delivery.dkim.private_key_file" in str(checks[0]) and exit_status(checks) == 1
