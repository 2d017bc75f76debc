"""Project settings (`nurture.yaml`): sender, stages, scoring, caps; typed and validated."""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection
from datetime import time, timedelta
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from nurture import expressions
from nurture.core.pacing import WEEKDAYS, Policy
from nurture.durations import format_duration, parse_duration
from nurture.phases import Phase, phase_rank
from nurture.vocabulary import BuiltinEvent, BuiltinStage
from nurture.yamlfile import Document, parse_yaml, validate

#: Event kinds the engine itself records (nurture/vocabulary.py `BuiltinEvent`); projects
#: declare the others under `events:`.
BUILTIN_EVENTS: frozenset[str] = frozenset(BuiltinEvent)
#: Events after which no marketing email may go to the person, ever.
SUPPRESSING_EVENTS: frozenset[str] = frozenset(
    {BuiltinEvent.UNSUBSCRIBED, BuiltinEvent.HARD_BOUNCED, BuiltinEvent.COMPLAINED}
)
#: Profile fields every contact has; `custom_fields` adds more.
PROFILE_FIELDS = (
    "email",
    "email_domain",
    "first_name",
    "last_name",
    "company",
    "account",
    "sector",
    "company_size",
    "role",
    "seniority",
    "country",
    "timezone",
    "language",
    "source",
    "owner",
)
#: Profile fields a form, an import or the API may set (the address is the key, not a field).
EDITABLE_FIELDS = tuple(name for name in PROFILE_FIELDS if name not in ("email", "email_domain"))
FIRST_STAGE = BuiltinStage.CONTACT
DISQUALIFIED = BuiltinStage.DISQUALIFIED


def _duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return parse_duration(value)
    raise ValueError("expected a duration such as 3d, 20h or 90m")


DURATION_PATTERN = r"^\s*(?:\d+\s*[wdhms]\s*)+$"
Duration = Annotated[
    timedelta,
    BeforeValidator(_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": DURATION_PATTERN},
                {"type": "integer", "minimum": 0},
            ],
            "description": "A duration: 3d, 20h, 1d12h, 90m, 2w; a bare number counts days.",
        }
    ),
]


def _zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{name!r} is not an IANA time zone (e.g. Europe/Paris, America/New_York)"
        ) from None
    return name


TimeZoneName = Annotated[str, AfterValidator(_zone)]


def _condition(source: str, info: ValidationInfo) -> str:
    context = info.context or {}
    names = context.get("names", expressions.BASE_NAMES)
    expressions.check_condition(source, names)
    fields = context.get("contact_fields")
    if fields is not None:
        check_contact_fields(source, fields)
    return source


def check_contact_fields(source: str, known: Collection[str]) -> None:
    """ExpressionError when `source` reads a contact field nobody has (`contact.sise`):
    such a condition would never hold, in silence. Says which field is closest."""
    for name in sorted(expressions.contact_fields_used(source) - set(known)):
        close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
        hint = f"; did you mean contact.{close[0]}?" if close else ""
        raise expressions.ExpressionError(
            f"condition {source!r} reads contact.{name}, which no contact has{hint} "
            f"(profile fields: {', '.join(PROFILE_FIELDS)}; declare others under "
            "custom_fields: in nurture.yaml)"
        )


Condition = Annotated[str, AfterValidator(_condition)]


def _event_kind(kind: str, info: ValidationInfo) -> str:
    known = (info.context or {}).get("event_kinds")
    if known is not None and kind not in known:
        raise ValueError(f"unknown event {kind!r}; declare it under events: in nurture.yaml")
    return kind


def _stage_name(name: str, info: ValidationInfo) -> str:
    known = (info.context or {}).get("stages")
    if known is not None and name not in known:
        raise ValueError(f"unknown stage {name!r}; stages are {', '.join(known)}")
    return name


EventKind = Annotated[str, AfterValidator(_event_kind)]
StageName = Annotated[str, AfterValidator(_stage_name)]
_NAME = r"^[a-z][a-z0-9_]*$"
_QUIET = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Sender(Strict):
    from_name: str = Field(min_length=1)
    from_address: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    reply_to: str | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    postal_address: str = Field(
        min_length=1, description="Printed in every footer, as anti-spam laws require."
    )


