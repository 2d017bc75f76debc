"""The content library: front matter, MJML compiled once per piece, Jinja rendered per person."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

import mjml
from inscriptis import get_text
from inscriptis.css_profiles import CSS_PROFILES
from inscriptis.html_properties import Display
from inscriptis.model.config import ParserConfig
from inscriptis.model.html_document_state import HtmlDocumentState
from inscriptis.model.html_element import HtmlElement
from inscriptis.model.tag import CustomHtmlTagHandlerMapping
from jinja2 import Environment, StrictUndefined, Template, TemplateSyntaxError, UndefinedError
from pydantic import Field, model_validator

from nurture.config import PROFILE_FIELDS, Strict
from nurture.phases import PHASES, Phase
from nurture.problems import Problem, ProjectError
from nurture.yamlfile import parse_yaml, validate


class _ContentEnvironment(Environment):
    """Jinja2 for content: `contact.first_name` on a dict reads its key first.

    Jinja's `a.b` tries the attribute, then the item: on the plain dicts an email renders
    with, every look-up raised and caught an AttributeError first (a fifth of a render).
    Item first gives the same value, except that a field named like a dict method
    (`contact.items`) is now the field, which is what a template means.
    """

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict:
            try:
                return obj[attribute]
            except KeyError:
                pass
        return super().getattr(obj, attribute)


_html_env = _ContentEnvironment(
    autoescape=True, undefined=StrictUndefined, keep_trailing_newline=True
)
_text_env = _ContentEnvironment(
    autoescape=False, undefined=StrictUndefined, keep_trailing_newline=True
)
_FRONT = re.compile(r"\A---[ \t]*\n(.*?)^---[ \t]*\n", re.S | re.M)
_POSITION = re.compile(r"at position (\d+):(\d+)")
_SEPARATOR = "\x1e"
_SUBJECTS = "\x1f"
_INCLUDE = re.compile(r"<mj-include\b(?P<attrs>[^>]*?)/?>(?:\s*</mj-include>)?", re.I)
_ATTRIBUTE = re.compile(r"""([\w-]+)\s*=\s*["']([^"']*)["']""")
_HEAD = re.compile(r"<mj-head\b[^>]*/>|<mj-head\b[^>]*>(?P<inner>.*?)</mj-head>", re.I | re.S)
_MJML_OPEN = re.compile(r"<mjml\b[^>]*>", re.I)
_DOCUMENT_TAGS = re.compile(r"</?(?:mjml|mj-body)\b[^>]*>", re.I)
_JINJA = re.compile(r"(\{\{.*?\}\}|\{%.*?%\})", re.S)
_MRML_PREVIEW_STYLE = "display:none;font-size:1px;color:#ffffff;"
_BODY_WIDTH = re.compile(r"<mj-body\b[^>]*?\bwidth\s*=\s*[\"'](\d+)(?:px)?[\"']", re.I)
PARTIALS = "partials"


class FrontMatter(Strict):
    subject: str | None = Field(
        default=None, min_length=1, description="Jinja template of the subject line."
    )
    subjects: list[str] | None = Field(
        default=None, min_length=2, description="Two or more subjects to test: sends are split."
    )
    promote_winner: bool = Field(
        default=False,
        description=(
            "Once the subject test calls a winner (nurture/core/winner.py), every later email of "
            "this piece gets the winning subject line."
        ),
    )
    preheader: str | None = Field(default=None, description="Preview text shown after the subject.")
    tags: list[str] = Field(default_factory=list)
    renamed_from: list[str] = Field(
        default_factory=list,
        description=(
            "Earlier content ids of this piece (<phase>/<old file name>): whoever got one of "
            "them has got this piece, and never receives it again."
        ),
    )

    @model_validator(mode="after")
    def _one_subject_field(self) -> FrontMatter:
        if (self.subject is None) == (self.subjects is None):
            raise ValueError("give either subject: or subjects: (two or more to test)")
        if self.subjects is not None and any(not s.strip() for s in self.subjects):
            raise ValueError("a subject variant is empty")
        if self.promote_winner and self.subjects is None:
            raise ValueError("promote_winner needs a subject test: give subjects: (two or more)")
        return self

    @property
    def subject_lines(self) -> list[str]:
        return self.subjects if self.subjects is not None else [self.subject or ""]


@dataclass(frozen=True)
class Rendered:
    subject: str
    html: str
    text: str


@dataclass
class Piece:
    """One piece of content, compiled: its templates are ready to render per person."""

    id: str
    phase: Phase
    path: Path
    front: FrontMatter
    template: Template
    translations: dict[str, Piece] = field(default_factory=dict)

    def for_language(self, language: str | None) -> Piece:
        """The variant for a contact's language (`fr-CA`, then `fr`), or this piece."""
        if not language or not self.translations:
            return self
        code = language.lower().replace("_", "-")
        return self.translations.get(code) or self.translations.get(code.split("-")[0]) or self

    @property
    def variants(self) -> int:
        """How many subject lines this piece tests (1: no test)."""
        return len(self.front.subject_lines)

    def render(self, variables: Mapping[str, Any], variant: int = 0) -> Rendered:
        """Subject, HTML and text of this very file in one Jinja render (no language choice).

        An email for a person goes through `render_email`, which picks the language variant.
        """
        subjects, html, text = self.template.render(variables).split(_SEPARATOR)
        options = subjects.split(_SUBJECTS)
        subject = options[variant % len(options)]
        return Rendered(subject=" ".join(subject.split()), html=html, text=text)

    def preheader(self, variables: Mapping[str, Any]) -> str | None:
        """The front matter's preheader for these variables, spaces collapsed (None: none)."""
        if self.front.preheader is None:
            return None
        return " ".join(_text_env.from_string(self.front.preheader).render(variables).split())


