"""The API's request bodies (pydantic models) and the OpenAPI description built from them."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cache
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    create_model,
)

from nurture.config import CustomField, FieldType
from nurture.contacts import (
    COMPANY_SIZE,
    COUNTRY,
    EDITABLE,
    MAX_CUSTOM_TEXT,
    MAX_EMAIL,
    MAX_LENGTH,
    NO_NUL,
    custom_value,
    zone_name,
    zone_names,
)
from nurture.core import eventtime

MAX_BATCH = 1000
MAX_BODY = 8 * 1024 * 1024
#: Event properties: at most this many keys (or items) per map (or list), lists and maps
#: nested at most this deep, text at most this long.
MAX_ITEMS = 100
MAX_DEPTH = 3
MAX_PROPERTY_TEXT = 2000
MAX_KEY = 100
#: Text with something in it once trimmed: a character str.strip() keeps (nor NUL).
_BLANK = "".join(f"\\u{c:04x}" for c in range(0x3001) if chr(c).isspace())
NOT_BLANK = f"^[^\\x00]*[^\\x00{_BLANK}][^\\x00]*$"


def text(max_length: int, min_length: int = 0, pattern: str = NO_NUL) -> Any:
    """The limits of a JSON string: at most `max_length` characters, without NUL."""
    return Field(min_length=min_length, max_length=max_length, pattern=pattern)


Email = Annotated[
    str,
    Field(
        min_length=3,
        max_length=MAX_EMAIL,
        description="An address; internationalized ones (RFC 6531) are accepted.",
        json_schema_extra={"format": "idn-email"},
    ),
]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def _not_too_old(value: datetime) -> datetime:
    """The bounds that need no clock (the API checks the future against its own)."""
    found = eventtime.problem(value, datetime.max.replace(tzinfo=UTC) - eventtime.CLOCK_SKEW)
    if found is not None:
        raise ValueError(found)
    return value


Key = Annotated[str, Field(min_length=1, max_length=MAX_KEY, pattern=NO_NUL)]
_Number = Annotated[float, Field(allow_inf_nan=False)]
Scalar = Annotated[str, text(MAX_PROPERTY_TEXT)] | StrictBool | int | _Number | None


def _nested(inner: Any) -> Any:
    return (
        Scalar
        | Annotated[list[inner], Field(max_length=MAX_ITEMS)]
        | Annotated[dict[Key, inner], Field(max_length=MAX_ITEMS)]
    )


PropertyValue: Any = Scalar
for _ in range(MAX_DEPTH):
    PropertyValue = _nested(PropertyValue)
Properties = Annotated[dict[Key, PropertyValue], Field(max_length=MAX_ITEMS)]


class EventIn(Body):
    """One thing a person did."""

    email: Email
    kind: str = Field(
        min_length=1, max_length=64, description="An event kind declared in nurture.yaml."
    )
    time: Annotated[AwareDatetime, AfterValidator(_not_too_old)] | None = Field(
        default=None,
        description="When it happened, with its UTC offset (default: now); from "
        "1970-01-01T00:00:00Z to now (5 minutes of clock skew allowed).",
    )
    properties: Properties = Field(
        default_factory=dict,
        description=f"url, asset, form, ...: text (at most {MAX_PROPERTY_TEXT} characters, "
        f"no NUL), numbers, booleans, null, and lists or maps of them nested {MAX_DEPTH} deep "
        f"at most, {MAX_ITEMS} items each.",
    )
    id: Annotated[str, text(200, min_length=1)] | None = Field(
        default=None, description="Your id for the event: sending it again changes nothing."
    )


class EventBatch(Body):
    events: list[EventIn] = Field(min_length=1, max_length=MAX_BATCH)


def _whole(value: Any) -> Any:
    """JSON's 1073.0 is the integer 1073 (JSON Schema says so too); 300.7 stays refused."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _profile_field(name: str) -> Any:
    if name == "company_size":
        size = Annotated[int, Field(ge=COMPANY_SIZE[0], le=COMPANY_SIZE[1])]
        return Annotated[size, BeforeValidator(_whole)]
    if name == "country":
        return Annotated[str, text(MAX_LENGTH[name], pattern=COUNTRY)]
    if name == "owner":
        return Email
    if name == "timezone":
        return Annotated[str, text(MAX_LENGTH[name]), AfterValidator(_zone)]
    return Annotated[str, text(MAX_LENGTH[name])]


def _zone(name: str) -> str:
    zone_name(name)  # the description lists zone_names() as the values `timezone` may take
    return name


#: Declared custom fields as the API receives them: (name, declaration) pairs.
CustomSpecs = tuple[tuple[str, CustomField], ...]


