"""tasks.strategy: the loop strategy a task was submitted with (keep_best, feedback, diversity,
context, candidates), its defaults resolved; NULL for a task from before, which reads as the
default loop.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tasks", sa.Column("strategy", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:  # SQLite drops a column by copying the table
        batch.drop_column("strategy")
