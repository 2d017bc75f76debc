"""journey steps: ways taken, waits started, actions done (once per enrollment step)

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-23 16:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import nurture.models

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "journey_steps",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("enrollment_id", sa.Integer(), nullable=False),
        sa.Column("entered_at", nurture.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("contact_id", sa.Integer(), nullable=False),
        sa.Column("workflow", sa.String(length=100), nullable=False),
        sa.Column("step_key", sa.String(length=100), nullable=False),
        sa.Column("way", sa.String(length=40), nullable=False),
        sa.Column("at", nurture.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name=op.f("fk_journey_steps_contact_id_contacts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["enrollment_id"],
            ["enrollments.id"],
            name=op.f("fk_journey_steps_enrollment_id_enrollments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_journey_steps")),
        sa.UniqueConstraint(
            "enrollment_id",
            "entered_at",
            "step_key",
            "way",
            name=op.f("uq_journey_steps_enrollment_id"),
        ),
    )
    op.create_index("ix_journey_steps_contact", "journey_steps", ["contact_id", "at"])


def downgrade() -> None:
    op.drop_index("ix_journey_steps_contact", table_name="journey_steps")
    op.drop_table("journey_steps")
