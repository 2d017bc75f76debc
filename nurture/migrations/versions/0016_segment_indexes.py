"""segment indexes: what people (not machines) did, by contact and kind

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-23 19:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_REAL = "machine IS NULL"


def upgrade() -> None:
    op.create_index(
        "ix_events_real_contact_kind",
        "events",
        ["contact_id", "kind", "occurred_at", "message_id"],
        sqlite_where=sa.text(_REAL),
        postgresql_where=sa.text(_REAL),
    )


def downgrade() -> None:
    op.drop_index("ix_events_real_contact_kind", table_name="events")
