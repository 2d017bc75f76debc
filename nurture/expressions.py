"""Conditions marketers write (`engagement >= 40 and fit >= 30`), compiled by Jinja's sandbox."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, meta, nodes
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.parser import Parser
from jinja2.sandbox import SandboxedEnvironment
from jinja2.utils import missing

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
        return _env.from_string(_tree(source))
    except TemplateSyntaxError as exc:
        raise ExpressionError(f"condition {source!r} does not parse: {exc.message}") from None


def _tree(source: str) -> nodes.Template:
    """A template setting `result` to the expression `source`."""
    parser = Parser(_env, source, state="variable")
    expression = parser.parse_expression()
    if not parser.stream.eos:
        raise TemplateSyntaxError("chunk after expression", parser.stream.current.lineno)
    expression.set_environment(_env)
    body = [nodes.Assign(nodes.Name("result", "store"), expression, lineno=1)]
    return nodes.Template(body, lineno=1)


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
    light = _light(source)
    if light is not None:  # the same compiled code, without building a Jinja context
        context: Any = _Context(variables)
        render = light
    else:
        # shared: the variables are the whole context (no globals merged in), read, never copied.
        shared = variables if isinstance(variables, dict) else dict(variables)
        context = template.new_context(shared, shared=True)
        render = template.root_render_func
    try:
        for _ in render(context):
            pass
        return bool(context.vars["result"])
    except (TypeError, UndefinedError, SecurityError, ZeroDivisionError):
        return False


#: How the code Jinja compiles for a condition may touch its context for `_Context` to
#: stand in for it (a call or a filter handed the context needs the real one).
_READS = re.compile(r"\bcontext\.(resolve_or_missing|vars|exported_vars)\b")


@lru_cache(maxsize=4096)
def _light(source: str) -> Callable[[Any], Iterator[Any]] | None:
    """The condition's compiled render function when it reads its context only through
    `_READS` (names, and the `result` it sets), else None. Building a Jinja context
    (a dict copy, a set of exported names, the globals) cost more than most conditions."""
    template = compile_condition(source)
    code = _env.compile(_tree(source), raw=True)
    code = _READS.sub("", code).replace("def root(context,", "")
    if re.search(r"\bcontext\b", code):  # passed on (to a call, a filter) or read otherwise
        return None
    return template.root_render_func


class _Context:
    """The context `_light` code reads: the variables by name (`missing` when absent, as a
    Jinja context resolves them), and `vars` where the code stores `result`."""

    __slots__ = ("exported_vars", "resolve_or_missing", "vars")

    def __init__(self, variables: Mapping[str, Any]) -> None:
        self.vars: dict[str, Any] = {}
        self.exported_vars: set[str] = set()
        get = variables.get
        self.resolve_or_missing = lambda key: get(key, missing)
