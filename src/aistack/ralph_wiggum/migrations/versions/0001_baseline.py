"""The schema of the first release, which made its tables with create_all.

Creates only the tables a database lacks: a database from before the migrations keeps its tables
and rows (and one older still gains `process_groups`), an empty one gets them all.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


_schema = sa.MetaData()  # as create_all made it; the store's models may move on, this stays
sa.Table(
    "tasks", _schema,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("prompt", sa.Text, nullable=False),
    sa.Column("backend", sa.String(64), nullable=False),
    sa.Column("workspace", sa.Text, nullable=False),
    sa.Column("worktree", sa.Text),
    sa.Column("branch", sa.String(128)),
    sa.Column("base_commit", sa.String(64)),
    sa.Column("status", sa.String(32), nullable=False, index=True),
    sa.Column("iteration", sa.Integer, nullable=False),
    sa.Column("max_iterations", sa.Integer, nullable=False),
    sa.Column("limit_source", sa.String(16), nullable=False),
    sa.Column("complexity", sa.String(16)),
    sa.Column("complexity_reason", sa.Text),
    sa.Column("require_approval", sa.Boolean, nullable=False),
    sa.Column("approved_through", sa.Integer, nullable=False),
    sa.Column("stop_requested", sa.Boolean, nullable=False),
    sa.Column("check_command", sa.Text),
    sa.Column("completion_promise", sa.Text),
    sa.Column("context", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False, index=True),
    sa.Column("started_at", sa.DateTime),
    sa.Column("finished_at", sa.DateTime),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    sa.Column("completion_reason", sa.String(64)),
    sa.Column("evidence", sa.JSON),
    sa.Column("error", sa.Text),
    sa.Column("prompt_tokens", sa.Integer, nullable=False),
    sa.Column("completion_tokens", sa.Integer, nullable=False),
)  # fmt: skip
sa.Table(
    "iterations", _schema,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("task_id", sa.String(32), sa.ForeignKey("tasks.id"), nullable=False, index=True),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("started_at", sa.DateTime, nullable=False),
    sa.Column("finished_at", sa.DateTime),
    sa.Column("duration_seconds", sa.Float),
    sa.Column("status", sa.String(16)),
    sa.Column("exit_code", sa.Integer),
    sa.Column("output", sa.Text, nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("files_modified", sa.JSON, nullable=False),
    sa.Column("diff_stat", sa.Text),
    sa.Column("checkpoint_commit", sa.String(64)),
    sa.Column("check_exit_code", sa.Integer),
    sa.Column("check_output", sa.Text),
    sa.Column("prompt_tokens", sa.Integer, nullable=False),
    sa.Column("completion_tokens", sa.Integer, nullable=False),
    sa.Column("transient_retries", sa.Integer, nullable=False),
    sa.UniqueConstraint("task_id", "number"),
)  # fmt: skip
sa.Table(
    "events", _schema,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("task_id", sa.String(32), sa.ForeignKey("tasks.id"), nullable=False, index=True),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("data", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
)  # fmt: skip
sa.Table(
    "process_groups", _schema,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("task_id", sa.String(32), sa.ForeignKey("tasks.id"), nullable=False, index=True),
    sa.Column("iteration", sa.Integer, nullable=False),
    sa.Column("pgid", sa.Integer, nullable=False),
    sa.Column("leader_start", sa.BigInteger, nullable=False),
    sa.Column("boot_id", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
)  # fmt: skip


def upgrade() -> None:
    _schema.create_all(op.get_bind(), checkfirst=True)  # each table (and its indexes) only where it is missing


def downgrade() -> None:
    _schema.drop_all(op.get_bind())
