"""Contact profiles: the normalized email, the fields conditions and templates see."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping
from datetime import date, datetime
from functools import cache
from operator import itemgetter
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from email_validator import EmailNotValidError, validate_email

from nurture.config import PROFILE_FIELDS, CustomField, FieldType, Settings
from nurture.core.scoring import decayed
from nurture.errors import InvalidValue

#: The longest address: RFC 5321's 254 octets for a path, as email-validator counts it.
MAX_EMAIL = 254
#: The longest text of each profile field: the width of its column in models.py.
MAX_LENGTH = {
    "first_name": 200,
    "last_name": 200,
    "company": 200,
    "account": 255,
    "sector": 100,
    "role": 200,
    "seniority": 50,
    "country": 2,
    "timezone": 64,
    "language": 16,
    "source": 100,
    "owner": MAX_EMAIL,
}
#: A company's size, in people: a whole number that fits the column (and reality).
COMPANY_SIZE = (1, 10_000_000)
#: The longest text a custom field may hold (custom fields live in a JSON column).
MAX_CUSTOM_TEXT = 1000
#: Text nobody can store: PostgreSQL refuses NUL in text, so it is refused at the door.
NO_NUL = "^[^\\x00]*$"
COUNTRY = "^[A-Za-z]{2}$"
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


def shown(value: object, limit: int = 60) -> str:
    """`value` as an error message quotes it: repr, cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 5] + "…" + text[-4:]


def normalize_email(email: str) -> str:
    """The one stored form of an address; ValueError (naming why) if it is not one.

    Checked by email-validator (syntax only, no DNS): internationalized addresses (RFC 6531,
    a non-ASCII local part or domain) and every dot-atom character (`o'hara@...`) are
    accepted; quoted local parts, domain literals, display names, spaces, a missing or dotless
    domain, a local part over 64 characters, an address over 254, and special-use domains
    (.local, .localhost, .invalid, .onion, .arpa; .test is allowed for test setups) are not.
    The stored form is trimmed, Unicode NFC, the domain in
    Unicode (an `xn--` domain is decoded) and everything lower-cased, local part included:
    nurture has always treated `Ana@` and `ana@` as one person, and every lookup goes through
    this same function, so storage and lookups agree.
    """
    if not isinstance(email, str):
        raise ValueError(f"{shown(email)} is not a valid email address: expected text")
    value = email.strip().lower()
    if len(value) > MAX_EMAIL:
        raise ValueError(
            f"{shown(email)} is not a valid email address: over {MAX_EMAIL} characters"
        )
    try:
        found = validate_email(
            value, check_deliverability=False, test_environment=True, strict=True
        )
    except EmailNotValidError as exc:
        raise ValueError(f"{shown(email)} is not a valid email address: {exc}") from None
    return found.normalized.lower()


def _text(name: str, value: Any, limit: int) -> str:
    """`value` as a field's text, trimmed; ValueError for another type, NUL or over `limit`
    characters (counted before trimming, as the API's schema counts them)."""
    if not isinstance(value, str):
        raise InvalidValue(name, f"expected text, not {type(value).__name__}")
    if len(value) > limit:
        raise InvalidValue(name, f"over {limit} characters")
    if "\x00" in value:
        raise InvalidValue(name, "contains a NUL character")
    return value.strip()


def _company_size(value: Any) -> int:
    """A whole number of people, as an int or (from a CSV or a form) digits."""
    low, high = COMPANY_SIZE
    if isinstance(value, str) and re.fullmatch(r"\s*\d{1,12}\s*", value):
        value = int(value)
    elif isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON's 300.0 is the integer 300; 300.7 is refused below
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidValue("company_size", f"{shown(value)} is not a whole number")
    if not low <= value <= high:
        raise InvalidValue("company_size", f"{value} is not between {low:,} and {high:,}")
    return value


#: Text a boolean custom field reads as true or false (CSV, forms, the command line).
TRUE_WORDS = frozenset({"true", "yes", "y", "1", "oui", "vrai"})
FALSE_WORDS = frozenset({"false", "no", "n", "0", "non", "faux"})


