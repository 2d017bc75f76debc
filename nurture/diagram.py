"""A workflow track drawn as SVG: pure (a loaded workflow and its numbers in, escaped markup
out), no script and nothing fetched, so the dashboard can inline it.

Each track is one lane, read top to bottom: its steps as boxes (emails, branches, waits for
an event, splits, actions) and, under a branch, a wait_until or a split, each of its ways
indented with how many people took it. Every box carries its numbers as data attributes
(`data-step`, `data-here`, `data-sent`, `data-opened`, `data-clicked`; a way: `data-way`,
`data-took`) so tests read what is drawn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from html import escape
from typing import Protocol

from nurture.durations import format_duration
from nurture.workflows import Branch, Node, Split, Step, WaitFor, Workflow

WIDTH = 440
STEP_HEIGHT = 46
WAY_HEIGHT = 24
GAP = 8
INDENT = 20
#: Roughly how wide a character of the 12px labels is (to cut labels that would not fit).
CHAR = 6.6

#: (fill, stroke) per kind of step: light fills, dark text (contrast above 7:1).
COLOURS = {
    "send": ("#e3f0fb", "#2680c2"),
    "branch": ("#fff3c4", "#9f580a"),
    "wait_until": ("#e3f9e5", "#0b6e4f"),
    "split": ("#f3e8ff", "#6b3fa0"),
    "action": ("#f0f4f8", "#52606d"),
}
KIND_WORDS = {
    "send": "email",
    "branch": "branch",
    "wait_until": "wait",
    "split": "split",
    "action": "action",
}


class StepNumbers(Protocol):
    """What is drawn per step (nurture.reports.StepStats has it)."""

    @property
    def here(self) -> int: ...
    @property
    def sent(self) -> int: ...
    @property
    def opened(self) -> int: ...
    @property
    def clicked(self) -> int: ...
    @property
    def ways(self) -> tuple[tuple[str, int], ...]: ...


@dataclass(frozen=True)
class _Row:
    depth: int
    kind: str  # a step kind, or "way"
    key: str
    title: str
    detail: str
    attrs: tuple[tuple[str, str], ...]
    height: int


def label(step: Node) -> str:
    """A step in a few words: its content, its condition, what it waits for, its action."""
    if isinstance(step, Step):
        return step.content
    if isinstance(step, Branch):
        return f"if {step.if_}"
    if isinstance(step, WaitFor):
        until = step.wait_until
        where = f" where {until.where}" if until.where else ""
        return f"until {until.event}{where}, at most {format_duration(until.timeout)}"
    if isinstance(step, Split):
        return "paths " + " / ".join(f"{p.id} ({p.weight})" for p in step.split)
    action = step.action
    if action.kind == "webhook":
        return f"webhook to {action.url}"
    if action.kind == "notify":
        return f"note to {action.to}: {action.subject}"
    if action.kind == "set":
        return f"set {action.field} to {action.value!r}"
    return f"move stage to {action.to}: {action.reason}"


def _way_words(step: Node, way: str) -> str:
    if isinstance(step, WaitFor):
        return f"then: {step.wait_until.event} came" if way == "then" else "else: timed out"
    if isinstance(step, Split):
        weight = next((p.weight for p in step.split if p.id == way), 1)
        return f"path {way} (weight {weight})"
    return f"{way}: the condition {'held' if way == 'then' else 'did not hold'}"


def _rows(steps: Sequence[Node], numbers: Mapping[str, StepNumbers], depth: int) -> list[_Row]:
    rows: list[_Row] = []
    for step in steps:
        found = numbers.get(step.key)
        here = found.here if found else 0
        facts = [f"{here} here now"]
        attrs = [("data-step", step.key), ("data-here", str(here))]
        if isinstance(step, Step):
            sent, opened, clicked = (
                (found.sent, found.opened, found.clicked) if found else (0, 0, 0)
            )
            facts += [f"{sent} sent", f"{opened} opened", f"{clicked} clicked"]
            attrs += [
                ("data-sent", str(sent)),
                ("data-opened", str(opened)),
                ("data-clicked", str(clicked)),
            ]
        if step.wait > timedelta(0):
            facts.append(f"after {format_duration(step.wait)}")
        rows.append(
            _Row(
                depth,
                step.kind,
                step.key,
                f"{KIND_WORDS[step.kind]} · {label(step)}",
                " · ".join(facts),
                tuple(attrs),
                STEP_HEIGHT,
            )
        )
        if isinstance(step, (Branch, WaitFor, Split)):
            took = dict(found.ways) if found else {}
            for arm, inner in step.arms():
                way = arm.split("#", 1)[1]
                count = took.get(way, 0)
                rows.append(
                    _Row(
                        depth + 1,
                        "way",
                        arm,
                        f"{_way_words(step, way)}: {count} took it",
                        "",
                        (("data-way", arm), ("data-took", str(count))),
                        WAY_HEIGHT,
                    )
                )
                rows.extend(_rows(inner, numbers, depth + 2))
    return rows


def _cut(text: str, room: float) -> str:
    most = max(int(room / CHAR), 4)
    return text if len(text) <= most else text[: most - 1] + "…"


def track_svg(workflow: Workflow, phase: str, numbers: Mapping[str, StepNumbers]) -> str:
    """The `phase` track of `workflow` as an inline SVG (role img, a title and a label)."""
    rows = _rows(workflow.track(phase), numbers, 0)  # type: ignore[arg-type]
    height = sum(r.height + GAP for r in rows) + GAP
    name = f"The {phase} track of {workflow.name}"
    summary = f"{name}: {sum(r.kind != 'way' for r in rows)} steps, top to bottom"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{escape(summary)}" '
        f'viewBox="0 0 {WIDTH} {height}" width="100%" data-phase="{escape(phase)}" '
        f'class="diagram"><title>{escape(summary)}</title>'
    ]
    y = GAP
    for row in rows:
        x = row.depth * INDENT // 2 + 2
        room = WIDTH - x - 14
        attrs = "".join(f' {k}="{escape(v)}"' for k, v in row.attrs)
        if row.kind == "way":
            parts.append(
                f"<g{attrs}><title>{escape(row.title)}</title>"
                f'<path d="M{x - 6} {y - GAP} V{y + 12} H{x + 2}" fill="none" '
                f'stroke="#9aa5b1" stroke-width="1.5"/>'
                f'<text x="{x + 6}" y="{y + 16}" font-size="12" font-style="italic" '
                f'fill="#1f2933">{escape(_cut(row.title, room))}</text></g>'
            )
        else:
            fill, stroke = COLOURS[row.kind]
            shape = (
                f'<rect x="{x}" y="{y}" width="{WIDTH - x - 4}" height="{row.height}" rx="6" '
                f'fill="{fill}" stroke="{stroke}" stroke-width="1.5"/>'
            )
            parts.append(
                f'<g{attrs} data-kind="{row.kind}"><title>{escape(row.title)}: '
                f"{escape(row.detail)}</title>{shape}"
                f'<text x="{x + 8}" y="{y + 18}" font-size="12" font-weight="600" '
                f'fill="#1f2933">{escape(_cut(row.title, room))}</text>'
                f'<text x="{x + 8}" y="{y + 36}" font-size="12" fill="#1f2933">'
                f"{escape(_cut(row.detail, room))}</text></g>"
            )
        y += row.height + GAP
    parts.append("</svg>")
    return "".join(parts)


def workflow_svgs(workflow: Workflow, numbers: Mapping[str, StepNumbers]) -> list[tuple[str, str]]:
    """(phase, its SVG) for every track of `workflow` that has steps, in phase order."""
    return [(phase, track_svg(workflow, phase, numbers)) for phase in workflow.phases]
