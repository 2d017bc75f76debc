"""Readiness: the database answers and its schema is at the newest migration.

`/readyz` (nurture.web) and `nurture doctor` share it; `/healthz` (liveness) only says the
process answers.
"""

from __future__ import annotations

from dataclasses import dataclass

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine as Database
from sqlalchemy.exc import SQLAlchemyError

from nurture.db import alembic_config
from nurture.redact import redact_text


@dataclass(frozen=True)
class Readiness:
    ok: bool
    reason: str
    current: tuple[str, ...] = ()
    head: tuple[str, ...] = ()


def head_revisions() -> tuple[str, ...]:
    return tuple(sorted(ScriptDirectory.from_config(alembic_config()).get_heads()))


def readiness(database: Database) -> Readiness:
    """Whether `database` answers and is migrated to the head revision, and if not why."""
    head = head_revisions()
    try:
        with database.connect() as connection:
            current = tuple(sorted(MigrationContext.configure(connection).get_current_heads()))
    except SQLAlchemyError as exc:
        reason = redact_text(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return Readiness(False, f"database unreachable: {reason}", (), head)
    if not current:
        return Readiness(False, "database not migrated: run nurture db upgrade", current, head)
    if current != head:
        return Readiness(
            False,
            f"database at migration {', '.join(current)}, the code needs {', '.join(head)}: "
            "run nurture db upgrade",
            current,
            head,
        )
    return Readiness(
        True, f"database reachable, migrations at head {', '.join(head)}", current, head
    )
