"""Workflow files (`workflows/*.yaml`) as typed objects; errors carry file:line and the field."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    Tag,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from nurture.config import (
    Caps,
    CapsOverride,
    Condition,
    Duration,
    EventKind,
    Settings,
    StageName,
    Strict,
    check_contact_fields,
)
from nurture.core import engagement
from nurture.core.holdouts import SHARE_PATTERN, format_share, parse_share
from nurture.durations import parse_duration
from nurture.phases import PHASES, Phase
from nurture.problems import ProjectError, unknown_segment
from nurture.yamlfile import format_loc, parse_yaml


def _context(info: ValidationInfo) -> dict[str, Any]:
    return info.context or {}


#: A step id or a workflow id: letters, digits, and `_ . / -` after the first character.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_./-]*$"


#: `best`: at the local hour the person really engages, within 24 h of when the email was
#: due (nurture/core/sendtime.py); `due`: as soon as its wait runs out and the caps allow.
SendTime = Literal["best", "due"]


class Step(Strict):
    id: str | None = Field(
        default=None,
        max_length=100,
        pattern=ID_PATTERN,
        description=(
            "The step's own name, unique in its workflow (default: its content id). People's "
            "places are kept by it, so an edit moves nobody who is at a step that keeps its id."
        ),
    )
    content: str = Field(description="Content id: <phase>/<file name without .mjml>.")
    wait: Duration = Field(
        default=timedelta(0), description="Wait after the previous email of this workflow."
    )
    when: JourneyCondition | None = Field(
        default=None, description="Send only if this holds when the step comes due."
    )
    send_time: SendTime | None = Field(
        default=None, description="When this email goes (default: the workflow's send_time)."
    )

    @field_validator("content")
    @classmethod
    def _known(cls, value: str, info: ValidationInfo) -> str:
        known: dict[str, str] = _context(info).get("content", {})
        if known and value not in known:
            close = [c for c in known if c.split("/")[-1] == value.split("/")[-1]]
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ValueError(f"unknown content {value!r}{hint}")
        return value

    @property
    def key(self) -> str:
        """The step's id: explicit, or its content id."""
        return self.id or self.content

    kind: ClassVar[str] = "send"


def _journey_condition(source: str, info: ValidationInfo) -> str:
    context = _context(info)
    names = set(context.get("names", ())) or set(engagement.BASE_NAMES)
    checked = engagement.check(
        source,
        names | engagement.FUNCTIONS,
        content=context.get("content") or None,
        events=context.get("event_kinds"),
    )
    fields = context.get("contact_fields")
    if fields is not None:
        check_contact_fields(checked, fields)
    return checked


#: A condition of a journey step: scores, profile, and what the person did
#: (`clicked('evaluation/case-study')`, `opened(...)`, `received(...)`, `did(kind, within='7d')`).
JourneyCondition = Annotated[str, AfterValidator(_journey_condition)]


def _step_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        for key, kind in (
            ("content", "send"),
            ("if", "branch"),
            ("wait_until", "wait_until"),
            ("split", "split"),
            ("action", "action"),
        ):
            if key in value:
                return kind
        return None
    return getattr(value, "kind", None)


AnyStep = Annotated[
    Annotated["Step", Tag("send")]
    | Annotated["Branch", Tag("branch")]
    | Annotated["WaitFor", Tag("wait_until")]
    | Annotated["Split", Tag("split")]
    | Annotated["ActionStep", Tag("action")],
    Discriminator(
        _step_kind,
        custom_error_type="step_kind",
        custom_error_message=(
            "a step needs content:, if:, wait_until:, split: or action: (and only one of them)"
        ),
    ),
]

_ID_FIELD = Field(
    max_length=100,
    pattern=ID_PATTERN,
    description="The step's own name, unique in its workflow (people's places are kept by it).",
)


class _Compound(Strict):
    #: Not an email: what `outline` (nurture/core/versions.py) records as its content.
    content: ClassVar[str] = ""
    id: str = _ID_FIELD
    wait: Duration = Field(
        default=timedelta(0), description="Wait after the previous email of this workflow."
    )

    @property
    def key(self) -> str:
        return self.id

    def arms(self) -> list[tuple[str, list[Node]]]:
        """(arm key, its steps), in the order `Workflow.flat` lists them."""
        return []


