"""The JSON API: events in (one or a batch), contacts in and out, sales outcomes, the
people of a segment.

Every route but the OpenAPI description needs `Authorization: Bearer <key>` (keys from
`nurture apikey create`). A 2xx answer means committed; a 4xx answer is JSON naming
what is wrong, and nothing of the request was kept.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from importlib.metadata import version
from typing import Any, TypeVar

from flask import Blueprint, Response, current_app, g, jsonify, request
from pydantic import BaseModel, ValidationError
from pydantic_core import from_json
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.exceptions import HTTPException

from nurture import metrics, segments
from nurture.apikeys import find_key
from nurture.contacts import NO_NUL, current_engagement, normalize_email, profile, shown
from nurture.core import eventtime
from nurture.core.accounts import rollup
from nurture.db import write_transaction
from nurture.errors import InvalidValue
from nurture.feedback import Outcome, move_stage, sales_outcome, upsert_contact
from nurture.intake import Incoming, record_together
from nurture.models import Contact, Enrollment, Event, Message, ScoreChange, StageMove
from nurture.problems import unknown_segment
from nurture.runtime import Runtime
from nurture.web.schemas import (
    MAX_BODY,
    MAX_DEPTH,
    MAX_ITEMS,
    MAX_PROPERTY_TEXT,
    MAX_SEGMENT_PAGE,
    NOT_BLANK,
    SEGMENT_PAGE,
    EventBatch,
    EventIn,
    SalesIn,
    StageIn,
    contact_model,
    custom_specs,
    openapi,
)

bp = Blueprint("api", __name__, url_prefix="/api/v1")
M = TypeVar("M", bound=BaseModel)
#: Events may be late (a queue drained after an outage) but not from the future.
#: Kinds with their own route, so the hand-off record stays true.
OWN_ROUTE = {
    "sales_accepted": "sales",
    "sales_rejected": "sales",
    "paused": "dashboard",
    "resumed": "dashboard",
}


class Problem(Exception):
    def __init__(self, status: int, error: str, message: str, errors: list[dict[str, Any]]):
        self.status, self.error, self.message, self.errors = status, error, message, errors


def _runtime() -> Runtime:
    runtime: Runtime = current_app.extensions["nurture"]
    return runtime


def error_response(
    status: int, error: str, message: str, errors: list[dict[str, Any]] | None = None
) -> Response:
    body: dict[str, Any] = {"error": error, "message": message}
    if errors:
        body["errors"] = errors
    response = jsonify(body)
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="nurture"'
    return response


@bp.errorhandler(Problem)
def _problem(exc: Problem) -> Response:
    return error_response(exc.status, exc.error, exc.message, exc.errors)


@bp.errorhandler(HTTPException)
def _http(exc: HTTPException) -> Response:
    return http_error(exc)


def http_error(exc: HTTPException) -> Response:
    """A werkzeug error (unknown route, wrong method, body too large) as the API's JSON."""
    code = exc.code or 500
    if code == 413:
        response = error_response(413, "too_large", f"the body is over {MAX_BODY} bytes")
    else:
        name = (exc.name or "error").lower().replace(" ", "_")
        response = error_response(code, name, exc.description or "")
    for header, value in exc.get_headers():
        if header.lower() != "content-type":
            response.headers[header] = value  # Allow, on a 405
    return response


@bp.before_request
def _authenticate() -> Response | None:
    request.max_content_length = MAX_BODY
    if request.endpoint == "api.description":
        return None
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return error_response(401, "unauthorized", "send Authorization: Bearer <API key>")
    runtime = _runtime()
    with runtime.database.connect() as connection, Session(bind=connection) as session:
        found = find_key(session, key.strip())
    if found is None:
        return error_response(401, "unauthorized", "this API key is not valid (or was revoked)")
    g.api_key = found.name
    return None


@bp.get("/openapi.json")
def description() -> Response:
    return jsonify(api_description(_runtime()))


def api_description(runtime: Runtime) -> dict[str, Any]:
    settings = runtime.project.settings
    return openapi(
        f"{settings.sender.from_name} nurture API",
        version("nurture"),
        kinds=sorted(settings.event_kinds - set(OWN_ROUTE)),
        stages=settings.stage_names,
        custom_fields=settings.custom_fields,
    )