def custom_value(name: str, spec: CustomField, value: Any) -> str | int | float | bool:
    """A custom field's value as its declared type, from JSON or from text (a CSV cell,
    a form, `field=value`); ValueError naming the field and what it expects.

    integer: a whole number (`12`, 12.0); number: any finite number (`12.5`, `12,5`);
    boolean: true/false (yes/no, oui/non, 1/0); date: `YYYY-MM-DD`, stored as that text, so
    conditions compare it with `'2026-07-01'`; choice: one of its values (any case);
    string: text of at most MAX_CUSTOM_TEXT characters."""
    kind = spec.type
    if kind is FieldType.STRING:
        return _text(name, value, MAX_CUSTOM_TEXT)
    if isinstance(value, str):
        text = _text(name, value, MAX_CUSTOM_TEXT)
        if kind is FieldType.INTEGER and re.fullmatch(r"[+-]?\d{1,15}", text):
            return int(text)
        if kind is FieldType.NUMBER and re.fullmatch(r"[+-]?(\d+([.,]\d*)?|[.,]\d+)", text):
            return _finite(name, float(text.replace(",", ".")))
        if kind is FieldType.BOOLEAN and text.lower() in TRUE_WORDS | FALSE_WORDS:
            return text.lower() in TRUE_WORDS
        if kind is FieldType.DATE and re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            try:
                return date.fromisoformat(text).isoformat()
            except ValueError:
                raise InvalidValue(name, f"{shown(value)} is not a date that exists") from None
        if kind is FieldType.CHOICE:
            by_case = {v.lower(): v for v in spec.values or ()}
            if text.lower() in by_case:
                return by_case[text.lower()]
    elif not isinstance(value, bool) and isinstance(value, (int, float)):
        if kind is FieldType.INTEGER and (isinstance(value, int) or value.is_integer()):
            return int(value)
        if kind is FieldType.NUMBER:
            return _finite(name, value)
    elif isinstance(value, bool) and kind is FieldType.BOOLEAN:
        return value
    raise InvalidValue(name, f"{shown(value)} is not {expected(spec)}")


def expected(spec: CustomField) -> str:
    """What a value of `spec` is, in words (error messages, the API's description)."""
    if spec.type is FieldType.CHOICE:
        return f"one of {', '.join(spec.values or ())}"
    return {
        FieldType.INTEGER: "a whole number",
        FieldType.NUMBER: "a number",
        FieldType.BOOLEAN: "true or false",
        FieldType.DATE: "a date written YYYY-MM-DD",
    }.get(spec.type, "text")


def _finite(name: str, value: float) -> float:
    if not math.isfinite(value):
        raise InvalidValue(name, f"{value} is not a finite number")
    return value


def stored_custom(spec: CustomField, value: Any) -> Any:
    """A stored custom value as its declared type now (values kept before the field was
    typed were text): None when it cannot be one, so a condition on it does not hold."""
    if value is None or spec.type is FieldType.STRING:
        return value
    try:
        return custom_value("", spec, value)
    except ValueError:
        return None