class Stage(Strict):
    name: str = Field(pattern=_NAME)
    label: str | None = None
    phase: Phase | None = Field(
        default=None, description="Content phase this stage receives; none: no nurture."
    )
    enter_on: list[EventKind] = Field(
        default_factory=list, description="Event kinds that move a contact here at once."
    )
    enter_when: Condition | None = Field(
        default=None, description="Condition on scores and profile that moves a contact here."
    )

    @property
    def title(self) -> str:
        if self.label:
            return self.label
        return self.name.upper() if len(self.name) <= 3 else self.name.title()


class Disqualify(Strict):
    when: Condition | None = None
    events: list[EventKind] = Field(default_factory=list)


class EngagementRule(Strict):
    event: EventKind
    points: float
    label: str | None = None
    when: Condition | None = None
    once_per: str | None = Field(
        default=None,
        description="Event property naming the object (message_id, url): points once per object.",
    )
    max_per_day: int | None = Field(default=None, ge=1)

    @property
    def name(self) -> str:
        return self.label or (f"{self.event} when {self.when}" if self.when else self.event)


class FitRule(Strict):
    label: str = Field(min_length=1)
    when: Condition
    points: float


class StepDecay(Strict):
    """Engagement loses `percent` at each period boundary (multiples of `every` since
    2001-01-01 00:00 UTC, a Monday: `every: 7d` falls on Mondays, `1d` at midnight UTC)."""

    percent: float = Field(gt=0, le=100)
    every: Duration

    @field_validator("every")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("the period must be longer than zero")
        return value


class Engagement(Strict):
    half_life: Duration | None = Field(
        default=None, description="Engagement halves over this period (none: no decay)."
    )
    decay: StepDecay | None = Field(
        default=None, description="Or: lose a percentage at each period (HubSpot's way)."
    )
    rules: list[EngagementRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_decay(self) -> Engagement:
        if self.half_life is not None and self.decay is not None:
            raise ValueError("choose half_life or decay, not both")
        if self.half_life is not None and self.half_life <= timedelta(0):
            raise ValueError("half_life must be longer than zero")
        return self


class Scoring(Strict):
    engagement: Engagement = Engagement()
    fit: list[FitRule] = Field(default_factory=list)


_QUIET_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "pattern": r"^\s*\d{1,2}:\d{2}\s*-\s*\d{1,2}:\d{2}\s*$"},
        {"type": "null"},
    ]
}
_WEEKDAYS_SCHEMA: dict[str, Any] = {"items": {"enum": list(WEEKDAYS)}, "minItems": 1}