def render_email(
    piece: Piece,
    contact: Mapping[str, Any],
    sender: Mapping[str, Any],
    unsubscribe_url: str,
    variant: int = 0,
) -> Rendered:
    """THE render of a piece for one person: the engine, `nurture preview` and the dashboard
    all call this, so a preview is what the person gets. The contact's `language` picks the
    variant (`fr-CA`, then `fr`, then the original)."""
    chosen = piece.for_language(contact.get("language"))
    variables = {
        "contact": dict(contact),
        "sender": dict(sender),
        "unsubscribe_url": unsubscribe_url,
    }
    return chosen.render(variables, variant)


#: A made-up person who looks like one: what previews, validation and lint render with.
SAMPLE_CONTACT: dict[str, Any] = {
    "email": "maya.lindqvist@northwind-apps.example",
    "email_domain": "northwind-apps.example",
    "first_name": "Maya",
    "last_name": "Lindqvist",
    "company": "Northwind Apps",
    "account": "northwind-apps.example",
    "sector": "saas",
    "company_size": 120,
    "role": "Head of Customer Success",
    "seniority": "director",
    "country": "US",
    "timezone": "America/New_York",
    "language": "en",
    "source": "guide download",
    "owner": "jordan@keel-retention.example",
}
SAMPLE_UNSUBSCRIBE_URL = "https://example.com/u/sample"


def preview_unsubscribe_url(base_url: str) -> str:
    """The unsubscribe link of a preview: on the project's own `base_url`, with a token no
    message has (following it unsubscribes nobody)."""
    return f"{base_url.rstrip('/')}/u/preview"


def sample_contact(custom_fields: Iterable[str], language: str | None = None) -> dict[str, Any]:
    """The sample person with every profile field, each custom field and the given language."""
    contact = {name: SAMPLE_CONTACT.get(name, f"example {name}") for name in PROFILE_FIELDS}
    contact.update({name: f"example {name.replace('_', ' ')}" for name in custom_fields})
    if language:
        contact["language"] = language
    return contact


def sample_variables(custom_fields: Iterable[str], sender: Mapping[str, Any]) -> dict[str, Any]:
    """The variables of an email to the sample person: what validation renders each piece with."""
    return {
        "contact": sample_contact(custom_fields),
        "sender": dict(sender),
        "unsubscribe_url": SAMPLE_UNSUBSCRIBE_URL,
    }


def body_width(source: str) -> int:
    """The width of `<mj-body>` in pixels (MJML's default: 600)."""
    match = _BODY_WIDTH.search(source)
    return int(match.group(1)) if match else 600


def split_front_matter(text: str) -> tuple[str, str, int]:
    """(front matter, body, line of the body's first line)."""
    match = _FRONT.match(text)
    if not match:
        return "", text, 1
    return match.group(1), text[match.end() :], text[: match.end()].count("\n") + 1