class Branch(_Compound):
    """Take `then:` if the condition holds when the step comes due, else `else:`."""

    kind: ClassVar[str] = "branch"
    if_: JourneyCondition = Field(alias="if", description="The condition deciding the way.")
    then: list[AnyStep] = Field(default_factory=list, description="Steps when it holds.")
    else_: list[AnyStep] = Field(
        default_factory=list, alias="else", description="Steps when it does not."
    )

    def arms(self) -> list[tuple[str, list[Node]]]:
        return [(f"{self.id}#then", list(self.then)), (f"{self.id}#else", list(self.else_))]


class Until(Strict):
    event: EventKind = Field(description="The event kind waited for (done by a person).")
    where: JourneyCondition | None = Field(
        default=None,
        description="Only an event for which this holds counts (`event` holds its properties).",
    )
    timeout: Duration = Field(description="How long to wait before taking `else:`.")
    counts_from: Literal["step", "entry"] = Field(
        default="step",
        description=(
            "step: only an event after the person reached this step counts; entry: one since "
            "they entered the workflow counts too (they attended before reaching it, say)."
        ),
    )

    @field_validator("timeout")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("a wait_until needs a timeout longer than 0")
        return value


class WaitFor(_Compound):
    """Wait (from arriving at the step) for an event: `then:` when it comes (the person is
    planned at once), `else:` when `timeout` runs out first."""

    kind: ClassVar[str] = "wait_until"
    wait_until: Until
    then: list[AnyStep] = Field(default_factory=list, description="Steps when the event came.")
    else_: list[AnyStep] = Field(
        default_factory=list, alias="else", description="Steps when the timeout ran out."
    )

    def arms(self) -> list[tuple[str, list[Node]]]:
        return [(f"{self.id}#then", list(self.then)), (f"{self.id}#else", list(self.else_))]


class SplitPath(Strict):
    id: str = Field(max_length=40, pattern=ID_PATTERN, description="The path's name (reported).")
    weight: int = Field(default=1, ge=1, le=1000, description="Relative share of people.")
    steps: list[AnyStep] = Field(default_factory=list)


class Split(_Compound):
    """An A/B test of paths: each person takes one path, chosen by a stable hash of (contact,
    workflow, step id) in proportion to the weights, and keeps it."""

    kind: ClassVar[str] = "split"
    split: list[SplitPath] = Field(min_length=2, description="The paths, at least two.")

    @field_validator("split")
    @classmethod
    def _distinct(cls, value: list[SplitPath]) -> list[SplitPath]:
        names = [p.id for p in value]
        if len(set(names)) != len(names):
            raise ValueError("each path of a split needs its own id")
        return value

    def arms(self) -> list[tuple[str, list[Node]]]:
        return [(f"{self.id}#{p.id}", list(p.steps)) for p in self.split]


class Webhook(Strict):
    kind: Literal["webhook"]
    url: str = Field(
        pattern=r"^https?://",
        max_length=2000,
        description=(
            "Gets a JSON POST signed as the sales hand-off is (X-Nurture-Signature, with "
            "handoff.webhook_secret or NURTURE_HANDOFF_SECRET), retried with its backoff."
        ),
    )


class Notify(Strict):
    kind: Literal["notify"]
    to: str = Field(
        description="`owner` (the contact's owner) or an address, e.g. sales@example.com.",
        pattern=r"^(owner|[^@\s]+@[^@\s]+\.[^@\s]+)$",
    )
    subject: str = Field(min_length=1, max_length=200)


class SetField(Strict):
    kind: Literal["set"]
    field: str = Field(min_length=1, max_length=64, description="A contact field, or `tags`.")
    value: Any = None


class MoveStage(Strict):
    kind: Literal["move_stage"]
    to: StageName
    reason: str = Field(min_length=1, max_length=300)


class ActionStep(_Compound):
    """Do something once for this person at this step (never twice per enrollment)."""

    kind: ClassVar[str] = "action"
    action: Webhook | Notify | SetField | MoveStage = Field(discriminator="kind")


Node = Step | Branch | WaitFor | Split | ActionStep
Compound = Branch | WaitFor | Split


@dataclass(frozen=True)
class Arm:
    """Where one way of a branch, a wait_until or a split starts (`<step id>#then`,
    `#else`, `#<path id>`): the place of someone who took it and has done no step of it yet."""

    key: str
    parent: str
    content: ClassVar[str] = ""
    wait: ClassVar[timedelta] = timedelta(0)