def _body() -> Any:
    """The JSON body, parsed by pydantic's parser: it has a depth limit (a body nested
    thousands deep is a 400, not a RecursionError) and refuses NaN and Infinity."""
    if request.content_length and request.content_length > MAX_BODY:
        raise Problem(413, "too_large", f"the body is over {MAX_BODY} bytes", [])
    if not request.is_json:
        raise Problem(
            400, "bad_request", "expected a JSON body (Content-Type: application/json)", []
        )
    try:
        return from_json(request.get_data(), allow_inf_nan=False)
    except ValueError as exc:
        raise Problem(400, "bad_request", f"the body is not JSON: {exc}", []) from None


def _field(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def _in_body(data: Any, loc: tuple[int | str, ...], missing: bool) -> tuple[int | str, ...]:
    """The part of an error's location that is in the body: pydantic adds the name of each
    member of a union it tried (`str`, `list[...]`), which is no field of the request; the
    last part of a `missing` error is the absent field's name."""
    path: list[int | str] = []
    for number, part in enumerate(loc):
        inside = (isinstance(data, dict) and part in data) or (
            isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data)
        )
        if inside:
            data = data[part]
        elif not (missing and number == len(loc) - 1):
            continue  # a union member's name
        path.append(part)
    return tuple(path)


_VALUE = (
    f"must be text (at most {MAX_PROPERTY_TEXT} characters, no NUL), a finite number, true, "
    f"false, null, or a list or map of them nested {MAX_DEPTH} deep at most "
    f"({MAX_ITEMS} items each)"
)


_MESSAGES = {NO_NUL: "must not contain a NUL character", NOT_BLANK: "must not be blank"}


def _parse(model: type[M], data: Any) -> M:
    """`data` (the parsed body) checked strictly against `model`: no number taken for a
    time, no string for a number, no bool for a number, no number for a name. One error per
    field of the request, named as in the body (`events[3].properties.utm`)."""
    try:
        return model.model_validate_json(request.get_data())
    except ValidationError as exc:
        found: dict[str, dict[str, Any]] = {}
        for e in exc.errors(include_url=False):
            loc = _in_body(data, tuple(e["loc"]), e["type"] == "missing")
            field = _field(loc)
            message = _MESSAGES.get(
                str((e.get("ctx") or {}).get("pattern")), e["msg"].removeprefix("Value error, ")
            )
            if field in found:
                if "properties" in loc and found[field]["message"] != message:
                    found[field]["message"] = _VALUE
                continue
            index = (
                {"index": loc[1]}
                if len(loc) > 1 and loc[0] == "events" and isinstance(loc[1], int)
                else {}
            )
            found[field] = {**index, "field": field, "message": message}
        # A value nested too deep fails at each level: name the outermost one only.
        errors = []
        for field, error in found.items():
            if any(field.startswith((f"{f}.", f"{f}[")) for f in found if f != field):
                continue
            if any(f.startswith((f"{field}.", f"{field}[")) for f in found):
                error["message"] = _VALUE
            errors.append(error)
        raise Problem(422, "invalid", f"{len(errors)} field(s) are wrong", errors) from None


def _check_events(events: list[EventIn], batch: bool, now: datetime) -> list[tuple[str, EventIn]]:
    """Every event's normalized address; 422 listing each bad one (by index in a batch)."""
    kinds = _runtime().project.settings.event_kinds
    errors, out = [], []
    for index, item in enumerate(events):
        where = f"events[{index}]." if batch else ""
        extra = {"index": index} if batch else {}
        try:
            address = normalize_email(item.email)
        except ValueError as exc:
            errors.append({**extra, "field": where + "email", "message": str(exc)})
            address = ""
        if item.kind not in kinds:
            errors.append(
                {
                    **extra,
                    "field": where + "kind",
                    "message": f"unknown event kind {item.kind!r}; "
                    "declare it under events: in nurture.yaml",
                }
            )
        elif item.kind in OWN_ROUTE:
            errors.append(
                {
                    **extra,
                    "field": where + "kind",
                    "message": f"{item.kind} is recorded by its own action "
                    f"({OWN_ROUTE[item.kind]}), not as an event",
                }
            )
        found = eventtime.problem(item.time, now) if item.time is not None else None
        if found is not None:
            errors.append({**extra, "field": where + "time", "message": found})
        out.append((address, item))
    if errors:
        raise Problem(
            422, "invalid", f"{len(errors)} event field(s) are wrong; nothing was recorded", errors
        )
    return out


