"""segment query indexes: events of people by kind and time, and by contact from the index alone

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-23 22:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_REAL = "machine IS NULL"


def _real(name: str, columns: list[str]) -> None:
    op.create_index(
        name, "events", columns, sqlite_where=sa.text(_REAL), postgresql_where=sa.text(_REAL)
    )


def upgrade() -> None:
    # `machine` added so that SQLite answers from the index alone.
    op.drop_index("ix_events_real_contact_kind", table_name="events")
    _real(
        "ix_events_real_contact_kind",
        ["contact_id", "kind", "occurred_at", "message_id", "machine"],
    )
    _real("ix_events_real_kind_at", ["kind", "occurred_at", "contact_id", "machine"])


def downgrade() -> None:
    op.drop_index("ix_events_real_kind_at", table_name="events")
    op.drop_index("ix_events_real_contact_kind", table_name="events")
    _real("ix_events_real_contact_kind", ["contact_id", "kind", "occurred_at", "message_id"])
