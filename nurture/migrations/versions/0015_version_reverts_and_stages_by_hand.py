"""workflow version reverts and stage moves by hand

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-23 18:40:00

A workflow's versions were unique by (workflow, digest), so putting a file back to an
earlier text recorded nothing while the engine carried people back to it. Versions are now
unique by (workflow, number): a revert is recorded as the next number, with the same digest
as the version it restores.

`stage_moves.by_hand`: the move was made by a person; the stage then holds against the
score rules until the scores cross a threshold again.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NAME = "uq_workflow_versions_workflow"


def upgrade() -> None:
    op.add_column(
        "stage_moves",
        sa.Column("by_hand", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    with op.batch_alter_table("workflow_versions") as batch:
        batch.drop_constraint(_NAME, type_="unique")
        batch.create_unique_constraint(_NAME, ["workflow", "number"])


def downgrade() -> None:
    with op.batch_alter_table("stage_moves") as batch:
        batch.drop_column("by_hand")
    # Keep the first row of each (workflow, digest): the later ones were reverts.
    op.execute(
        "DELETE FROM workflow_versions WHERE id NOT IN "
        "(SELECT MIN(id) FROM workflow_versions GROUP BY workflow, digest)"
    )
    with op.batch_alter_table("workflow_versions") as batch:
        batch.drop_constraint(_NAME, type_="unique")
        batch.create_unique_constraint(_NAME, ["workflow", "digest"])