def walk(steps: list[Node]) -> Iterator[Node | Arm]:
    """Every step and arm in the order people meet them (depth first)."""
    for step in steps:
        yield step
        if isinstance(step, _Compound):
            for key, inner in step.arms():
                yield Arm(key, step.id)
                yield from walk(inner)


def walk_located(
    steps: list[Node], loc: tuple[str | int, ...], ways: tuple[tuple[str, str], ...] = ()
) -> Iterator[tuple[Node, tuple[str | int, ...], tuple[tuple[str, str], ...]]]:
    """Every step with its place in the file (for file:line problems) and the ways that
    lead to it ((branch, wait or split id, the way), outermost first)."""
    for index, step in enumerate(steps):
        here = (*loc, index)
        yield step, here, ways
        if isinstance(step, (Branch, WaitFor)):
            yield from walk_located(list(step.then), (*here, "then"), (*ways, (step.id, "then")))
            yield from walk_located(list(step.else_), (*here, "else"), (*ways, (step.id, "else")))
        elif isinstance(step, Split):
            for number, path in enumerate(step.split):
                yield from walk_located(
                    list(path.steps), (*here, "split", number, "steps"), (*ways, (step.id, path.id))
                )


def exclusive(a: tuple[tuple[str, str], ...], b: tuple[tuple[str, str], ...]) -> bool:
    """Whether nobody can meet both steps: they lie on different ways of one step."""
    mine = dict(a)
    return any(key in mine and mine[key] != way for key, way in b)


class Entry(Strict):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "anyOf": [{"required": [k]} for k in ("stages", "events", "when", "segment")]
        },
    )

    stages: list[StageName] = Field(default_factory=list, description="Enter when in one of these.")
    events: list[EventKind] = Field(
        default_factory=list, description="Enter when one of these events happens."
    )
    when: Condition | None = None
    segment: str | None = Field(
        default=None,
        description=(
            "Enter when in this segment (segments/<name>.yaml); `nurture enroll WORKFLOW "
            "--segment NAME` enrolls those who are in it already."
        ),
    )

    @field_validator("segment")
    @classmethod
    def _known_segment(cls, value: str | None, info: ValidationInfo) -> str | None:
        known = _context(info).get("segments")
        if value is not None and known is not None and value not in known:
            raise ValueError(unknown_segment(value, known))
        return value

    @model_validator(mode="after")
    def _something(self) -> Entry:
        if not (self.stages or self.events or self.when or self.segment):
            raise ValueError("say who enters: stages, events, when (a condition) or segment")
        return self


class Goals(Strict):
    stages: list[StageName] = Field(
        default_factory=list, description="Reaching one ends the workflow."
    )
    events: list[EventKind] = Field(default_factory=list, description="One of these ends it.")


#: `holdout: 10%`: the share of entrants kept out, as a fraction (nurture/core/holdouts.py).
Share = Annotated[
    float,
    BeforeValidator(parse_share),
    PlainSerializer(format_share, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": SHARE_PATTERN,
            "description": (
                "A stable random share of entrants kept out of this workflow (0% to 50%): "
                "recorded, never emailed by it, the baseline `nurture lift` compares with."
            ),
        }
    ),
]


