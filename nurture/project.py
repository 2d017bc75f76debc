"""A project folder: nurture.yaml, workflows/ and content/, loaded and checked as a whole."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from nurture.config import Settings, load_settings
from nurture.content import Piece, base_name, content_files, load_piece, sample_variables
from nurture.problems import Problem, ProjectError
from nurture.segments import Segment, load_segments
from nurture.workflows import Workflow, load_workflow, workflow_context

SETTINGS_FILE = "nurture.yaml"


@dataclass
class Project:
    root: Path
    settings: Settings
    workflows: dict[str, Workflow]
    content: dict[str, Piece]
    #: An earlier content id -> the piece that now bears it (`renamed_from:` in front matter).
    content_aliases: dict[str, str] = field(default_factory=dict)
    #: An earlier workflow id -> the workflow that took its people (`renamed_from:`).
    renamed_workflows: dict[str, str] = field(default_factory=dict)
    #: Named audiences (`segments/*.yaml`), by id (the file name).
    segments: dict[str, Segment] = field(default_factory=dict)

    def canonical(self, content_id: str) -> str:
        """The content id a piece goes by now: whoever got the old one has got it."""
        return self.content_aliases.get(content_id, content_id)

    def content_ids(self) -> dict[str, tuple[str, ...]]:
        """Each piece's id -> every id it has gone by (itself first, then its old ids)."""
        return _content_ids(self.content)

    @property
    def database_path(self) -> Path:
        return self.root / "nurture.db"

    @property
    def instance_dir(self) -> Path:
        """Where the engine keeps what it makes for itself (the secret key)."""
        return self.root / "instance"

    @property
    def outbox_dir(self) -> Path:
        return self.root / self.settings.outbox_dir


def load_project(root: Path) -> Project:
    """Load and check every file; raise ProjectError listing every problem, or return it all."""
    root = root.resolve()
    settings_path = root / SETTINGS_FILE
    if not settings_path.is_file():
        raise ProjectError(
            [
                Problem(
                    str(settings_path),
                    None,
                    "no nurture.yaml here; run in a project folder or pass --project DIR",
                )
            ]
        )
    settings = load_settings(settings_path, _display(settings_path, root))
    problems: list[Problem] = []
    content: dict[str, Piece] = {}
    content_root = root / "content"
    variables = sample_variables(settings.custom_fields, settings.sender.model_dump())
    translations: list[tuple[Path, Piece, str]] = []
    for path in content_files(content_root):
        try:
            piece = load_piece(path, content_root, _display(path, root), variables)
        except ProjectError as exc:
            problems.extend(exc.problems)
            continue
        language = base_name(path)[1]
        if language is None:
            content[piece.id] = piece
        else:
            translations.append((path, piece, language))
    for path, piece, language in translations:
        base = content.get(piece.id)
        original = path.with_name(f"{base_name(path)[0]}{path.suffix}")
        if base is None and original.is_file():
            continue  # the original has its own problem, already listed
        if base is None:
            problems.append(
                Problem(
                    _display(path, root),
                    None,
                    f"a {language} translation of {piece.id}, which does not exist",
                )
            )
        else:
            base.translations[language] = piece
    phases: dict[str, str] = {piece_id: piece.phase for piece_id, piece in content.items()}
    phases.update(_broken_ids(content_root, content))
    segments, found = load_segments(
        root, settings, phases, _content_ids(content), lambda path: _display(path, root)
    )
    problems.extend(found)
    context = workflow_context(settings, phases)
    context["contact_fields"] = settings.contact_fields  # `contact.x` must be a field
    context["segments"] = segments
    workflows: dict[str, Workflow] = {}
    for path in sorted((root / "workflows").glob("*.y*ml")):
        try:
            workflow = load_workflow(path, _display(path, root), context)
        except ProjectError as exc:
            problems.extend(exc.problems)
            continue
        workflows[workflow.id] = workflow
    if not workflows and not problems:
        problems.append(Problem(_display(root / "workflows", root), None, "no workflow found"))
    aliases = _content_aliases(content, root, problems)
    renamed: dict[str, str] = {}
    for workflow in workflows.values():
        display = _display(root / "workflows" / f"{workflow.id}.yaml", root)
        for old in workflow.renamed_from:
            if old in workflows:
                problems.append(
                    Problem(display, None, f"renamed_from: {old} is still a workflow file")
                )
            elif old in renamed:
                problems.append(
                    Problem(display, None, f"renamed_from: {old} is claimed by {renamed[old]} too")
                )
            renamed.setdefault(old, workflow.id)
    if problems:
        raise ProjectError(problems)
    return Project(root, settings, workflows, content, aliases, renamed, segments)


def _content_ids(content: dict[str, Piece]) -> dict[str, tuple[str, ...]]:
    return {piece.id: (piece.id, *piece.front.renamed_from) for piece in content.values()}


def _content_aliases(
    content: dict[str, Piece], root: Path, problems: list[Problem]
) -> dict[str, str]:
    """Each earlier content id -> the piece that names it in `renamed_from:`, checked."""
    aliases: dict[str, str] = {}
    for piece in content.values():
        for old in piece.front.renamed_from:
            display = _display(piece.path, root)
            if old in content:
                problems.append(
                    Problem(display, None, f"renamed_from: {old} is still a piece of content")
                )
            elif old in aliases:
                problems.append(
                    Problem(display, None, f"renamed_from: {old} is claimed by {aliases[old]} too")
                )
            aliases.setdefault(old, piece.id)
    return aliases


def _broken_ids(content_root: Path, loaded: dict[str, Piece]) -> dict[str, str]:
    """Pieces that exist but failed to load: a workflow naming them is not wrong as well."""
    return {
        f"{p.parent.name}/{base_name(p)[0]}": p.parent.name
        for p in content_files(content_root)
        if f"{p.parent.name}/{base_name(p)[0]}" not in loaded
    }


def _display(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
