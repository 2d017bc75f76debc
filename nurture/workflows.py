"""Workflow files (`workflows/*.yaml`) as typed objects; errors carry file:line and the field."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator
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
)
from nurture.phases import PHASES, Phase
from nurture.problems import ProjectError
from nurture.yamlfile import parse_yaml, validate


def _context(info: ValidationInfo) -> dict[str, Any]:
    return info.context or {}


class Step(Strict):
    content: str = Field(description="Content id: <phase>/<file name without .mjml>.")
    wait: Duration = Field(
        default=timedelta(0), description="Wait after the previous email of this workflow."
    )
    when: Condition | None = Field(
        default=None, description="Send only if this holds when the step comes due."
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


class Entry(Strict):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={"anyOf": [{"required": [k]} for k in ("stages", "events", "when")]},
    )

    stages: list[StageName] = Field(default_factory=list, description="Enter when in one of these.")
    events: list[EventKind] = Field(
        default_factory=list, description="Enter when one of these events happens."
    )
    when: Condition | None = None

    @model_validator(mode="after")
    def _something(self) -> Entry:
        if not (self.stages or self.events or self.when):
            raise ValueError("say who enters: stages, events or when (a condition)")
        return self


class Goals(Strict):
    stages: list[StageName] = Field(
        default_factory=list, description="Reaching one ends the workflow."
    )
    events: list[EventKind] = Field(default_factory=list, description="One of these ends it.")


class Workflow(Strict):
    id: SkipJsonSchema[str] = ""
    name: str = Field(min_length=1)
    description: str | None = None
    enter: Entry
    goals: Goals = Goals()
    tracks: dict[Phase, list[Step]] = Field(description="One track of steps per content phase.")
    caps: CapsOverride | None = Field(
        default=None, description="Caps for this workflow's emails, over the project's."
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
    def _not_empty(cls, value: dict[Phase, list[Step]]) -> dict[Phase, list[Step]]:
        if not any(value.values()):
            raise ValueError(
                "every track is empty; add steps under discovery, evaluation or decision"
            )
        return value

    def track(self, phase: Phase | None) -> list[Step]:
        return self.tracks.get(phase, []) if phase else []

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
    doc = parse_yaml(path.read_text(encoding="utf-8"), display)
    workflow = validate(Workflow, doc, context)
    content_phases: dict[str, str] = context.get("content", {})
    problems = []
    seen: set[str] = set()
    for phase, steps in workflow.tracks.items():
        for index, step in enumerate(steps):
            loc = ("tracks", phase, index, "content")
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
            if step.content in seen:
                problems.append(doc.problem(loc, f"{step.content} appears twice in this workflow"))
            seen.add(step.content)
    if problems:
        raise ProjectError(problems)
    return workflow.model_copy(update={"id": path.stem})