class Workflow(Strict):
    id: SkipJsonSchema[str] = ""
    #: sha256 of the file's text: the version the engine runs (set when loaded from a file).
    digest: SkipJsonSchema[str] = ""
    text: SkipJsonSchema[str] = ""
    name: str = Field(min_length=1)
    renamed_from: list[str] = Field(
        default_factory=list,
        description=(
            "Earlier ids (file names) of this workflow: the people in them stay in it, at "
            "their place."
        ),
    )
    description: str | None = None
    enter: Entry
    goals: Goals = Goals()
    tracks: dict[Phase, list[AnyStep]] = Field(description="One track of steps per content phase.")
    reenter: str = Field(
        default="never",
        pattern=r"^(never|always|after\s*(?:\d+\s*[wdhms]\s*)+)$",
        description=(
            "Whether someone who left (a goal, an exit) enters again when they meet the entry "
            "again: never, always, or `after 30d` (at least that long after they left)."
        ),
    )
    caps: CapsOverride | None = Field(
        default=None, description="Caps for this workflow's emails, over the project's."
    )
    holdout: Share = Field(default=0.0, json_schema_extra={"default": "0%"})
    send_time: SendTime = Field(
        default="due",
        description=(
            "best: each email at the local hour the person really opens and clicks (the "
            "project's best hour for people without any), within the caps and never more "
            "than 24 h after it was due; due: when its wait runs out. A step may say its own."
        ),
    )

    @field_validator("caps", mode="after")
    @classmethod
    def _caps_fit(cls, value: CapsOverride | None, info: ValidationInfo) -> CapsOverride | None:
        project: Caps | None = _context(info).get("caps")
        if value is not None and project is not None:
            project.merged(value)
        return value

    @field_validator("tracks", mode="after")
    @classmethod
    def _not_empty(cls, value: dict[Phase, list[Node]]) -> dict[Phase, list[Node]]:
        if not any(value.values()):
            raise ValueError(
                "every track is empty; add steps under discovery, evaluation or decision"
            )
        return value

    @field_validator("renamed_from", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("renamed_from", mode="after")
    @classmethod
    def _ids(cls, value: list[str]) -> list[str]:
        for old in value:
            if not re.match(ID_PATTERN, old):
                raise ValueError(f"{old!r} is not a workflow id (a file name without .yaml)")
        return value

    def track(self, phase: Phase | None) -> list[Node]:
        return list(self.tracks.get(phase, [])) if phase else []

    def flat(self, phase: Phase | None) -> list[Node | Arm]:
        """The track's steps and arms in the order people meet them (depth first: a
        branch, its `then` arm and steps, its `else` arm and steps, what follows): the order
        nurture/core/versions.py carries places by. The planner reads the tree itself."""
        return self._flats.get(phase, []) if phase else []

    @cached_property
    def _flats(self) -> dict[str, list[Node | Arm]]:
        return {phase: list(walk(list(steps))) for phase, steps in self.tracks.items()}

    def sends(self, phase: Phase | None) -> list[Step]:
        """The track's emails, nested ones included."""
        return [s for s in self.flat(phase) if isinstance(s, Step)]

    def may_reenter(self, ended_at: datetime | None, now: datetime) -> bool:
        """Whether someone who left this workflow at `ended_at` may enter it again now."""
        if self.reenter == "never" or ended_at is None:
            return False
        if self.reenter == "always":
            return True
        return now - ended_at >= parse_duration(self.reenter.removeprefix("after").strip())

    @cached_property
    def journeys(self) -> bool:
        """Whether a step asks what people did (the engine then reads their engagement)."""
        for phase in self.tracks:
            for step in self.flat(phase):
                if not isinstance(step, Step):
                    return True
                if step.when and any(f"{f}(" in step.when for f in engagement.FUNCTIONS):
                    return True
        return False

    def best_time(self, step: Step) -> bool:
        """Whether `step` goes at the person's best hour (`send_time: best`)."""
        return (step.send_time or self.send_time) == "best"

    @cached_property
    def uses_send_time(self) -> bool:
        """Whether some email of this workflow goes at the person's best hour."""
        return bool(self._timed_phases)

    def times_sends(self, phase: Phase | None) -> bool:
        """Whether an email of the phase's track goes at the person's best hour (only then
        does the engine read when a person engaged)."""
        return phase in self._timed_phases

    @cached_property
    def _timed_phases(self) -> frozenset[str]:
        return frozenset(
            phase for phase in self.tracks if any(self.best_time(s) for s in self.sends(phase))
        )

    @cached_property
    def waits_on(self) -> frozenset[str]:
        """The event kinds a `wait_until` of this workflow waits for."""
        return frozenset(
            s.wait_until.event
            for phase in self.tracks
            for s in self.flat(phase)
            if isinstance(s, WaitFor)
        )

    def reads_engagement(self, phase: Phase | None) -> bool:
        """Whether a step of the phase's track asks what people did: a wait_until, or a
        condition calling clicked(), opened() or did() (only then does the engine read a
        person's engagement; a split, an action or a score condition needs none)."""
        return phase in self._engaged_phases

    @cached_property
    def _engaged_phases(self) -> frozenset[str]:
        calls = tuple(f"{f}(" for f in engagement.FUNCTIONS if f != "received")
        found = set()
        for phase in self.tracks:
            for step in self.flat(phase):
                condition = (
                    step.when
                    if isinstance(step, Step)
                    else step.if_
                    if isinstance(step, Branch)
                    else None
                )
                if isinstance(step, WaitFor) or any(c in (condition or "") for c in calls):
                    found.add(phase)
        return frozenset(found)

    @property
    def phases(self) -> list[Phase]:
        return [p for p in PHASES if self.tracks.get(p)]


def workflow_context(settings: Settings, content_phases: dict[str, str]) -> dict[str, Any]:
    return {
        "names": settings.condition_names,
        "stages": settings.stage_names,
        "event_kinds": settings.event_kinds,
        "content": content_phases,
        "caps": settings.caps,
    }


def load_workflow(path: Path, display: str, context: dict[str, Any]) -> Workflow:
    text = path.read_text(encoding="utf-8")
    doc = parse_yaml(text, display)
    try:
        workflow = Workflow.model_validate(doc.data, context=dict(context))
    except ValidationError as exc:
        # the same problems as yamlfile.validate, without the step kind pydantic puts in
        # each location (tracks.discovery[2].branch.if -> tracks.discovery[2].if)
        problems = []
        for error in exc.errors(include_url=False):
            message = error["msg"].removeprefix("Value error, ")
            problems.append(doc.problem(_without_tags(error["loc"]), message))
        raise ProjectError(problems) from None
    content_phases: dict[str, str] = context.get("content", {})
    problems = []
    seen: dict[str, list[tuple[tuple[str, str], ...]]] = {}
    ids: dict[str, str] = {}
    for phase, steps in workflow.tracks.items():
        for step, here, ways in walk_located(list(steps), ("tracks", phase)):
            where = format_loc(here)
            if step.key in ids:
                problems.append(
                    doc.problem(
                        (*here, "id" if step.id else "content"),
                        f"step id {step.key!r} is already the id of step {ids[step.key]}; "
                        "give each step its own id (ids are unique across nested steps too)",
                    )
                )
            ids.setdefault(step.key, where)
            problems.extend(doc.problem(loc, text) for loc, text in _mistakes(step, here))
            if not isinstance(step, Step):
                continue
            loc = (*here, "content")
            actual = content_phases.get(step.content)
            if actual != phase:
                problems.append(
                    doc.problem(
                        loc,
                        (
                            f"{step.content} is {actual} content; the {phase} track may only send "
                            f"{phase} content"
                        ),
                    )
                )
            if any(not exclusive(ways, other) for other in seen.get(step.content, [])):
                problems.append(
                    doc.problem(
                        loc,
                        f"{step.content} appears twice in this workflow (only different ways "
                        "of one branch, wait or split may send the same piece)",
                    )
                )
            seen.setdefault(step.content, []).append(ways)
    if path.stem in workflow.renamed_from:
        problems.append(doc.problem(("renamed_from",), "a workflow cannot be renamed from itself"))
    if problems:
        raise ProjectError(problems)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return workflow.model_copy(update={"id": path.stem, "digest": digest, "text": text})


_TAGS = frozenset({"send", "branch", "wait_until", "split", "action"})


def _without_tags(loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    return tuple(
        part
        for i, part in enumerate(loc)
        if not (part in _TAGS and i and isinstance(loc[i - 1], int))
    )


def _mistakes(step: Node, here: tuple[str | int, ...]) -> list[tuple[tuple[str | int, ...], str]]:
    """What makes a journey step pointless: a way nobody takes, a branch with no way out."""
    found: list[tuple[tuple[str | int, ...], str]] = []
    if isinstance(step, Branch):
        constant = engagement.constant(step.if_)
        if constant is not None:
            dead = "else" if constant else "then"
            found.append(
                ((*here, "if"), f"the condition is always {constant}: its {dead} is unreachable")
            )
        if not step.then and not step.else_:
            found.append((here, "a branch with no way out: give it then: or else: steps"))
    elif isinstance(step, WaitFor) and not step.then and not step.else_:
        found.append((here, "a wait_until with no way out: give it then: or else: steps"))
    elif isinstance(step, Split) and not any(p.steps for p in step.split):
        found.append((here, "a split with no steps in any path"))
    return found


for _model in (Step, Branch, WaitFor, SplitPath, Split, ActionStep, Workflow):
    _model.model_rebuild()
