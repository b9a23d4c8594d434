"""Learning: one outcome per finished task (what it was, what it took, how it ended), the
proposals the learner makes from them, and every decision a person takes on one.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outcomes",
        sa.Column("task_id", sa.String(32), sa.ForeignKey("tasks.id"), primary_key=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("reason", sa.String(64)),
        sa.Column("complexity", sa.String(16), nullable=False, index=True),
        sa.Column("words", sa.Integer, nullable=False),
        sa.Column("items", sa.Integer, nullable=False),
        sa.Column("context_files", sa.Integer, nullable=False),
        sa.Column("workspace", sa.Text, nullable=False),
        sa.Column("backend", sa.String(64), nullable=False),
        sa.Column("model", sa.String(200)),
        sa.Column("strategy", sa.JSON),
        sa.Column("iterations", sa.Integer, nullable=False),
        sa.Column("max_iterations", sa.Integer, nullable=False),
        sa.Column("limit_source", sa.String(16), nullable=False),
        sa.Column("evidence_rule", sa.String(32)),
        sa.Column("check_command", sa.Text),
        sa.Column("check_passed", sa.Boolean),
        sa.Column("check_failure", sa.Text),
        sa.Column("promise", sa.Boolean),
        sa.Column("diff", sa.Boolean, nullable=False),
        sa.Column("prompt_tokens", sa.Integer, nullable=False),
        sa.Column("completion_tokens", sa.Integer, nullable=False),
        sa.Column("seconds", sa.Float, nullable=False),
        sa.Column("longest_iteration_seconds", sa.Float),
        sa.Column("idle_run", sa.Integer, nullable=False),
        sa.Column("finished_at", sa.DateTime, nullable=False, index=True),
    )
    op.create_table(
        "proposals",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("changes", sa.JSON, nullable=False),
        sa.Column("previous", sa.JSON),
        sa.Column("task", sa.JSON),
        sa.Column("evidence", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "decisions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("proposal_id", sa.Integer, sa.ForeignKey("proposals.id"), nullable=False, index=True),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("who", sa.String(200), nullable=False),
        sa.Column("detail", sa.Text),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("decisions")
    op.drop_table("proposals")
    op.drop_table("outcomes")