@bp.after_request
def _count_rejected(response: Response) -> Response:
    if request.endpoint == "api.events" and response.status_code >= 400:
        metrics.count_rejected(response.status_code)
    return response


@bp.post("/events")
def events() -> Response:
    data = _body()
    batch = isinstance(data, dict) and "events" in data
    items = _parse(EventBatch, data).events if batch else [_parse(EventIn, data)]
    runtime = _runtime()
    now = runtime.clock.now()
    checked = _check_events(items, batch, now)
    incoming = [
        Incoming(address, item.kind, item.time, dict(item.properties), item.id)
        for address, item in checked
    ]
    results = record_together(runtime.database, runtime.project, incoming, now)
    accepted = sum(1 for r in results if not r.duplicate)
    metrics.count_events(i.kind for i, r in zip(incoming, results, strict=True) if not r.duplicate)
    return jsonify(
        accepted=accepted,
        duplicates=len(results) - accepted,
        events=[{"id": r.event_id, "duplicate": r.duplicate, "stage": r.stage} for r in results],
    )


@bp.post("/contacts")
def contacts() -> tuple[Response, int]:
    runtime = _runtime()
    item = _parse(contact_model(custom_specs(runtime.project.settings.custom_fields)), _body())
    now = runtime.clock.now()
    try:
        address = normalize_email(item.email)
    except ValueError as exc:
        raise Problem(422, "invalid", str(exc), [{"field": "email", "message": str(exc)}]) from None
    with write_transaction(runtime.database) as session:
        try:
            outcome = upsert_contact(
                session,
                runtime.project,
                address,
                item.fields.model_dump(exclude_none=True),
                now,
                stage=item.stage,
                stage_reason="set through the API",
                consent_source=item.consent,
            )
        except InvalidValue as exc:
            name = "stage" if exc.field == "stage" else f"fields.{exc.field}"
            raise Problem(
                422, "invalid", str(exc), [{"field": name, "message": exc.message or str(exc)}]
            ) from None
        body = contact_view(session, runtime, outcome.contact, now)
    return jsonify(body), 201 if outcome.created else 200


@bp.get("/contacts/<email>")
def contact(email: str) -> Response:
    runtime = _runtime()
    now = runtime.clock.now()
    with runtime.database.connect() as connection, Session(bind=connection) as session:
        found = _find(session, email)
        return jsonify(contact_view(session, runtime, found, now))


@bp.post("/contacts/<email>/sales")
def sales(email: str) -> Response:
    item = _parse(SalesIn, _body())
    return _change(
        email,
        lambda session, runtime, address, now: sales_outcome(
            session, runtime.project, address, item.outcome == "accepted", item.reason, now
        ),
    )


@bp.post("/contacts/<email>/stage")
def stage(email: str) -> Response:
    item = _parse(StageIn, _body())
    return _change(
        email,
        lambda session, runtime, address, now: move_stage(
            session, runtime.project, address, item.stage, item.reason, now
        ),
    )


def _change(email: str, change: Callable[[Session, Runtime, str, datetime], Outcome]) -> Response:
    """Apply `change` to a known contact in one transaction; its InvalidValue is a 422."""
    runtime = _runtime()
    now = runtime.clock.now()
    with write_transaction(runtime.database) as session:
        found = _find(session, email)
        try:
            outcome = change(session, runtime, found.email, now)
        except InvalidValue as exc:
            errors = [{"field": exc.field, "message": exc.message}]
            raise Problem(422, "invalid", str(exc), errors) from None
        return jsonify(contact_view(session, runtime, outcome.contact, now))


@bp.get("/accounts/<account>")
def account(account: str) -> Response:
    runtime = _runtime()
    now = runtime.clock.now()
    if "\x00" in account or len(account) > 255:
        raise Problem(404, "not_found", f"no account {shown(account)}", [])
    with runtime.database.connect() as connection, Session(bind=connection) as session:
        members = list(
            session.scalars(select(Contact).where(Contact.account == account).order_by(Contact.id))
        )
        if not members:
            raise Problem(404, "not_found", f"no account {shown(account)}", [])
        score = rollup(members, runtime.project.settings, now)
        return jsonify(
            account=account,
            people=score.people,
            fit=score.fit,
            engagement=round(score.engagement, 2),
            stages=score.stages,
            furthest_stage=score.furthest_stage,
            contacts=[
                {
                    "email": m.email,
                    "stage": m.stage,
                    "fit": m.fit,
                    "engagement": round(current_engagement(m, runtime.project.settings, now), 2),
                }
                for m in members[:200]
            ],
        )


