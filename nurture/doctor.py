"""`nurture doctor`: what would make this deployment fail, and how to fix each.

Each check gives one line: ok, warn or error, what was found, and how to fix it. The
configuration is checked as a start checks it (`runtime.check_start`, as `run` and `validate`);
then the secret key, the database (reachable, migrated to head), the SMTP server (reachable,
STARTTLS and AUTH as the URL asks), the base URL (`/healthz` answering, over https), and the
sender's domain as Gmail's and Yahoo's bulk-sender rules read it: SPF, DKIM, DMARC aligned
with the From domain, and MX for the reply address.

The network parts are injected (`Lookup` for DNS, `fetch` for HTTP, an SSL context for SMTP),
so the tests run against local zone data and loopback servers.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import smtplib
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import dns.exception
import dns.resolver
from cryptography.hazmat.primitives import serialization

from nurture import environment
from nurture.config import Dkim, Settings
from nurture.db import make_engine
from nurture.health import readiness
from nurture.keys import ENV_VAR as SECRET_ENV
from nurture.problems import ProjectError
from nurture.project import Project
from nurture.redact import redact_text
from nurture.runtime import SMTP_ENV, check_start, database_url
from nurture.transport import SmtpUrl


class Level(StrEnum):
    OK = "ok"
    WARN = "warn"
    ERROR = "error"


@dataclass(frozen=True)
class Check:
    level: Level
    what: str
    fix: str = ""

    def __str__(self) -> str:
        return f"{self.level.value:<5} {self.what}" + (f": {self.fix}" if self.fix else "")


class LookupFailed(Exception):
    """DNS did not answer (a timeout, SERVFAIL): nothing can be said about the record."""


#: (name, record type) -> the records as text (TXT strings joined); [] when there is none.
Lookup = Callable[[str, str], list[str]]
#: url -> HTTP status and body; OSError when nothing answers.
Fetch = Callable[[str], tuple[int, bytes]]


def dns_lookup(name: str, rdtype: str) -> list[str]:
    """The real resolver (dnspython)."""
    try:
        answer = dns.resolver.resolve(name, rdtype, lifetime=10)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.NoNameservers):
        return []
    except dns.exception.DNSException as exc:
        raise LookupFailed(f"{name} {rdtype}: {exc}") from None
    out = []
    for record in answer:
        if rdtype == "TXT":
            out.append(b"".join(record.strings).decode("utf-8", "replace"))
        elif rdtype == "MX":
            out.append(record.exchange.to_text().rstrip("."))
        else:
            out.append(record.to_text())
    return out


def http_fetch(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return int(reply.status), bytes(reply.read(4096))
    except urllib.error.HTTPError as exc:
        return exc.code, b""


def diagnose(
    root: Path,
    database: str | None = None,
    *,
    lookup: Lookup = dns_lookup,
    fetch: Fetch = http_fetch,
    tls: ssl.SSLContext | None = None,
) -> list[Check]:
    """Every check, in the order a start needs them; the first failure does not stop the rest
    (except a configuration that does not load: nothing else can be read then)."""
    try:
        project = check_start(root)
    except ProjectError as exc:
        return [Check(Level.ERROR, f"configuration: {p}", "fix the file") for p in exc.problems]
    checks = [Check(Level.OK, f"configuration: {len(project.workflows)} workflows load")]
    checks.append(secret_check(project))
    checks.append(database_check(project, database))
    url = environment.read(SMTP_ENV) or project.settings.delivery.smtp_url
    checks.append(smtp_check(url, tls))
    checks.append(base_url_check(project.settings.base_url, fetch))
    checks.extend(domain_checks(project, url, lookup))
    return checks


def secret_check(project: Project) -> Check:
    value = environment.read(SECRET_ENV)
    if value is not None and len(value) < 32:
        return Check(Level.ERROR, f"{SECRET_ENV} is under 32 characters", "set a longer one")
    if value:
        return Check(Level.OK, f"secret key from {SECRET_ENV}")
    if (project.instance_dir / "secret_key").exists():
        return Check(Level.OK, "secret key in instance/secret_key")
    return Check(
        Level.WARN,
        "no secret key yet (one is made in instance/secret_key at the first start)",
        f"with several processes or machines, set {SECRET_ENV} (32+ random characters, the "
        "same everywhere)",
    )


def database_check(project: Project, database: str | None) -> Check:
    url = database_url(project, database)
    engine = make_engine(url)
    try:
        state = readiness(engine)
    finally:
        engine.dispose()
    shown = redact_text(url)
    if state.ok:
        return Check(Level.OK, f"database {shown}: {state.reason}")
    reason, _, command = state.reason.partition(": run ")
    fix = f"run {command}" if command else "check the URL, the server and the credentials"
    return Check(Level.ERROR, f"database {shown}: {reason}", fix)


def smtp_check(url: str | None, tls: ssl.SSLContext | None = None) -> Check:
    """Connect, EHLO, STARTTLS when the URL asks it, AUTH when it carries a user."""
    if not url:
        return Check(
            Level.WARN,
            "delivery: the outbox folder (no email leaves this machine)",
            f"set {SMTP_ENV}=smtp://user:password@host:587 to send",
        )
    try:
        parsed = SmtpUrl.parse(url)
    except ValueError as exc:
        return Check(Level.ERROR, f"SMTP: {exc}", f"fix {SMTP_ENV} or delivery.smtp_url")
    where = f"SMTP {parsed.host}:{parsed.port}"
    context = tls or ssl.create_default_context()
    connection: smtplib.SMTP | None = None
    step = "connect"
    try:
        if parsed.implicit_tls:
            connection = smtplib.SMTP_SSL(
                parsed.host, parsed.port, timeout=min(parsed.timeout, 15), context=context
            )
        else:
            connection = smtplib.SMTP(parsed.host, parsed.port, timeout=min(parsed.timeout, 15))
        step = "EHLO"
        connection.ehlo()
        if parsed.starttls:
            step = "STARTTLS"
            if not connection.has_extn("starttls"):
                return Check(
                    Level.ERROR,
                    f"{where} does not offer STARTTLS",
                    "use the provider's submission port (587) or smtps:// on 465; "
                    "?tls=none only for a relay on this machine",
                )
            connection.starttls(context=context)
            connection.ehlo()
        if parsed.username:
            step = "AUTH"
            if not connection.has_extn("auth"):
                return Check(
                    Level.ERROR,
                    f"{where} does not offer AUTH",
                    "check the port (submission: 587 or 465) and TLS",
                )
            connection.login(parsed.username, parsed.password or "")
    except smtplib.SMTPAuthenticationError as exc:
        return Check(
            Level.ERROR,
            f"{where}: AUTH refused ({exc.smtp_code})",
            f"check the user and password in {SMTP_ENV}",
        )
    except (smtplib.SMTPException, ssl.SSLError, OSError) as exc:
        reason = redact_text(str(exc)) or type(exc).__name__
        return Check(
            Level.ERROR,
            f"{where}: {step} failed: {reason}",
            "check the host, the port, the firewall and the server's TLS certificate",
        )
    finally:
        if connection is not None:
            try:
                connection.quit()
            except (smtplib.SMTPException, OSError):
                connection.close()
    how = "TLS" if parsed.implicit_tls else ("STARTTLS" if parsed.starttls else "no TLS")
    auth = ", AUTH accepted" if parsed.username else ""
    return Check(Level.OK, f"{where} answers ({how}{auth})")


def base_url_check(base_url: str, fetch: Fetch = http_fetch) -> Check:
    url = base_url.rstrip("/") + "/healthz"
    try:
        status, _ = fetch(url)
    except (OSError, ValueError) as exc:
        return Check(
            Level.ERROR,
            f"base_url: {url} does not answer ({exc})",
            "start the web part and point base_url at its public address",
        )
    if status != 200:
        return Check(Level.ERROR, f"base_url: {url} answered {status}", "fix the proxy")
    if not base_url.startswith("https://"):
        return Check(
            Level.WARN,
            f"base_url {base_url} answers over http",
            "serve it behind TLS and set base_url to the https address (links in emails, "
            "the dashboard's Secure cookie)",
        )
    return Check(Level.OK, f"base_url {base_url} answers /healthz over https")


# ---- the sender's domain --------------------------------------------------------------


def _domain(address: str) -> str:
    return address.rsplit("@", 1)[1].encode("idna").decode().lower()


def _aligned(domain: str, other: str, strict: bool = False) -> bool:
    """DMARC alignment, relaxed unless `strict` (organizational domain: the last two labels,
    a simplification without the public suffix list)."""
    if strict:
        return domain == other

    def org(name: str) -> str:
        return ".".join(name.split(".")[-2:])

    return org(domain) == org(other)


def _tags(record: str) -> dict[str, str]:
    out = {}
    for part in record.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep:
            out[key.strip().lower()] = "".join(value.split())
    return out


def _spf(lookup: Lookup, domain: str) -> list[str]:
    return [t for t in lookup(domain, "TXT") if t.lower().startswith("v=spf1")]


def _addresses(lookup: Lookup, host: str) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        return {ipaddress.ip_address(host)}
    except ValueError:
        pass
    found = set()
    for rdtype in ("A", "AAAA"):
        for value in lookup(host, rdtype):
            found.add(ipaddress.ip_address(value))
    return found


def spf_covers(
    lookup: Lookup,
    domain: str,
    ips: set[ipaddress.IPv4Address | ipaddress.IPv6Address],
    depth: int = 0,
) -> bool:
    """Whether `domain`'s SPF passes any of `ips` (ip4, ip6, a, mx, include; 10 levels)."""
    if depth > 10:
        return False
    records = _spf(lookup, domain)
    if len(records) != 1:
        return False
    for term in records[0].split()[1:]:
        qualifier = "+"
        if term[0] in "+-~?":
            qualifier, term = term[0], term[1:]
        if qualifier != "+":
            continue
        name, _, argument = term.partition(":")
        name = name.lower()
        if name in ("ip4", "ip6"):
            network = ipaddress.ip_network(argument, strict=False)
            if any(ip.version == network.version and ip in network for ip in ips):
                return True
        elif name == "include" and spf_covers(lookup, argument, ips, depth + 1):
            return True
        elif name.split("/")[0] in ("a", "mx"):
            target = argument.split("/")[0] or domain
            hosts = [target] if name.startswith("a") else lookup(target, "MX")
            if any(ips & _addresses(lookup, host) for host in hosts):
                return True
    return False


