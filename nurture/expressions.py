"""Conditions marketers write (`engagement >= 40 and fit >= 30`), compiled by Jinja's sandbox."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, meta, nodes
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.parser import Parser
from jinja2.sandbox import SandboxedEnvironment

_env = SandboxedEnvironment(undefined=StrictUndefined)

#: Names every condition may use; projects add their own lists (`lists:` in nurture.yaml).
BASE_NAMES = frozenset({"contact", "fit", "engagement", "stage", "event", "days_in_stage"})


class ExpressionError(ValueError):
    pass


@lru_cache(maxsize=4096)
def compile_condition(source: str) -> Template:
    """Compile once (as `compile_expression` does: a template setting `result`); raise
    ExpressionError saying what does not parse."""
    if not source.strip():
        raise ExpressionError("the condition is empty")
    try:
        parser = Parser(_env, source, state="variable")
        expression = parser.parse_expression()
        if not parser.stream.eos:
            raise TemplateSyntaxError("chunk after expression", parser.stream.current.lineno)
        expression.set_environment(_env)
        body = [nodes.Assign(nodes.Name("result", "store"), expression, lineno=1)]
        return _env.from_string(nodes.Template(body, lineno=1))
    except TemplateSyntaxError as exc:
        raise ExpressionError(f"condition {source!r} does not parse: {exc.message}") from None


def names_used(source: str) -> set[str]:
    compile_condition(source)
    return set(meta.find_undeclared_variables(_env.parse("{{ (" + source + ") }}")))


def contact_fields_used(source: str) -> set[str]:
    """The fields `source` reads from `contact` (`contact.sector`, `contact['sector']`);
    a method call (`contact.get('x')`) is not a field."""
    compile_condition(source)
    tree = _env.parse("{{ (" + source + ") }}")
    called = {id(call.node) for call in tree.find_all(nodes.Call)}
    found: set[str] = set()
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        owner = node.node if isinstance(node, (nodes.Getattr, nodes.Getitem)) else None
        if not (isinstance(owner, nodes.Name) and owner.name == "contact"):
            continue
        if isinstance(node, nodes.Getattr) and id(node) not in called:
            found.add(node.attr)
        elif (
            isinstance(node, nodes.Getitem)
            and isinstance(node.arg, nodes.Const)
            and isinstance(node.arg.value, str)
        ):
            found.add(node.arg.value)
    return found


def check_condition(source: str, allowed: Iterable[str]) -> str:
    """Parse `source` and check that it only names what it may; return it unchanged."""
    unknown = names_used(source) - set(allowed)
    if unknown:
        names = ", ".join(sorted(unknown))
        known = ", ".join(sorted(allowed))
        raise ExpressionError(f"condition {source!r} uses unknown name {names}; known: {known}")
    return source


def evaluate(source: str, variables: Mapping[str, Any]) -> bool:
    """True when the condition holds; a condition on a missing or mistyped value does not hold."""
    template = compile_condition(source)
    # shared: the variables are the whole context (no globals merged in), read, never copied.
    shared = variables if isinstance(variables, dict) else dict(variables)
    context = template.new_context(shared, shared=True)
    try:
        for _ in template.root_render_func(context):
            pass
        return bool(context.vars["result"])
    except (TypeError, UndefinedError, SecurityError, ZeroDivisionError):
        return False
