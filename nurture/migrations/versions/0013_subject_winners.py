"""subject winners: the subject line a test promoted, and when

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-23 19:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import nurture.models

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "subject_winners",
        sa.Column("content_id", sa.String(length=200), nullable=False),
        sa.Column("variant", sa.Integer(), nullable=False),
        sa.Column("decided_at", nurture.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("content_id", name=op.f("pk_subject_winners")),
    )


def downgrade() -> None:
    op.drop_table("subject_winners")