@bp.get("/segments/<name>/contacts")
def segment_contacts(name: str) -> Response:
    """A page of the people in a segment, by id, with how many there are in all."""
    runtime = _runtime()
    project, now = runtime.project, runtime.clock.now()
    segment = project.segments.get(name)
    if segment is None:
        message = unknown_segment(name[:100], project.segments)
        raise Problem(404, "not_found", message, [{"field": "segment", "message": message}])
    number = _page_parameter("page", 1, None)
    size = _page_parameter("per_page", SEGMENT_PAGE, MAX_SEGMENT_PAGE)
    with runtime.database.connect() as connection, Session(bind=connection) as session:
        found = segments.audience(session, project.settings, segment, project.content_ids(), now)
        total = segments.count(session, found)
        people = segments.page(session, found, number, size)
        return jsonify(
            segment=name,
            name=segment.name,
            total=total,
            page=number,
            per_page=size,
            pages=max(1, -(-total // size)),
            contacts=[segments.row(c, project.settings, now) for c in people],
        )


def _page_parameter(field: str, default: int, most: int | None) -> int:
    """A whole number from 1 (to `most`) in the query string; 422 naming it otherwise."""
    raw = request.args.get(field)
    if raw is None:
        return default
    limit = f" to {most}" if most else ""
    if not raw.isascii() or not raw.isdigit() or len(raw) > 9:
        message = f"{field} must be a whole number from 1{limit}, not {shown(raw)}"
        raise Problem(422, "invalid", message, [{"field": field, "message": message}])
    value = int(raw)
    if value < 1 or (most is not None and value > most):
        message = f"{field} must be a whole number from 1{limit}, not {value}"
        raise Problem(422, "invalid", message, [{"field": field, "message": message}])
    return value


def _find(session: Session, email: str) -> Contact:
    try:
        address = normalize_email(email)
    except ValueError:
        raise Problem(404, "not_found", f"no contact {shown(email)}", []) from None
    found = session.scalar(select(Contact).where(Contact.email == address))
    if found is None:
        raise Problem(404, "not_found", f"no contact {address}", [])
    return found


def contact_view(
    session: Session, runtime: Runtime, contact: Contact, now: datetime, recent: int = 20
) -> dict[str, Any]:
    """A contact as the API shows it: profile, stage, scores as of now, recent history."""
    settings = runtime.project.settings

    def latest(model: Any, order: Any) -> list[Any]:
        return list(
            session.scalars(
                select(model)
                .where(model.contact_id == contact.id)
                .order_by(order.desc(), model.id.desc())
                .limit(recent)
            )
        )

    return {
        "id": contact.id,
        **profile(contact, settings),
        "custom": contact.custom or {},
        "stage": contact.stage,
        "stage_since": contact.stage_since.isoformat(),
        "fit": contact.fit,
        "engagement": round(current_engagement(contact, settings, now), 2),
        "paused": contact.paused,
        "consent": {
            "source": contact.consent_source,
            "at": contact.consent_at.isoformat() if contact.consent_at else None,
        },
        "created_at": contact.created_at.isoformat(),
        "events": [
            {
                "id": e.id,
                "kind": e.kind,
                "at": e.occurred_at.isoformat(),
                "properties": e.properties,
            }
            for e in latest(Event, Event.occurred_at)
        ],
        "score_changes": [
            {
                "at": c.at.isoformat(),
                "axis": c.axis,
                "points": c.points,
                "value_after": round(c.value_after, 2),
                "rule": c.rule,
            }
            for c in latest(ScoreChange, ScoreChange.at)
        ],
        "stage_moves": [
            {"at": m.at.isoformat(), "from": m.from_stage, "to": m.to_stage, "reason": m.reason}
            for m in latest(StageMove, StageMove.at)
        ],
        "messages": [
            {
                "content": m.content_id,
                "phase": m.phase,
                "status": m.status,
                "subject": m.subject,
                "at": m.sent_at.isoformat(),
            }
            for m in latest(Message, Message.sent_at)
        ],
        "enrollments": [
            {
                "workflow": e.workflow,
                "status": e.status,
                "due_at": e.due_at.isoformat() if e.due_at else None,
                "end_reason": e.end_reason,
            }
            for e in session.scalars(select(Enrollment).where(Enrollment.contact_id == contact.id))
        ],
    }