class _CapFields(Strict):
    """Validators shared by the project's caps and their per-workflow or per-contact overrides."""

    @field_validator("quiet_hours", check_fields=False)
    @classmethod
    def _quiet(cls, value: str | None) -> str | None:
        if value is not None:
            parse_quiet_hours(value)
        return value

    @field_validator("weekdays", check_fields=False)
    @classmethod
    def _weekdays(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return value
        bad = [day for day in value if day not in WEEKDAYS]
        if bad:
            raise ValueError(f"unknown weekday {', '.join(bad)}; use {', '.join(WEEKDAYS)}")
        if not value:
            raise ValueError("at least one weekday must allow sending")
        return value


class CapsOverride(_CapFields):
    """Caps a workflow or a contact sets for itself; what it leaves out comes from the project."""

    per_day: int | None = Field(default=None, ge=1)
    per_week: int | None = Field(default=None, ge=1)
    per_month: int | None = Field(default=None, ge=1)
    min_gap: Duration | None = None
    quiet_hours: str | None = Field(default=None, json_schema_extra=_QUIET_SCHEMA)
    weekdays: list[str] | None = Field(default=None, json_schema_extra=_WEEKDAYS_SCHEMA)
    sunset_after: int | None = Field(default=None, ge=1)


class Caps(_CapFields):
    per_day: int = Field(default=1, ge=1, description="Emails per local calendar day.")
    per_week: int = Field(default=3, ge=1, description="Emails in any rolling 7 days.")
    per_month: int | None = Field(default=None, ge=1, description="Emails in any 30 days.")
    min_gap: Duration = Field(default=timedelta(hours=20))
    quiet_hours: str | None = Field(
        default="20:00-08:00",
        description="Local window with no sends; may wrap midnight.",
        json_schema_extra=_QUIET_SCHEMA,
    )
    weekdays: list[str] = Field(
        default_factory=lambda: list(WEEKDAYS[:5]), json_schema_extra=_WEEKDAYS_SCHEMA
    )
    account_per_day: int | None = Field(
        default=None, ge=1, description="Emails a day across all people of one account."
    )
    sunset_after: int | None = Field(
        default=None, ge=1, description="Stop after this many emails in a row with no engagement."
    )
    rate_per_minute: int | None = Field(default=None, ge=1, description="Sender-wide rate.")
    rate_per_hour: int | None = Field(default=None, ge=1, description="Sender-wide rate.")

    @model_validator(mode="after")
    def _order(self) -> Caps:
        if self.per_day > self.per_week:
            raise ValueError(
                f"per_day ({self.per_day}) is above per_week ({self.per_week}); "
                "a day cannot allow more than a week"
            )
        if self.per_month is not None and self.per_week > self.per_month:
            raise ValueError(
                f"per_week ({self.per_week}) is above per_month ({self.per_month}); "
                "a week cannot allow more than 30 days"
            )
        return self

    def merged(self, *overrides: CapsOverride | None) -> Caps:
        """These caps with each override's fields laid over them in turn (later ones win)."""
        data = self.model_dump()
        for override in overrides:
            if override is not None:
                data.update(override.model_dump(exclude_unset=True))
        return Caps.model_validate(data)

    def policy(self) -> Policy:
        start, end = parse_quiet_hours(self.quiet_hours) if self.quiet_hours else (None, None)
        return Policy(
            per_day=self.per_day,
            per_week=self.per_week,
            min_gap=self.min_gap,
            quiet_start=start,
            quiet_end=end,
            weekdays=frozenset(WEEKDAYS.index(day) for day in self.weekdays),
            per_month=self.per_month,
            account_per_day=self.account_per_day,
            sunset_after=self.sunset_after,
            rate_per_minute=self.rate_per_minute,
            rate_per_hour=self.rate_per_hour,
        )


class AccountPause(Strict):
    """When one person of an account books a meeting or reaches a stage, hold the others."""

    events: list[EventKind] = Field(default_factory=list)
    stages: list[StageName] = Field(default_factory=list)
    duration: Duration = Field(default=timedelta(days=30))


def parse_quiet_hours(text: str) -> tuple[time, time]:
    match = _QUIET.match(text)
    if not match:
        raise ValueError(f"quiet hours {text!r} must look like 20:00-08:00")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59:
        raise ValueError(f"quiet hours {text!r} name a time that does not exist")
    if (h1, m1) == (h2, m2):
        raise ValueError(f"quiet hours {text!r} start and end at the same time")
    return time(h1, m1), time(h2, m2)


class FieldType(StrEnum):
    """What a custom field holds; its values are checked and stored as this type."""

    STRING = "string"
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    DATE = "date"
    CHOICE = "choice"


class CustomField(Strict):
    """A declared custom field: `headcount: integer`, or `{type: choice, values: [...]}`."""

    type: FieldType = FieldType.STRING
    values: tuple[str, ...] | None = Field(
        default=None, min_length=1, description="The values a choice field may take."
    )

    @model_validator(mode="after")
    def _values(self) -> CustomField:
        if self.type is FieldType.CHOICE and not self.values:
            raise ValueError("a choice field lists its values: {type: choice, values: [a, b]}")
        if self.type is not FieldType.CHOICE and self.values is not None:
            raise ValueError(f"values: only a choice field has values (this is {self.type})")
        return self


def _custom_fields(value: Any) -> Any:
    """The old list form (`[plan, region]`) declares text fields; `name: type` is short for
    `name: {type: type}`."""
    if isinstance(value, list):
        return {name: {"type": FieldType.STRING} for name in value}
    if isinstance(value, dict):
        return {
            name: {"type": spec} if isinstance(spec, str) else spec for name, spec in value.items()
        }
    return value


_TYPE_NAMES = [t.value for t in FieldType]
CustomFields = Annotated[
    dict[str, CustomField],
    BeforeValidator(_custom_fields),
    WithJsonSchema(
        {
            "description": "Custom contact fields and their types: `headcount: integer`, "
            "`plan: {type: choice, values: [free, pro]}`. The older list of names "
            "declares text fields.",
            "anyOf": [
                {
                    "type": "object",
                    "propertyNames": {"pattern": _NAME},
                    "additionalProperties": {
                        "anyOf": [
                            {"enum": _TYPE_NAMES},
                            {
                                "type": "object",
                                "properties": {
                                    "type": {"enum": _TYPE_NAMES},
                                    "values": {
                                        "type": "array",
                                        "items": {"type": "string"},
                                        "minItems": 1,
                                    },
                                },
                                "additionalProperties": False,
                            },
                        ]
                    },
                },
                {"type": "array", "items": {"type": "string", "pattern": _NAME}},
            ],
        }
    ),
]


class Dkim(Strict):
    domain: str = Field(min_length=1)
    selector: str = Field(min_length=1)
    private_key_file: str = Field(description="PEM private key, relative to the project folder.")


class Delivery(Strict):
    """How emails leave: the outbox folder by default, or SMTP."""

    smtp_url: str | None = Field(
        default=None,
        pattern=r"^smtps?://",
        description="smtp://user:pass@host:587 (STARTTLS) or smtps://...:465; "
        "NURTURE_SMTP_URL overrides it, so the password need not live in this file.",
    )
    pool: int = Field(default=2, ge=1, le=64, description="Persistent SMTP connections.")
    retries: int = Field(default=3, ge=0, le=10, description="Tries after a 4xx reply.")
    retry_backoff: Duration = Field(default=timedelta(seconds=2))
    lease: Duration = Field(
        default=timedelta(minutes=10),
        description="A message still sending after this is marked unknown, never re-sent.",
    )
    list_id: str | None = Field(
        default=None, description="List-Id header; default: from the sender."
    )
    dkim: Dkim | None = None
    soft_bounce_limit: int = Field(
        default=3, ge=1, description="Soft bounces (from provider webhooks) before suppression."
    )


class Webhooks(Strict):
    """Provider feedback endpoints; each is off until its secret is set."""

    sendgrid_public_key: str | None = Field(
        default=None, description="Signed Event Webhook verification key (base64 DER)."
    )
    mailgun_signing_key: str | None = None
    postmark_credentials: str | None = Field(
        default=None, description="user:password of the basic auth set on Postmark's webhook URL."
    )
    ses_topic_arn: str | None = Field(default=None, description="The SNS topic allowed to post.")


class Form(Strict):
    """An HTML form posting to `/f/<name>`: which fields it may set, and what it records."""

    fields: list[str] = Field(
        default_factory=lambda: ["first_name", "last_name", "company"],
        description="Profile or custom fields the form may set (email is always read).",
    )
    required: list[str] = Field(default_factory=list, description="Fields that may not be empty.")
    event: EventKind = Field(default="form_submitted", description="Recorded when it counts.")
    consent_text: str = Field(
        min_length=1, description="The consent sentence shown beside the form, kept as shown."
    )
    legal_basis: str = Field(default="consent")
    consent_field: str = Field(
        default="consent",
        pattern=r"^[A-Za-z0-9_-]+$",
        description="The checkbox beside consent_text: a POST without it ticked is refused "
        "(422) and nothing is kept.",
    )
    language: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z]{2}(-[A-Za-z0-9]+)*$",
        description="Language of the form's own pages (en, fr); English when not given.",
    )
    double_opt_in: bool = Field(
        default=False, description="Send a confirmation email; record the event on confirming."
    )
    confirm_subject: str = "Please confirm your subscription"
    thank_you: str = Field(pattern=r"^https?://", description="Where the browser goes next.")
    honeypot: str = Field(
        default="website", description="A hidden field people leave empty and bots fill."
    )

    @model_validator(mode="after")
    def _known_fields(self) -> Form:
        missing = set(self.required) - {"email", *self.fields}
        if missing:
            raise ValueError(f"required field {', '.join(sorted(missing))} is not in fields")
        return self


