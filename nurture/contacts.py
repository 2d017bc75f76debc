"""Contact profiles: the normalized email, the fields conditions and templates see."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from nurture.config import PROFILE_FIELDS, Settings
from nurture.scoring import decayed

_EMAIL = re.compile(
    r"^[^@\s<>\"',;]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+$"
)
#: Profile fields a caller may set, with their types.
EDITABLE = {
    "first_name": str,
    "last_name": str,
    "company": str,
    "account": str,
    "sector": str,
    "company_size": int,
    "role": str,
    "seniority": str,
    "country": str,
    "timezone": str,
    "language": str,
    "source": str,
    "owner": str,
}


#: Domains shared by unrelated people: an address there says nothing about its company.
FREE_MAIL_DOMAINS = frozenset(
    {
        "gmail.com",
        "googlemail.com",
        "yahoo.com",
        "yahoo.fr",
        "ymail.com",
        "hotmail.com",
        "hotmail.fr",
        "outlook.com",
        "outlook.fr",
        "live.com",
        "live.fr",
        "msn.com",
        "aol.com",
        "icloud.com",
        "me.com",
        "mac.com",
        "proton.me",
        "protonmail.com",
        "gmx.de",
        "gmx.net",
        "gmx.fr",
        "web.de",
        "orange.fr",
        "wanadoo.fr",
        "free.fr",
        "laposte.net",
        "sfr.fr",
        "mail.ru",
        "yandex.ru",
        "qq.com",
        "163.com",
        "zoho.com",
    }
)


def default_account(email: str) -> str | None:
    """The account of an address with none given: its domain, unless it is free mail."""
    domain = email.rsplit("@", 1)[1]
    return None if domain in FREE_MAIL_DOMAINS else domain


def normalize_email(email: str) -> str:
    """Trimmed and lower-cased; raise ValueError if it is not an address."""
    value = email.strip().lower()
    if not _EMAIL.match(value) or len(value) > 320:
        raise ValueError(f"{email!r} is not a valid email address")
    return value


def clean_profile(
    fields: dict[str, Any], custom_fields: list[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(profile columns, custom fields) from loose input; ValueError names the bad field."""
    profile: dict[str, Any] = {}
    custom: dict[str, Any] = {}
    for name, value in fields.items():
        if value is None or value == "":
            continue
        if name in EDITABLE:
            kind = EDITABLE[name]
            try:
                profile[name] = kind(value) if kind is int else str(value).strip()
            except (TypeError, ValueError):
                raise ValueError(f"{name}: {value!r} is not a whole number") from None
        elif name in custom_fields:
            custom[name] = value
        else:
            known = ", ".join([*EDITABLE, *custom_fields])
            raise ValueError(f"{name}: unknown field; known fields: {known}")
    if "timezone" in profile:
        zone_name(profile["timezone"])
    if "country" in profile:
        profile["country"] = profile["country"].upper()
        if len(profile["country"]) != 2:
            raise ValueError(f"country: {profile['country']!r} is not a two-letter ISO code")
    if "owner" in profile:
        try:
            profile["owner"] = normalize_email(profile["owner"])
        except ValueError:
            raise ValueError(f"owner: {profile['owner']!r} is not an email address") from None
    if "seniority" in profile:
        profile["seniority"] = profile["seniority"].lower().replace("-", "_").replace(" ", "_")
    return profile, custom


def zone_name(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"timezone: {name!r} is not an IANA time zone") from None


class ContactLike(Protocol):
    """What the deciding parts read of a contact: an ORM object or a plain row."""

    @property
    def email(self) -> str: ...
    @property
    def timezone(self) -> str | None: ...
    @property
    def custom(self) -> dict[str, Any]: ...
    @property
    def stage(self) -> str: ...
    @property
    def stage_since(self) -> datetime: ...
    @property
    def fit(self) -> float: ...
    @property
    def engagement(self) -> float: ...
    @property
    def engagement_at(self) -> datetime: ...


def zone_of(contact: ContactLike, settings: Settings) -> ZoneInfo:
    return ZoneInfo(contact.timezone or settings.timezone)


def profile(contact: ContactLike, settings: Settings) -> dict[str, Any]:
    """Every profile field (None when unknown), custom fields included."""
    row = getattr(contact, "_mapping", None)  # a Row: a dict lookup, not a failing getattr
    if row is not None:
        data: dict[str, Any] = {name: row.get(name) for name in PROFILE_FIELDS}
    else:
        data = {name: getattr(contact, name, None) for name in PROFILE_FIELDS}
    data["email_domain"] = contact.email.rsplit("@", 1)[1]
    for name in settings.custom_fields:
        data[name] = (contact.custom or {}).get(name)
    return data


def condition_variables(
    contact: ContactLike,
    settings: Settings,
    now: datetime,
    event: dict[str, Any] | None = None,
    *,
    fields: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What a condition sees: profile, scores as of `now`, stage, the event, the lists."""
    return {
        **settings.lists,
        "contact": fields if fields is not None else profile(contact, settings),
        "fit": contact.fit,
        "engagement": current_engagement(contact, settings, now),
        "stage": contact.stage,
        "days_in_stage": (now - contact.stage_since).days,
        "event": event,
    }


def current_engagement(contact: ContactLike, settings: Settings, now: datetime) -> float:
    return decayed(contact.engagement, contact.engagement_at, now, settings.scoring.engagement)[0]
