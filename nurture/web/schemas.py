"""The API's request bodies (pydantic models) and the OpenAPI description built from them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, JsonValue

MAX_BATCH = 1000
MAX_BODY = 8 * 1024 * 1024


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class EventIn(Body):
    """One thing a person did."""

    email: str = Field(min_length=3, max_length=320, description="The person's address.")
    kind: str = Field(
        min_length=1, max_length=64, description="An event kind declared in nurture.yaml."
    )
    time: AwareDatetime | None = Field(
        default=None, description="When it happened, with its UTC offset (default: now)."
    )
    properties: dict[str, JsonValue] = Field(
        default_factory=dict, max_length=100, description="url, asset, form, ..."
    )
    id: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Your id for the event: sending it again changes nothing.",
    )


class EventBatch(Body):
    events: list[EventIn] = Field(min_length=1, max_length=MAX_BATCH)


class ContactIn(Body):
    email: str = Field(min_length=3, max_length=320)
    fields: dict[str, JsonValue] = Field(
        default_factory=dict, description="Profile fields and custom fields to set."
    )
    stage: str | None = Field(default=None, max_length=50, description="Set the stage by hand.")
    consent: str | None = Field(
        default=None, max_length=200, description="Where and how the person gave consent."
    )


class SalesIn(Body):
    outcome: Literal["accepted", "rejected"]
    reason: str = Field(default="", max_length=1000, description="Required for a rejection.")


class StageIn(Body):
    stage: str = Field(min_length=1, max_length=50)
    reason: str = Field(min_length=1, max_length=1000)


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
    "schema": {"type": "string", "minLength": 3, "maxLength": 320},
}
_OBJECT = {"type": "object"}


def openapi(
    title: str, version: str, kinds: list[str] | None = None, stages: list[str] | None = None
) -> dict[str, Any]:
    """The OpenAPI 3.1 description served at /api/v1/openapi.json, with the project's own
    event kinds and stages as the values `kind` and `stage` may take."""
    models: dict[str, type[BaseModel]] = {
        "EventIn": EventIn,
        "EventBatch": EventBatch,
        "ContactIn": ContactIn,
        "SalesIn": SalesIn,
        "StageIn": StageIn,
    }
    schemas: dict[str, Any] = {"Error": _ERROR}
    for name, model in models.items():
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[name] = schema
    email = {"format": "email"}
    for name in ("EventIn", "ContactIn"):
        schemas[name]["properties"]["email"].update(email)
    if kinds is not None:
        schemas["EventIn"]["properties"]["kind"]["enum"] = sorted(kinds)
    if stages is not None:
        schemas["StageIn"]["properties"]["stage"]["enum"] = list(stages)
        schemas["ContactIn"]["properties"]["stage"] = {
            "anyOf": [{"enum": list(stages)}, {"type": "null"}],
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
            "/api/v1/accounts/{account}": {
                "get": {
                    "summary": "An account: its people, rolled-up fit and engagement",
                    "parameters": [
                        {
                            "name": "account",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "minLength": 1, "maxLength": 255},
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