def _date(value: str) -> str:
    """2026-02-30 has the pattern of a date and is none."""
    custom_value("date", CustomField(type=FieldType.DATE), value)
    return value


def _custom_field(spec: CustomField) -> Any:
    """The JSON type of a declared custom field (nurture/contacts.py `custom_value` says
    the same of text from a CSV or the command line)."""
    if spec.type is FieldType.INTEGER:
        return Annotated[int, BeforeValidator(_whole)]
    if spec.type is FieldType.NUMBER:
        return _Number | int
    if spec.type is FieldType.BOOLEAN:
        return StrictBool
    if spec.type is FieldType.DATE:
        return Annotated[
            str,
            Field(pattern=r"^\d{4}-\d{2}-\d{2}$", json_schema_extra={"format": "date"}),
            AfterValidator(_date),
        ]
    if spec.type is FieldType.CHOICE:
        return Literal[tuple(spec.values or ())]
    return Annotated[str, text(MAX_CUSTOM_TEXT)]


def custom_specs(fields: Mapping[str, CustomField]) -> CustomSpecs:
    return tuple(fields.items())


@cache
def fields_model(custom_fields: CustomSpecs = ()) -> type[Body]:
    """The profile fields (and the project's custom fields) a contact may be given: each
    with its type and limit; null or absent leaves a field as it is."""
    definitions: dict[str, Any] = {name: (_profile_field(name) | None, None) for name in EDITABLE}
    definitions.update({name: (_custom_field(spec) | None, None) for name, spec in custom_fields})
    return create_model(
        "Fields", __base__=Body, __doc__="Profile fields and custom fields to set.", **definitions
    )


class ContactIn(Body):
    email: Email
    fields: Body = Field(
        default_factory=lambda: fields_model()(),
        description="Profile fields and custom fields to set.",
    )
    stage: Annotated[str, text(50)] | None = Field(
        default=None, description="Set the stage by hand."
    )
    consent: Annotated[str, text(200)] | None = Field(
        default=None, description="Where and how the person gave consent."
    )


@cache
def contact_model(custom_fields: CustomSpecs = ()) -> type[ContactIn]:
    """ContactIn whose `fields` holds this project's custom fields too."""
    model = fields_model(custom_fields)
    return create_model(
        "ContactIn",
        __base__=ContactIn,
        fields=(
            model,
            Field(default_factory=model, description="Profile fields and custom fields to set."),
        ),
    )


class SalesIn(Body):
    outcome: Literal["accepted", "rejected"]
    reason: Annotated[str, text(1000)] = Field(default="", description="Required for a rejection.")


class StageIn(Body):
    stage: Annotated[str, text(50, min_length=1)]
    reason: Annotated[str, text(1000, min_length=1, pattern=NOT_BLANK)]


_ERROR = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "error": {"type": "string"},
        "message": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "index": {"type": "integer"},
                    "field": {"type": "string"},
                    "message": {"type": "string"},
                },
            },
        },
    },
}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _errors(*codes: int) -> dict[str, Any]:
    words = {
        400: "Not a JSON body",
        401: "No valid API key",
        404: "Not found",
        413: "Body too large",
        422: "A field is wrong; `errors` names each one",
    }
    return {str(c): {"description": words[c], **_json(_ref("Error"))} for c in codes}


_EMAIL_PARAM = {
    "name": "email",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 3, "maxLength": 320, "pattern": NO_NUL},
}
_OBJECT = {"type": "object"}