class Handoff(Strict):
    """What reaching the hand-off stage does: tell sales, and stop marketing's nurture."""

    stage: StageName = Field(default="sql")
    webhook_url: str | None = Field(default=None, pattern=r"^https?://")
    webhook_secret: str | None = Field(
        default=None,
        description="HMAC-SHA256 key for the X-Nurture-Signature header; "
        "NURTURE_HANDOFF_SECRET overrides it. Required with webhook_url.",
    )
    notify_owner: bool = Field(
        default=True, description="Email the contact's owner (or `notify` when none)."
    )
    notify: str | None = Field(
        default=None, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", description="Sales inbox."
    )
    end_nurture: bool = Field(
        default=False,
        description="true: reaching the stage ends every nurture workflow (a goal); false "
        "(the default) keeps the stage's content going until sales accepts (sales_accepted "
        "as a workflow goal).",
    )
    stale_after: Duration | None = Field(
        default=timedelta(days=14),
        description="A hand-off sales has neither accepted nor rejected by then is recycled.",
    )
    recycle_to: StageName | None = Field(
        default=None,
        description="Stage a rejected or stale lead goes back to (default: the "
        "stage below the hand-off stage).",
    )
    retries: int = Field(default=8, ge=0, le=20, description="Webhook tries after the first.")
    retry_backoff: Duration = Field(
        default=timedelta(minutes=1), description="First wait; doubles after each failure."
    )