def compile_mjml(source: str, content_root: Path, preheader: str | None = None) -> str:
    """MJML to HTML, as MJML's reference compiler would make it.

    mjml-python (MRML) keeps only one `<mj-head>` and compiles sections brought in by
    `mj-include` without the body's width, so includes are resolved here first and every
    head is merged into one (see `resolve_mjml`); MRML then compiles a single document.
    """
    html = mjml.mjml2html(resolve_mjml(source, content_root, preheader), disable_comments=True)
    # The preheader stays hidden (display:none, max-height:0, opacity:0, overflow:hidden), but
    # not as white 1 px text: SpamAssassin scores that (HTML_FONT_LOW_CONTRAST 0.7, or
    # FONT_INVIS_MSGID 1.0 with a random Message-ID).
    return str(html).replace(_MRML_PREVIEW_STYLE, "display:none;", 1)


def resolve_mjml(source: str, content_root: Path, preheader: str | None = None) -> str:
    """The source with every `mj-include` replaced by its file and all heads merged into one.

    `path` is relative to `content_root` and must stay inside it; a partial may include
    another (a cycle is an error). The one `<mj-head>` comes first in `<mjml>` and holds the
    `preheader` (escaped, Jinja kept) as `<mj-preview>` when one is given.
    """
    text = _inline_includes(source, _Partials(content_root), ())
    heads: list[str] = []

    def take(match: re.Match[str]) -> str:
        heads.append(match.group("inner") or "")
        return ""

    text = _HEAD.sub(take, text)
    if preheader:
        heads.insert(0, f"<mj-preview>{_escape_outside_jinja(preheader)}</mj-preview>")
    if not heads:
        return text
    head = "<mj-head>" + "".join(heads) + "</mj-head>"
    opening = _MJML_OPEN.search(text)
    if opening is None:
        raise ValueError("no <mjml> root element")
    return text[: opening.end()] + head + text[opening.end() :]


@dataclass(frozen=True)
class _Partials:
    """Reads an included file by its path relative to `content/`, never outside it."""

    root: Path

    def __call__(self, path: str) -> str:
        root = self.root.resolve()
        target = (root / path).resolve()
        if root not in target.parents or not target.is_file():
            raise FileNotFoundError(path)
        return target.read_text(encoding="utf-8")


def _inline_includes(text: str, load: Callable[[str], str], chain: tuple[str, ...]) -> str:
    def include(match: re.Match[str]) -> str:
        attributes = dict(_ATTRIBUTE.findall(match.group("attrs")))
        path = attributes.get("path", "")
        kind = attributes.get("type", "mjml")
        if not path:
            raise ValueError("<mj-include> needs a path")
        if path in chain:
            raise ValueError(f"mj-include cycle: {' -> '.join((*chain, path))}")
        if kind == "html":
            return f"<mj-raw>{load(path)}</mj-raw>"
        if kind != "mjml":
            raise ValueError(f"<mj-include type={kind!r}> is not supported (mjml or html)")
        return _inline_includes(_unwrap(load(path)), load, (*chain, path))

    return _INCLUDE.sub(include, text)


def _unwrap(partial: str) -> str:
    """A partial written as a whole document (`<mjml><mj-body>...`) gives its content."""
    if not _MJML_OPEN.match(partial.lstrip()):
        return partial
    return _DOCUMENT_TAGS.sub("", partial)


def _escape_outside_jinja(text: str) -> str:
    parts = _JINJA.split(text)
    return "".join(part if _JINJA.fullmatch(part) else escape(part, quote=False) for part in parts)


def html_to_text(html: str) -> str:
    """The plain-text part, derived from the HTML by inscriptis.

    Each block (heading, greeting, paragraph, button) is a paragraph of its own, separated by
    a blank line; a link reads `text (https://...)`. Lines are trimmed, and blank runs kept to
    one blank line.
    """
    lines = [line.strip() for line in get_text(html, _TEXT_CONFIG).splitlines()]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    return text + "\n"


def _link_start(state: HtmlDocumentState, attrs: dict[str, str]) -> None:
    state.link_target = attrs.get("href", "").strip()


def _link_end(state: HtmlDocumentState) -> None:
    if state.link_target and not state.link_target.startswith("#"):
        state.tags[-1].write(f" ({state.link_target.removeprefix('mailto:')})")
    state.link_target = ""


_TEXT_CSS = {
    **CSS_PROFILES["strict"],
    # MJML puts every mj-text and mj-button in a div or table cell of its own.
    "div": HtmlElement("div", display=Display.block, margin_before=1, margin_after=1),
}
_TEXT_CONFIG = ParserConfig(
    css=_TEXT_CSS,
    custom_html_tag_handler_mapping=CustomHtmlTagHandlerMapping(
        start_tag_mapping={"a": _link_start}, end_tag_mapping={"a": _link_end}
    ),
)