def domain_checks(project: Project, smtp_url: str | None, lookup: Lookup) -> list[Check]:
    try:
        return list(_domain_checks(project.settings, project.root, smtp_url, lookup))
    except LookupFailed as exc:
        return [Check(Level.ERROR, f"DNS: {exc}", "check this machine's resolver, then retry")]


def _domain_checks(
    settings: Settings, root: Path, smtp_url: str | None, lookup: Lookup
) -> Iterator[Check]:
    sender = settings.sender
    domain = _domain(sender.from_address)
    yield _spf_check(domain, smtp_url, lookup)
    dkim = settings.delivery.dkim
    yield _dkim_check(domain, dkim, root, lookup)
    yield _dmarc_check(domain, dkim.domain.lower() if dkim else None, lookup)
    reply = _domain(sender.reply_to or sender.from_address)
    if lookup(reply, "MX"):
        yield Check(Level.OK, f"MX for {reply} (replies have somewhere to go)")
    elif lookup(reply, "A"):
        yield Check(
            Level.WARN, f"no MX for {reply}, only an A record", f"add an MX record to {reply}"
        )
    else:
        yield Check(
            Level.ERROR,
            f"no MX for {reply}: replies bounce",
            f"add an MX record to {reply} (or set sender.reply_to to a mailbox that works)",
        )


