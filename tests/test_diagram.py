"""nurture/diagram.py: a workflow track as SVG, pure; everything written is escaped."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from nurture.diagram import track_svg, workflow_svgs
from nurture.workflows import Workflow

SVG = "{http://www.w3.org/2000/svg}"


@dataclass(frozen=True)
class N:
    here: int = 0
    sent: int = 0
    opened: int = 0
    clicked: int = 0
    ways: tuple[tuple[str, int], ...] = ()


def workflow() -> Workflow:
    return Workflow.model_validate(
        {
            "id": "wf",
            "name": 'Evil <script>alert("x")</script> & co',
            "enter": {"stages": ["lead"]},
            "tracks": {
                "discovery": [
                    {"content": "discovery/a"},
                    {
                        "id": "attended",
                        "wait_until": {"event": "webinar_attended", "timeout": "3d"},
                        "then": [{"content": "discovery/b"}],
                        "else": [
                            {
                                "id": "ab",
                                "split": [
                                    {"id": "left", "weight": 3, "steps": [{"content": "x/<c>"}]},
                                    {"id": "right", "steps": []},
                                ],
                            }
                        ],
                    },
                    {
                        "id": "tell",
                        "action": {"kind": "notify", "to": "owner", "subject": "<b>hi</b>"},
                    },
                ],
                "decision": [{"content": "decision/d", "wait": "2d"}],
            },
        }
    )


def test_a_track_is_one_accessible_svg_with_every_step_and_way() -> None:
    numbers = {
        "discovery/a": N(here=1, sent=9, opened=4, clicked=2),
        "attended": N(here=3, ways=(("then", 5), ("else", 4))),
        "ab": N(ways=(("left", 3), ("right", 1))),
    }
    markup = track_svg(workflow(), "discovery", numbers)
    root = ET.fromstring(markup)  # well-formed XML: nothing unescaped broke it
    assert root.get("role") == "img" and "discovery track of Evil" in (root.get("aria-label") or "")
    assert root.find(f"{SVG}title") is not None
    steps = {g.get("data-step"): g for g in root.iter(f"{SVG}g") if g.get("data-step")}
    assert list(steps) == ["discovery/a", "attended", "discovery/b", "ab", "x/<c>", "tell"]
    a = steps["discovery/a"]
    assert (
        a.get("data-here"),
        a.get("data-sent"),
        a.get("data-opened"),
        a.get("data-clicked"),
    ) == (
        "1",
        "9",
        "4",
        "2",
    )
    assert steps["attended"].get("data-sent") is None and steps["attended"].get("data-here") == "3"
    ways = {
        g.get("data-way"): g.get("data-took") for g in root.iter(f"{SVG}g") if g.get("data-way")
    }
    assert ways == {
        "attended#then": "5",
        "attended#else": "4",
        "ab#left": "3",
        "ab#right": "1",
    }
    text = " ".join("".join(t.itertext()) for t in root.iter(f"{SVG}text"))
    assert "wait · until webinar_attended, at most 3d" in text
    assert "else: timed out: 4 took it" in text and "path left (weight 3): 3 took it" in text
    assert "<script>" not in markup and "<b>" not in markup and "&lt;b&gt;hi" in markup
    # nested steps are indented under their way
    xs = {
        g.get("data-step"): float(rect.get("x", "nan"))
        for g in root.iter(f"{SVG}g")
        if g.get("data-step") and (rect := g.find(f"{SVG}rect")) is not None
    }
    assert xs["discovery/a"] == xs["attended"] < xs["discovery/b"] == xs["ab"] < xs["x/<c>"]


def test_one_lane_per_track_in_phase_order_and_waits_shown() -> None:
    lanes = workflow_svgs(workflow(), {})
    assert [phase for phase, _ in lanes] == ["discovery", "decision"]
    decision = lanes[1][1]
    assert "after 2d" in decision and re.search(r'data-here="0" data-sent="0"', decision)