def clean_profile(
    fields: dict[str, Any], custom_fields: Mapping[str, CustomField]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(profile columns, custom fields) from loose input; ValueError names the bad field.

    Text fields take text only (a number is not a name), at most their column's width and
    without NUL; `company_size` an int or digits within COMPANY_SIZE (not a bool, not 300.7).
    A None or empty value leaves the field as it is."""
    profile: dict[str, Any] = {}
    custom: dict[str, Any] = {}
    for name, value in fields.items():
        if value is None or value == "":
            continue
        if name == "company_size":
            profile[name] = _company_size(value)
        elif name in EDITABLE:
            profile[name] = _text(name, value, MAX_LENGTH[name])
        elif name in custom_fields:
            custom[name] = custom_value(name, custom_fields[name], value)
        else:
            known = ", ".join([*EDITABLE, *custom_fields])
            raise InvalidValue(shown(name)[1:-1], f"unknown field; known fields: {known}")
    if "timezone" in profile:
        zone_name(profile["timezone"])
    if "country" in profile:
        if not re.fullmatch(COUNTRY, profile["country"]):
            raise InvalidValue(
                "country", f"{shown(profile['country'])} is not a two-letter ISO code"
            )
        profile["country"] = profile["country"].upper()
    if "owner" in profile:
        try:
            profile["owner"] = normalize_email(profile["owner"])
        except ValueError:
            raise InvalidValue("owner", f"{profile['owner']!r} is not an email address") from None
    if "seniority" in profile:
        profile["seniority"] = profile["seniority"].lower().replace("-", "_").replace(" ", "_")
    return profile, custom


@cache
def zone_names() -> frozenset[str]:
    """The IANA time zone names this machine knows (the API's schema lists them)."""
    return frozenset(available_timezones())


def zone_name(name: str) -> ZoneInfo:
    """The zone of an IANA name; ValueError unless it is one of zone_names() exactly."""
    if name not in zone_names():
        raise InvalidValue("timezone", f"{shown(name)} is not an IANA time zone")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidValue("timezone", f"{shown(name)} is not an IANA time zone") from None


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
    return _zone(contact.timezone or settings.timezone)


@cache
def _zone(name: str) -> ZoneInfo:
    """ZoneInfo keeps only its last 8 zones strongly: with more in use (people of many
    countries) each call would build one again from its file (~70 µs, not ~1)."""
    return ZoneInfo(name)


def profile(contact: ContactLike, settings: Settings) -> dict[str, Any]:
    """Every profile field (None when unknown), custom fields included."""
    columns = getattr(contact, "_fields", None)  # a Row: its values by position
    if columns is not None:
        names, pick = _pickers.get(columns) or _picker(columns)
        data: dict[str, Any] = dict.fromkeys(PROFILE_FIELDS)
        data.update(zip(names, pick(contact), strict=True))
    else:
        data = {name: getattr(contact, name, None) for name in PROFILE_FIELDS}
    data["email_domain"] = contact.email.rsplit("@", 1)[1]
    for name, spec in settings.custom_fields.items():
        data[name] = stored_custom(spec, (contact.custom or {}).get(name))
    return data


def _picker(columns: tuple[str, ...]) -> tuple[tuple[str, ...], Callable[[Any], tuple[Any, ...]]]:
    """The profile fields a row of these columns has, and a getter of their values."""
    names = tuple(name for name in PROFILE_FIELDS if name in columns)
    positions = [columns.index(name) for name in names]
    pick: Callable[[Any], tuple[Any, ...]]
    if len(positions) > 1:
        pick = itemgetter(*positions)
    else:  # itemgetter of one position gives the value, not a tuple; of none, nothing
        pick = lambda row: tuple(row[i] for i in positions)  # noqa: E731
    if len(_pickers) > 64:
        _pickers.clear()
    _pickers[columns] = (names, pick)
    return names, pick


#: Row columns -> (the profile fields among them, their getter): a few shapes of row.
_pickers: dict[tuple[str, ...], tuple[tuple[str, ...], Callable[[Any], tuple[Any, ...]]]] = {}


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


class LazyVariables(Mapping[str, Any]):
    """`condition_variables` built on first use: a step without a condition, or a track
    without one, never pays for the scores' decay and the lists. `contact` (the profile,
    which every email renders with) is at hand without building the rest."""

    __slots__ = ("_built", "_contact", "_fields", "_now", "_settings")

    def __init__(
        self, contact: ContactLike, settings: Settings, now: datetime, fields: dict[str, Any]
    ) -> None:
        self._contact = contact
        self._settings = settings
        self._now = now
        self._fields = fields
        self._built: dict[str, Any] | None = None

    def _all(self) -> dict[str, Any]:
        if self._built is None:
            self._built = condition_variables(
                self._contact, self._settings, self._now, fields=self._fields
            )
        return self._built

    def __getitem__(self, key: str) -> Any:
        return self._fields if key == "contact" else self._all()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())