def _keys_as_names(schema: Any) -> Any:
    """pydantic says a constrained key type as `patternProperties`, which lets keys that miss
    the pattern through; say it as `propertyNames` + `additionalProperties`, which does not."""
    if isinstance(schema, list):
        return [_keys_as_names(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _keys_as_names(value) for key, value in schema.items()}
    patterns = out.pop("patternProperties", None)
    if patterns:
        ((pattern, values),) = patterns.items()
        out["additionalProperties"] = values
        out["propertyNames"] = {
            "type": "string",
            **out.get("propertyNames", {}),
            "pattern": pattern,
        }
    return out


#: People per page of a segment (GET /api/v1/segments/<name>/contacts), and the most.
SEGMENT_PAGE, MAX_SEGMENT_PAGE = 50, 500


def openapi(
    title: str,
    version: str,
    kinds: list[str] | None = None,
    stages: list[str] | None = None,
    custom_fields: Mapping[str, CustomField] | None = None,
) -> dict[str, Any]:
    """The OpenAPI 3.1 description served at /api/v1/openapi.json, with the project's own
    event kinds, stages and custom fields as the values `kind`, `stage` and `fields` may take.
    Every string has a length limit and a type; what JSON Schema cannot say (an event's time
    not in the future) is in the field's description."""
    models: dict[str, type[BaseModel]] = {
        "EventIn": EventIn,
        "EventBatch": EventBatch,
        "ContactIn": contact_model(custom_specs(custom_fields or {})),
        "SalesIn": SalesIn,
        "StageIn": StageIn,
    }
    schemas: dict[str, Any] = {"Error": _ERROR}
    for name, model in models.items():
        schema = _keys_as_names(
            model.model_json_schema(ref_template="#/components/schemas/{model}")
        )
        schemas.update(schema.pop("$defs", {}))
        schemas[name] = schema
    zone = schemas["Fields"]["properties"]["timezone"]["anyOf"][0]
    zone.pop("pattern")
    zone["enum"] = sorted(zone_names())
    if kinds is not None:
        schemas["EventIn"]["properties"]["kind"]["enum"] = sorted(kinds)
    if stages is not None:
        schemas["StageIn"]["properties"]["stage"]["enum"] = list(stages)
        schemas["ContactIn"]["properties"]["stage"] = {
            "anyOf": [{"type": "string", "enum": list(stages)}, {"type": "null"}],
            "default": None,
            "description": "Set the stage by hand.",
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "components": {
            "schemas": schemas,
            "securitySchemes": {"key": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"key": []}],
        "paths": {
            "/api/v1/events": {
                "post": {
                    "summary": "Record one event, or a batch of up to 1,000 (all or none)",
                    "requestBody": {
                        "required": True,
                        **_json({"oneOf": [_ref("EventIn"), _ref("EventBatch")]}),
                    },
                    "responses": {
                        "200": {"description": "Recorded and committed", **_json(_OBJECT)},
                        **_errors(400, 401, 413, 422),
                    },
                }
            },
            "/api/v1/contacts": {
                "post": {
                    "summary": "Create or update a contact's profile",
                    "requestBody": {"required": True, **_json(_ref("ContactIn"))},
                    "responses": {
                        "200": {"description": "Updated", **_json(_OBJECT)},
                        "201": {"description": "Created", **_json(_OBJECT)},
                        **_errors(400, 401, 413, 422),
                    },
                }
            },
            "/api/v1/contacts/{email}": {
                "get": {
                    "summary": "A contact: profile, stage, scores, recent history",
                    "parameters": [_EMAIL_PARAM],
                    "responses": {
                        "200": {"description": "The contact", **_json(_OBJECT)},
                        **_errors(401, 404),
                    },
                }
            },
            "/api/v1/contacts/{email}/sales": {
                "post": {
                    "summary": "Sales accepts or rejects a handed-off lead",
                    "parameters": [_EMAIL_PARAM],
                    "requestBody": {"required": True, **_json(_ref("SalesIn"))},
                    "responses": {
                        "200": {"description": "Recorded", **_json(_OBJECT)},
                        **_errors(400, 401, 404, 413, 422),
                    },
                }
            },
            "/api/v1/contacts/{email}/stage": {
                "post": {
                    "summary": "Move a contact to a stage by hand, with the reason",
                    "parameters": [_EMAIL_PARAM],
                    "requestBody": {"required": True, **_json(_ref("StageIn"))},
                    "responses": {
                        "200": {"description": "Moved", **_json(_OBJECT)},
                        **_errors(400, 401, 404, 413, 422),
                    },
                }
            },
            "/api/v1/segments/{segment}/contacts": {
                "get": {
                    "summary": "A page of the people in a segment (segments/<name>.yaml), by id",
                    "parameters": [
                        {
                            "name": "segment",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "minLength": 1, "maxLength": 200},
                        },
                        {
                            "name": "page",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "default": 1},
                        },
                        {
                            "name": "per_page",
                            "in": "query",
                            "schema": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": MAX_SEGMENT_PAGE,
                                "default": SEGMENT_PAGE,
                            },
                        },
                    ],
                    "responses": {
                        "200": {"description": "The page and the total", **_json(_OBJECT)},
                        **_errors(401, 404, 422),
                    },
                }
            },
            "/api/v1/accounts/{account}": {
                "get": {
                    "summary": "An account: its people, rolled-up fit and engagement",
                    "parameters": [
                        {
                            "name": "account",
                            "in": "path",
                            "required": True,
                            "schema": {
                                "type": "string",
                                "minLength": 1,
                                "maxLength": 255,
                                "pattern": NO_NUL,
                            },
                        }
                    ],
                    "responses": {
                        "200": {"description": "The account", **_json(_OBJECT)},
                        **_errors(401, 404),
                    },
                }
            },
        },
    }
