"""workflow versions and step places

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23 15:50:00

Enrollments keep their place by step id (`places`) and the workflow version it refers to
(`version`). The index positions stored before stay in `positions`: the engine translates
them to step ids against the workflow files at its first start after this migration (and
records those files as each workflow's version 1).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import nurture.models

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "workflow_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("workflow", sa.String(length=100), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("outline", sa.JSON(), nullable=False),
        sa.Column("first_seen_at", nurture.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflow_versions")),
        sa.UniqueConstraint("workflow", "digest", name=op.f("uq_workflow_versions_workflow")),
    )
    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("places", sa.JSON(), server_default="{}", nullable=False))
        batch_op.add_column(sa.Column("version", sa.String(length=64), nullable=True))
    # Rows from before: their `positions` are indexes (nurture.core.versions.LEGACY).
    op.execute("UPDATE enrollments SET version = 'index'")


def downgrade() -> None:
    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.drop_column("version")
        batch_op.drop_column("places")
    op.drop_table("workflow_versions")