def _spf_check(domain: str, smtp_url: str | None, lookup: Lookup) -> Check:
    records = _spf(lookup, domain)
    if not records:
        return Check(
            Level.ERROR,
            f"SPF: no v=spf1 TXT record at {domain}",
            f'add "v=spf1 include:<your provider> -all" at {domain}',
        )
    if len(records) > 1:
        return Check(
            Level.ERROR, f"SPF: {len(records)} v=spf1 records at {domain}", "merge them into one"
        )
    terms = [t.lower() for t in records[0].split()[1:]]
    if "all" in terms or "+all" in terms:
        return Check(
            Level.ERROR,
            f"SPF at {domain} ends in +all (anyone may send as {domain})",
            "end it with -all or ~all",
        )
    if smtp_url:
        host = SmtpUrl.parse(smtp_url).host
        ips = _addresses(lookup, host)
        if not ips:
            return Check(Level.WARN, f"SPF: {host} has no address", "check delivery.smtp_url")
        if not spf_covers(lookup, domain, ips):
            shown = ", ".join(sorted(map(str, ips)))
            return Check(
                Level.WARN,
                f"SPF at {domain} does not cover the SMTP server {host} ({shown})",
                "add your provider's include: (or ip4:) to the record; a relay may send from "
                "other addresses than it receives on, so check with its documentation",
            )
        return Check(Level.OK, f"SPF at {domain} covers the SMTP server {host}")
    return Check(Level.OK, f"SPF at {domain}: {records[0]}")


