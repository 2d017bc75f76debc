"""What a person did, as journey conditions ask it: `clicked('evaluation/case-study')`,
`opened(...)`, `received(...)`, `did('webinar_attended', within='7d')`.

Pure: the engine reads one `Engagement` per person in its history read (real engagement
only: events a machine made, such as a privacy proxy's open or a link scanner's click, are
never in it) and the planner evaluates conditions against it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import field
from datetime import datetime
from typing import Any

from jinja2 import nodes

from nurture import expressions
from nurture.core.values import value
from nurture.durations import parse_duration

BASE_NAMES = expressions.BASE_NAMES
#: Functions a journey condition may call.
FUNCTIONS = frozenset({"clicked", "opened", "received", "did"})
_CONTENT_FUNCTIONS = ("clicked", "opened", "received")


@value
class Occurred:
    """One real event of a kind some wait_until waits for."""

    kind: str
    at: datetime
    properties: Mapping[str, Any] = field(default_factory=dict)


@value
class Engagement:
    """What one person did, by real people only. Content ids are canonical (renames applied)."""

    opened: frozenset[str] = frozenset()
    clicked: frozenset[str] = frozenset()
    #: event kind -> the last time a person (not a machine) did it.
    last: Mapping[str, datetime] = field(default_factory=dict)
    #: the real events of the kinds some wait_until waits for, oldest first.
    events: Sequence[Occurred] = ()

    def came(
        self, kind: str, after: datetime, where: str | None, variables: Mapping[str, Any]
    ) -> Occurred | None:
        """The first `kind` event at or after `after` for which `where` holds."""
        last = self.last.get(kind)
        if last is None or last < after:
            return None
        for event in self.events:
            if event.kind != kind or event.at < after:
                continue
            if where is None or expressions.evaluate(
                where, {**variables, "event": {"kind": kind, **event.properties}}
            ):
                return event
        if where is None:  # not among the loaded events, but `last` says it came
            return Occurred(kind, last)
        return None


def functions(
    engagement: Engagement, received: Iterable[str], now: datetime
) -> dict[str, Callable[..., bool]]:
    """The condition functions bound to one person at `now`."""
    got = frozenset(received)

    def clicked(content: str | None = None) -> bool:
        return bool(engagement.clicked) if content is None else content in engagement.clicked

    def opened(content: str | None = None) -> bool:
        return bool(engagement.opened) if content is None else content in engagement.opened

    def was_received(content: str) -> bool:
        return content in got

    def did(kind: str, within: str | None = None) -> bool:
        last = engagement.last.get(kind)
        if last is None:
            return False
        return within is None or now - last <= parse_duration(within)

    return {"clicked": clicked, "opened": opened, "received": was_received, "did": did}


def check(
    source: str,
    allowed: Iterable[str],
    *,
    content: Mapping[str, Any] | None,
    events: Iterable[str] | None,
) -> str:
    """Check the names, and the content ids, event kinds and durations the functions get
    when they are spelled out; return `source` unchanged."""
    expressions.check_condition(source, allowed)
    known_events = frozenset(events) if events is not None else None
    tree = expressions._env.parse("{{ (" + source + ") }}")
    for call in tree.find_all(nodes.Call):
        if not isinstance(call.node, nodes.Name) or call.node.name not in FUNCTIONS:
            continue
        name = call.node.name
        args = [a.value for a in call.args if isinstance(a, nodes.Const)]
        if name in _CONTENT_FUNCTIONS and args and content and args[0] not in content:
            raise ValueError(f"{name}({args[0]!r}): unknown content {args[0]!r}")
        if name == "did":
            if not args:
                raise ValueError("did(...) needs an event kind, e.g. did('webinar_attended')")
            if known_events is not None and args[0] not in known_events:
                raise ValueError(
                    f"did({args[0]!r}): unknown event {args[0]!r}; declare it under events: "
                    "in nurture.yaml"
                )
            within = [k.value for k in call.kwargs if k.key == "within"]
            for value in [*args[1:2], *within]:
                if isinstance(value, nodes.Const):
                    value = value.value
                try:
                    parse_duration(value)
                except (ValueError, TypeError):
                    raise ValueError(
                        f"did(..., within={value!r}): not a duration (e.g. 7d, 12h)"
                    ) from None
    return source


def constant(source: str) -> bool | None:
    """True or False when the condition is a constant (one of its ways is unreachable)."""
    tree = expressions._env.parse("{{ (" + source + ") }}")
    output = tree.body[0]
    if isinstance(output, nodes.Output) and len(output.nodes) == 1:
        node = output.nodes[0]
        if isinstance(node, nodes.Const):
            return bool(node.value)
    return None


def waiting_reason(kind: str, until: datetime, step: str) -> str:
    """The hold reason of an enrollment waiting for an event: what `wake` looks for."""
    return f"{WAITS_FOR} {kind} until {until:%Y-%m-%d %H:%M} UTC (wait_until {step})"


#: The start of the hold reason of someone waiting on an event (`waiting_reason`).
WAITS_FOR = "waits for"