def load_piece(path: Path, content_root: Path, display: str, variables: Mapping[str, Any]) -> Piece:
    """Read, compile and check one piece; every problem names the file and line."""
    phase = _phase(path.parent.name)
    if phase is None:
        raise ProjectError([Problem(display, None, f"content must live in {', '.join(PHASES)}")])
    raw = path.read_text(encoding="utf-8")
    front_text, body, body_line = split_front_matter(raw)
    if not front_text:
        raise ProjectError(
            [Problem(display, 1, "front matter missing: start with ---, a subject:, ---")]
        )
    front = validate(FrontMatter, parse_yaml(front_text, display, first_line=2))
    problems: list[Problem] = []
    subject = _template(_text_env, _SUBJECTS.join(front.subject_lines), display, 2, problems)
    checked_body = _template(_html_env, body, display, body_line, problems)
    if problems:
        raise ProjectError(problems)
    assert subject is not None and checked_body is not None
    for part, first_line in ((subject, 2), (checked_body, body_line)):
        _check_render(part, variables, display, first_line, problems)
    if front.preheader and "<mj-preview" in body:
        line = body_line + body[: body.index("<mj-preview")].count("\n")
        problems.append(
            Problem(display, line, "two preheaders: keep the front matter's or <mj-preview>")
        )
    try:
        # First as written, so that an MJML error points at the author's line; then resolved.
        mjml.mjml2html(body, include_loader=_Partials(content_root), disable_comments=True)
        html = compile_mjml(body, content_root, front.preheader)
    except (ValueError, FileNotFoundError) as exc:
        problems.append(Problem(display, _mjml_line(str(exc), body, body_line), f"MJML: {exc}"))
    if problems:
        raise ProjectError(problems)
    if _SEPARATOR in raw or _SUBJECTS in raw:
        raise ProjectError([Problem(display, None, "the file holds a control character (0x1E)")])
    combined = (
        f"{{% autoescape false %}}{_SUBJECTS.join(front.subject_lines)}{{% endautoescape %}}"
        f"{_SEPARATOR}{html}"
        f"{_SEPARATOR}{{% autoescape false %}}{html_to_text(html)}{{% endautoescape %}}"
    )
    template = _template(_html_env, combined, display, None, problems)
    if problems or template is None:
        raise ProjectError(problems)
    return Piece(
        id=f"{phase}/{base_name(path)[0]}", phase=phase, path=path, front=front, template=template
    )


_LANGUAGE = re.compile(r"^(?P<name>.+)\.(?P<lang>[a-z]{2}(?:-[a-z]{2,4})?)$")


def base_name(path: Path) -> tuple[str, str | None]:
    """(`guide`, `fr`) for guide.fr.mjml; (`guide`, None) for guide.mjml."""
    match = _LANGUAGE.match(path.stem.lower())
    if match:
        return match.group("name"), match.group("lang")
    return path.stem, None


def _template(
    env: Environment, source: str, display: str, first_line: int | None, problems: list[Problem]
) -> Template | None:
    try:
        return env.from_string(source)
    except TemplateSyntaxError as exc:
        line = first_line + exc.lineno - 1 if first_line else None
        problems.append(Problem(display, line, f"template: {exc.message}"))
        return None


def _check_render(
    template: Template,
    variables: Mapping[str, Any],
    display: str,
    first_line: int,
    problems: list[Problem],
) -> None:
    try:
        template.render(variables)
    except UndefinedError as exc:
        line = _template_line(exc)
        where = first_line + line - 1 if line else first_line
        problems.append(Problem(display, where, f"template variable: {exc.message}"))
    except Exception as exc:  # a template may fail in many ways; each is the author's to fix
        problems.append(Problem(display, first_line, f"template: {exc}"))


def _template_line(exc: BaseException) -> int | None:
    """The template line where Jinja raised (Jinja rewrites its tracebacks to template lines)."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _mjml_line(message: str, body: str, body_line: int) -> int:
    match = _POSITION.search(message)
    if not match:
        return body_line
    return body_line + body.encode()[: int(match.group(1))].decode(errors="ignore").count("\n")


def _phase(name: str) -> Phase | None:
    return next((phase for phase in PHASES if phase == name), None)


def content_files(root: Path) -> list[Path]:
    return sorted(p for phase in PHASES for p in (root / phase).glob("*.mjml"))
