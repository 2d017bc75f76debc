"""`@value`: how the core declares its value objects (plans, decisions, marks, moves).

A frozen dataclass, as type checkers see it (mypy refuses an assignment to a field), built
at run time as a plain slotted dataclass with a hash: Python's frozen `__init__` sets each
field through `object.__setattr__`, about three times the cost of a plain one, and the
dispatcher builds several of these per email (a plan, the plan after it, a mark, a pacing
decision, the action). Equality and hashing are those of a frozen dataclass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar, dataclass_transform

_T = TypeVar("_T")


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def value(cls: type[_T]) -> type[_T]:
    return dataclass(slots=True, unsafe_hash=True)(cls)
