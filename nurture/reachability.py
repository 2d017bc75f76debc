"""Tracks nobody can reach: a phase's steps that a goal or the hand-off cuts off.

A workflow's decision track starts when a person moves to a stage whose phase is decision.
If the same move ends the workflow (the stage is a goal, the hand-off ends every nurture
there, or the event that makes the move is a goal event), the track never sends: people who
arrive that way get nothing of it. `unreachable` says so for each path, pure (settings and
workflows in, findings out); `warnings` places each finding at its file and line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from nurture.config import Settings
from nurture.problems import Problem
from nurture.workflows import Workflow
from nurture.yamlfile import Loc, parse_yaml

SETTINGS = "nurture.yaml"


@dataclass(frozen=True)
class Finding:
    workflow: str
    file: str  # SETTINGS, or the workflow's id (the finding is in its file)
    loc: Loc
    message: str


def unreachable(settings: Settings, workflows: Mapping[str, Workflow]) -> list[Finding]:
    """Every way into a phase's track that the same move closes, and every track closed on
    all sides."""
    handoff = settings.handoff
    found: list[Finding] = []
    for wid, workflow in workflows.items():
        goals = workflow.goals
        for phase in workflow.phases:
            stages = [s for s in settings.stages if s.phase == phase]
            if not stages:
                found.append(
                    Finding(
                        wid, wid, ("tracks", phase), f"no stage has phase {phase}: nobody gets it"
                    )
                )
                continue
            open_ways = 0
            for stage in stages:
                if stage.name in goals.stages:
                    found.append(
                        Finding(
                            wid,
                            wid,
                            ("goals", "stages", goals.stages.index(stage.name)),
                            f"reaching {stage.name} ends this workflow, so its {phase} track "
                            f"never sends to people at {stage.name}",
                        )
                    )
                    continue
                if handoff is not None and handoff.end_nurture and handoff.stage == stage.name:
                    found.append(
                        Finding(
                            wid,
                            SETTINGS,
                            ("handoff", "end_nurture"),
                            f"reaching {stage.name} hands the person to sales and ends every "
                            f"workflow, so the {phase} track of {wid} never sends to people "
                            f"at {stage.name}",
                        )
                    )
                    continue
                for kind in stage.enter_on:
                    if kind in goals.events:
                        found.append(
                            Finding(
                                wid,
                                wid,
                                ("goals", "events", goals.events.index(kind)),
                                f"{kind} ends this workflow on the very move to {stage.name} "
                                f"(stage {stage.name} enter_on) that starts its {phase} track: "
                                f"people who reach {stage.name} by {kind} never get {phase} "
                                "content",
                            )
                        )
                ways_in = [k for k in stage.enter_on if k not in goals.events]
                closed = bool(stage.enter_on) and not ways_in and stage.enter_when is None
                if not closed:
                    open_ways += 1
            if not open_ways:
                found.append(
                    Finding(
                        wid,
                        wid,
                        ("tracks", phase),
                        f"the {phase} track is unreachable: every move that starts it also "
                        "ends this workflow",
                    )
                )
    return found


def warnings(root: Path, settings: Settings, workflows: Mapping[str, Workflow]) -> list[Problem]:
    """The findings, each at the line of its field in its file."""
    findings = unreachable(settings, workflows)
    documents = {}
    out = []
    for finding in findings:
        if finding.file == SETTINGS:
            path = root / SETTINGS
        else:
            candidates = sorted((root / "workflows").glob(f"{finding.file}.y*ml"))
            path = candidates[0] if candidates else root / "workflows" / f"{finding.file}.yaml"
        display = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
        if display not in documents and path.is_file():
            documents[display] = parse_yaml(path.read_text(encoding="utf-8"), display)
        document = documents.get(display)
        if document is None:
            out.append(Problem(display, None, finding.message))
        else:
            out.append(document.problem(finding.loc, finding.message))
    return sorted(set(out))
