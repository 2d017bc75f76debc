"""journey steps due: only the webhooks with an attempt to make are in the index

Every email of a journey records its ways taken and waits started as journey steps; none of
them has a delivery to attempt, so they are left out of `ix_journey_steps_due` (a partial
index on `next_attempt_at IS NOT NULL`, which `claim_due`'s `next_attempt_at <= now`
implies): one index fewer to write per email sent.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-04 21:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_DUE = "next_attempt_at IS NOT NULL"


def upgrade() -> None:
    op.drop_index("ix_journey_steps_due", table_name="journey_steps")
    op.create_index(
        "ix_journey_steps_due",
        "journey_steps",
        ["status", "next_attempt_at"],
        sqlite_where=sa.text(_DUE),
        postgresql_where=sa.text(_DUE),
    )


def downgrade() -> None:
    op.drop_index("ix_journey_steps_due", table_name="journey_steps")
    op.create_index("ix_journey_steps_due", "journey_steps", ["status", "next_attempt_at"])
