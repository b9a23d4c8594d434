"""tasks.protected_paths: the paths or globs a task's agent may not change; iterations.protected_undone:
the protected files an iteration changed, whose changes were undone before its check. NULL in rows
from before: nothing was protected.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tasks", sa.Column("protected_paths", sa.JSON, nullable=True))
    op.add_column("iterations", sa.Column("protected_undone", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("iterations") as batch:  # SQLite drops a column by copying the table
        batch.drop_column("protected_undone")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("protected_paths")
