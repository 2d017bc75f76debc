"""The content library: front matter, MJML compiled once per piece, Jinja rendered per person."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mjml
from inscriptis import get_text
from inscriptis.css_profiles import CSS_PROFILES
from inscriptis.model.config import ParserConfig
from jinja2 import Environment, StrictUndefined, Template, TemplateSyntaxError, UndefinedError
from pydantic import Field, model_validator

from nurture.config import PROFILE_FIELDS, Strict
from nurture.phases import PHASES, Phase
from nurture.problems import Problem, ProjectError
from nurture.yamlfile import parse_yaml, validate

_html_env = Environment(autoescape=True, undefined=StrictUndefined, keep_trailing_newline=True)
_text_env = Environment(autoescape=False, undefined=StrictUndefined, keep_trailing_newline=True)
_FRONT = re.compile(r"\A---[ \t]*\n(.*?)^---[ \t]*\n", re.S | re.M)
_POSITION = re.compile(r"at position (\d+):(\d+)")
_SEPARATOR = "\x1e"
_SUBJECTS = "\x1f"
_TEXT_CONFIG = ParserConfig(css=CSS_PROFILES["strict"], display_links=True)
PARTIALS = "partials"


class FrontMatter(Strict):
    subject: str | None = Field(
        default=None, min_length=1, description="Jinja template of the subject line."
    )
    subjects: list[str] | None = Field(
        default=None, min_length=2, description="Two or more subjects to test: sends are split."
    )
    preheader: str | None = Field(default=None, description="Preview text shown after the subject.")
    tags: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_subject_field(self) -> FrontMatter:
        if (self.subject is None) == (self.subjects is None):
            raise ValueError("give either subject: or subjects: (two or more to test)")
        if self.subjects is not None and any(not s.strip() for s in self.subjects):
            raise ValueError("a subject variant is empty")
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

    def render(
        self, variables: Mapping[str, Any], variant: int = 0, language: str | None = None
    ) -> Rendered:
        """Subject, HTML and text in one Jinja render: one context per email, not three."""
        piece = self.for_language(language)
        subjects, html, text = piece.template.render(variables).split(_SEPARATOR)
        options = subjects.split(_SUBJECTS)
        subject = options[variant % len(options)]
        return Rendered(subject=" ".join(subject.split()), html=html, text=text)


def sample_variables(custom_fields: list[str], sender: Mapping[str, Any]) -> dict[str, Any]:
    """A contact with every field filled: what validation renders each piece with."""
    contact: dict[str, Any] = {name: f"sample {name}" for name in PROFILE_FIELDS}
    contact.update({name: f"sample {name}" for name in custom_fields})
    contact["company_size"] = 120
    contact["email"] = "sample@example.com"
    return {
        "contact": contact,
        "sender": dict(sender),
        "unsubscribe_url": "https://example.com/u/sample",
    }


def split_front_matter(text: str) -> tuple[str, str, int]:
    """(front matter, body, line of the body's first line)."""
    match = _FRONT.match(text)
    if not match:
        return "", text, 1
    return match.group(1), text[match.end() :], text[: match.end()].count("\n") + 1


def compile_mjml(source: str, content_root: Path) -> str:
    def load(path: str) -> str:
        target = (content_root / path).resolve()
        if content_root.resolve() not in target.parents or not target.is_file():
            raise FileNotFoundError(path)
        return target.read_text(encoding="utf-8")

    return str(mjml.mjml2html(source, include_loader=load, disable_comments=True))


def html_to_text(html: str) -> str:
    """The plain-text part, derived from the HTML by inscriptis, tidied line by line."""
    lines = [line.strip() for line in get_text(html, _TEXT_CONFIG).splitlines()]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    return text + "\n"


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
    try:
        html = compile_mjml(_with_preheader(body, front.preheader), content_root)
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


def _with_preheader(body: str, preheader: str | None) -> str:
    if not preheader or "<mj-preview" in body:
        return body
    preview = f"<mj-preview>{preheader}</mj-preview>"
    if "<mj-head>" in body:
        return body.replace("<mj-head>", "<mj-head>" + preview, 1)
    return re.sub(
        r"<mjml([^>]*)>", lambda m: m.group(0) + f"<mj-head>{preview}</mj-head>", body, count=1
    )


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
