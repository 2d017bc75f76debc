"""YAML documents that remember the line of every field, and typed validation with those lines."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from nurture.problems import Problem, ProjectError

Loc = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)


@dataclass
class Document:
    """Parsed YAML, with the 1-based line of each field path."""

    path: str
    data: Any
    lines: dict[Loc, int] = field(default_factory=dict)

    def line_of(self, loc: Loc) -> int | None:
        """The line of the deepest part of `loc` that the file spells out."""
        loc = tuple(part for part in loc if isinstance(part, (str, int)))
        while loc:
            if loc in self.lines:
                return self.lines[loc]
            loc = loc[:-1]
        return self.lines.get((), None)

    def problem(self, loc: Loc, message: str) -> Problem:
        name = format_loc(loc)
        return Problem(self.path, self.line_of(loc), f"{name}: {message}" if name else message)


def format_loc(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def parse_yaml(text: str, path: str, first_line: int = 1) -> Document:
    """Parse one YAML document; a syntax error becomes a ProjectError with its line."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + first_line if mark else None
        reason = exc.problem or "invalid YAML"
        raise ProjectError([Problem(path, line, f"YAML syntax: {reason}")]) from None
    finally:
        loader.dispose()
    doc = Document(path, data)
    if node is not None:
        _record_lines(node, (), doc.lines, first_line - 1)
    return doc


def _record_lines(node: yaml.Node, loc: Loc, lines: dict[Loc, int], offset: int) -> None:
    lines.setdefault(loc, node.start_mark.line + 1 + offset)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
            lines[(*loc, key)] = key_node.start_mark.line + 1 + offset
            _record_lines(value_node, (*loc, key), lines, offset)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _record_lines(item, (*loc, index), lines, offset)


def validate(model: type[M], doc: Document, context: Mapping[str, Any] | None = None) -> M:
    """Validate a document against a pydantic model; every error names file, line and field."""
    try:
        return model.model_validate(doc.data, context=dict(context or {}))
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            message = error["msg"]
            if message.startswith("Value error, "):
                message = message[len("Value error, ") :]
            problems.append(doc.problem(error["loc"], message))
        raise ProjectError(problems) from None
