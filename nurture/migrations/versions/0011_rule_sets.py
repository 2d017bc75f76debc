"""rule sets: the fit rules each stored fit follows, so a change rescores everyone

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-23 16:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import nurture.models

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rule_sets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("rules", sa.JSON(), nullable=False),
        sa.Column("seen_at", nurture.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("done_at", nurture.models.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rule_sets")),
    )
    op.create_index("ix_rule_sets_kind_id", "rule_sets", ["kind", "id"])


def downgrade() -> None:
    op.drop_index("ix_rule_sets_kind_id", table_name="rule_sets")
    op.drop_table("rule_sets")