def _dkim_check(domain: str, dkim: Dkim | None, root: Path, lookup: Lookup) -> Check:
    if dkim is None:
        return Check(
            Level.WARN,
            "DKIM: nurture does not sign (no delivery.dkim)",
            "set delivery.dkim (domain, selector, private_key_file), unless your SMTP provider "
            f"signs with d={domain}: Gmail and Yahoo require DKIM from bulk senders",
        )
    name = f"{dkim.selector}._domainkey.{dkim.domain}"
    records = [r for r in lookup(name, "TXT") if "p=" in r]
    if not records:
        return Check(
            Level.ERROR, f"DKIM: no key at {name} (TXT)", 'publish "v=DKIM1; k=rsa; p=..." there'
        )
    published = _tags(records[0]).get("p", "")
    if not published:
        return Check(Level.ERROR, f"DKIM: the key at {name} is revoked (empty p=)", "publish it")
    key = serialization.load_pem_private_key((root / dkim.private_key_file).read_bytes(), None)
    ours = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        matches = base64.b64decode(published, validate=True) == ours
    except binascii.Error:
        return Check(Level.ERROR, f"DKIM: p= at {name} is not base64", "publish the key again")
    if not matches:
        return Check(
            Level.ERROR,
            f"DKIM: the key at {name} is not the public half of {dkim.private_key_file}",
            f"publish p={base64.b64encode(ours).decode()[:24]}... (the whole key) at {name}",
        )
    if not _aligned(domain, dkim.domain.lower()):
        return Check(
            Level.ERROR,
            f"DKIM: d={dkim.domain} does not align with the From domain {domain}",
            f"sign with d={domain} (or a parent of it)",
        )
    return Check(Level.OK, f"DKIM: {name} holds the public key of {dkim.private_key_file}")


def _dmarc_check(domain: str, dkim_domain: str | None, lookup: Lookup) -> Check:
    where = f"_dmarc.{domain}"
    records = [r for r in lookup(where, "TXT") if r.lower().startswith("v=dmarc1")]
    organizational = ".".join(domain.split(".")[-2:])
    if not records and organizational != domain:
        where = f"_dmarc.{organizational}"
        records = [r for r in lookup(where, "TXT") if r.lower().startswith("v=dmarc1")]
    if not records:
        return Check(
            Level.ERROR,
            f"DMARC: no v=DMARC1 record at _dmarc.{domain}",
            f'add "v=DMARC1; p=none; rua=mailto:dmarc@{domain}" at _dmarc.{domain}, then '
            "tighten p= once reports are clean",
        )
    tags = _tags(records[0])
    policy = tags.get("p", "").lower()
    if policy not in ("none", "quarantine", "reject"):
        return Check(Level.ERROR, f"DMARC at {where} has no valid p=", "add p=none at least")
    if dkim_domain is not None and not _aligned(domain, dkim_domain, tags.get("adkim") == "s"):
        mode = "strict" if tags.get("adkim") == "s" else "relaxed"
        return Check(
            Level.ERROR,
            f"DMARC at {where}: DKIM d={dkim_domain} does not align ({mode}) with {domain}",
            f"sign with d={domain}",
        )
    if policy == "none":
        return Check(
            Level.WARN,
            f"DMARC at {where}: p=none (reports only)",
            "move to p=quarantine once the reports show only your own mail",
        )
    return Check(Level.OK, f"DMARC at {where}: p={policy}, aligned with {domain}")


def exit_status(checks: list[Check]) -> int:
    """The exit status: 1 on any error, 0 with warnings only."""
    return 1 if any(c.level is Level.ERROR for c in checks) else 0
