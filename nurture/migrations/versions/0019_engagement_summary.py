"""engagement summary: what people (not machines) did per kind and piece, counted from events

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-04 21:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import nurture.models

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The summary of the events stored so far, as nurture/eventstore.py counts it (frozen
#: here: a migration does not change with the code).
_BACKFILL = """
INSERT INTO engagement_summary (contact_id, kind, content_id, first_at, last_at, events)
SELECT e.contact_id, e.kind, COALESCE(m.content_id, ''), MIN(e.occurred_at),
       MAX(e.occurred_at), COUNT(*)
FROM events AS e LEFT OUTER JOIN messages AS m ON m.id = e.message_id
WHERE e.machine IS NULL
GROUP BY e.contact_id, e.kind, COALESCE(m.content_id, '')
"""


def upgrade() -> None:
    op.create_table(
        "engagement_summary",
        sa.Column("contact_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("content_id", sa.String(length=200), nullable=False),
        sa.Column("first_at", nurture.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_at", nurture.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("events", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name=op.f("fk_engagement_summary_contact_id_contacts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "contact_id", "kind", "content_id", name=op.f("pk_engagement_summary")
        ),
        sqlite_with_rowid=False,
    )
    op.execute(_BACKFILL)
    # indexed once filled: faster than keeping the indexes up row by row
    op.create_index(
        "ix_engagement_summary_kind_last", "engagement_summary", ["kind", "last_at", "contact_id"]
    )
    op.create_index(
        "ix_engagement_summary_kind_content",
        "engagement_summary",
        ["kind", "content_id", "contact_id"],
    )
    op.execute("ANALYZE engagement_summary")  # the planners know its sizes from the start


def downgrade() -> None:
    op.drop_index("ix_engagement_summary_kind_content", table_name="engagement_summary")
    op.drop_index("ix_engagement_summary_kind_last", table_name="engagement_summary")
    op.drop_table("engagement_summary")
