"""nurture/core is pure: no module of it, nor any nurture module outside it that it imports,
imports a database, web, scheduler, mail, environment or clock layer (nurture/core/__init__.py).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "nurture"
CORE = PACKAGE / "core"

#: Top-level packages a pure module may not import.
FORBIDDEN = {
    "alembic",
    "apscheduler",
    "flask",
    "os",
    "smtplib",
    "sqlalchemy",
    "time",
    "werkzeug",
}
#: nurture modules that are the I/O layer or the clock.
FORBIDDEN_NURTURE = {"nurture.clock", "nurture.db", "nurture.models"}
#: `datetime.now()` and its kin read the wall clock.
CLOCK_READS = {("datetime", "now"), ("datetime", "utcnow"), ("date", "today")}


def source_of(module: str) -> Path | None:
    """The file of a nurture module, or None if `module` is not one (a name in a module)."""
    path = ROOT.joinpath(*module.split("."))
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return None


def resolve(module: str, level: int, importer: str) -> str:
    """The absolute name of `from <level dots><module> import ...` in `importer`."""
    if not level:
        return module
    path = source_of(importer)
    package = (
        importer.split(".") if path and path.name == "__init__.py" else importer.split(".")[:-1]
    )
    base = package[: len(package) - level + 1]
    return ".".join([*base, module] if module else base)


def direct(module: str) -> tuple[list[str], set[str]]:
    """What `module` itself does wrong, and the nurture modules it imports."""
    path = source_of(module)
    assert path is not None, module
    tree = ast.parse(path.read_text(), str(path))
    wrong: list[str] = []
    imported: set[str] = set()

    def note(name: str) -> None:
        if name.split(".")[0] in FORBIDDEN or name in FORBIDDEN_NURTURE:
            wrong.append(f"imports {name}")
        if name.split(".")[0] == "nurture" and source_of(name):
            imported.add(name)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                note(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = resolve(node.module or "", node.level, module)
            note(base)
            for alias in node.names:
                if source_of(f"{base}.{alias.name}"):
                    note(f"{base}.{alias.name}")
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and (node.value.id, node.attr) in CLOCK_READS
        ):
            wrong.append(f"reads the clock ({node.value.id}.{node.attr}, line {node.lineno})")
    return wrong, imported


def problems(module: str) -> list[str]:
    """What `module` and every nurture module it imports, directly or not, do wrong."""
    found: list[str] = []
    seen: set[str] = set()
    todo = [(module, module)]
    while todo:
        name, via = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        wrong, imported = direct(name)
        found += [f"{via}: {w}" for w in wrong]
        todo += [(i, f"{via} -> {i}") for i in sorted(imported)]
    return found


CORE_MODULES = sorted(
    "nurture.core" if p.name == "__init__.py" else f"nurture.core.{p.stem}"
    for p in CORE.glob("*.py")
)


def test_the_core_holds_the_deciding_modules() -> None:
    assert {"nurture.core.eventrules", "nurture.core.pacing", "nurture.core.planner"} <= set(
        CORE_MODULES
    )


@pytest.mark.parametrize("module", CORE_MODULES)
def test_a_core_module_imports_no_io_and_reads_no_clock(module: str) -> None:
    assert problems(module) == []


def test_the_check_sees_an_impure_import_through_a_module_outside_the_core() -> None:
    """The walker is not blind: engine.py reaches sqlalchemy and the clock, and a module
    that imports nurture.runtime reaches os through nurture.environment."""
    assert any("imports sqlalchemy" in p for p in problems("nurture.engine"))
    assert any("nurture.clock" in p for p in problems("nurture.engine"))
    assert any("-> nurture.environment: imports os" in p for p in problems("nurture.runtime"))


def test_importing_the_core_loads_no_io_layer() -> None:
    """The same, at run time: importing every core module pulls in no database, web,
    scheduler or mail package."""
    code = (
        "import importlib, sys\n"
        f"for name in {CORE_MODULES!r}: importlib.import_module(name)\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('sqlalchemy', 'alembic', 'flask', 'werkzeug', 'apscheduler', 'smtplib')"
        f" or m in {sorted(FORBIDDEN_NURTURE)!r}]\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_only_nurture_environment_reads_the_environment() -> None:
    """Every environment variable is read through nurture/environment.py."""
    readers = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "environment.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            named = (
                isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "environb")
            ) or (
                isinstance(node, ast.ImportFrom)
                and node.module == "os"
                and any(a.name in ("environ", "getenv", "environb") for a in node.names)
            )
            if named:
                readers.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert readers == []
