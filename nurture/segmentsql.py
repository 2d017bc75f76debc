"""A segment's condition as a SQL WHERE clause on `contacts`, so counts and pages are served by
the database, not by loading every contact into Python.

The clause holds for exactly the contacts for which `expressions.evaluate` (with the
engagement functions of nurture/core/engagement.py) holds at `now`, including its rule that a
condition reading a missing or mistyped value does not hold: each part compiles to
(holds, fails), `fails` being where Python would raise (an order comparison with an
unknown value), and the whole holds where it holds and does not fail.

The subset: comparisons (`==`, `!=`, `<`, `<=`, `>`, `>=`, chained too, `in`, `not in`,
`is none`), `and`, `or`, `not`, constants, `contact.<field>` (profile and typed custom
fields), `stage`, `fit`, `engagement` (decayed to `now` as the engine decays it),
`days_in_stage`, the project's lists, and `clicked`, `opened`, `received`, `did` as EXISTS
subqueries: `received` on messages, the others on the engagement summary the events' write
path keeps (models.Engaged, nurture/eventstore.py: one row per person, event kind and piece
of content, without the events a machine made, as the engine leaves them out). Anything else
is refused by `Unsupported`, naming it; `nurture validate` reports it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from jinja2 import nodes
from sqlalchemy import (
    BigInteger,
    Float,
    Integer,
    and_,
    case,
    cast,
    exists,
    extract,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.sql.elements import ColumnElement

from nurture import expressions
from nurture.config import PROFILE_FIELDS, CustomField, FieldType, Settings
from nurture.core.scoring import DECAY_EPOCH, NEGLIGIBLE
from nurture.durations import parse_duration
from nurture.models import NO_CONTENT, Contact, Engaged, Message

#: Message statuses that count as received (the engine's COUNTED).
RECEIVED_STATUSES = ("queued", "sending", "sent", "unknown")
_TEXT, _NUMBER, _BOOL, _NULL = "text", "number", "bool", "null"
_ORDER = {"lt": "<", "lteq": "<=", "gt": ">", "gteq": ">="}
_FLIP = {"lt": "gt", "lteq": "gteq", "gt": "lt", "gteq": "lteq", "eq": "eq", "ne": "ne"}


_T = TypeVar("_T")


class Unsupported(ValueError):
    """A part of a condition that has no SQL form here (named in the message)."""


@dataclass(frozen=True)
class Operand:
    """A value in SQL with its kind (text, number, bool, null) and whether it may be NULL."""

    sql: Any  # a column or a SQL expression of one
    kind: str
    nullable: bool
    shown: str
    constant: Any = None
    is_constant: bool = False


@dataclass(frozen=True)
class Truth:
    """Where a part holds (never NULL) and where Python would raise on it (None: nowhere)."""

    holds: ColumnElement[bool]
    fails: ColumnElement[bool] | None = None
    #: A rough price per row (a column test 1, the decayed engagement 10, an EXISTS 100):
    #: of two parts joined by `and`/`or`, the cheaper is tested first.
    cost: int = 1


@dataclass(frozen=True)
class Scope:
    """What a condition is compiled against."""

    settings: Settings
    now: datetime
    dialect: str
    #: canonical content id -> every id it has gone by (itself and its `renamed_from:`).
    content_ids: Mapping[str, tuple[str, ...]]


def where(source: str, scope: Scope) -> ColumnElement[bool]:
    """The WHERE clause on `contacts` of the condition `source` (Unsupported if it has none).

    A WHERE clause only: outside any `not`, a part that does not hold may be NULL rather
    than false (SQL's WHERE drops both alike; wrapping every test in COALESCE doubled the
    cost of a scan), so the clause is never to be negated or selected as a value."""
    expressions.compile_condition(source)
    tree = expressions._env.parse("{{ (" + source + ") }}")
    output = tree.body[0]
    if not (isinstance(output, nodes.Output) and len(output.nodes) == 1):
        raise Unsupported("a segment's condition is one expression")
    truth = _Compiler(scope).truth(output.nodes[0])
    if truth.fails is None:
        return truth.holds
    return and_(truth.holds, not_(truth.fails))


def check(source: str, settings: Settings, content_ids: Mapping[str, tuple[str, ...]]) -> None:
    """Unsupported naming what `source` uses that has no SQL form (at validate time)."""
    for dialect in ("sqlite", "postgresql"):
        where(source, Scope(settings, DECAY_EPOCH, dialect, content_ids))


def _or(*parts: ColumnElement[bool] | None) -> ColumnElement[bool] | None:
    present = [p for p in parts if p is not None]
    return or_(*present) if present else None


class _Compiler:
    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.lists = scope.settings.lists
        #: Inside a `not` (or `not in`, `!=`) a part must be false, never NULL, where it
        #: does not hold; outside, NULL does as well (see `where`).
        self.negated = 0

    def two_valued(self, test: ColumnElement[bool]) -> ColumnElement[bool]:
        """`test` with NULL read as false, where that matters (inside a negation)."""
        return func.coalesce(test, false()) if self.negated else test

    def negation(self, node: nodes.Node) -> Truth:
        """The truth of `node`, two-valued, ready to be negated."""
        return self.negation_of(lambda: self.truth(node))

    # -- truth -----------------------------------------------------------------------------

    def truth(self, node: nodes.Node) -> Truth:
        if isinstance(node, nodes.And):
            a, b = self.truth(node.left), self.truth(node.right)
            fails = _or(a.fails, and_(a.holds, b.fails) if b.fails is not None else None)
            return Truth(and_(*_cheap_first(a, b)), fails, a.cost + b.cost)
        if isinstance(node, nodes.Or):
            a, b = self.truth(node.left), self.truth(node.right)
            fails = _or(a.fails, and_(not_(a.holds), b.fails) if b.fails is not None else None)
            return Truth(or_(*_cheap_first(a, b)), fails, a.cost + b.cost)
        if isinstance(node, nodes.Not):
            a = self.negation(node.node)
            return Truth(not_(a.holds), a.fails, a.cost)
        if isinstance(node, nodes.Compare):
            return self.compare(node)
        if isinstance(node, nodes.Call):
            return Truth(self.call(node), cost=100)
        if isinstance(node, nodes.Test):
            return self.test(node)
        operand = self.operand(node)
        return self.truthy(operand)

    def negation_of(self, build: Callable[[], _T]) -> _T:
        """What `build` makes, two-valued (to be negated)."""
        self.negated += 1
        try:
            return build()
        finally:
            self.negated -= 1

    def truthy(self, operand: Operand) -> Truth:
        """Python's truth of a value: not None, not empty, not zero."""
        if operand.is_constant:
            return Truth(true() if operand.constant else false())
        sql = operand.sql
        if operand.kind == _BOOL:
            test = sql
        elif operand.kind == _TEXT:
            test = sql != ""
        elif operand.kind == _NUMBER:
            test = sql != 0
        else:
            raise Unsupported(f"{operand.shown} as a condition")
        if operand.nullable:
            test = and_(sql.is_not(None), test)
        return Truth(test)

    def compare(self, node: nodes.Compare) -> Truth:
        """`a < b <= c`: Python's chained comparison (each one only if those before hold)."""
        left_node: nodes.Expr = node.expr
        result: Truth | None = None
        for operation in node.ops:
            part = self.comparison(left_node, operation.op, operation.expr)
            if result is None:
                result = part
            else:
                fails = _or(
                    result.fails,
                    and_(result.holds, part.fails) if part.fails is not None else None,
                )
                result = Truth(and_(result.holds, part.holds), fails, result.cost + part.cost)
            left_node = operation.expr
        assert result is not None
        return result

    def comparison(self, left_node: nodes.Expr, op: str, right_node: nodes.Expr) -> Truth:
        if op == "in":
            return self.membership(left_node, right_node)
        if op == "notin":
            truth = self.negation_of(lambda: self.membership(left_node, right_node))
            return Truth(not_(truth.holds), truth.fails)
        if _is_days(right_node) and not _is_days(left_node):
            left_node, right_node, op = right_node, left_node, _FLIP[op]
        if _is_days(left_node):
            return self.days(op, right_node)
        left, right = self.operand(left_node), self.operand(right_node)
        left, right = self.unclamped(left, right), self.unclamped(right, left)
        if left.is_constant and right.is_constant:
            raise Unsupported(f"{left.shown} compared with {right.shown} (two constants)")
        symbol = _ORDER.get(op, "==" if op == "eq" else "!=")
        if op in _ORDER:
            for side in (left, right):
                if side.kind in (_NULL, _BOOL):
                    raise Unsupported(
                        f"{side.shown} {symbol}: order comparisons need numbers or text"
                    )
            self.same_kind(left, right, symbol)
            a, b = self.collated(left), self.collated(right)
            compared = {"lt": a < b, "lteq": a <= b, "gt": a > b, "gteq": a >= b}[op]
            bound = _stored_bound(left, op, right)
            if bound is not None:
                compared = and_(bound, compared)
            cost = 10 if "engagement" in (left.shown, right.shown) else 1
            nulls = [s.sql.is_(None) for s in (left, right) if s.nullable]
            if nulls:
                return Truth(self.two_valued(compared), or_(*nulls), cost)
            return Truth(compared, cost=cost)
        if op == "eq":
            return Truth(self.equal(left, right, symbol))
        return Truth(not_(self.negation_of(lambda: self.equal(left, right, symbol))))

    def equal(self, left: Operand, right: Operand, symbol: str) -> ColumnElement[bool]:
        """Python's `==` (never raising; None equals None only), never NULL."""
        if right.kind == _NULL:
            left, right = right, left
        if left.kind == _NULL:
            if right.kind == _NULL:
                raise Unsupported("none compared with none")
            return right.sql.is_(None) if right.nullable else false()
        self.same_kind(left, right, symbol)
        equal: ColumnElement[bool] = left.sql == right.sql
        if not (left.nullable or right.nullable):
            return equal
        both_null = (
            and_(left.sql.is_(None), right.sql.is_(None))
            if left.nullable and right.nullable
            else false()
        )
        return or_(self.two_valued(equal), both_null)

    def same_kind(self, left: Operand, right: Operand, symbol: str) -> None:
        if left.kind != right.kind:
            raise Unsupported(
                f"{left.shown} {symbol} {right.shown} compares {left.kind} with {right.kind}"
            )

    def collated(self, operand: Operand) -> Any:
        """Text ordered by code point, as Python orders it (PostgreSQL's "C" collation)."""
        if operand.kind == _TEXT and self.scope.dialect == "postgresql":
            return operand.sql.collate("C")
        return operand.sql

    def membership(self, left_node: nodes.Expr, right_node: nodes.Expr) -> Truth:
        left = self.operand(left_node)
        values = self.list_of(right_node)
        if left.is_constant:
            raise Unsupported(f"{left.shown} in a list: test a field, not a constant")
        if left.kind == _BOOL:
            raise Unsupported(f"{left.shown} in a list: test a yes/no field as is")
        wanted = [v for v in values if _kind_of(v) == left.kind]
        if not wanted:
            return Truth(false())
        found = left.sql.in_(wanted)
        return Truth(self.two_valued(found) if left.nullable else found)

    def list_of(self, node: nodes.Expr) -> list[Any]:
        if isinstance(node, nodes.Name) and node.name in self.lists:
            return list(self.lists[node.name])
        if isinstance(node, (nodes.List, nodes.Tuple)):
            values = []
            for item in node.items:
                if not isinstance(item, nodes.Const) or item.value is None:
                    raise Unsupported("a list in a segment holds constants (text or numbers)")
                values.append(item.value)
            return values
        raise Unsupported(
            f"`in` {_shown(node)}: a segment tests membership of a list "
            "(one of lists: in nurture.yaml, or [a, b])"
        )

    def days(self, op: str, node: nodes.Expr) -> Truth:
        """`days_in_stage <op> n`: whole days since the stage move, as a bound on stage_since
        (days >= k exactly when stage_since <= now - k days, for a whole k)."""
        value = node.value if isinstance(node, nodes.Const) else None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Unsupported("days_in_stage is compared with a number")
        if math.isnan(value) or math.isinf(value):
            raise Unsupported("days_in_stage is compared with a finite number")

        def at_least(k: int) -> ColumnElement[bool]:
            try:
                return Contact.stage_since <= self.scope.now - timedelta(days=k)
            except OverflowError:
                return false() if k > 0 else true()

        low, high = math.ceil(value), math.floor(value) + 1
        if op == "gteq":
            return Truth(at_least(low))
        if op == "gt":
            return Truth(at_least(high))
        if op == "lteq":
            return Truth(not_(at_least(high)))
        if op == "lt":
            return Truth(not_(at_least(low)))
        same = and_(at_least(int(value)), not_(at_least(int(value) + 1)))
        if value != int(value):
            same = false()
        return Truth(same if op == "eq" else not_(same))

    def test(self, node: nodes.Test) -> Truth:
        if node.name != "none" or node.args or node.kwargs:
            raise Unsupported(f"the test `is {node.name}`; use == or `is none`")
        operand = self.operand(node.node)
        if operand.is_constant:
            raise Unsupported(f"{operand.shown} is none (a constant)")
        return Truth(operand.sql.is_(None) if operand.nullable else false())

    # -- values ----------------------------------------------------------------------------

    def operand(self, node: nodes.Node) -> Operand:
        if isinstance(node, nodes.Const):
            value = node.value
            kind = _kind_of(value)
            if kind is None:
                raise Unsupported(f"the constant {value!r}")
            return Operand(literal(value), kind, False, repr(value), value, True)
        if isinstance(node, nodes.Neg) and isinstance(node.node, nodes.Const):
            value = node.node.value
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return Operand(literal(-value), _NUMBER, False, repr(-value), -value, True)
        if isinstance(node, nodes.Name):
            if node.name == "fit":
                return Operand(Contact.fit, _NUMBER, False, "fit")
            if node.name == "engagement":
                return Operand(self.engagement(), _NUMBER, False, "engagement")
            if node.name == "stage":
                return Operand(Contact.stage, _TEXT, False, "stage")
            if node.name == "days_in_stage":
                raise Unsupported("days_in_stage is only compared with a number")
            if node.name in self.lists:
                raise Unsupported(f"the list {node.name} outside `in`")
            raise Unsupported(f"the name {node.name}")
        field = _contact_field(node)
        if field is not None:
            return self.field(field)
        raise Unsupported(_shown(node))

    def field(self, name: str) -> Operand:
        shown = f"contact.{name}"
        if name == "email_domain":
            email = Contact.email  # PostgreSQL has strpos where SQLite has instr
            at = func.strpos if self.scope.dialect == "postgresql" else func.instr
            return Operand(func.substr(email, at(email, "@") + 1), _TEXT, False, shown)
        if name == "email":
            return Operand(Contact.email, _TEXT, False, shown)
        if name == "company_size":
            return Operand(Contact.company_size, _NUMBER, True, shown)
        if name in PROFILE_FIELDS:
            return Operand(getattr(Contact, name), _TEXT, True, shown)
        spec = self.scope.settings.custom_fields.get(name)
        if spec is None:
            raise Unsupported(f"{shown}, which no contact has")
        return self.custom(name, spec, shown)

    def custom(self, name: str, spec: CustomField, shown: str) -> Operand:
        """A custom field read from the JSON column as its declared type; a stored value of
        another JSON type (text kept before the field was typed) counts as unknown."""
        path = f'$."{name}"'
        kind = {
            FieldType.INTEGER: _NUMBER,
            FieldType.NUMBER: _NUMBER,
            FieldType.BOOLEAN: _BOOL,
        }.get(spec.type, _TEXT)
        if self.scope.dialect == "sqlite":
            json_type = func.json_type(Contact.custom, path)
            value = func.json_extract(Contact.custom, path)
            if kind == _BOOL:
                sql = case((json_type == "true", true()), (json_type == "false", false()))
            else:
                types = ("integer", "real") if kind == _NUMBER else ("text",)
                sql = case((json_type.in_(types), value))
        else:
            element = Contact.custom.op("->")(literal(name))
            text_value = Contact.custom.op("->>")(literal(name))
            json_type = func.json_typeof(element)
            if kind == _BOOL:
                sql = case((json_type == "boolean", text_value == "true"))
            elif kind == _NUMBER:
                sql = case((json_type == "number", cast(text_value, Float)))
            else:
                sql = case((json_type == "string", text_value))
        return Operand(sql, kind, True, shown)

    def unclamped(self, operand: Operand, other: Operand) -> Operand:
        """The decayed engagement compared with a constant of at least NEGLIGIBLE (either
        sign) needs no clamping to 0 below NEGLIGIBLE: a value that small and 0 compare
        alike with it. Without the clamp the decay is computed once per row, not twice."""
        if operand.shown != "engagement" or not other.is_constant or other.kind != _NUMBER:
            return operand
        if not abs(other.constant) >= NEGLIGIBLE:
            return operand
        return Operand(self.engagement(clamp=False), _NUMBER, False, "engagement")

    def engagement(self, clamp: bool = True) -> Any:
        """The stored engagement decayed to `now`, as nurture/core/scoring.py `decayed` does
        (without `clamp`, values under NEGLIGIBLE are left as they are, not made 0)."""
        rules = self.scope.settings.scoring.engagement
        now = self.scope.now
        stored, at = Contact.engagement, Contact.engagement_at
        if rules.half_life is None and rules.decay is None:
            return stored
        if rules.half_life is not None:
            halves = self.seconds_before_now(at) / rules.half_life.total_seconds()
            result = stored * func.power(0.5, halves)
            unchanged = or_(at >= now, stored == 0)
        else:
            assert rules.decay is not None
            every = int(rules.decay.every.total_seconds())
            periods_now = (now - DECAY_EPOCH) // rules.decay.every
            passed = periods_now - self.periods(at, every)
            result = stored * func.power(1 - rules.decay.percent / 100, passed)
            unchanged = or_(at >= now, stored == 0, passed <= 0)
        if clamp:
            result = case((func.abs(result) < NEGLIGIBLE, 0.0), else_=result)
        return case((unchanged, stored), else_=result)

    def seconds_before_now(self, at: Any) -> ColumnElement[float]:
        now = self.scope.now.astimezone(UTC)
        if self.scope.dialect == "sqlite":
            julian = (now - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(days=1) + 2440587.5
            return (literal(julian) - func.julianday(at)) * 86400.0
        epoch = now.timestamp()
        return literal(epoch) - cast(extract("epoch", at), Float)

    def periods(self, at: Any, every: int) -> ColumnElement[int]:
        """Whole decay periods from DECAY_EPOCH to `at` (integer arithmetic, exact)."""
        start = int(DECAY_EPOCH.timestamp())
        if self.scope.dialect == "sqlite":
            seconds = cast(func.strftime("%s", at), Integer)
        else:
            seconds = cast(func.floor(extract("epoch", at)), BigInteger)
        return (seconds - start) // every

    # -- engagement functions --------------------------------------------------------------

    def call(self, node: nodes.Call) -> ColumnElement[bool]:
        if not isinstance(node.node, nodes.Name):
            raise Unsupported(f"the call {_shown(node)}")
        name = node.node.name
        handler: Callable[[dict[str, Any], nodes.Call], ColumnElement[bool]] | None = {
            "clicked": self.clicked,
            "opened": self.opened,
            "received": self.received,
            "did": self.did,
        }.get(name)
        if handler is None:
            raise Unsupported(f"the function {name}()")
        if node.dyn_args is not None or node.dyn_kwargs is not None:
            raise Unsupported(f"{name}(*...) or {name}(**...)")
        names = {"did": ("kind", "within")}.get(name, ("content",))
        arguments: dict[str, Any] = {}
        for position, argument in enumerate(node.args):
            if position >= len(names):
                raise Unsupported(f"{name}() with {len(node.args)} arguments")
            arguments[names[position]] = _constant(argument, name)
        for keyword in node.kwargs:
            if keyword.key not in names:
                raise Unsupported(f"{name}({keyword.key}=...)")
            arguments[keyword.key] = _constant(keyword.value, name)
        return handler(arguments, node)

    def ids(self, content: Any) -> tuple[str, ...]:
        if not isinstance(content, str):
            raise Unsupported("a content id is text, e.g. 'evaluation/case-study'")
        return self.scope.content_ids.get(content, (content,))

    def _engaged(self, kind: str, arguments: dict[str, Any]) -> ColumnElement[bool]:
        """A real `kind` event on an email (on one of a piece's ids, with `content`): the
        summary's rows of the person (content NO_CONTENT: no message)."""
        content = arguments.get("content")
        on = (
            Engaged.content_id > NO_CONTENT
            if content is None
            else Engaged.content_id.in_(self.ids(content))
        )
        return self._summary(kind, on)

    def _summary(self, kind: str, *tests: ColumnElement[bool]) -> ColumnElement[bool]:
        """EXISTS a row of the engagement summary of the person, of `kind`, where `tests`
        hold (machines' events are never in it)."""
        return exists(
            select(Engaged.contact_id).where(
                Engaged.contact_id == Contact.id, Engaged.kind == kind, *tests
            )
        )

    def clicked(self, arguments: dict[str, Any], _node: nodes.Call) -> ColumnElement[bool]:
        return self._engaged("email_clicked", arguments)

    def opened(self, arguments: dict[str, Any], _node: nodes.Call) -> ColumnElement[bool]:
        return self._engaged("email_opened", arguments)

    def received(self, arguments: dict[str, Any], _node: nodes.Call) -> ColumnElement[bool]:
        if "content" not in arguments:
            raise Unsupported("received() needs a content id")
        return exists(
            select(Message.id).where(
                Message.contact_id == Contact.id,
                Message.status.in_(RECEIVED_STATUSES),
                Message.content_id.in_(self.ids(arguments["content"])),
            )
        )

    def did(self, arguments: dict[str, Any], _node: nodes.Call) -> ColumnElement[bool]:
        kind = arguments.get("kind")
        if not isinstance(kind, str):
            raise Unsupported("did() needs an event kind, e.g. did('webinar_attended')")
        within = arguments.get("within")
        if within is None:
            return self._summary(kind)
        try:
            since = self.scope.now - parse_duration(within)
        except (ValueError, TypeError):
            raise Unsupported(f"did(..., within={within!r}): not a duration") from None
        return self._summary(kind, Engaged.last_at >= since)


def _cheap_first(a: Truth, b: Truth) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    return (b.holds, a.holds) if b.cost < a.cost else (a.holds, b.holds)


def _stored_bound(left: Operand, op: str, right: Operand) -> ColumnElement[bool] | None:
    """A cheap test on the stored engagement implied by a bound on the decayed one, put
    first so the decay is computed only for those it may concern: decay moves a score
    towards 0, so `engagement >= 20` needs a stored score of 20 or more, and
    `engagement <= -5` one of -5 or less."""
    if right.shown == "engagement" and left.is_constant:
        left, op, right = right, _FLIP[op], left
    if left.shown != "engagement" or not right.is_constant:
        return None
    value = float(right.constant)
    stored = Contact.engagement
    if op in ("gt", "gteq") and value > 0:
        return stored > value if op == "gt" else stored >= value
    if op in ("lt", "lteq") and value < 0:
        return stored < value if op == "lt" else stored <= value
    return None


def _kind_of(value: Any) -> str | None:
    if value is None:
        return _NULL
    if isinstance(value, bool):
        return _BOOL
    if isinstance(value, (int, float)):
        return _NUMBER
    if isinstance(value, str):
        return _TEXT
    return None


def _constant(node: nodes.Expr, function: str) -> Any:
    if not isinstance(node, nodes.Const):
        raise Unsupported(f"{function}() takes constants (a content id, an event kind, 7d)")
    return node.value


def _is_days(node: nodes.Expr) -> bool:
    return isinstance(node, nodes.Name) and node.name == "days_in_stage"


def _contact_field(node: nodes.Node) -> str | None:
    owner = getattr(node, "node", None)
    if not (isinstance(owner, nodes.Name) and owner.name == "contact"):
        return None
    if isinstance(node, nodes.Getattr):
        return str(node.attr)
    if (
        isinstance(node, nodes.Getitem)
        and isinstance(node.arg, nodes.Const)
        and isinstance(node.arg.value, str)
    ):
        return node.arg.value
    return None


def _shown(node: nodes.Node) -> str:
    """A construct named as a marketer would recognise it."""
    labels: dict[type[nodes.Node], str] = {
        nodes.Filter: "a filter (|...)",
        nodes.Add: "arithmetic (+)",
        nodes.Sub: "arithmetic (-)",
        nodes.Mul: "arithmetic (*)",
        nodes.Div: "arithmetic (/)",
        nodes.FloorDiv: "arithmetic (//)",
        nodes.Mod: "arithmetic (%)",
        nodes.Pow: "arithmetic (**)",
        nodes.Concat: "concatenation (~)",
        nodes.CondExpr: "an inline if",
        nodes.Getattr: "an attribute",
        nodes.Getitem: "an index",
        nodes.Call: "a call",
        nodes.Name: "a name",
    }
    if isinstance(node, nodes.Filter):
        return f"the filter |{node.name}"
    if isinstance(node, nodes.Getattr):
        owner = node.node
        if isinstance(owner, nodes.Name):
            return f"{owner.name}.{node.attr}"
    if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Getattr):
        return f"the method .{node.node.attr}()"
    return labels.get(type(node), type(node).__name__)
