"""journey webhooks: a webhook action's delivery state on its journey step

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-23 16:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import nurture.models

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("journey_steps", sa.Column("url", sa.Text(), nullable=True))
    op.add_column("journey_steps", sa.Column("status", sa.String(length=16), nullable=True))
    op.add_column(
        "journey_steps",
        sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
    )
    op.add_column(
        "journey_steps",
        sa.Column("next_attempt_at", nurture.models.UTCDateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_journey_steps_due", "journey_steps", ["status", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_journey_steps_due", table_name="journey_steps")
    with op.batch_alter_table("journey_steps") as batch:
        batch.drop_column("next_attempt_at")
        batch.drop_column("attempts")
        batch.drop_column("status")
        batch.drop_column("url")
