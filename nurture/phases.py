"""The three content phases, in funnel order."""

from __future__ import annotations

from typing import Literal

Phase = Literal["discovery", "evaluation", "decision"]
PHASES: tuple[Phase, ...] = ("discovery", "evaluation", "decision")


def phase_rank(phase: Phase) -> int:
    return PHASES.index(phase)