class Source(Strict):
    label: str | None = None
    cost: float = Field(default=0, ge=0, description="What the source cost, in `currency`.")


class Settings(Strict):
    sender: Sender
    base_url: str = Field(
        default="http://localhost:5000",
        pattern=r"^https?://[^\s/]+",
        description="Public address of this engine, used in links inside emails.",
    )
    timezone: TimeZoneName = Field(default="UTC", description="Zone for contacts who have none.")
    listen: str = Field(
        default="127.0.0.1:5000",
        pattern=r"^[^\s:]+:\d{1,5}$",
        description="host:port where `nurture run` serves the links in emails.",
    )
    database_url: str | None = None
    outbox_dir: str = "outbox"
    tick_seconds: float = Field(default=30, gt=0)
    batch_size: int = Field(default=500, ge=1)
    events: list[str] = Field(default_factory=list, description="Custom event kinds.")
    lists: dict[str, list[str]] = Field(
        default_factory=dict, description="Named lists usable in conditions."
    )
    custom_fields: CustomFields = Field(default_factory=dict)
    stages: list[Stage]
    disqualify: Disqualify = Disqualify()
    scoring: Scoring = Scoring()
    caps: Caps = Caps()
    account_pause: AccountPause = AccountPause()
    delivery: Delivery = Delivery()
    webhooks: Webhooks = Webhooks()
    forms: dict[str, Form] = Field(default_factory=dict, description="Lead-capture forms.")
    handoff: Handoff | None = Field(default=None, description="Hand-off to sales; none: off.")
    sources: dict[str, Source] = Field(
        default_factory=dict, description="Lead sources and what each cost."
    )
    currency: str = Field(default="EUR", pattern=r"^[A-Z]{3}$")

    @field_validator("events", "custom_fields")
    @classmethod
    def _names(cls, value: Collection[str]) -> Collection[str]:
        for name in value:
            if not re.match(_NAME, name):
                raise ValueError(f"{name!r} must be lower_snake_case")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        names = [stage.name for stage in self.stages]
        reserved = {FIRST_STAGE, DISQUALIFIED} & set(names)
        if reserved:
            raise ValueError(f"stage {', '.join(reserved)} is built in; do not declare it")
        if len(set(names)) != len(names):
            raise ValueError("stage names must be unique")
        clash = set(self.custom_fields) & set(PROFILE_FIELDS)
        if clash:
            raise ValueError(f"custom field {', '.join(sorted(clash))} is a built-in field")
        last_rank = -1
        for stage in self.stages:
            if stage.phase is not None:
                if phase_rank(stage.phase) < last_rank:
                    raise ValueError(
                        f"stage {stage.name} receives {stage.phase} content after a later "
                        "phase; phases must follow the funnel (discovery, evaluation, decision)"
                    )
                last_rank = phase_rank(stage.phase)
            if stage.name == "lead" and stage.phase not in (None, "discovery"):
                raise ValueError("stage lead may only receive discovery content")
        for name in self.forms:
            if not re.match(r"^[a-z0-9][a-z0-9_-]*$", name):
                raise ValueError(f"form name {name!r} must be lower-case letters, digits, - or _")
        for name, form in self.forms.items():
            unknown = set(form.fields) - set(EDITABLE_FIELDS) - set(self.custom_fields)
            if unknown:
                raise ValueError(f"forms.{name}: unknown field {', '.join(sorted(unknown))}")
        if self.handoff is not None:
            if self.handoff.stage not in names:
                raise ValueError(f"handoff.stage: unknown stage {self.handoff.stage!r}")
            if names.index(self.handoff.stage) == 0 and self.handoff.recycle_to is None:
                raise ValueError("handoff.recycle_to: say which stage a recycled lead goes to")
        return self

    @property
    def recycle_stage(self) -> str | None:
        """Where a rejected or stale hand-off goes: recycle_to, or the stage below."""
        if self.handoff is None:
            return None
        if self.handoff.recycle_to is not None:
            return self.handoff.recycle_to
        names = [s.name for s in self.stages]
        return names[names.index(self.handoff.stage) - 1]

    @property
    def event_kinds(self) -> frozenset[str]:
        return BUILTIN_EVENTS | set(self.events)

    @property
    def stage_names(self) -> list[str]:
        return [FIRST_STAGE, *(s.name for s in self.stages), DISQUALIFIED]

    def stage(self, name: str) -> Stage | None:
        return next((s for s in self.stages if s.name == name), None)

    def phase_of(self, stage_name: str) -> Phase | None:
        return self._phases.get(stage_name)

    @cached_property
    def _phases(self) -> dict[str, Phase | None]:
        """Stage name -> its phase (the dispatcher asks it several times per person)."""
        return {s.name: s.phase for s in reversed(self.stages)}

    @property
    def condition_names(self) -> frozenset[str]:
        return expressions.BASE_NAMES | set(self.lists)

    @property
    def contact_fields(self) -> frozenset[str]:
        """What `contact.` may read in a condition: the profile and the custom fields."""
        return frozenset(PROFILE_FIELDS) | set(self.custom_fields)


def condition_context(data: Any) -> dict[str, Any]:
    """Validation context: names a condition may use, read ahead from the raw document."""
    raw = data if isinstance(data, dict) else {}
    lists = raw.get("lists")
    events = raw.get("events")
    extra = set(lists) if isinstance(lists, dict) else set()
    kinds = {e for e in events if isinstance(e, str)} if isinstance(events, list) else set()
    custom = raw.get("custom_fields")
    declared = custom if isinstance(custom, (dict, list)) else ()
    stages = raw.get("stages")
    names = (
        [s.get("name") for s in stages if isinstance(s, dict)] if isinstance(stages, list) else []
    )
    return {
        "names": expressions.BASE_NAMES | extra,
        "event_kinds": BUILTIN_EVENTS | kinds,
        "stages": [FIRST_STAGE, *(n for n in names if isinstance(n, str)), DISQUALIFIED],
        "contact_fields": frozenset(PROFILE_FIELDS) | {n for n in declared if isinstance(n, str)},
    }


def load_settings(path: Path, display: str | None = None) -> Settings:
    doc: Document = parse_yaml(path.read_text(encoding="utf-8"), display or str(path))
    return validate(Settings, doc, condition_context(doc.data))
